"""SpeechGenerationPipeline: HF `pipeline()` tasks, loading from saved directories, batching, audio lengths, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from lm_helpers import single_thread, speech_tokenizer, tiny_lm  # noqa: F401  (autouse fixture)
from transformers import pipeline

from jepatok.lm.generation import SpeechGenerationPipeline
from jepatok.lm.logits import FrameGrammar, check_frame_grammar


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """An LM directory that also holds its tokenizer (what train-lm writes to OUTPUT_DIR/final)."""
    tok = speech_tokenizer()
    path = tmp_path_factory.mktemp("lm_final")
    tiny_lm(tok).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _hop(tok) -> int:
    return round(tok.sampling_rate / tok.frame_rate)


def _check(result, tok, max_frames):
    grammar = FrameGrammar.from_tokenizer(tok)
    ids = result["ids"]
    audio_ids = [i for i in ids if i != tok.eos_token_id]
    assert check_frame_grammar([tok.audio_token_id] + ids, grammar) == []
    n_frames = len(audio_ids) // tok.tokens_per_frame
    assert 1 <= n_frames <= max_frames
    assert result["sampling_rate"] == tok.sampling_rate
    assert result["audio"].dtype == np.float32 and result["audio"].shape == (n_frames * _hop(tok),)
    assert np.isfinite(result["audio"]).all()


def test_text_to_speech_task_from_objects(saved):
    tok = speech_tokenizer()
    lm = tiny_lm(tok)
    pipe = pipeline("text-to-speech", model=lm, tokenizer=tok)
    assert isinstance(pipe, SpeechGenerationPipeline)
    max_frames = 4
    out = pipe("hello world", max_seconds=max_frames / tok.frame_rate, seed=0)
    _check(out, tok, max_frames)
    again = pipe("hello world", max_seconds=max_frames / tok.frame_rate, seed=0)
    assert again["ids"] == out["ids"]  # seeded sampling is reproducible


def test_tasks_load_from_saved_directories(saved):
    tok = speech_tokenizer()
    tts = pipeline("text-to-speech", model=str(saved))
    assert isinstance(tts, SpeechGenerationPipeline) and len(tts.tokenizer) == len(tok)
    cont = pipeline("speech-continuation", model=str(saved), tokenizer=str(saved))
    assert isinstance(cont, SpeechGenerationPipeline)
    # Continuation of a short waveform (2 frames of prompt), prompt audio included in the output.
    wave = 0.3 * np.sin(2 * np.pi * 220 * np.arange(2 * _hop(tok)) / tok.sampling_rate).astype(np.float32)
    out = cont(
        {"audio": wave, "sampling_rate": tok.sampling_rate},
        max_seconds=5 / tok.frame_rate,
        seed=1,
        include_prompt_audio=True,
    )
    new_frames = len([i for i in out["ids"] if i != tok.eos_token_id]) // tok.tokens_per_frame
    assert 1 <= new_frames <= 3
    assert out["audio"].shape == ((new_frames + 2) * _hop(tok),)


def test_batched_generation_matches_grammar_and_lengths(saved):
    tok = speech_tokenizer()
    pipe = SpeechGenerationPipeline(model=tiny_lm(tok), tokenizer=tok)
    texts = ["hello world", "a much longer sentence to speak out loud", {"text": "bird"}]
    outs = pipe(texts, batch_size=3, max_seconds=3 / tok.frame_rate, seed=2, top_k=20, temperature=0.8)
    assert len(outs) == 3
    for out in outs:
        _check(out, tok, 3)


def test_rejects_bad_inputs(saved):
    tok = speech_tokenizer()
    pipe = SpeechGenerationPipeline(model=tiny_lm(tok), tokenizer=tok)
    with pytest.raises(ValueError, match="text"):
        pipe({"speech": 1})
    with pytest.raises(ValueError, match="unknown"):
        pipe("hi", beams=3)
    other = tiny_lm(tok)
    other.config.vocab_size = len(tok) + 5
    with pytest.raises(ValueError, match="vocab_size"):
        SpeechGenerationPipeline(model=other, tokenizer=tok)


def test_generate_cli_writes_wavs(saved, tmp_path, capsys):
    from jepatok.cli import main

    tok = speech_tokenizer()
    out = tmp_path / "tts.wav"
    argv = [
        "generate",
        "--lm",
        str(saved),
        "--text",
        "hello world",
        "--text",
        "bird",
        "--out",
        str(out),
        "--max-seconds",
        str(3 / tok.frame_rate),
        "--seed",
        "0",
        "--top-k",
        "10",
        "--guidance-scale",
        "2",
    ]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [s["file"] for s in summary] == [str(tmp_path / "tts_0.wav"), str(tmp_path / "tts_1.wav")]
    for s in summary:
        data, sr = sf.read(s["file"])
        assert sr == tok.sampling_rate and len(data) % _hop(tok) == 0 and 1 <= len(data) // _hop(tok) <= 3
    # Continuation from a file.
    prompt = tmp_path / "prompt.wav"
    sf.write(prompt, np.zeros(3 * _hop(tok), dtype=np.float32), tok.sampling_rate)
    assert (
        main(
            [
                "generate",
                "--lm",
                str(saved),
                "--prompt-audio",
                str(prompt),
                "--out",
                str(tmp_path / "c.wav"),
                "--max-seconds",
                str(5 / tok.frame_rate),
                "--seed",
                "1",
            ]
        )
        == 0
    )
    assert (tmp_path / "c.wav").is_file()
    assert main(["generate", "--lm", str(saved), "--text", "x", "--out", str(tmp_path / "x.mp3")]) == 2


def test_stock_text_to_audio_still_dispatches_elsewhere(tmp_path):
    """Non-jepatok models keep the stock TextToAudioPipeline behind the same task name (a tiny random VITS)."""
    from transformers import VitsConfig, VitsModel, VitsTokenizer
    from transformers.pipelines.text_to_audio import TextToAudioPipeline

    vocab = tmp_path / "vocab.json"
    vocab.write_text(json.dumps({c: i for i, c in enumerate("_ abcdefghijklmnopqrstuvwxyz")}))
    tok = VitsTokenizer(str(vocab), add_blank=False, phonemize=False, normalize=False)
    cfg = VitsConfig(
        vocab_size=len(tok),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        ffn_dim=32,
        flow_size=16,
        spectrogram_bins=17,
        upsample_initial_channel=16,
        upsample_rates=[2, 2],
        upsample_kernel_sizes=[4, 4],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1]],
        prior_encoder_num_flows=1,
        prior_encoder_num_wavenet_layers=1,
        duration_predictor_num_flows=1,
        duration_predictor_filter_channels=16,
        posterior_encoder_num_wavenet_layers=1,
        window_size=2,
    )
    torch.manual_seed(0)
    pipe = pipeline("text-to-speech", model=VitsModel(cfg).eval(), tokenizer=tok)
    assert type(pipe) is TextToAudioPipeline
    assert pipe("hello")["audio"].size > 0


def test_generate_cli_and_eval_loader_take_a_frame_lm(tmp_path, capsys):
    """`jepatok generate` (and eval-tts's loader) on a saved FrameLevelSpeechLM directory: TTS and continuation."""
    from jepatok.cli import main
    from jepatok.eval.evaluate_tts import load_lm_and_tokenizer
    from jepatok.lm.frame_model import FrameLevelSpeechLM, build_frame_lm_config

    tok = speech_tokenizer()
    torch.manual_seed(0)
    lm_dir = tmp_path / "frame"
    FrameLevelSpeechLM(build_frame_lm_config("tiny", tok, value_split=128)).save_pretrained(lm_dir)
    tok.save_pretrained(lm_dir)
    prompt = tmp_path / "prompt.wav"
    sf.write(prompt, np.zeros(2 * _hop(tok), dtype=np.float32), tok.sampling_rate)
    # TTS, continuation, TTS continuing a voice prompt. With a prompt the output starts with its 2 frames (an
    # untrained stop head may end the speech right after them); max_seconds counts the prompt's frames.
    cases = (
        ["--text", "hi"],
        ["--prompt-audio", str(prompt), "--include-prompt"],
        ["--text", "hi", "--voice-prompt", str(prompt), "--include-prompt"],
    )
    for k, source in enumerate(cases):
        out = tmp_path / f"out{k}.wav"
        argv = ["generate", "--lm", str(lm_dir), *source, "--out", str(out), "--seed", "0"]
        assert main(argv + ["--max-seconds", str(4 / tok.frame_rate)]) == 0
        (summary,) = json.loads(capsys.readouterr().out)
        data, sr = sf.read(summary["file"])
        assert sr == tok.sampling_rate and len(data) % _hop(tok) == 0
        assert (2 if k else 1) <= len(data) // _hop(tok) <= 4, (k, len(data) // _hop(tok))
    loaded_tok, model = load_lm_and_tokenizer(str(lm_dir), None, "cpu")
    assert type(model) is FrameLevelSpeechLM and len(loaded_tok) == len(tok)
