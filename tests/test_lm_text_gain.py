"""`jepatok text-gain`: paired audio NLL with and without the text, its arithmetic, and the CLI."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from datasets import load_from_disk
from lm_helpers import make_pretokenized, save_lm_dir, single_thread, speech_tokenizer, tiny_lm  # noqa: F401  (autouse fixture)

from jepatok.cli import main
from jepatok.lm.text_gain import NoTextGainExamples, audio_nll, example_pair, text_gain


class BigramLM(torch.nn.Module):
    """Logits from the current token alone: it cannot read the text, so its text gain is exactly 0."""

    def __init__(self, vocab: int):
        super().__init__()
        torch.manual_seed(0)
        self.table = torch.nn.Embedding(vocab, vocab)
        self.config = SimpleNamespace(max_position_embeddings=4096)

    def forward(self, input_ids):
        return SimpleNamespace(logits=self.table(input_ids))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tok = speech_tokenizer()
    path = make_pretokenized(tok, tmp_path_factory.mktemp("pretok"), {"train": 6, "validation": 12})
    return path


def test_example_pair_scores_the_same_tokens():
    tok = speech_tokenizer()
    codes = [[1] * tok.tokens_per_frame, [2] * tok.tokens_per_frame]
    tts, cont, scored = example_pair(tok, codes, "hello world")
    assert scored == 2 * tok.tokens_per_frame + 1 and tts[-scored:] == cont[-scored:]
    assert cont[:2] == [tok.bos_token_id, tok.audio_token_id] and tts[-scored - 1] == tok.audio_token_id
    assert tok.text_token_id in tts[: len(tts) - scored]


def test_gain_is_the_nll_difference_and_zero_for_a_model_blind_to_text(data):
    tok = speech_tokenizer()
    rows = load_from_disk(data)["validation"]
    lm = tiny_lm(tok)
    m = text_gain(lm, tok, rows, max_examples=50, progress=False)
    with_text = [i for i, t in enumerate(rows["text"]) if t]
    assert m["examples"] == len(with_text) and m["skipped_too_long"] == 0
    nats, seconds = 0.0, 0.0
    for i in with_text:
        tts, cont, scored = example_pair(tok, rows[i]["audio_codes"], rows[i]["text"])
        nats += audio_nll(lm, cont, len(cont) - scored) - audio_nll(lm, tts, len(tts) - scored)
        seconds += (scored - 1) / tok.tokens_per_frame / tok.frame_rate
    assert m["audio_seconds"] == pytest.approx(seconds)
    # float32 sums in another order (per frame, then per example): equal to ~1e-5
    assert m["text_gain_bits_per_audio_second"] == pytest.approx(nats / seconds / math.log(2), rel=1e-4)
    assert m["text_gain_bits_per_audio_second"] == pytest.approx(
        m["bits_per_audio_second_without_text"] - m["bits_per_audio_second_with_text"], rel=1e-6
    )
    lo, hi = m["text_gain_ci95"]
    assert lo <= m["text_gain_bits_per_audio_second"] <= hi
    # the gain by frame index (8 and later in one bucket) and at the end add up to the total
    counts: dict[str, int] = {}
    for i in with_text:
        for j in range(len(rows[i]["audio_codes"])):
            key = "8+" if j >= 8 else str(j)
            counts[key] = counts.get(key, 0) + 1
    assert set(m["gain_bits_by_frame"]) == set(counts)
    parts = sum(m["gain_bits_by_frame"][k] * n for k, n in counts.items()) + m["gain_bits_at_end"] * len(
        with_text
    )
    assert parts == pytest.approx(m["text_gain_bits_per_audio_second"] * m["audio_seconds"], abs=1e-3)
    blind = text_gain(BigramLM(lm.config.vocab_size), tok, rows, max_examples=50, progress=False)
    assert blind["text_gain_bits_per_audio_second"] == pytest.approx(0.0, abs=1e-9)
    assert all(v == pytest.approx(0.0, abs=1e-9) for v in blind["gain_bits_by_frame"].values())
    assert blind["examples_helped_by_text"] == 0.0
    short = text_gain(lm, tok, rows, max_examples=3, progress=False)
    assert short["examples"] == 3
    with pytest.raises(NoTextGainExamples, match="no row has a transcript"):
        text_gain(lm, tok, rows.map(lambda r: {"text": ""}), progress=False)
    lm.config.max_position_embeddings = 4
    with pytest.raises(NoTextGainExamples, match="longer than the LM.s 4 positions"):
        text_gain(lm, tok, rows, progress=False)


def test_cli_writes_json_and_rejects_a_missing_split(data, tmp_path, capsys):
    lm_dir = save_lm_dir(tmp_path / "lm")
    out = tmp_path / "gain.json"
    assert main(["text-gain", "--lm", str(lm_dir), "--data", data, "--out", str(out)]) == 0
    assert "text gain" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["split"] == "validation" and saved["examples"] > 0
    assert main(["text-gain", "--lm", str(lm_dir), "--data", data, "--split", "test"]) == 2
    assert "split 'test' not in" in capsys.readouterr().err


def test_frame_lm_gain_matches_its_nll_totals(data):
    """text_gain of a frame-level LM: the same paired difference, from its frame and stop-decision NLLs."""
    from jepatok.lm.frame_model import FrameLevelSpeechLM, build_frame_lm_config

    tok = speech_tokenizer()
    rows = load_from_disk(data)["validation"]
    torch.manual_seed(0)
    lm = FrameLevelSpeechLM(build_frame_lm_config("tiny", tok, value_split=128)).eval()
    m = text_gain(lm, tok, rows, max_examples=50, progress=False)
    nats = 0.0
    for i in [i for i, t in enumerate(rows["text"]) if t]:
        tts, cont, scored = example_pair(tok, rows[i]["audio_codes"], rows[i]["text"])
        nats += audio_nll(lm, cont, len(cont) - scored, tok) - audio_nll(lm, tts, len(tts) - scored, tok)
    # float32 NLLs of ~1e3 nats per example summed in another order: the difference agrees to ~1e-4 bits
    total = m["text_gain_bits_per_audio_second"] * m["audio_seconds"]
    assert total == pytest.approx(nats / math.log(2), abs=1e-2)
