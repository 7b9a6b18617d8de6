"""HTML report of an eval-codec run: metrics table with baselines, bitrate-versus-quality plot, token-slot
usage histograms, per-clip spectrogram comparisons and audio players.

Everything is written next to report.html (PNGs under plots/, WAVs under audio/) and linked with
relative paths, so the folder can be copied or served as is. Plots use matplotlib's Agg backend.
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path

import numpy as np

from ..data.audio import resample
from .metrics import EVAL_SAMPLING_RATE
from .tokens import SlotStatistics

# key -> (column title, higher is better, format)
COLUMNS: dict[str, tuple[str, bool, str]] = {
    "bitrate": ("bit/s", False, "{:.0f}"),
    "tokens_per_second": ("tokens/s", False, "{:.1f}"),
    "frame_rate": ("frames/s", False, "{:.1f}"),
    "pesq_wb": ("PESQ-WB", True, "{:.2f}"),
    "pesq_nb": ("PESQ-NB", True, "{:.2f}"),
    "stoi": ("STOI", True, "{:.3f}"),
    "si_sdr": ("SI-SDR dB", True, "{:.1f}"),
    "mel_distance": ("mel dist", False, "{:.3f}"),
    "mcd": ("MCD dB", False, "{:.2f}"),
    "f0_gpe": ("F0 GPE", False, "{:.1%}"),
    "vde": ("VDE", False, "{:.1%}"),
    "wer": ("WER", False, "{:.1%}"),
    "cer": ("CER", False, "{:.1%}"),
    "speaker_sim": ("speaker sim", True, "{:.3f}"),
    "visqol": ("ViSQOL", True, "{:.2f}"),
    "distillmos": ("DistillMOS", True, "{:.2f}"),
    "dnsmos": ("DNSMOS", True, "{:.2f}"),
    "encode_rtf": ("enc s/s", False, "{:.4f}"),
    "decode_rtf": ("dec s/s", False, "{:.4f}"),
}
OURS = "codec (ours)"
QUALITY_PLOTS = ("pesq_wb", "stoi", "wer", "speaker_sim", "mel_distance", "visqol")

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{margin-bottom:.2em} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:1em 0;font-size:14px} th,td{padding:4px 9px;border-bottom:1px solid #ddd;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left;white-space:nowrap} .scroll{overflow-x:auto} tr.ours{background:#eef6ff}
td.best{font-weight:bold;color:#0a6} .muted{color:#888} img{max-width:100%;border:1px solid #eee}
.clip{margin:1.5em 0;padding:1em;border:1px solid #ddd;border-radius:6px}
.players{display:flex;flex-wrap:wrap;gap:12px} .players div{font-size:13px} audio{width:230px;display:block}
code{background:#f6f6f6;padding:1px 4px}
"""


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    _plt().close(fig)


def _systems(metrics: dict) -> dict[str, dict]:
    return {OURS: metrics["codec"], **metrics["baselines"]}


def _bitrate_ticks(ax, bitrates: list[float]) -> None:
    """Readable log-axis ticks (250, 500, 1k, 2k, ...) instead of overlapping minor labels."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    if not bitrates:
        return
    lo, hi = min(bitrates) / 1.5, max(bitrates) * 1.5
    ticks = [t for t in (125 * 2.0**k for k in range(16)) if lo <= t <= hi] or [min(bitrates)]
    ax.set_xlim(lo, hi)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k" if v >= 1000 else f"{v:g}"))


def plot_bitrate_quality(metrics: dict, path: Path) -> bool:
    """Scatter of each quality metric against bitrate (log axis), ours highlighted. False if nothing to plot."""
    systems = _systems(metrics)
    keys = [k for k in QUALITY_PLOTS if any(k in m for m in systems.values())]
    if not keys:
        return False
    plt = _plt()
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        title, higher, _ = COLUMNS[key]
        for name, m in systems.items():
            if key in m and "bitrate" in m:
                ours = name == OURS
                ax.scatter(
                    m["bitrate"],
                    m[key],
                    s=90 if ours else 45,
                    marker="*" if ours else "o",
                    color="C3" if ours else "C0",
                    zorder=3,
                )
                ax.annotate(
                    name, (m["bitrate"], m[key]), textcoords="offset points", xytext=(5, 4), fontsize=8
                )
        if key in ("wer", "cer") and key in metrics.get("reference", {}):
            ax.axhline(metrics["reference"][key], color="gray", ls="--", lw=1, label="original audio")
            ax.legend(fontsize=7, loc="best")
        ax.set_xscale("log")
        _bitrate_ticks(ax, [m["bitrate"] for m in systems.values() if "bitrate" in m])
        ax.set_xlabel("bitrate (bit/s)")
        ax.set_ylabel(title + (" (higher better)" if higher else " (lower better)"))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.suptitle("Quality versus bitrate (same clips, same metrics)")
    fig.tight_layout()
    _save(fig, path)
    return True


def plot_slot_usage(stats: SlotStatistics, path: Path) -> None:
    """Bar chart of usage and normalised entropy per slot, and every slot's rank-frequency curve (log-log)."""
    plt = _plt()
    g = len(stats.slot_sizes)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 3.8), gridspec_kw={"width_ratios": [1.3, 1]})
    x = np.arange(g)
    max_bits = np.log2(np.maximum(np.asarray(stats.slot_sizes, dtype=float), 2))
    ax.bar(x - 0.2, stats.usage, width=0.4, label="usage (fraction of values seen)", color="C0")
    ax.bar(
        x + 0.2,
        np.asarray(stats.entropy_bits) / max_bits,
        width=0.4,
        label="entropy / log2(slot size)",
        color="C1",
    )
    ax.set_xticks(x, [str(i) for i in x], fontsize=8)
    ax.set_xlabel("token slot")
    ax.set_ylim(0, 1.25)
    ax.legend(fontsize=8, loc="upper center", ncol=2)
    ax.set_title(f"Token-slot usage over {stats.frames} frames", fontsize=10)
    cmap = plt.get_cmap("viridis")
    for i, cnt in enumerate(stats.counts):
        nz = np.sort(cnt[cnt > 0])[::-1]
        if nz.size:
            bx.plot(
                np.arange(1, nz.size + 1),
                nz / nz.sum(),
                color=cmap(i / max(g - 1, 1)),
                lw=1,
                label=f"slot {i}",
            )
    bx.set_xscale("log")
    bx.set_yscale("log")
    bx.set_xlabel("value rank within slot")
    bx.set_ylabel("probability")
    bx.set_title("Rank-frequency per slot (flat = uniform use)", fontsize=10)
    bx.legend(fontsize=6, ncol=2, loc="lower left") if g <= 20 else None
    fig.subplots_adjust(wspace=0.25)
    _save(fig, path)


def _log_mel(audio: np.ndarray, sr: int) -> np.ndarray:
    import torch
    import torchaudio

    y = resample(np.asarray(audio, dtype=np.float32), sr, EVAL_SAMPLING_RATE)
    mel = torchaudio.transforms.MelSpectrogram(EVAL_SAMPLING_RATE, n_fft=1024, hop_length=160, n_mels=80)
    return (10 * torch.log10(mel(torch.from_numpy(y)).clamp_min(1e-8))).numpy()


def plot_spectrograms(item: dict, path: Path) -> None:
    """Log-mel spectrograms of one clip: original, ours, then each baseline (shared colour scale)."""
    plt = _plt()
    clip = item["clip"]
    panels = [("original", clip.audio, clip.sampling_rate)] + [
        (n, a, s) for n, (a, s) in item["outputs"].items()
    ]
    specs = [(n, _log_mel(a, s)) for n, a, s in panels]
    vmax = max(float(s.max()) for _, s in specs)
    fig, axes = plt.subplots(len(specs), 1, figsize=(10, 1.7 * len(specs)), sharex=True, squeeze=False)
    for ax, (name, spec) in zip(axes[:, 0], specs):
        ax.imshow(
            spec,
            origin="lower",
            aspect="auto",
            vmin=vmax - 80,
            vmax=vmax,
            cmap="magma",
            extent=[0, spec.shape[1] * 160 / EVAL_SAMPLING_RATE, 0, 80],
        )
        ax.set_ylabel(
            "codec (ours)" if name == "codec" else name, fontsize=9, rotation=0, ha="right", va="center"
        )
        ax.set_yticks([])
    axes[-1, 0].set_xlabel("seconds (log-mel, 80 bands up to 8 kHz)")
    fig.suptitle(clip.clip_id, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def _fmt(key: str, value) -> str:
    return COLUMNS[key][2].format(value) if key in COLUMNS else f"{value:.4g}"


def _table(metrics: dict) -> str:
    systems = _systems(metrics)
    ref = metrics.get("reference", {})
    keys = [k for k in COLUMNS if any(k in m for m in systems.values())]
    best = {}
    for k in keys:
        vals = [m[k] for m in systems.values() if k in m]
        if len(vals) > 1 and k not in ("bitrate", "tokens_per_second", "frame_rate"):
            best[k] = max(vals) if COLUMNS[k][1] else min(vals)
    head = "".join(f"<th>{html.escape(COLUMNS[k][0])} {'↑' if COLUMNS[k][1] else '↓'}</th>" for k in keys)
    rows = []
    for name, m in systems.items():
        cells = []
        for k in keys:
            if k in m:
                cls = ' class="best"' if best.get(k) == m[k] else ""
                cells.append(f"<td{cls}>{_fmt(k, m[k])}</td>")
            else:
                cells.append('<td class="muted">–</td>')
        tr = ' class="ours"' if name == OURS else ""
        rows.append(f"<tr{tr}><td>{html.escape(name)}</td>{''.join(cells)}</tr>")
    ref_cells = "".join(
        f"<td>{_fmt(k, ref[k])}</td>" if k in ref else '<td class="muted">–</td>' for k in keys
    )
    rows.append(f"<tr><td>original audio</td>{ref_cells}</tr>")
    return f"<div class='scroll'><table><tr><th>system</th>{head}</tr>{''.join(rows)}</table></div>"


def _skipped(metrics: dict) -> str:
    items = []
    for system, reasons in metrics.get("skipped", {}).items():
        for key, reason in reasons.items():
            items.append(
                f"<li><code>{html.escape(system)}</code> / <code>{html.escape(key)}</code>: {html.escape(reason)}</li>"
            )
    if not items:
        return "<p>Every metric ran.</p>"
    return (
        "<details><summary>Metrics not computed (with the reason)</summary><ul>"
        + "".join(items)
        + "</ul></details>"
    )


def _clip_section(metrics: dict, item: dict, out_dir: Path) -> str:
    from .evaluate_codec import save_report_audio

    clip = item["clip"]
    audio_paths = save_report_audio(out_dir, item)
    png = Path("plots") / f"spec_{clip.clip_id}.png"
    plot_spectrograms(item, out_dir / png)
    row = next((r for r in metrics["clips"] if r["clip_id"] == clip.clip_id), {})
    systems = {"codec": row.get("codec", {}), **row.get("baselines", {})}
    players = [
        f'<div>original<audio controls preload="metadata" src="{html.escape(audio_paths["original"])}"></audio></div>'
    ]
    for name in item["outputs"]:
        s = systems.get(name, {})
        label = "codec (ours)" if name == "codec" else name
        detail = ", ".join(f"{COLUMNS[k][0]} {_fmt(k, s[k])}" for k in ("pesq_wb", "stoi", "wer") if k in s)
        players.append(
            f'<div>{html.escape(label)} <span class="muted">{html.escape(detail)}</span>'
            f'<audio controls preload="metadata" src="{html.escape(audio_paths[name])}"></audio></div>'
        )
    lines = []
    if clip.text:
        lines.append(f"<p><b>text:</b> {html.escape(clip.text)}</p>")
    trans = [("original", row.get("reference", {}).get("transcript"))] + [
        (n, s.get("transcript")) for n, s in systems.items()
    ]
    tr = "".join(
        f"<tr><td>{html.escape(n)}</td><td style='text-align:left'>{html.escape(t)}</td></tr>"
        for n, t in trans
        if t is not None
    )
    if tr:
        lines.append(f"<details><summary>ASR transcripts</summary><table>{tr}</table></details>")
    return (
        f'<div class="clip"><h3>{html.escape(clip.clip_id)} <span class="muted">({clip.duration:.1f} s)</span></h3>'
        + "".join(lines)
        + f'<div class="players">{"".join(players)}</div><img src="{png}" alt="spectrograms"></div>'
    )


def write_report(
    metrics: dict, out_dir: str | os.PathLike, report_audio: list[dict], stats: SlotStatistics
) -> Path:
    """Write report.html with its PNGs and WAVs into `out_dir`.

    Args:
        metrics: the metrics.json dictionary.
        out_dir: output folder (report.html, plots/, audio/).
        report_audio: per report clip {"clip": EvalClip, "outputs": {system: (audio, rate)}, "codes": [T, G]}.
        stats: token-slot statistics of the codec.
    """
    out_dir = Path(out_dir)
    info = metrics.get("codec_info", {})
    settings = metrics.get("settings", {})
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>jepatok codec evaluation</title><style>{_CSS}</style></head><body>"
    ]
    parts.append("<h1>Codec evaluation</h1>")
    parts.append(
        f"<p class='sub'>codec <code>{html.escape(str(info.get('spec', '')))}</code> at {info.get('sampling_rate', '?')} Hz"
        f" · {settings.get('num_clips', '?')} clips, {settings.get('audio_seconds', 0):.1f} s of audio"
        f" · scored at {settings.get('eval_sampling_rate', EVAL_SAMPLING_RATE)} Hz"
        f" · ASR: {html.escape(str(settings.get('asr')))} (WER against {html.escape(str(settings.get('wer_reference', '')))})</p>"
    )
    parts.append("<h2>Metrics</h2>" + _table(metrics))
    parts.append(
        "<p class='muted'>Means over clips (WER/CER corpus-level). Best value per column in green. "
        "Rates: encode/decode seconds per audio second on "
        + html.escape(str(settings.get("device", "cpu")))
        + ".</p>"
    )
    parts.append(_skipped(metrics))
    if plot_bitrate_quality(metrics, out_dir / "plots" / "bitrate_quality.png"):
        parts.append(
            "<h2>Quality versus bitrate</h2><img src='plots/bitrate_quality.png' alt='bitrate vs quality'>"
        )
    plot_slot_usage(stats, out_dir / "plots" / "token_slots.png")
    tok = metrics.get("tokens", {})
    parts.append(
        "<h2>Token-slot usage</h2>"
        f"<p>{tok.get('frames', 0)} frames; mean usage {np.mean(stats.usage):.1%}, mean entropy "
        f"{np.mean(stats.entropy_bits):.2f} bits/slot; entropy bitrate {tok.get('entropy_bitrate', float('nan')):.0f} bit/s "
        f"(nominal {metrics['codec'].get('bitrate', float('nan')):.0f}).</p><img src='plots/token_slots.png' alt='token slots'>"
    )
    if report_audio:
        parts.append("<h2>Clips</h2>")
        parts.extend(_clip_section(metrics, item, out_dir) for item in report_audio)
    parts.append(
        "<p class='muted'>Full per-clip numbers: <a href='metrics.json'>metrics.json</a>.</p></body></html>"
    )
    path = out_dir / "report.html"
    tmp = path.with_name(f".report.html.tmp-{os.getpid()}")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    os.replace(tmp, path)
    return path
