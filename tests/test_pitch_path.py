"""The decoder's pitch path (`decoder_config.pitch_subframes`): the autocorrelation pitch estimator, the
harmonic source, the decoder's pitch head and source input, chunked decoding, loading onto a trained codec
without changing its codes, and stage 2's pitch loss and teacher forcing."""

from __future__ import annotations

import json
import math

import pytest
import torch
from _train_utils import FAST, make_audio_folder, one_thread  # noqa: F401

from jepatok import JepaCodecConfig, JepaCodecModel, codec_identity
from jepatok.tokenizer.chunking import decode_latents_chunked
from jepatok.tokenizer.pitch import (
    PITCH_REF_HZ,
    estimate_pitch,
    harmonic_source,
    pitch_agreement,
    source_phase,
)
from jepatok.tokenizer.train_common import load_args
from jepatok.tokenizer.train_stage2 import Stage2Args, Stage2Trainer, load_stage1

SR = 16000
ISTFT = {"head": "istft", "istft_hop": 2, "istft_n_fft": 8, "istft_channels": 16, "istft_layers": 2}
PITCH = {**ISTFT, "pitch_subframes": 4}  # tiny preset: hop 16 -> 4-sample pitch sub-frames


def _tone(f0: float, seconds: float = 1.0, sr: int = SR) -> torch.Tensor:
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    return sum((0.5 / k) * torch.sin(2 * math.pi * k * f0 * t) for k in range(1, int(0.45 * sr / f0))).float()


@pytest.mark.parametrize("f0", [55.0, 98.0, 150.0, 233.0, 440.0])
def test_estimate_pitch_finds_the_period_not_a_multiple(f0):
    est, voiced, strength = estimate_pitch(_tone(f0), SR, 320)
    inner = est[3:-3]
    assert bool(voiced[3:-3].all()) and float(strength[3:-3].min()) > 0.9
    assert float((inner / f0 - 1).abs().max()) < 0.01  # within 1 %, no octave errors


def test_estimate_pitch_tracks_a_glide_and_leaves_noise_and_silence_unvoiced():
    t = torch.arange(SR, dtype=torch.float64) / SR
    phase = 2 * math.pi * torch.cumsum(100 + 200 * t, 0) / SR  # 100 -> 300 Hz in one second
    glide = (torch.sin(phase) + 0.3 * torch.sin(2 * phase)).float()
    est, voiced, _ = estimate_pitch(glide, SR, 320)
    centres = 100 + 200 * (torch.arange(est.shape[0]) + 0.5) * 0.02
    assert float((est[2:-2] / centres[2:-2] - 1).abs().max()) < 0.03
    torch.manual_seed(0)
    noisy = torch.cat([0.1 * torch.randn(SR // 2), torch.zeros(SR // 2)])
    f0, voiced, _ = estimate_pitch(noisy.unsqueeze(0), SR, 320)  # batched [1, L] -> [1, T]
    assert f0.shape == (1, 50) and not bool(voiced.any())


def test_estimate_pitch_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[L\] or \[B, L\]"):
        estimate_pitch(torch.zeros(1, 1, 640), SR, 320)
    with pytest.raises(ValueError, match="shorter than one pitch frame"):
        estimate_pitch(torch.zeros(100), SR, 320)
    with pytest.raises(ValueError, match="f0_min < f0_max"):
        estimate_pitch(torch.zeros(640), SR, 320, f0_min=300.0, f0_max=200.0)


def test_pitch_agreement_scores_a_transposed_copy():
    ref, up = _tone(150.0), _tone(150.0 * 2 ** (1 / 12))  # one semitone up
    same = pitch_agreement(ref, ref, SR, 320)
    assert same["rmse_cents"] < 1.0 and same["gross_error"] == 0.0 and same["voicing_error"] == 0.0
    moved = pitch_agreement(ref, up, SR, 320)
    assert 90 < moved["median_cents"] < 110 and moved["gross_error"] == 0.0
    assert pitch_agreement(ref, torch.zeros_like(ref), SR, 320)["voicing_error"] > 0.9


def test_harmonic_source_is_continuous_band_limited_and_gated_by_voicing():
    f0 = torch.tensor([[120.0] * 25 + [180.0] * 25])
    voiced = torch.ones_like(f0)
    whole = harmonic_source(f0, voiced, 320, SR)
    assert whole.shape == (1, 50 * 320)
    assert abs(float(whole.std()) - math.sqrt(0.5)) < 0.05  # unit power per harmonic group
    est, _, _ = estimate_pitch(whole[0], SR, 320)
    assert abs(float(est[5:20].mean()) - 120) < 1 and abs(float(est[30:45].mean()) - 180) < 1.5
    spectrum = torch.fft.rfft(whole[0, : 25 * 320]).abs()
    assert float(spectrum[int(0.97 * len(spectrum)) :].max()) < 1e-3 * float(
        spectrum.max()
    )  # nothing near Nyquist
    # a part rendered from the whole clip's phase at its start equals that part of the whole
    start = source_phase(f0, 320, SR)[:, 17]
    part = harmonic_source(f0[:, 17:], voiced[:, 17:], 320, SR, phase0=start)
    torch.testing.assert_close(part, whole[:, 17 * 320 :], atol=1e-5, rtol=0)
    silent = harmonic_source(f0, torch.zeros_like(f0), 320, SR)
    assert float(silent.abs().max()) == 0.0
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        harmonic_source(f0[0], voiced[0], 320, SR)


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"pitch_subframes": 4}, "needs head='istft'"),
        ({**ISTFT, "pitch_subframes": 3}, "must divide the hop"),
        ({**ISTFT, "pitch_subframes": -1}, "pitch_subframes"),
    ],
)
def test_bad_pitch_configs_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        JepaCodecConfig.from_preset("tiny", decoder_config=bad)


def test_pitch_path_added_to_a_trained_codec_keeps_its_codes_and_starts_near_it(tmp_path):
    torch.manual_seed(0)
    old = JepaCodecModel(JepaCodecConfig.from_preset("tiny", decoder_config=ISTFT)).eval()
    old.save_pretrained(tmp_path / "old")
    new = load_stage1(tmp_path / "old", JepaCodecConfig.from_preset("tiny", decoder_config=PITCH)).eval()
    assert codec_identity(new)["codes_hash"] == codec_identity(old)["codes_hash"]
    assert codec_identity(new)["config_hash"] != codec_identity(old)["config_hash"]
    audio = 0.3 * torch.randn(1, 1, 16 * 40)
    with torch.no_grad():
        before, after = old(audio).audio_values, new(audio).audio_values
    # the source's features enter through a zero-started convolution: the old output exactly
    torch.testing.assert_close(after, before)
    # the pitch head starts near the reference F0 with voicing 1/2
    with torch.no_grad():
        q = new.dequantize(new.encode(audio).audio_codes)
        _, _, pitch = new.decoder(q, return_pitch=True)
    assert pitch.shape == (1, 2, 40 * 4)
    f0, voiced = new.decoder.pitch_values(pitch)
    assert float((f0 / PITCH_REF_HZ).log().abs().max()) < 0.5 and float((voiced - 0.5).abs().max()) < 0.2
    # save / from_pretrained round trip keeps the audio
    new.save_pretrained(tmp_path / "new")
    loaded = JepaCodecModel.from_pretrained(tmp_path / "new").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(audio).audio_values, after)


def test_pitch_override_drives_the_source_and_decoders_without_the_path_refuse_it():
    torch.manual_seed(0)
    model = JepaCodecModel(JepaCodecConfig.from_preset("tiny", decoder_config=PITCH)).eval()
    with torch.no_grad():
        model.decoder.istft.source_in.weight.normal_(0, 0.3)  # let the head read the source
        q = torch.rand(2, 30, model.config.fsq_config.dim) * 2 - 1
        n = 30 * 4
        low = (torch.full((2, n), 100.0), torch.ones(2, n))
        high = (torch.full((2, n), 300.0), torch.ones(2, n))
        a = model.decoder(q, pitch_override=low)
        b = model.decoder(q, pitch_override=high)
        mixed = model.decoder(q, pitch_override=high, pitch_override_rows=torch.tensor([False, True]))
    assert float((a - b).abs().max()) > 1e-3
    torch.testing.assert_close(mixed[1], b[1])
    torch.testing.assert_close(mixed[0], model.decoder(q)[0])
    with pytest.raises(ValueError, match="pitch_override must be"):
        model.decoder(q, pitch_override=(low[0][:, :-1], low[1][:, :-1]))
    plain = JepaCodecModel(JepaCodecConfig.from_preset("tiny", decoder_config=ISTFT)).eval()
    with pytest.raises(ValueError, match="need a decoder with a pitch path"):
        plain.decoder(q, pitch_override=low)


def test_chunked_decoding_with_the_pitch_path_matches_whole():
    torch.manual_seed(0)
    model = JepaCodecModel(JepaCodecConfig.from_preset("tiny", decoder_config=PITCH)).eval()
    with torch.no_grad():
        model.decoder.istft.source_in.weight.normal_(0, 0.3)
        for block in model.decoder.istft.blocks:
            block.pw2.weight.mul_(30.0)
        model.decoder.pitch_head[-1].weight.mul_(20.0)  # a pitch contour that moves from frame to frame
        q = torch.rand(1, 60, model.config.fsq_config.dim) * 2 - 1
        whole = model.decode_latents(q)
        chunked = decode_latents_chunked(model.decoder, q, 0.05, 8000)  # 25-frame chunks
    f0, _ = model.decoder.pitch_values(model.decoder.predict_pitch(model.decoder.frame_features(q)))
    assert float(f0.std()) > 10.0
    assert (chunked - whole).abs().max() < 1e-4 * whole.abs().max()


def test_stage2_trains_the_pitch_path_on_frozen_codes(tmp_path):
    data = make_audio_folder(tmp_path / "wavs")
    torch.manual_seed(0)
    stage1 = tmp_path / "s1"
    JepaCodecModel(JepaCodecConfig.from_preset("tiny", decoder_config=ISTFT)).save_pretrained(stage1)
    keys = FAST + ["sample_every=0", "max_steps=6", "save_every=10", "disc_start_step=100", "l1_weight=0.0"]
    keys += ["freeze_codes=true", "lr=3e-3", "pitch_teacher_forcing=0.5"]
    keys += [f"codec.decoder_config.{k}={v}" for k, v in PITCH.items()]
    args = load_args(Stage2Args, "tiny", "stage2", keys)
    final = Stage2Trainer(args, str(data), tmp_path / "run", str(stage1)).run()
    trained = JepaCodecModel.from_pretrained(final)
    assert trained.config.decoder_config.pitch_subframes == 4
    assert (
        codec_identity(trained)["codes_hash"]
        == codec_identity(JepaCodecModel.from_pretrained(stage1))["codes_hash"]
    )
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(logged) == 6 and all(math.isfinite(r["loss"]) for r in logged)
    assert all(r["gen_pitch_f0"] >= 0 and r["gen_pitch_voicing"] > 0 for r in logged)
    # the pitch loss is part of the logged total
    r = logged[-1]
    assert r["loss"] > r["gen_pitch_f0"] + r["gen_pitch_voicing"]
    with pytest.raises(ValueError, match="pitch_teacher_forcing"):
        load_args(Stage2Args, "tiny", "stage2", FAST + ["pitch_teacher_forcing=1.5"])


def test_encoder_pitch_input_is_frame_local_starts_as_a_no_op_and_keeps_chunks_exact(tmp_path):
    from jepatok.tokenizer.chunking import encode_latents_chunked
    from jepatok.tokenizer.pitch import pitch_features_window

    # the features of any window of frames equal the same frames of the whole clip
    audio = torch.cat([_tone(120.0, 0.6), 0.05 * torch.randn(SR // 5), _tone(210.0, 0.6)]).unsqueeze(0)
    audio = audio[:, : audio.shape[-1] // 6400 * 6400]  # whole frames of the small codec's hop
    frames = audio.shape[-1] // 6400
    whole = pitch_features_window(audio, 0, frames, 6400, SR, 20)
    assert whole.shape == (1, frames, 40)
    torch.testing.assert_close(pitch_features_window(audio, 1, frames - 1, 6400, SR, 20), whole[:, 1:-1])
    f0 = PITCH_REF_HZ * whole[0, 0, :20].exp()
    assert (
        float((f0[2:-2] / 120 - 1).abs().max()) < 0.01 and float(whole[0, 0, 22:38].min()) > 0.9
    )  # strengths
    # a tiny codec: the input is added at zero (same codes), then changes codes, and chunked encoding stays exact
    torch.manual_seed(0)
    old = JepaCodecModel(JepaCodecConfig.from_preset("tiny", decoder_config=ISTFT)).eval()
    old.save_pretrained(tmp_path / "old")
    config = JepaCodecConfig.from_preset(
        "tiny", decoder_config=PITCH, encoder_config={"pitch_input_subframes": 4}
    )
    new = load_stage1(tmp_path / "old", config).eval()
    clip = 0.3 * torch.sin(torch.arange(16 * 80) * 2 * math.pi * 140 / 8000).view(1, 1, -1)
    clip = clip + 0.05 * torch.randn_like(clip)
    with torch.no_grad():
        torch.testing.assert_close(new.encoder(clip).latents, old.encoder(clip).latents)
        for p in new.encoder.pitch_input[-1].parameters():
            p.normal_(0, 0.5)
        z = new.encoder(clip).latents
        assert float((z - old.encoder(clip).latents).abs().max()) > 1e-3
        chunked, _ = encode_latents_chunked(new.encoder, clip, None, 0.04, 8000)  # 20-frame windows
    torch.testing.assert_close(chunked, z, atol=1e-4, rtol=1e-4)
    assert codec_identity(new)["codes_hash"] != codec_identity(old)["codes_hash"]
    with pytest.raises(ValueError, match="pitch_input_subframes"):
        JepaCodecConfig.from_preset("tiny", encoder_config={"pitch_input_subframes": 3})


def _probe_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "probe_pitch.py"
    spec = importlib.util.spec_from_file_location("probe_pitch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_probe_pitch_script_follows_the_codec_frame_path_and_its_probes_fit():
    """scripts/probe_pitch.py: its stages are the codec's own frame path (the pitch head's output and the
    quantized latents equal the warm-up's), ridge probes fit a linear map on the voiced rows only, and the
    score is in cents."""
    from jepatok.tokenizer.envelope_warmup import collate, envelope_forward, frame_inputs, frame_latents

    probe = _probe_script()
    torch.manual_seed(0)
    config = JepaCodecConfig.from_preset(
        "tiny",
        decoder_config={**PITCH, "envelope_bands": 4, "envelope_subframes": 4, "frame_layers": 1},
        encoder_config={"pitch_input_subframes": 4},
        fsq_config={"pre_projection": True, "input_rms": 0.8},
    )
    codec = JepaCodecModel(config).eval()
    clip = 0.3 * torch.sin(torch.arange(16 * 80) * 2 * math.pi * 140 / 8000) + 0.05 * torch.randn(16 * 80)
    dec = config.decoder_config
    cached = frame_inputs(
        codec.encoder, clip, dec.envelope_bands, dec.envelope_subframes, dec.pitch_subframes
    )
    stages = probe.stages(codec, cached)
    batch = collate([cached], [0])
    with torch.no_grad():
        _, pitch = envelope_forward(codec, batch, return_pitch=True)
        quantized = codec.quantize(frame_latents(codec, batch)).quantized
    torch.testing.assert_close(stages["_head"], pitch[0, 0].view(-1, 4).double())
    torch.testing.assert_close(stages["quantized"], quantized[0].double())
    assert {"pitch_input", "pitch_term", "bottleneck", "conformer", "fsq_input", "frame_features"} <= set(
        stages
    )
    assert all(v.shape[0] == 80 for k, v in stages.items() if not k.startswith("_rms"))
    assert probe.neighbours(stages["conformer"]).shape == (80, 3 * 128)

    # a linear target on voiced rows, garbage on the others: the ridge probe ignores the unvoiced rows
    g = torch.Generator().manual_seed(1)
    x = torch.randn(600, 10, dtype=torch.float64, generator=g)
    y = x @ torch.randn(10, 3, dtype=torch.float64, generator=g) * 0.1
    voiced = torch.rand(600, 3, generator=g) > 0.3
    y_noisy = torch.where(voiced, y, 100 * torch.randn(600, 3, dtype=torch.float64, generator=g))
    pred = probe.ridge_probe(x[:400], y_noisy[:400], voiced[:400], x[400:], y[400:], voiced[400:], 1e-6)
    median, gross = probe.score(pred, y[400:], voiced[400:])
    assert median < 0.01 and gross == 0.0
    semitone = torch.full((4, 1), math.log(2) / 12, dtype=torch.float64)
    assert probe.score(
        semitone, torch.zeros(4, 1, dtype=torch.float64), torch.ones(4, 1, dtype=torch.bool)
    ) == (
        pytest.approx(100.0),
        0.0,
    )
