"""`jepatok build-corpus`: an offline multi-speaker English speech corpus synthesized on this machine.

Output (the contract other tools read)::

    DIR/corpus.json                  build settings (seed, voices, text fingerprint, ...): a re-run must match
    DIR/held_out_voices.txt          voices that appear in validation/test only, one per line
    DIR/{train,validation,test}/     audio folders: NNNNNN-<speaker>.wav + metadata.csv
                                     (file_name,text,speaker,duration,voice)

`datasets.load_dataset("audiofolder", data_dir=DIR)` gives the three splits. Sentences come from
`jepatok.data.text_pool` and are split by sentence (no sentence is in two splits); speakers are voices
(`jepatok.data.voices`) times `variants_per_voice` derived speakers, each with its own pitch and
formant warp, plus per-utterance tempo/pitch jitter, all drawn from the seed.

The plan is prefix-stable: utterance i of a split depends only on (seed, split, i), so a larger
`--hours` extends an existing corpus, a re-run skips files that exist, and an interrupted run resumes.
WAVs are written atomically; metadata.csv is rebuilt from the files on disk at the end of each split.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import multiprocessing as mp
import os
import random
import re
import resource
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from jepatok.data.text_pool import TEXT_SOURCES, build_text_pool, split_sentences
from jepatok.data.voices import VOICES, SynthesisError, available_voices, get_voice, synthesize

SPLITS = ("train", "validation", "test")
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
WORDS_PER_SECOND = 3.0  # fitted on built corpora (silence trimmed, default weights); sizes the plan only
_FILE_RE = re.compile(r"^(\d{6,})-.+\.wav$")


@dataclass(frozen=True)
class Utterance:
    """One planned file: what to say, with which voice and variation."""

    split: str
    index: int
    text: str
    voice: str
    variant: int  # derived speaker of the voice
    tempo: float  # speaking-rate factor (engine-native where supported)
    pitch: float  # F0 factor (engine-native where supported)
    warp: float  # resampling warp: pitch and formants x warp, duration / warp
    gain: float  # peak level in (0, 1)

    @property
    def speaker(self) -> str:
        return f"{self.voice}-{self.variant}"

    @property
    def file_name(self) -> str:
        return f"{self.index:06d}-{self.speaker}.wav"


@dataclass
class CorpusSettings:
    """Everything that decides the corpus content (stored as DIR/corpus.json; hours and jobs are not)."""

    seed: int = 0
    voices: list[str] = field(default_factory=list)
    held_out_voices: list[str] = field(default_factory=list)
    sampling_rate: int = 16000
    variants_per_voice: int = 4
    split_fractions: list[float] = field(default_factory=lambda: [0.9, 0.05, 0.05])
    text_sources: list[str] = field(default_factory=lambda: list(TEXT_SOURCES))
    text_file: str | None = None
    grammar_sentences: int = 20000
    text_fingerprint: str = ""
    voice_weights: dict[str, float] = field(default_factory=dict)  # the plan depends on them
    format_version: int = FORMAT_VERSION


def speaker_profile(voice: str, variant: int, seed: int) -> tuple[float, float]:
    """(pitch factor, warp factor) of a derived speaker; variant 0 is the voice as shipped."""
    if variant == 0:
        return 1.0, 1.0
    rng = random.Random(f"speaker-{seed}-{voice}-{variant}")
    return rng.uniform(0.85, 1.2), rng.uniform(0.92, 1.08)


def default_held_out(voices: Sequence[str], seed: int) -> list[str]:
    """About a fifth of the voices (at least one when there are two or more), chosen by the seed among
    voices whose engine keeps another voice in train (an unseen speaker, not an unseen synthesizer; the
    only neural voice is never held out unless every engine has a single voice)."""
    if len(voices) < 2:
        return []
    n = max(1, round(len(voices) / 5))
    engines: dict[str, list[str]] = defaultdict(list)
    for v in sorted(voices):
        engines[get_voice(v).engine].append(v)
    rng = random.Random(f"held-out-{seed}")
    held: list[str] = []
    for engine in rng.sample(sorted(engines), len(engines)):
        if len(held) < n and len(engines[engine]) >= 2:
            held.append(rng.choice(engines[engine]))
    if not held:
        held = rng.sample(sorted(voices), n)
    return sorted(held)


def plan_utterance(
    settings: CorpusSettings, split: str, index: int, sentences: Sequence[str], seen: Sequence[str]
) -> Utterance:
    """Utterance `index` of `split`; depends only on (settings, split, index), never on the plan length.

    Validation/test alternate seen voices (even index) and held-out voices (odd index) when any are held out.
    """
    rng = random.Random(f"utt-{settings.seed}-{split}-{index}")
    held = settings.held_out_voices
    pool = list(seen)
    if split != "train" and held and (index % 2 == 1 or not pool):
        pool = list(held)
    voice = rng.choices(pool, weights=[get_voice(v).weight for v in pool])[0]
    variant = rng.randrange(settings.variants_per_voice)
    base_pitch, warp = speaker_profile(voice, variant, settings.seed)
    return Utterance(
        split=split,
        index=index,
        text=sentences[index % len(sentences)],
        voice=voice,
        variant=variant,
        tempo=round(rng.uniform(0.88, 1.12), 4),
        pitch=round(base_pitch * rng.uniform(0.95, 1.05), 4),
        warp=round(warp, 4),
        gain=round(rng.uniform(0.5, 0.95), 4),
    )


def planned_count(hours: float, fraction: float, sentences: Sequence[str]) -> int:
    """Utterances needed for `hours * fraction` of audio, from the mean sentence length."""
    mean_words = sum(len(s.split()) for s in sentences) / len(sentences)
    seconds_per_utt = mean_words / WORDS_PER_SECOND
    return max(1, math.ceil(hours * 3600.0 * fraction / seconds_per_utt))


def _existing_files(split_dir: Path) -> dict[int, set[str]]:
    """index -> names of the `NNNNNN-<speaker>.wav` files present in `split_dir`."""
    found: dict[int, set[str]] = defaultdict(set)
    if split_dir.is_dir():
        for p in split_dir.iterdir():
            if m := _FILE_RE.match(p.name):
                found[int(m.group(1))].add(p.name)
    return found


def trim_silence(audio: np.ndarray, sr: int, threshold_db: float = -50.0, pad_s: float = 0.15) -> np.ndarray:
    """Cut leading/trailing stretches quieter than `threshold_db` below the peak, keeping `pad_s` of margin
    (engines add up to ~1 s of digital silence, which would only dilute the corpus)."""
    frame = max(1, sr // 100)  # 10 ms
    n = len(audio) // frame
    if n == 0:
        return audio
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1))
    loud = np.flatnonzero(rms > np.abs(audio).max() * 10 ** (threshold_db / 20.0))
    if loud.size == 0:
        return audio
    pad = int(pad_s * sr)
    return audio[max(0, loud[0] * frame - pad) : min(len(audio), (loud[-1] + 1) * frame + pad)]


def render(utt: Utterance, sampling_rate: int) -> np.ndarray:
    """Synthesize one utterance and apply warp, resampling to `sampling_rate` and gain. Returns [L] float32."""
    import soxr

    audio, sr = synthesize(utt.voice, utt.text, tempo=utt.tempo, pitch=utt.pitch, variant=utt.variant)
    audio = trim_silence(audio, sr)
    # Reading audio made at rate sr as if it were made at sr*warp scales pitch and formants by warp (a
    # different vocal tract) and duration by 1/warp. Rounded to 100 Hz: a simple, exactly stored ratio.
    warped_sr = int(round(sr * utt.warp / 100.0) * 100)
    audio = np.asarray(soxr.resample(audio, warped_sr, sampling_rate, quality="HQ"), dtype=np.float32)
    peak = float(np.abs(audio).max())
    return audio * (utt.gain / peak) if peak > 0 else audio


def _wav_duration(path: Path) -> float | None:
    """Duration in seconds of a readable, non-empty WAV; None when missing or broken."""
    try:
        info = sf.info(str(path))
    except Exception:  # a truncated or foreign file is rebuilt
        return None
    return info.frames / info.samplerate if info.frames > 0 else None


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished children (the TTS programs)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _work(job: tuple[str, dict, int]) -> dict:
    """Worker: make one file unless it exists. Returns a result row (also for skips and failures)."""
    from jepatok.data.audio import write_wav

    split_dir, utt_fields, sampling_rate = job
    utt = Utterance(**utt_fields)
    path = Path(split_dir) / utt.file_name
    row = {"split": utt.split, "index": utt.index, "voice": utt.voice, "skipped": False, "error": None}
    duration = _wav_duration(path)
    if duration is not None:
        return {**row, "skipped": True, "duration": duration, "cpu": 0.0}
    cpu0 = _cpu_seconds()
    try:
        audio = render(utt, sampling_rate)
    except (SynthesisError, ValueError) as err:
        return {**row, "error": str(err), "duration": 0.0, "cpu": 0.0}
    write_wav(path, audio, sampling_rate)
    cpu = _cpu_seconds() - cpu0
    return {**row, "duration": len(audio) / sampling_rate, "cpu": cpu}


def _init_worker() -> None:
    # A forked worker must not reuse an ONNX session created in the parent (its thread state is not
    # inherited); workers never run torch ops (soxr resamples), so fork is safe after torch was imported.
    from jepatok.data.voices import _piper_voice

    _piper_voice.cache_clear()


def _pool_context() -> mp.context.BaseContext:
    """fork where available: workers inherit the imported package (importing jepatok takes seconds)."""
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def write_metadata(split_dir: Path, utterances: Sequence[Utterance]) -> int:
    """Rebuild `split_dir/metadata.csv` atomically from the planned files that exist. Returns rows written."""
    rows = []
    for utt in utterances:
        duration = _wav_duration(split_dir / utt.file_name)
        if duration is not None:
            rows.append([utt.file_name, utt.text, utt.speaker, f"{duration:.4f}", utt.voice])
    split_dir.mkdir(parents=True, exist_ok=True)
    tmp = split_dir / f".metadata.csv.tmp-{os.getpid()}"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "text", "speaker", "duration", "voice"])
        writer.writerows(rows)
    os.replace(tmp, split_dir / "metadata.csv")
    return len(rows)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _check_settings(out: Path, settings: CorpusSettings) -> None:
    path = out / "corpus.json"
    if not path.exists():
        return
    stored = json.loads(path.read_text(encoding="utf-8"))
    if stored.get("format_version") not in SUPPORTED_VERSIONS:
        raise ValueError(f"{path}: format_version {stored.get('format_version')} not in {SUPPORTED_VERSIONS}")
    mine = asdict(settings)
    diff = {k: (stored.get(k), v) for k, v in mine.items() if stored.get(k) != v}
    if diff:
        details = "; ".join(f"{k}: existing {a!r} vs requested {b!r}" for k, (a, b) in sorted(diff.items()))
        raise ValueError(f"{out} holds a corpus built with other settings ({details}); use another --out")


@dataclass
class CorpusSummary:
    """What a build produced (also written to DIR/summary.json)."""

    hours_per_split: dict[str, float]  # split -> hours on disk
    hours_per_voice: dict[str, dict[str, float]]  # voice -> split -> hours
    utterances_per_split: dict[str, int]
    made: int  # files synthesized by this run
    skipped: int  # files that already existed
    failed: list[str]  # "split/index voice: error"
    unplanned: int  # WAVs in the split folders that the plan does not name (not in metadata.csv)
    cpu_seconds_per_audio_hour: dict[str, float]  # voice -> CPU s per hour of audio (this run's files)
    wall_seconds: float


def build_corpus(
    out: str | os.PathLike,
    hours: float,
    voices: Sequence[str] | None = None,
    held_out_voices: Sequence[str] | None = None,
    seed: int = 0,
    sampling_rate: int = 16000,
    jobs: int | None = None,
    text_sources: Sequence[str] = TEXT_SOURCES,
    text_file: str | os.PathLike | None = None,
    grammar_sentences: int = 20000,
    variants_per_voice: int = 4,
    split_fractions: Sequence[float] = (0.9, 0.05, 0.05),
    progress: bool = True,
) -> CorpusSummary:
    """Build (or extend, or resume) the corpus in `out`. See the module docstring for the layout.

    Args:
        out: output directory.
        hours: target hours of audio over all splits (split by `split_fractions`).
        voices: voice names (`jepatok.data.voices.VOICES`); default: every voice installed here.
        held_out_voices: voices kept out of train; default: about a fifth of `voices`, chosen by the seed.
        seed: decides sentences per split, voices, speakers and variation.
        sampling_rate: output rate of every WAV.
        jobs: worker processes (default: all cores); 1 runs in this process.
        text_sources: text pool sources ("gcide", "grammar"); ignored with `text_file`.
        text_file: one sentence per line, used instead of `text_sources`.
        grammar_sentences: sentences the grammar generator contributes.
        variants_per_voice: derived speakers per voice (variant 0 = the voice unchanged).
        split_fractions: (train, validation, test) shares of sentences and of hours.
        progress: show a tqdm progress bar.
    """
    from tqdm.auto import tqdm

    if not hours > 0:
        raise ValueError(f"hours must be > 0, got {hours}")
    if sampling_rate < 4000:
        raise ValueError(f"sampling_rate must be >= 4000 Hz, got {sampling_rate}")
    if variants_per_voice < 1:
        raise ValueError(f"variants_per_voice must be >= 1, got {variants_per_voice}")
    installed = available_voices()
    voices = list(dict.fromkeys(voices)) if voices else installed
    for name in voices:
        voice = get_voice(name)  # ValueError for an unknown name
        if name not in installed:
            raise ValueError(f"voice {name!r} is not installed here; install {voice.package} (make install)")
    held = sorted(held_out_voices) if held_out_voices is not None else default_held_out(voices, seed)
    if set(held) - set(voices):
        raise ValueError(f"held-out voices {sorted(set(held) - set(voices))} are not among --voices {voices}")
    seen = [v for v in voices if v not in held]
    if not seen:
        raise ValueError(f"every voice is held out ({held}); train needs at least one voice")

    pool = build_text_pool(text_sources, text_file=text_file, grammar_sentences=grammar_sentences, seed=seed)
    per_split = split_sentences(pool.sentences, split_fractions, seed=seed)
    settings = CorpusSettings(
        seed=seed, voices=sorted(voices), held_out_voices=held, sampling_rate=int(sampling_rate),
        variants_per_voice=variants_per_voice, split_fractions=[float(f) for f in split_fractions],
        text_sources=list(text_sources) if text_file is None else [], grammar_sentences=grammar_sentences,
        text_file=str(Path(text_file).resolve()) if text_file is not None else None,
        text_fingerprint=pool.fingerprint, voice_weights={v: get_voice(v).weight for v in sorted(voices)},
    )  # fmt: skip
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, settings)
    _write_json(out / "corpus.json", asdict(settings))
    (out / "held_out_voices.txt").write_text("".join(f"{v}\n" for v in held), encoding="utf-8")

    plans: dict[str, list[Utterance]] = {}
    for split, fraction in zip(SPLITS, split_fractions):
        split_dir = out / split
        for stale in split_dir.glob(".*.tmp-*") if split_dir.is_dir() else []:
            stale.unlink()  # left by a killed run; real files are only ever renamed into place
        n = planned_count(hours, fraction, per_split[split])
        plans[split] = [plan_utterance(settings, split, i, per_split[split], seen) for i in range(n)]
        # Keep what a larger run of the same plan made (a stray file with a high index extends nothing).
        for i, names in sorted(_existing_files(split_dir).items()):
            if i >= len(plans[split]):
                extra = plan_utterance(settings, split, i, per_split[split], seen)
                if extra.file_name in names:
                    plans[split] += [
                        plan_utterance(settings, split, j, per_split[split], seen)
                        for j in range(len(plans[split]), i + 1)
                    ]

    jobs = max(1, jobs or os.cpu_count() or 1)
    results: list[dict] = []
    start = time.time()
    total = sum(len(p) for p in plans.values())
    bar = tqdm(total=total, desc="build-corpus", unit="utt", disable=not progress)
    pool_ctx = _pool_context().Pool(jobs, initializer=_init_worker) if jobs > 1 else None
    try:
        for split in SPLITS:
            work = [(str(out / split), asdict(u), int(sampling_rate)) for u in plans[split]]
            (out / split).mkdir(parents=True, exist_ok=True)
            it = pool_ctx.imap_unordered(_work, work, chunksize=4) if pool_ctx else map(_work, work)
            for row in it:
                results.append(row)
                bar.update(1)
            write_metadata(out / split, plans[split])
    finally:
        bar.close()
        if pool_ctx is not None:
            pool_ctx.terminate()
            pool_ctx.join()

    summary = _summarize(out, plans, results, time.time() - start)
    _write_json(out / "summary.json", asdict(summary))
    return summary


def _summarize(
    out: Path, plans: dict[str, list[Utterance]], results: list[dict], wall: float
) -> CorpusSummary:
    per_voice: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(SPLITS, 0.0))
    per_split = dict.fromkeys(SPLITS, 0.0)
    counts = dict.fromkeys(SPLITS, 0)
    for split, utts in plans.items():
        for utt in utts:
            duration = _wav_duration(out / split / utt.file_name)
            if duration is not None:
                per_voice[utt.voice][split] += duration / 3600.0
                per_split[split] += duration / 3600.0
                counts[split] += 1
    planned = {(split, u.file_name) for split, utts in plans.items() for u in utts}
    unplanned = sum(
        1 for split in plans for p in (out / split).glob("*.wav") if (split, p.name) not in planned
    )
    cpu: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for r in results:
        if not r["skipped"] and r["error"] is None:
            cpu[r["voice"]][0] += r["cpu"]
            cpu[r["voice"]][1] += r["duration"]
    return CorpusSummary(
        hours_per_split={k: round(v, 4) for k, v in per_split.items()},
        hours_per_voice={v: {k: round(h, 4) for k, h in d.items()} for v, d in sorted(per_voice.items())},
        utterances_per_split=counts,
        made=sum(1 for r in results if not r["skipped"] and r["error"] is None),
        skipped=sum(1 for r in results if r["skipped"]),
        failed=[f"{r['split']}/{r['index']} {r['voice']}: {r['error']}" for r in results if r["error"]],
        unplanned=unplanned,
        cpu_seconds_per_audio_hour={
            v: round(c / (d / 3600.0), 1) for v, (c, d) in sorted(cpu.items()) if d > 0
        },
        wall_seconds=round(wall, 1),
    )


def format_summary(summary: CorpusSummary, held_out: Sequence[str] = ()) -> str:
    """A plain-text table of hours per voice and split, CPU cost per voice, and totals."""
    lines = [f"{'voice':<18}" + "".join(f"{s:>12}" for s in SPLITS) + f"{'cpu s/h':>10}"]
    for voice, hours in summary.hours_per_voice.items():
        mark = " *" if voice in held_out else ""
        cost = summary.cpu_seconds_per_audio_hour.get(voice)
        cost_s = f"{cost:>10.0f}" if cost is not None else f"{'-':>10}"
        lines.append(f"{voice + mark:<18}" + "".join(f"{hours[s]:>11.3f}h" for s in SPLITS) + cost_s)
    lines.append(f"{'total':<18}" + "".join(f"{summary.hours_per_split[s]:>11.3f}h" for s in SPLITS))
    lines.append(
        f"utterances {summary.utterances_per_split}; made {summary.made}, skipped {summary.skipped}, "
        f"failed {len(summary.failed)}; {summary.wall_seconds:.0f} s wall"
        + ("; * = held out of train" if held_out else "")
    )
    lines += [f"FAILED {f}" for f in summary.failed[:20]]
    if summary.unplanned:
        lines.append(
            f"note: {summary.unplanned} WAV files are not in the plan (nor in metadata.csv); remove them"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="output directory (created; a re-run resumes)")
    parser.add_argument("--hours", type=float, help="hours of audio over all splits")
    parser.add_argument(
        "--voices", nargs="+", default=None, help=f"voices (default: all installed of {list(VOICES)})"
    )
    parser.add_argument("--held-out-voices", nargs="*", default=None, help="voices for validation/test only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sampling-rate", type=int, default=16000, help="output rate (16000 = `small` codec)"
    )
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    parser.add_argument("--text-sources", nargs="+", default=list(TEXT_SOURCES), choices=TEXT_SOURCES)
    parser.add_argument("--text-file", default=None, help="one sentence per line, instead of --text-sources")
    parser.add_argument("--grammar-sentences", type=int, default=20000)
    parser.add_argument("--variants-per-voice", type=int, default=4, help="derived speakers per voice")
    parser.add_argument(
        "--list-voices", action="store_true", help="print the voices and whether installed; exit"
    )


def run(args: argparse.Namespace) -> int:
    if args.list_voices:
        installed = set(available_voices())
        for v in VOICES.values():
            state = "installed" if v.name in installed else f"missing ({v.package})"
            print(f"{v.name:<18} {v.engine:<9} {v.gender:<7} {v.accent:<9} weight {v.weight:<4} {state}")
        return 0
    if args.out is None or args.hours is None:
        raise ValueError("--out and --hours are required (or pass --list-voices)")
    summary = build_corpus(
        args.out, args.hours, voices=args.voices, held_out_voices=args.held_out_voices, seed=args.seed,
        sampling_rate=args.sampling_rate, jobs=args.jobs, text_sources=args.text_sources,
        text_file=args.text_file, grammar_sentences=args.grammar_sentences,
        variants_per_voice=args.variants_per_voice,
    )  # fmt: skip
    held = Path(args.out, "held_out_voices.txt").read_text(encoding="utf-8").split()
    print(format_summary(summary, held))
    return 1 if summary.failed else 0
