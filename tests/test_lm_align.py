"""The interleaved TTS layout (`jepatok.lm.align`): CTC forced alignment of a text's pieces to codec frames, the
interleaved training sequences, the generation grammar that reads the text in order, `align-text` and a
tiny `train-lm` run that the pipeline then follows."""

from __future__ import annotations

import math

import pytest
import torch
from lm_helpers import (  # noqa: F401  (single_thread: autouse fixture)
    FAST_TRAIN,
    TEXTS,
    ipa_speech_tokenizer,
    make_pretokenized,
    random_codes,
    single_thread,
    speech_tokenizer,
    tiny_lm,
)

from jepatok.lm.align import (
    TEXT_FRAMES_COLUMN,
    AlignStats,
    align_text_frames,
    ctc_forced_align,
    interleave_tts_ids,
    piece_frames,
    piece_symbols,
    reading_rate,
)
from jepatok.lm.data import IGNORE_INDEX, build_examples
from jepatok.lm.logits import FrameGrammar, InterleavedTextLogitsProcessor


def _log_probs(path: list[int], n_classes: int, sharp: float = 5.0) -> torch.Tensor:
    """[T, C] log-probabilities whose best class at step t is path[t]."""
    logits = torch.zeros(len(path), n_classes)
    logits[torch.arange(len(path)), torch.tensor(path)] = sharp
    return logits.log_softmax(-1)


def test_forced_alignment_finds_each_targets_first_step():
    # blank=0; the frames say: _ 1 1 _ 2 2 2 _ 1 _  -> targets 1 2 1 start at steps 1, 4, 8
    path = [0, 1, 1, 0, 2, 2, 2, 0, 1, 0]
    assert ctc_forced_align(_log_probs(path, 3), [1, 2, 1]) == [1, 4, 8]
    # A repeated symbol needs a blank between its copies, and the alignment finds it.
    assert ctc_forced_align(_log_probs([1, 1, 0, 1, 2], 3), [1, 1, 2]) == [0, 3, 4]
    # The targets win even where another class is likelier: 2 is forced into the steps that say 1.
    assert ctc_forced_align(_log_probs([1, 1, 1, 1], 3), [2, 1]) in ([0, 1], [0, 2], [0, 3])
    assert ctc_forced_align(_log_probs([0, 0], 3), []) == []
    with pytest.raises(ValueError, match=r"3 steps cannot hold 3 CTC targets \(at least 4"):
        ctc_forced_align(_log_probs([1, 1, 1], 3), [1, 1, 2])  # 1 _ 1 2 needs four steps
    with pytest.raises(ValueError, match=r"must be \[T, C\]"):
        ctc_forced_align(torch.zeros(3), [1])


def test_pieces_map_onto_the_texts_phoneme_symbols():
    from jepatok.eval.phonetic_probe import phoneme_symbols
    from jepatok.tokenizer.phonemes import phonemize

    tok = ipa_speech_tokenizer()
    text = "Every evening, the quick brown fox jumps."
    ids, starts, symbols = piece_symbols(tok, text)
    assert ids == tok._text_ids(text)
    assert symbols == phoneme_symbols(phonemize(text))
    started = [s for s in starts if s >= 0]
    assert started == sorted(started) and len(set(started)) == len(started)  # in order, each symbol once
    # every piece that carries a phoneme starts one; the phoneme-free ones are word boundaries or stress marks
    for piece, s in zip(tok.convert_ids_to_tokens(ids), starts):
        stripped = piece.replace("\u2581", "").replace("\u02c8", "").replace("\u02cc", "")
        assert (s >= 0) == bool(stripped) or stripped.startswith("\u02d0"), (piece, s)
    with pytest.raises(ValueError, match="text_frontend='espeak-ipa'"):
        piece_symbols(speech_tokenizer(), text)


def test_piece_frames_fill_gaps_forward_and_never_decrease():
    # pieces: no symbol, symbol 0 (frame 2), no symbol, symbol 1 (frame 1: alignment noise), symbol 2 (frame 9)
    starts = [-1, 0, -1, 1, 2, -1]
    assert piece_frames(starts, [2, 1, 9], num_frames=5) == [2, 2, 2, 2, 4, 4]
    assert piece_frames([-1, -1], [], num_frames=3) == [0, 0]
    assert piece_frames([0, 1], [None, 1], num_frames=3) == [1, 1]  # an unknown symbol takes the next frame


def test_interleaved_sequence_puts_each_piece_before_its_frame():
    tok = ipa_speech_tokenizer()
    G = tok.tokens_per_frame
    codes = random_codes(tok, 3, torch.Generator().manual_seed(0))
    text_ids = tok._text_ids("hello world")
    frames = [0] * (len(text_ids) - 2) + [2, 5]  # the last piece lies past the audio: it comes before <eos>
    ids = interleave_tts_ids(tok, text_ids, codes, frames)
    prefix = tok.build_tts_prompt_ids("hello world")
    assert ids[: len(prefix)] == prefix and ids[-1] == tok.eos_token_id
    body = ids[len(prefix) : -1]
    # dropping the in-audio pieces gives the prefix layout back
    assert [i for i in body if tok.is_audio_id(i)] == tok.codes_to_ids(codes)
    assert [i for i in body if not tok.is_audio_id(i)] == text_ids
    n = len(text_ids) - 2
    assert body[:n] == text_ids[:n] and all(tok.is_audio_id(i) for i in body[n : n + 2 * G])
    assert body[n + 2 * G] == text_ids[-2] and body[-1] == text_ids[-1]
    with pytest.raises(ValueError, match="must not decrease"):
        interleave_tts_ids(tok, text_ids[:2], codes, [1, 0])
    with pytest.raises(ValueError, match="1 text frames for 2 text pieces"):
        interleave_tts_ids(tok, text_ids[:2], codes, [0])


def test_build_examples_scores_the_in_audio_pieces_and_drops_unaligned_rows():
    tok = ipa_speech_tokenizer()
    g = torch.Generator().manual_seed(1)
    codes = [random_codes(tok, 3, g).tolist() for _ in range(3)]
    texts = ["hello world", "a small test", "the lazy dog"]
    n = [len(tok._text_ids(t)) for t in texts]
    frames = [[0] * n[0], [0] * (n[1] - 1), sorted([k % 3 for k in range(n[2])])]  # row 1: one short
    examples, stats = build_examples(
        codes, texts, tok, mode="tts", block_size=512, tts_layout="interleaved", text_frames=frames
    )
    assert stats.tts == 2 and stats.dropped_unaligned == 1
    ex = examples[0]
    a = ex.input_ids.index(tok.audio_token_id)
    assert all(label == IGNORE_INDEX for label in ex.labels[: a + 1])  # the prefix is not scored
    assert ex.labels[a + 1 :] == ex.input_ids[a + 1 :]  # the pieces inside the audio part are
    assert ex.input_ids[a + 1 : a + 1 + n[0]] == tok._text_ids(texts[0])
    with pytest.raises(ValueError, match="run `jepatok align-text`"):
        build_examples(codes, texts, tok, mode="both", tts_layout="interleaved")
    # continuation-only data needs no alignment
    build_examples(codes, texts, tok, mode="continuation", tts_layout="interleaved")


def _grammar(tok):
    return FrameGrammar.from_tokenizer(tok)


def _allowed(proc, rows: list[list[int]], vocab: int) -> list[set[int]]:
    scores = proc(torch.tensor(rows), torch.zeros(len(rows), vocab))
    return [set(torch.nonzero(torch.isfinite(r)).flatten().tolist()) for r in scores]


def test_interleaved_grammar_reads_the_text_in_order_and_ends_only_after_it():
    tok = ipa_speech_tokenizer()
    grammar, G, V = _grammar(tok), tok.tokens_per_frame, len(tok)
    slot0 = set(range(tok.audio_offset, tok.audio_offset + tok.slot_sizes[0]))
    slot1 = set(range(tok.audio_offset, tok.audio_offset + tok.slot_sizes[1]))
    t1, t2 = tok._text_ids("hello world")[:2]
    tts = [tok.bos_token_id, tok.text_token_id, t1, t2, tok.audio_token_id]
    cont = [tok.pad_token_id, tok.pad_token_id, tok.bos_token_id, tok.audio_token_id, tok.audio_offset]
    frame = [tok.audio_offset] * G
    proc = InterleavedTextLogitsProcessor(grammar, tok.text_token_id, max_seconds=None, min_frames=1)

    def step(row: list[int]) -> tuple[set[int], set[int]]:
        """Allowed ids for the TTS row and for the continuation row after as many new tokens (audio)."""
        k = len(row) - len(tts)
        return tuple(_allowed(proc, [row, cont + [tok.audio_offset] * k], V))

    # step 0: the first piece or a frame; the continuation row (one prompt audio token) is inside its frame
    assert step(tts) == (slot0 | {t1}, slot1)
    # after t1: t2 or a frame; inside a frame: that slot only
    assert step(tts + [t1])[0] == slot0 | {t2}
    assert step(tts + [t1, tok.audio_offset])[0] == slot1
    # the continuation row completes its frame after G - 1 new tokens: <eos> is allowed there (plain grammar)
    assert tok.eos_token_id in step(tts + [t1] + frame[: G - 2])[1]
    # a whole frame with a piece still unread: no <eos> yet
    assert step(tts + [t1] + frame)[0] == slot0 | {t2}
    assert step(tts + [t1] + frame + [t2])[0] == slot0 | {tok.eos_token_id}
    # a finished row only repeats <eos>
    assert step(tts + [t1] + frame + [t2, tok.eos_token_id])[0] == {tok.eos_token_id}
    # max_seconds forces <eos> at the frame limit, read or not
    short = InterleavedTextLogitsProcessor(grammar, tok.text_token_id, max_seconds=1 / tok.frame_rate)
    assert _allowed(short, [tts], V)[0] == slot0 | {t1}
    assert _allowed(short, [tts + frame], V)[0] == {tok.eos_token_id}
    assert short.max_text_tokens([tts, cont]) == 2
    # With text_ids, the next piece gets the LM's probability of reading any piece there.
    text_ids = [t1, t2, t2 + 1]
    pooled = InterleavedTextLogitsProcessor(grammar, tok.text_token_id, text_ids=text_ids)
    scores = torch.zeros(1, V)
    scores[0, text_ids] = torch.tensor([0.0, 1.0, 2.0])
    out = pooled(torch.tensor([tts]), scores)
    assert math.isclose(
        float(out[0, t1]), float(torch.logsumexp(torch.tensor([0.0, 1.0, 2.0]), 0)), rel_tol=1e-6
    )
    assert not torch.isfinite(out[0, [t2, t2 + 1]]).any() and float(out[0, tok.audio_offset]) == 0.0
    with pytest.raises(ValueError, match="text_ids must lie below the audio ids"):
        InterleavedTextLogitsProcessor(grammar, tok.text_token_id, text_ids=[tok.audio_offset])
    # A schedule of 1.5 pieces per frame: before frame 0, round(1.5) = 2 pieces; with slack 1 at least 1 and at
    # most 3 of the text's 4 pieces are read there, and the LM decides in between.
    sched = InterleavedTextLogitsProcessor(grammar, tok.text_token_id, pieces_per_frame=1.5, reading_slack=1)
    four = tts[:4] + [t2, t2] + tts[4:]  # text t1 t2 t2 t2
    assert _allowed(sched, [four], V)[0] == {t1}
    assert _allowed(sched, [four + [t1]], V)[0] == slot0 | {t2}
    assert _allowed(sched, [four + [t1, t2]], V)[0] == slot0 | {t2}
    assert _allowed(sched, [four + [t1, t2, t2]], V)[0] == slot0
    three = tts[:4] + [t2] + tts[4:]  # text t1 t2 t2
    strict = InterleavedTextLogitsProcessor(grammar, tok.text_token_id, pieces_per_frame=1.5)
    assert _allowed(strict, [three], V)[0] == {t1}  # slack 0: the schedule decides alone
    assert _allowed(strict, [three + [t1]], V)[0] == {t2}
    assert _allowed(strict, [three + [t1, t2]], V)[0] == slot0
    with pytest.raises(ValueError, match="pieces_per_frame must be > 0"):
        InterleavedTextLogitsProcessor(grammar, tok.text_token_id, pieces_per_frame=0.0)
    voice = InterleavedTextLogitsProcessor(grammar, tok.text_token_id)
    with pytest.raises(ValueError, match="voice prompt's frames are not supported"):
        voice(torch.tensor([tts + frame]), torch.zeros(1, V))


def _tiny_scorer(tok):
    from jepatok.eval.phonetic_probe import phoneme_symbols
    from jepatok.lm.rerank import PhonemeScorer
    from jepatok.tokenizer.modeling import codec_identity
    from jepatok.tokenizer.phonemes import phonemize

    symbols = sorted({s for t in TEXTS[:4] for s in phoneme_symbols(phonemize(t))})
    dim = tok.codec.dequantize(torch.zeros(1, 1, tok.tokens_per_frame, dtype=torch.long)).shape[-1]
    torch.manual_seed(0)
    return PhonemeScorer(dim, symbols, 8, 4, codec_identity(tok.codec)["codes_hash"])


def test_align_text_frames_gives_each_piece_a_frame_of_its_clip():
    tok = ipa_speech_tokenizer()
    scorer = _tiny_scorer(tok)
    g = torch.Generator().manual_seed(2)
    codes = [random_codes(tok, 12, g), random_codes(tok, 1, g), random_codes(tok, 4, g)]
    texts = [TEXTS[0], TEXTS[1], ""]
    stats = AlignStats()
    out = align_text_frames(scorer, tok.codec, tok, codes, texts, stats)
    # 12 frames x 4 sub-steps hold the first text's phonemes; 1 frame cannot: its pieces are spread evenly
    assert (stats.aligned, stats.proportional, stats.no_text) == (1, 1, 1)
    for frames, text, c in zip(out[:2], texts, codes):
        assert len(frames) == len(tok._text_ids(text))
        assert frames == sorted(frames) and 0 <= frames[0] and frames[-1] < len(c)
    assert out[2] == []
    assert out[0][-1] > 0  # a 12-frame clip spreads its text over several frames


def test_align_text_cli_then_train_interleaved_and_generate_in_order(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from jepatok.cli import main
    from jepatok.lm.args import LMTrainArgs
    from jepatok.lm.generation import SpeechGenerationPipeline
    from jepatok.lm.modeling import tts_layout
    from jepatok.lm.train import train

    tok = ipa_speech_tokenizer()
    tok.save_pretrained(tmp_path / "tok")
    _tiny_scorer(tok).save_pretrained(tmp_path / "scorer")
    data = make_pretokenized(tok, tmp_path / "data")
    argv = ["align-text", "--codec", str(tmp_path / "tok"), "--data", data, "--out", str(tmp_path / "al")]
    assert main([*argv, "--phoneme-scorer", str(tmp_path / "scorer")]) == 0
    from datasets import load_from_disk

    aligned = load_from_disk(str(tmp_path / "al"))
    row = aligned["train"][1]
    assert len(row[TEXT_FRAMES_COLUMN]) == len(tok._text_ids(row["text"])) and row["text"]
    assert main([*argv, "--phoneme-scorer", str(tmp_path / "scorer")]) != 0
    assert "exists; choose a new --out (nothing was written)" in capsys.readouterr().err
    # training on data without the column says what to run
    args = dict(
        FAST_TRAIN,
        block_size=256,
        eval_steps=0,
        save_steps=0,
        max_steps=2,
        report_to="none",
        tts_layout="interleaved",
        eval_text_gain_examples=0,
    )
    bad = LMTrainArgs.from_recipe(
        "tiny", data=data, tokenizer=str(tmp_path / "tok"), output_dir=str(tmp_path / "bad"), **args
    )
    with pytest.raises(ValueError, match="align-text"):
        train(bad)
    run = LMTrainArgs.from_recipe(
        "tiny",
        data=str(tmp_path / "al"),
        tokenizer=str(tmp_path / "tok"),
        output_dir=str(tmp_path / "run"),
        **args,
    )
    final = train(run).final_dir
    lm = AutoModelForCausalLM.from_pretrained(final)
    assert tts_layout(lm) == "interleaved"
    rate = lm.config.jepatok["pieces_per_frame"]  # the train split's reading rate, recorded for generation
    assert rate == pytest.approx(reading_rate(aligned["train"][TEXT_FRAMES_COLUMN]), abs=1e-4) and rate > 0
    from jepatok.lm.text_gain import text_gain

    with pytest.raises(ValueError, match="does not apply to it"):
        text_gain(lm, tok, aligned["validation"], progress=False)
    pipe = SpeechGenerationPipeline(model=lm, tokenizer=tok)
    text = "the lazy dog"
    want, hop, max_frames = tok._text_ids(text), round(tok.sampling_rate / tok.frame_rate), 8

    def check(results, whole: bool) -> None:
        for result in results:
            ids = result["ids"]
            read = [i for i in ids if not tok.is_audio_id(i) and i != tok.eos_token_id]
            frames = sum(1 for i in ids if tok.is_audio_id(i)) // tok.tokens_per_frame
            assert read == want[: len(read)]  # the text is read in order, nothing skipped or invented
            if ids[-1] == tok.eos_token_id and frames < max_frames:  # the LM's own <eos>, not the limit's
                assert read == want
            assert read == want or not whole
            assert result["audio"].shape == (frames * hop,)

    def read_before_frames(ids: list[int]) -> list[int]:
        """Pieces read before each frame started."""
        counts, read, audio = [], 0, 0
        for i in ids:
            if tok.is_audio_id(i):
                if audio % tok.tokens_per_frame == 0:
                    counts.append(read)
                audio += 1
            elif i != tok.eos_token_id:
                read += 1
        return counts

    limit = max_frames / tok.frame_rate
    # By default the pipeline reads on the recorded schedule: round((t + 1) * rate) pieces before frame t.
    for result in pipe([text] * 3, max_seconds=limit, seed=0):
        counts = read_before_frames(result["ids"])
        assert counts == [min(len(want), round((t + 1) * rate)) for t in range(len(counts))]
    check(pipe([text] * 3, max_seconds=limit, seed=0, reading_rate=1.0, reading_slack=1), whole=False)
    with pytest.raises(ValueError, match="reading_slack must be an int >= 0"):
        pipe(text, max_seconds=limit, reading_slack=-1)
    with pytest.raises(ValueError, match="reading_rate must be a number of text pieces per frame > 0"):
        pipe(text, max_seconds=limit, reading_rate=0)
    # An LM that prefers text pieces (a bias on their logits), left to decide alone, reads the whole text, in
    # order, then speaks.
    head = lm.lm_head
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    biased.weight.data.copy_(head.weight.data)
    biased.bias.data.zero_()
    biased.bias.data[torch.tensor(want)] = 30.0
    lm.lm_head = biased
    out = pipe([text] * 2, max_seconds=limit, seed=0, reading_slack=1000)
    check(out, whole=True)
    assert out[0]["ids"][: len(want)] == want
    with pytest.raises(ValueError, match="tts_layout='interleaved'"):
        pipe(text, guidance_scale=2.0, max_seconds=1.0)
