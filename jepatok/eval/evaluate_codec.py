"""`jepatok eval-codec`: reconstruct every clip with the codec and the baselines, score all of them with
the same metrics, and write `DIR/metrics.json` and `DIR/report.html`.

metrics.json (other tools read it; keys are only ever added):
    {"codec": MEANS, "baselines": {"codec2-700C": MEANS, ...},
     "reference": {"wer", "cer", "distillmos", "dnsmos"},   # the original audio through the same ASR / MOS models
     "clips": [per-clip rows], "skipped": {system: {metric: reason}},
     "tokens": per-slot usage/entropy, "codec_info": {...}, "settings": {...}}
MEANS keys: stoi, pesq_wb, pesq_nb, si_sdr, mel_distance, mcd, f0_gpe, vde, wer, cer, speaker_sim, visqol, distillmos,
dnsmos, bitrate, tokens_per_second, frame_rate, encode_rtf, decode_rtf (+ codebook_usage,
codebook_entropy for the codec). A metric that did not run for a system is absent from its MEANS and
listed with its reason under skipped[system]. WER/CER are corpus-level (edits over all reference words);
other metrics are means over the clips that scored.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data.audio import resample, write_wav
from .asr import error_rates
from .baselines import BaselineCodec, parse_baselines
from .clips import EvalClip, load_clips
from .metrics import EVAL_SAMPLING_RATE, MetricUnavailable
from .scoring import ASR_KEYS, MEAN_KEYS, MODEL_KEYS, SIGNAL_KEYS, Scorers
from .tokens import slot_statistics

METRICS_FORMAT_VERSION = 1


def load_codec(spec: str, device: str = "cpu", seed: int = 0):
    """A `JepaCodecModel` in eval mode: `from_pretrained(spec)` for a directory, else a preset name built
    with random weights under `torch.manual_seed(seed)`.

    Args:
        spec: checkpoint directory or preset name (tiny, small, paper).
        device: torch device.
        seed: seed for a preset's random weights.
    """
    from ..tokenizer.configuration import PRESETS, JepaCodecConfig
    from ..tokenizer.modeling import JepaCodecModel

    if os.path.isdir(spec):
        model = JepaCodecModel.from_pretrained(spec)
    elif spec in PRESETS:
        torch.manual_seed(seed)
        model = JepaCodecModel(JepaCodecConfig.from_preset(spec))
    else:
        raise ValueError(
            f"--codec {spec!r} is neither a checkpoint directory nor a preset ({sorted(PRESETS)})"
        )
    return model.eval().to(device)


class CodecSystem:
    """Our codec behind the feature extractor / encode / decode / trim_audio API.

    Args:
        model: a JepaCodecModel.
        chunk_length_s: passed to encode/decode for long clips (None = one pass).
    """

    name = "codec"

    def __init__(self, model, chunk_length_s: float | None = None):
        from ..tokenizer.feature_extraction import JepaCodecFeatureExtractor

        self.model = model
        self.config = model.config
        self.sampling_rate = int(model.config.sampling_rate)
        self.feature_extractor = JepaCodecFeatureExtractor.from_codec_config(model.config)
        self.chunk_length_s = chunk_length_s

    @torch.inference_mode()
    def roundtrip(self, audio: np.ndarray, sampling_rate: int) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Returns (audio [L'] at the codec rate, codes [T, G], encode seconds, decode seconds)."""
        inputs = self.feature_extractor(audio, sampling_rate=sampling_rate, return_tensors="pt")
        device = self.model.device
        values = inputs["input_values"].to(device)
        mask = inputs["padding_mask"].to(device)
        _sync(device)
        t0 = time.perf_counter()
        enc = self.model.encode(values, mask, chunk_length_s=self.chunk_length_s)
        _sync(device)
        t1 = time.perf_counter()
        dec = self.model.decode(
            enc.audio_codes, frame_mask=enc.frame_mask, chunk_length_s=self.chunk_length_s
        )
        _sync(device)
        t2 = time.perf_counter()
        n = int(inputs["padding_mask"][0].sum())
        wave = self.model.trim_audio(dec.audio_values, [n])[0].reshape(-1).float().cpu().numpy()
        codes = enc.audio_codes[0][enc.frame_mask[0].bool()].cpu().numpy()  # [T, G]
        return wave, codes, t1 - t0, t2 - t1


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _fit(audio: np.ndarray, sr: int, length: int) -> np.ndarray:
    """Resample to EVAL_SAMPLING_RATE and pad/cut to `length` samples."""
    y = resample(np.asarray(audio, dtype=np.float32), sr, EVAL_SAMPLING_RATE)
    return np.pad(y, (0, max(0, length - y.size)))[:length]


def _per_clip_rates(reference: str, hypothesis: str | None) -> dict[str, float]:
    if hypothesis is None or not reference:
        return {}
    try:
        r = error_rates([reference], [hypothesis])
    except MetricUnavailable:
        return {}
    return {"wer": r.wer, "cer": r.cer}


def _means(rows: list[dict], keys: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for k in keys:
        vals = [r[k] for r in rows if k in r]
        if vals:
            out[k] = float(np.mean(vals))
    return out


class _SystemAccumulator:
    """Per-system rows, transcripts and timings for the means."""

    def __init__(self):
        self.rows: list[dict] = []
        self.skipped: dict[str, str] = {}
        self.refs: list[str] = []
        self.hyps: list[str] = []
        self.encode_s = 0.0
        self.decode_s = 0.0
        self.audio_s = 0.0

    def add(
        self, clip: EvalClip, row: dict, skipped: dict[str, str], transcript: str | None, asr_reference: str
    ):
        self.rows.append(row)
        for k, v in skipped.items():
            self.skipped.setdefault(k, v)
        if transcript is not None and asr_reference:
            self.refs.append(asr_reference)
            self.hyps.append(transcript)

    def means(self, unavailable: dict[str, str]) -> tuple[dict, dict]:
        means = _means(self.rows, SIGNAL_KEYS + MODEL_KEYS)
        skipped = dict(unavailable)
        if self.refs:
            try:
                r = error_rates(self.refs, self.hyps)
                means.update(wer=r.wer, cer=r.cer)
            except MetricUnavailable as err:
                skipped.update(wer=str(err), cer=str(err))
        elif "wer" not in skipped:
            skipped.update(wer="no clip has a reference transcript", cer="no clip has a reference transcript")
        if self.audio_s > 0:
            means["encode_rtf"] = self.encode_s / self.audio_s
            means["decode_rtf"] = self.decode_s / self.audio_s
        for k in SIGNAL_KEYS + MODEL_KEYS:
            if k not in means and k not in skipped:
                skipped[k] = self.skipped.get(k, "no clip could be scored")
        return means, skipped


def evaluate_codec(
    codec,
    clips: list[EvalClip],
    out_dir: str | os.PathLike,
    baselines: list[BaselineCodec] | None = None,
    scorers: Scorers | None = None,
    report_clips: int = 4,
    chunk_length_s: float | None = None,
    codec_spec: str = "",
    write_report: bool = True,
    progress: bool = True,
    held_out_voices: list[str] | None = None,
) -> dict:
    """Reconstruct and score every clip with the codec and each baseline; write metrics.json (+ report).

    Args:
        codec: a JepaCodecModel (eval mode).
        clips: the evaluation clips.
        out_dir: output directory (created).
        baselines: baseline codecs (run in the same loop, on the same clips).
        scorers: metric scorers (default: everything available, bundled ASR).
        report_clips: clips whose audio and spectrograms go into the report.
        chunk_length_s: encode/decode window for long clips.
        codec_spec: how the codec was named on the command line (recorded).
        write_report: also write report.html with its PNGs and WAVs.
        held_out_voices: voices held out of the codec's training: metrics.json then gets `voice_groups`
            (`voice_group_means`: every system's means on those voices' clips and on the rest).
        progress: show a progress bar.

    Returns:
        The metrics dictionary written to metrics.json.
    """
    if not clips:
        raise ValueError("no clips to evaluate; expected at least one")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scorers = scorers or Scorers()
    baselines = list(baselines or [])
    system = CodecSystem(codec, chunk_length_s)
    skipped: dict[str, dict[str, str]] = {}
    runnable = []
    for b in baselines:
        reason = b.unavailable_reason()
        if reason:
            skipped[b.name] = {"all": reason}
        else:
            runnable.append(b)
    # One untimed pass (<= 1 s of the first clip) so lazy initialisation does not count as encode time.
    first = clips[0]
    system.roundtrip(first.audio[: first.sampling_rate], first.sampling_rate)
    acc = {name: _SystemAccumulator() for name in ["codec"] + [b.name for b in runnable]}
    ref_acc = _SystemAccumulator()
    all_codes, clip_rows, report_audio = [], [], []
    for index, clip in enumerate(tqdm(clips, desc="eval-codec", disable=not progress)):
        ref16 = _fit(clip.audio, clip.sampling_rate, int(round(clip.duration * EVAL_SAMPLING_RATE)))
        ref_scores = scorers.no_reference(ref16)
        asr_reference = clip.text or (ref_scores.transcript or "")
        ref_row = {**ref_scores.values, **_per_clip_rates(clip.text, ref_scores.transcript)}
        if ref_scores.transcript is not None:
            ref_row["transcript"] = ref_scores.transcript
        ref_acc.add(clip, ref_row, ref_scores.skipped, ref_scores.transcript, clip.text)
        outputs: dict[str, tuple[np.ndarray, int]] = {}
        wave, codes, enc_s, dec_s = system.roundtrip(clip.audio, clip.sampling_rate)
        all_codes.append(codes)
        outputs["codec"] = (wave, system.sampling_rate)
        timings = {"codec": (enc_s, dec_s)}
        for b in runnable:
            res = b.roundtrip(clip.audio, clip.sampling_rate)
            outputs[b.name] = (res.audio, clip.sampling_rate)
            timings[b.name] = (res.encode_seconds, res.decode_seconds)
        row = {"clip_id": clip.clip_id, "source": clip.source, "duration": clip.duration, "text": clip.text}
        if clip.speaker:
            row["speaker"] = clip.speaker
        row["reference"] = ref_row
        row["baselines"] = {}
        for name, (audio, sr) in outputs.items():
            scores = scorers.score_pair(ref16, _fit(audio, sr, ref16.size))
            srow = dict(scores.values)
            srow.update(_per_clip_rates(asr_reference, scores.transcript))
            if scores.transcript is not None:
                srow["transcript"] = scores.transcript
            srow["encode_seconds"], srow["decode_seconds"] = timings[name]
            if scores.skipped:
                srow["skipped"] = scores.skipped
            a = acc[name]
            a.add(clip, srow, scores.skipped, scores.transcript, asr_reference)
            a.encode_s += timings[name][0]
            a.decode_s += timings[name][1]
            a.audio_s += clip.duration
            if name == "codec":
                row["codec"] = srow
            else:
                row["baselines"][name] = srow
        clip_rows.append(row)
        if index < report_clips:
            report_audio.append({"clip": clip, "outputs": outputs, "codes": codes})

    cfg = codec.config
    unavailable = dict(scorers.unavailable)
    codec_means, skipped["codec"] = acc["codec"].means(unavailable)
    stats = slot_statistics(all_codes, list(cfg.slot_sizes))
    codec_means.update(
        bitrate=float(cfg.bitrate),
        tokens_per_second=float(cfg.tokens_per_second),
        frame_rate=float(cfg.frame_rate),
        codebook_usage=stats.mean_usage,
        codebook_entropy=stats.mean_entropy_bits,
    )
    baseline_means = {}
    for b in runnable:
        means, skipped[b.name] = acc[b.name].means(unavailable)
        means.update(bitrate=b.bitrate, frame_rate=b.frame_rate)
        skipped[b.name]["tokens_per_second"] = "not a token codec (a packed bitstream)"
        baseline_means[b.name] = means
    reference = _means(ref_acc.rows, ("distillmos", "dnsmos"))
    if ref_acc.refs:
        r = error_rates(ref_acc.refs, ref_acc.hyps)
        reference.update(wer=r.wer, cer=r.cer)
    else:
        reason = unavailable.get("wer") or "no clip has a reference transcript"
        skipped["reference"] = {"wer": reason, "cer": reason}
    wer_reference = (
        "transcripts" if all(c.text for c in clips) else "transcripts where given, else ASR of the original"
    )
    metrics = {
        "format_version": METRICS_FORMAT_VERSION,
        "codec": _order(codec_means),
        "baselines": {k: _order(v) for k, v in baseline_means.items()},
        "reference": reference,
        "clips": clip_rows,
        "skipped": skipped,
        "tokens": stats.to_dict(float(cfg.frame_rate)),
        "codec_info": _codec_info(codec, codec_spec),
        "settings": {
            "eval_sampling_rate": EVAL_SAMPLING_RATE,
            "asr": scorers.asr_name,
            "wer_reference": wer_reference,
            "num_clips": len(clips),
            "audio_seconds": float(sum(c.duration for c in clips)),
            "chunk_length_s": chunk_length_s,
            "device": str(codec.device),
        },
    }
    if held_out_voices:
        metrics["voice_groups"] = voice_group_means(metrics, held_out_voices)
    _write_json(out_dir / "metrics.json", metrics)
    if write_report:
        from .report import write_report as _write_report

        _write_report(metrics, out_dir, report_audio, stats)
    return metrics


GROUP_KEYS = ("stoi", "pesq_wb", "wer", "mel_distance", "f0_gpe")


def voice_of(speaker: str, voices: set[str] | None = None) -> str:
    """The voice behind a speaker label: the corpus builder names derived speakers VOICE-N, so a trailing
    "-<digits>" is dropped unless the label itself is one of `voices`."""
    if voices is not None and speaker in voices:
        return speaker
    head, _, tail = speaker.rpartition("-")
    return head if head and tail.isdigit() else speaker


def voice_group_means(metrics: dict, held_out_voices: list[str]) -> dict:
    """Per-system means of STOI / PESQ-WB / WER / mel distance over the clips of held-out voices and over the
    rest (`{"held_out_voices", "held_out": {"clips", system: means}, "seen": {...}}`); per-clip means, so a
    group's WER weighs clips equally (the headline WER is corpus-level)."""
    held = set(held_out_voices)
    names = ["codec", *metrics["baselines"]]
    result: dict = {"held_out_voices": sorted(held)}
    for group, keep in (("held_out", True), ("seen", False)):
        rows = [r for r in metrics["clips"] if (voice_of(r.get("speaker", ""), held) in held) == keep]
        entry: dict = {"clips": len(rows)}
        for name in names:
            per = [r["codec"] if name == "codec" else r["baselines"].get(name, {}) for r in rows]
            entry[name] = {
                k: float(np.mean(vals))
                for k in GROUP_KEYS
                if (vals := [p[k] for p in per if isinstance(p.get(k), (int, float))])
            }
        result[group] = entry
    return result


def read_held_out_voices(spec: str | None, data: str | os.PathLike) -> list[str] | None:
    """`--held-out-voices`: "none", a comma list, a file with one voice per line, or None (then
    DATA/held_out_voices.txt, which `jepatok build-corpus` writes, when present)."""
    if spec is None:
        auto = Path(data) / "held_out_voices.txt"
        spec = str(auto) if auto.is_file() else "none"
    if spec == "none":
        return None
    path = Path(spec)
    voices = path.read_text().split() if path.is_file() else [v.strip() for v in spec.split(",") if v.strip()]
    if not voices:
        raise ValueError(
            f"--held-out-voices {spec!r} names no voice; expected a comma list or a file of voices"
        )
    return voices


def _order(means: dict) -> dict:
    keys = [k for k in MEAN_KEYS if k in means] + sorted(k for k in means if k not in MEAN_KEYS)
    return {k: means[k] for k in keys}


def _codec_info(codec, spec: str) -> dict:
    info: dict = {"spec": spec, "sampling_rate": int(codec.config.sampling_rate)}
    try:
        from ..tokenizer.modeling import codec_identity

        info.update(codec_identity(codec))
    except ImportError:  # identity helper not available in this build
        pass
    return info


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, default=_json_default)
        fh.write("\n")
    os.replace(tmp, path)


def _json_default(obj):
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def save_report_audio(out_dir: Path, item: dict) -> dict[str, str]:
    """Write one report clip's WAVs (original + every system) under out_dir/audio/<clip_id>/; returns
    system -> path relative to out_dir."""
    clip: EvalClip = item["clip"]
    rel = {}
    folder = Path("audio") / clip.clip_id
    rel["original"] = str(folder / "original.wav")
    write_wav(out_dir / rel["original"], clip.audio, clip.sampling_rate)
    for name, (audio, sr) in item["outputs"].items():
        rel[name] = str(folder / f"{name}.wav")
        write_wav(out_dir / rel[name], audio, sr)
    return rel


# --- command line -------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--codec", required=True, help="JepaCodecModel checkpoint directory or preset name (tiny/small/paper)"
    )
    parser.add_argument(
        "--data",
        required=True,
        help="audio folder (metadata.csv transcripts), saved dataset dir or dataset name",
    )
    parser.add_argument(
        "--out", required=True, help="output directory for metrics.json, report.html, PNGs and WAVs"
    )
    parser.add_argument(
        "--baselines",
        default=None,
        help="comma-separated baselines: codec2-<mode> (700C, 1200, 3200, ...), opus-<kbps>k; 'none' for none "
        "(default: codec2-700C,codec2-1200,codec2-3200,opus-6k)",
    )
    parser.add_argument(
        "--asr",
        default=None,
        help="faster-whisper model dir or name; default the bundled Whisper tiny.en; 'none' disables",
    )
    parser.add_argument(
        "--max-clips", type=int, default=None, help="evaluate at most N clips (spread evenly over the data)"
    )
    parser.add_argument(
        "--split", default=None, help="folder/dataset split (default: test when present; 'all' for a folder)"
    )
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated metrics not to compute (e.g. visqol,dnsmos; 'asr' for wer+cer)",
    )
    parser.add_argument(
        "--report-clips", type=int, default=4, help="clips with spectrograms and audio players in the report"
    )
    parser.add_argument(
        "--chunk-length-s",
        type=float,
        default=None,
        help="encode/decode long clips in windows of this many seconds",
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for a preset codec's random weights")
    parser.add_argument("--no-report", action="store_true", help="write metrics.json only")
    parser.add_argument(
        "--held-out-voices",
        default=None,
        help="voices held out of training (comma list or file; 'none'): means per group in metrics.json "
        "(default: DATA/held_out_voices.txt when present, as build-corpus writes it)",
    )


def run(args: argparse.Namespace) -> int:
    if args.max_clips is not None and args.max_clips <= 0:
        raise ValueError(f"--max-clips must be positive, got {args.max_clips}")
    if args.report_clips < 0:
        raise ValueError(f"--report-clips must be >= 0, got {args.report_clips}")
    baselines = parse_baselines(args.baselines)
    held_out = read_held_out_voices(args.held_out_voices, args.data)
    clips = load_clips(args.data, max_clips=args.max_clips, split=args.split)
    codec = load_codec(args.codec, device=args.device, seed=args.seed)
    scorers = Scorers(asr=args.asr, skip=args.skip.split(","), device=args.device)
    metrics = evaluate_codec(
        codec,
        clips,
        args.out,
        baselines=baselines,
        scorers=scorers,
        report_clips=args.report_clips,
        chunk_length_s=args.chunk_length_s,
        codec_spec=args.codec,
        write_report=not args.no_report,
        held_out_voices=held_out,
    )
    _print_summary(metrics, args.out)
    return 0


def _print_summary(metrics: dict, out: str) -> None:
    systems = {"codec": metrics["codec"], **metrics["baselines"]}
    keys = ["bitrate", "pesq_wb", "stoi", "si_sdr", "mel_distance", "f0_gpe", "wer", "speaker_sim"]
    print("system".ljust(14) + "".join(k.rjust(13) for k in keys))
    for name, m in systems.items():
        print(name.ljust(14) + "".join((f"{m[k]:.3f}" if k in m else "-").rjust(13) for k in keys))
    ref = metrics["reference"]
    if "wer" in ref:
        print(f"original audio: WER {ref['wer']:.3f}  CER {ref['cer']:.3f}")
    groups = metrics.get("voice_groups")
    if groups:
        print(f"per-clip means by voice group (held out of training: {', '.join(groups['held_out_voices'])})")
        print(
            "system".ljust(14)
            + "group".ljust(10)
            + "clips".rjust(6)
            + "".join(k.rjust(13) for k in GROUP_KEYS)
        )
        for name in systems:
            for group in ("held_out", "seen"):
                g = groups[group]
                cells = "".join((f"{g[name][k]:.3f}" if k in g[name] else "-").rjust(13) for k in GROUP_KEYS)
                print(name.ljust(14) + group.ljust(10) + str(g["clips"]).rjust(6) + cells)
    print(
        f"wrote {Path(out) / 'metrics.json'}"
        + ("" if not (Path(out) / "report.html").exists() else f" and {Path(out) / 'report.html'}")
    )


# Keys not otherwise referenced here, re-exported for readers of this module.
__all__ = ["ASR_KEYS", "CodecSystem", "MEAN_KEYS", "add_arguments", "evaluate_codec", "load_codec", "run"]
