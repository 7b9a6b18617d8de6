"""`jepatok probe-phonemes`: IPA symbol splitting, CTC decoding, edit distance, the control, and that the probe
reads phonemes out of features that carry them (and not out of the control)."""

from __future__ import annotations

import json

import pytest
import torch
from lm_helpers import (  # noqa: F401  (single_thread: autouse fixture)
    make_pretokenized,
    one_hot_probe_data,
    single_thread,
    speech_tokenizer,
)

from jepatok.eval.phonetic_probe import (
    ProbeData,
    control_features,
    edit_distance,
    greedy_ctc,
    phoneme_symbols,
    train_and_score,
)


def test_phoneme_symbols_drop_stress_and_join_length():
    assert phoneme_symbols("həlˈoʊ wˈɜːld") == ["h", "ə", "l", "o", "ʊ", "w", "ɜː", "l", "d"]
    assert phoneme_symbols("ˌʌ t͡ʃ") == ["ʌ", "t͡ʃ"]
    assert phoneme_symbols("") == []


def test_edit_distance_and_greedy_ctc():
    assert edit_distance([1, 2, 3], [1, 3]) == 1 and edit_distance([], [4, 5]) == 2
    assert edit_distance([1, 2, 3], [3, 2, 1]) == 2
    best = [0, 2, 2, 0, 2, 3, 3, 0]  # blank=0: "2", "2" (separated by blank), "3"
    lp = torch.full((10, 4), -10.0)
    lp[torch.arange(8), torch.tensor(best)] = 0.0
    lp[8:, 1] = 0.0  # beyond the length: ignored
    assert greedy_ctc(lp, 8) == [2, 2, 3]


def test_control_moves_every_utterance_within_its_length_group():
    feats = [torch.full((n, 2), float(i)) for i, n in enumerate([3, 3, 3, 5, 5, 7])]
    ctrl = control_features(feats, seed=1)
    assert [len(c) for c in ctrl] == [len(f) for f in feats]
    for i in range(5):  # groups of 3 and 2: nobody keeps its own
        assert not torch.equal(ctrl[i], feats[i])
    assert torch.equal(ctrl[5], feats[5])  # alone in its group
    assert sorted(int(c[0, 0]) for c in ctrl[:3]) == [0, 1, 2]


def test_probe_reads_phonemes_the_features_carry_and_not_the_control():
    g = torch.Generator().manual_seed(0)
    train, test = one_hot_probe_data(300, g), one_hot_probe_data(60, g)
    kw = dict(steps=400, batch_size=16, lr=1e-2, hidden=32, upsample=4, progress=False)
    real = train_and_score(train, test, n_symbols=5, **kw)
    control = train_and_score(
        ProbeData(control_features(train.features), train.targets),
        ProbeData(control_features(test.features, 1), test.targets),
        n_symbols=5,
        **kw,
    )
    assert real["steps"] == 400 and real["test_phonemes"] == sum(len(t) for t in test.targets)
    assert real["per"] < 0.25, real
    assert control["per"] > 0.5, control
    with pytest.raises(ValueError, match="train and test"):
        train_and_score(ProbeData([], []), test, 5, steps=1, progress=False)


def test_cli_on_a_pretokenized_dataset(tmp_path, capsys):
    from jepatok.cli import main

    tok = speech_tokenizer()
    tok.save_pretrained(tmp_path / "tok")
    data = make_pretokenized(tok, tmp_path / "data", {"train": 12, "validation": 6})
    out = tmp_path / "probe.json"
    argv = [
        "probe-phonemes",
        "--codec",
        str(tmp_path / "tok"),
        "--data",
        data,
        "--steps",
        "3",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    saved = json.loads(out.read_text())
    assert saved["symbols"] > 5 and 0 <= saved["codes"]["per"] and "control" in saved
    assert saved["train_utterances"] == 8  # rows with text: 2 of every 3
    assert "phoneme error rate from the codes" in capsys.readouterr().out
    assert main(["probe-phonemes", "--codec", str(tmp_path), "--data", data]) == 2


def test_load_split_pairs_each_rows_codes_with_its_own_phonemes(tmp_path):
    from datasets import load_from_disk

    from jepatok.eval.phonetic_probe import load_split
    from jepatok.tokenizer.phonemes import phonemize

    tok = speech_tokenizer()
    rows = load_from_disk(make_pretokenized(tok, tmp_path / "data", {"train": 9}))["train"]
    symbols: dict[str, int] = {}
    data = load_split(tok.codec, rows, None, symbols, grow=True)
    kept = [r for r in rows if (r["text"] or "").strip()]
    assert len(data.targets) == len(kept) == 6 and len(set(r["text"] for r in kept)) > 1
    for row, target, feats in zip(kept, data.targets, data.features):
        assert target == [symbols[s] for s in phoneme_symbols(phonemize(row["text"].strip()))]
        codes = torch.as_tensor(row["audio_codes"])
        torch.testing.assert_close(feats, tok.codec.dequantize(codes[None]).float()[0])
