"""Best-of-N text-to-speech (`jepatok.lm.rerank`): the phoneme scorer's CTC NLL, its files and codec check, and
the pipeline keeping the lowest-scored of N candidates."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from lm_helpers import (  # noqa: F401  (single_thread: autouse fixture)
    make_pretokenized,
    one_hot_probe_data,
    single_thread,
    speech_tokenizer,
    tiny_lm,
)

from jepatok.eval.phonetic_probe import fit_probe
from jepatok.lm.generation import SpeechGenerationPipeline
from jepatok.lm.rerank import PhonemeScorer, load_phoneme_scorer
from jepatok.tokenizer.modeling import codec_identity


@pytest.fixture(scope="module")
def trained_scorer():
    g = torch.Generator().manual_seed(0)
    data = one_hot_probe_data(300, g)
    probe, mu, sd, _ = fit_probe(
        data, 5, steps=300, batch_size=16, lr=1e-2, hidden=32, upsample=4, progress=False
    )
    symbols = {s: k + 1 for k, s in enumerate("abcde")}
    return PhonemeScorer.from_probe(probe, mu, sd, symbols, codes_hash=None), one_hot_probe_data(20, g)


def test_scorer_prefers_the_target_its_latents_spell(trained_scorer):
    scorer, test = trained_scorer
    right = scorer.nll(test.features, test.targets)
    wrong_targets = [[1 + (s % 5) for s in t] for t in test.targets]  # every symbol shifted by one
    wrong = scorer.nll(test.features, wrong_targets)
    assert torch.isfinite(right).all() and (right < wrong).all(), (right, wrong)
    # Latents too short for the target (2 frames x 4 sub-steps < 12 symbols) and empty ones score +inf.
    short = scorer.nll([test.features[0][:2], torch.zeros(0, 10)], [[1, 2] * 6, [1]])
    assert short.tolist() == [math.inf, math.inf]
    with pytest.raises(ValueError, match=r"latents must be \[T, 10\]"):
        scorer.nll([torch.zeros(3, 7)], [[1]])
    with pytest.raises(ValueError, match="2 latent sequences for 1 targets"):
        scorer.nll(test.features[:2], test.targets[:1])
    # The greedy transcript's phoneme error rate: low for the right targets, high for the shifted ones.
    per_right = scorer.phoneme_error_rate(test.features, test.targets)
    per_wrong = scorer.phoneme_error_rate(test.features, wrong_targets)
    assert float(per_right.mean()) < 0.3 < float(per_wrong.mean()), (per_right, per_wrong)
    assert scorer.phoneme_error_rate([torch.zeros(0, 10)], [[1, 2]]).tolist() == [1.0]


def test_scorer_files_round_trip_and_refuse_others(trained_scorer, tmp_path):
    scorer, test = trained_scorer
    scorer.codes_hash = "f" * 64
    scorer.save_pretrained(tmp_path / "s")
    loaded = load_phoneme_scorer(tmp_path / "s")
    assert loaded.symbols == scorer.symbols and loaded.codes_hash == "f" * 64
    torch.testing.assert_close(
        loaded.nll(test.features, test.targets), scorer.nll(test.features, test.targets)
    )
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["config.json", "model.safetensors"]
    assert not list(tmp_path.glob(".s.*"))  # no temporary folder left
    scorer.codes_hash = None
    with pytest.raises(FileNotFoundError, match="holds no phoneme scorer"):
        PhonemeScorer.from_pretrained(tmp_path)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="not a phoneme scorer config"):
        PhonemeScorer.from_pretrained(tmp_path / "x")


def _tiny_scorer(tok, codes_hash: str | None = None) -> PhonemeScorer:
    """An untrained scorer over the tiny codec's latents with the tests' phoneme symbols."""
    from jepatok.eval.phonetic_probe import phoneme_symbols
    from jepatok.tokenizer.phonemes import phonemize

    symbols = sorted(set(phoneme_symbols(phonemize("the quick brown fox jumps over the lazy dog"))))
    dim = tok.codec.dequantize(torch.zeros(1, 1, tok.tokens_per_frame, dtype=torch.long)).shape[-1]
    torch.manual_seed(0)
    return PhonemeScorer(dim, symbols, hidden=8, upsample=4, codes_hash=codes_hash)


def _candidates(pipe, tok, text, n, max_s, seed):
    """The audio ids of the n candidates `pipe(text, num_candidates=n, seed=seed)` chooses from."""
    with torch.inference_mode():
        rows = pipe._generate([pipe.preprocess(text)] * n, 1.0, 50, 1.0, True, max_s, 1, seed, 1.0)
    return [[i for i in r if i != tok.eos_token_id] for r in rows]


class SumScorer(PhonemeScorer):
    """Scores a candidate by minus the sum of its codes: the pipeline must keep the largest sum."""

    def score_codes(self, codec, codes, text, metric="per"):
        self.calls.append((text, metric))
        return torch.tensor([-float(c.sum()) for c in codes])


def test_pipeline_keeps_the_candidate_the_scorer_ranks_first():
    tok = speech_tokenizer()
    lm = tiny_lm(tok)
    pipe = SpeechGenerationPipeline(model=lm, tokenizer=tok)
    base = _tiny_scorer(tok)
    scorer = SumScorer(base.dim, base.symbols, 8, 4)
    scorer.calls = []
    n, max_s = 6, 6 / tok.frame_rate
    prompt = pipe.preprocess("the lazy dog")
    with torch.inference_mode():
        candidates = pipe._generate([prompt] * n, 1.0, 50, 1.0, True, max_s, 1, 3, 1.0)
    sums = [float(tok.ids_to_codes([i for i in c if i != tok.eos_token_id]).sum()) for c in candidates]
    assert len(set(sums)) == n  # the test needs distinct candidates
    out = pipe("the lazy dog", max_seconds=max_s, seed=3, num_candidates=n, phoneme_scorer=scorer)
    best = int(np.argmax(sums))
    assert out["chosen"] == best and out["ids"] == candidates[best]
    assert len(out["candidate_scores"]) == n and scorer.calls == [("the lazy dog", "per")]
    hop = round(tok.sampling_rate / tok.frame_rate)
    frames = len([i for i in out["ids"] if i != tok.eos_token_id]) // tok.tokens_per_frame
    assert out["audio"].shape == (frames * hop,)
    # A continuation prompt in the same call is sampled once and carries no candidate scores.
    wave = np.random.default_rng(0).standard_normal(2 * hop).astype(np.float32) * 0.1
    mixed = pipe(
        ["the lazy dog", {"audio": wave, "sampling_rate": tok.sampling_rate}],
        max_seconds=max_s,
        seed=3,
        num_candidates=2,
        phoneme_scorer=scorer,
    )
    assert "chosen" in mixed[0] and "chosen" not in mixed[1]


def test_pipeline_reranking_with_a_real_scorer_and_bad_settings(tmp_path, capsys):
    tok = speech_tokenizer()
    pipe = SpeechGenerationPipeline(model=tiny_lm(tok), tokenizer=tok)
    max_s = 3 / tok.frame_rate
    scorer = _tiny_scorer(tok, codec_identity(tok.codec)["codes_hash"])
    scorer.save_pretrained(tmp_path / "scorer")
    out = pipe(
        "hello world", max_seconds=max_s, seed=0, num_candidates=3, phoneme_scorer=str(tmp_path / "scorer")
    )
    assert len(out["candidate_scores"]) == 3 and out["chosen"] == int(np.argmin(out["candidate_scores"]))
    assert all(0 <= v for v in out["candidate_scores"])  # phoneme error rates
    kw = dict(max_seconds=max_s, seed=0, num_candidates=3, phoneme_scorer=scorer)
    nll = pipe("hello world", rerank_metric="nll", **kw)
    assert nll["candidate_scores"] == pytest.approx(
        scorer.score_codes(
            tok.codec,
            [tok.ids_to_codes(c) for c in _candidates(pipe, tok, "hello world", 3, max_s, 0)],
            "hello world",
            metric="nll",
        ).tolist()
    )
    with pytest.raises(ValueError, match="rerank_metric must be one of"):
        pipe("hello world", rerank_metric="wer", **kw)
    other = _tiny_scorer(tok, "0" * 64)
    with pytest.raises(ValueError, match="trained on codes of codec 000000000000"):
        pipe("hello world", max_seconds=max_s, num_candidates=2, phoneme_scorer=other)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="num_candidates must be a positive integer"):
            pipe("hello world", max_seconds=max_s, num_candidates=bad, phoneme_scorer=scorer)
    with pytest.raises(ValueError, match="needs a phoneme_scorer"):
        pipe("hello world", max_seconds=max_s, num_candidates=2)
    ids = pipe.preprocess("hello world").input_ids
    with pytest.raises(ValueError, match="give the text"):
        pipe({"input_ids": ids}, max_seconds=max_s, num_candidates=2, phoneme_scorer=scorer)
    # The generate CLI takes the same setting and reports the kept candidate.
    from lm_helpers import save_lm_dir

    from jepatok.cli import main

    save_lm_dir(tmp_path / "lm")
    argv = [
        "generate",
        "--lm",
        str(tmp_path / "lm"),
        "--text",
        "hello world",
        "--out",
        str(tmp_path / "a.wav"),
    ]
    argv += ["--max-seconds", str(max_s), "--seed", "0", "--num-candidates", "3"]
    assert main(argv + ["--phoneme-scorer", str(tmp_path / "scorer")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary[0]["chosen_candidate"] in (0, 1, 2) and math.isfinite(summary[0]["phoneme_score"])
    assert (tmp_path / "a.wav").is_file()


def test_probe_cli_saves_a_scorer_for_its_codec(tmp_path):
    from jepatok.cli import main

    tok = speech_tokenizer()
    tok.save_pretrained(tmp_path / "tok")
    data = make_pretokenized(tok, tmp_path / "data", {"train": 12, "validation": 6})
    argv = [
        "probe-phonemes",
        "--codec",
        str(tmp_path / "tok"),
        "--data",
        data,
        "--steps",
        "2",
        "--no-control",
    ]
    assert main(argv + ["--hidden", "16", "--save-scorer", str(tmp_path / "scorer")]) == 0
    scorer = PhonemeScorer.from_pretrained(tmp_path / "scorer")
    assert scorer.codes_hash == codec_identity(tok.codec)["codes_hash"] and scorer.probe.hidden == 16
    codes = [torch.zeros(3, tok.tokens_per_frame, dtype=torch.long)]
    assert torch.isfinite(scorer.score_codes(tok.codec, codes, "the dog"))
    per = scorer.score_codes(tok.codec, codes, "the dog", metric="per")
    assert per.shape == (1,) and float(per) >= 0
    with pytest.raises(ValueError, match="metric must be one of"):
        scorer.score_codes(tok.codec, codes, "the dog", metric="wer")
