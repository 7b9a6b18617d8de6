"""Classic speech codecs run through the same evaluation pipeline as ours: Codec2 and Opus.

- Codec2 (Debian `codec2`: `c2enc`/`c2dec`), 8 kHz 16-bit raw PCM, modes 700C, 1200, 3200, ...
- Opus (ffmpeg's libopus), VoIP application at a fixed bitrate (`opus-6k` = 6 kbit/s), 16 kHz.

A round trip takes a mono float waveform at any rate and returns the decoded waveform at that same
rate and length (the codec's band limit and artefacts included), with the encode/decode wall times
and the size of the encoded bitstream.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ..data.audio import resample

# Codec2 modes: bit/s and frame rate (frames/s) from codec2's documentation.
CODEC2_MODES: dict[str, tuple[float, float]] = {
    "3200": (3200.0, 50.0),
    "2400": (2400.0, 50.0),
    "1600": (1600.0, 25.0),
    "1400": (1400.0, 25.0),
    "1300": (1300.0, 25.0),
    "1200": (1200.0, 25.0),
    "700C": (700.0, 25.0),
}
DEFAULT_BASELINES = ("codec2-700C", "codec2-1200", "codec2-3200", "opus-6k")


@dataclass
class BaselineOutput:
    """Result of one baseline round trip."""

    audio: np.ndarray  # [L] float32 at the input rate, same length as the input
    encode_seconds: float
    decode_seconds: float
    encoded_bytes: int  # size of the bitstream (container overhead included for Opus)


class BaselineCodec:
    """A command-line codec. Subclasses set `name`, `bitrate`, `frame_rate`, `sampling_rate`."""

    name: str
    bitrate: float  # nominal bit/s
    frame_rate: float  # frames/s
    sampling_rate: int  # rate the codec runs at
    tools: tuple[str, ...] = ()

    def unavailable_reason(self) -> str | None:
        """None when the codec can run here, else why not (a missing program)."""
        missing = [t for t in self.tools if shutil.which(t) is None]
        if missing:
            return f"{', '.join(missing)} not found on PATH (Debian packages listed in system-packages.txt)"
        return None

    def roundtrip(self, audio, sampling_rate: int) -> BaselineOutput:
        """Encode and decode one clip.

        Args:
            audio: [L] mono float waveform.
            sampling_rate: its rate; the output has the same rate and length.
        """
        reason = self.unavailable_reason()
        if reason:
            raise RuntimeError(f"baseline {self.name} cannot run: {reason}")
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if audio.size == 0:
            raise ValueError(f"baseline {self.name}: expected a non-empty waveform")
        if sampling_rate <= 0:
            raise ValueError(f"baseline {self.name}: sampling_rate must be positive, got {sampling_rate}")
        x = resample(audio, sampling_rate, self.sampling_rate)
        with tempfile.TemporaryDirectory(prefix="jepatok-baseline-") as tmp:
            out, enc_s, dec_s, nbytes = self._run(np.clip(x, -1.0, 1.0), Path(tmp))
        out = resample(out.astype(np.float32), self.sampling_rate, sampling_rate)
        out = np.pad(out, (0, max(0, audio.size - out.size)))[
            : audio.size
        ]  # codecs drop a partial last frame
        return BaselineOutput(
            audio=out.astype(np.float32), encode_seconds=enc_s, decode_seconds=dec_s, encoded_bytes=nbytes
        )

    def _run(self, x: np.ndarray, tmp: Path) -> tuple[np.ndarray, float, float, int]:
        raise NotImplementedError


def _check(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return elapsed


class Codec2Baseline(BaselineCodec):
    """Codec2 in one mode via `c2enc MODE in.raw out.bit` / `c2dec MODE out.bit out.raw` (8 kHz, s16le).

    Args:
        mode: one of CODEC2_MODES ("700C", "1200", "3200", ...).
    """

    tools = ("c2enc", "c2dec")
    sampling_rate = 8000

    def __init__(self, mode: str):
        if mode not in CODEC2_MODES:
            raise ValueError(f"unknown Codec2 mode {mode!r}; expected one of {sorted(CODEC2_MODES)}")
        self.mode = mode
        self.name = f"codec2-{mode}"
        self.bitrate, self.frame_rate = CODEC2_MODES[mode]

    def _run(self, x, tmp):
        pcm = np.round(x * 32767.0).astype("<i2")
        (tmp / "in.raw").write_bytes(pcm.tobytes())
        enc = _check(["c2enc", self.mode, str(tmp / "in.raw"), str(tmp / "enc.bit")])
        dec = _check(["c2dec", self.mode, str(tmp / "enc.bit"), str(tmp / "out.raw")])
        out = np.frombuffer((tmp / "out.raw").read_bytes(), dtype="<i2").astype(np.float32) / 32768.0
        return out, enc, dec, (tmp / "enc.bit").stat().st_size


class OpusBaseline(BaselineCodec):
    """Opus (libopus through ffmpeg), VoIP application, constant bitrate, 20 ms frames.

    Args:
        kbps: target bitrate in kbit/s.
        sampling_rate: rate the encoder runs at (16000 = wideband).
    """

    tools = ("ffmpeg",)
    frame_rate = 50.0

    def __init__(self, kbps: float, sampling_rate: int = 16000):
        if not 0.5 <= kbps <= 512:
            raise ValueError(f"Opus bitrate must be within 0.5..512 kbit/s, got {kbps}")
        self.kbps = kbps
        self.bitrate = kbps * 1000.0
        self.sampling_rate = sampling_rate
        self.name = f"opus-{kbps:g}k"

    def _run(self, x, tmp):
        sf.write(str(tmp / "in.wav"), x, self.sampling_rate, subtype="PCM_16")
        base = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
        enc = _check(
            base
            + ["-i", str(tmp / "in.wav"), "-c:a", "libopus", "-b:a", f"{self.bitrate:.0f}", "-vbr", "off"]
            + ["-application", "voip", "-frame_duration", "20", str(tmp / "enc.ogg")]
        )
        dec = _check(
            base
            + ["-i", str(tmp / "enc.ogg"), "-ar", str(self.sampling_rate), "-ac", "1", str(tmp / "out.wav")]
        )
        out, _ = sf.read(str(tmp / "out.wav"), dtype="float32", always_2d=False)
        return np.asarray(out).reshape(-1), enc, dec, (tmp / "enc.ogg").stat().st_size


def get_baseline(name: str) -> BaselineCodec:
    """Baseline by name: `codec2-<MODE>` (700C, 1200, 3200, ...) or `opus-<KBPS>k` (opus-6k, opus-12k).

    Args:
        name: baseline name, case-insensitive prefix.
    """
    key = name.strip()
    m = re.fullmatch(r"(?i)codec2-(\w+)", key)
    if m:
        mode = m.group(1).upper()
        return Codec2Baseline(mode)
    m = re.fullmatch(r"(?i)opus-(\d+(?:\.\d+)?)k", key)
    if m:
        return OpusBaseline(float(m.group(1)))
    raise ValueError(
        f"unknown baseline {name!r}; expected codec2-<mode> (modes {sorted(CODEC2_MODES)}) or opus-<kbps>k"
    )


def parse_baselines(spec: str | None) -> list[BaselineCodec]:
    """Comma-separated baseline names ("" or "none" = no baselines; None = DEFAULT_BASELINES)."""
    if spec is None:
        names = list(DEFAULT_BASELINES)
    elif spec.strip().lower() in ("", "none"):
        names = []
    else:
        names = [s for s in (p.strip() for p in spec.split(",")) if s]
    out, seen = [], set()
    for n in names:
        b = get_baseline(n)
        if b.name not in seen:
            seen.add(b.name)
            out.append(b)
    return out
