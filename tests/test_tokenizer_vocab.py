"""JepaSpeechTokenizer without audio I/O: id layout, text and code round trips, templates, labels, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jepatok import JepaCodecConfig, JepaSpeechTokenizer
from jepatok.tokenizer.modeling import JepaCodecModel
from jepatok.tokenizer.tokenization import SPECIAL_TOKENS, train_sentencepiece

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "a speech tokenizer turns audio into integers",
    "hello world, this is a test of the text vocabulary",
    "numbers like 1234 are split into digits",
]


@pytest.fixture(scope="module")
def tok():
    torch.manual_seed(0)
    codec = JepaCodecModel(JepaCodecConfig.from_preset("tiny")).eval()
    return JepaSpeechTokenizer.from_codec(codec, texts=TEXTS, text_vocab_size=320)


def random_codes(tok, frames: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    sizes = torch.tensor(tok.slot_sizes)
    return (
        torch.rand(frames, tok.tokens_per_frame, generator=g) * sizes
    ).long()  # [T, G], each slot in range


def test_id_ranges_never_overlap(tok):
    specials = [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert specials == list(range(len(SPECIAL_TOKENS)))
    assert {tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id} <= set(specials)
    assert (tok.text_token_id, tok.audio_token_id, tok.end_of_audio_token_id) == (4, 5, 6)
    text_ids = set(range(len(SPECIAL_TOKENS), tok.audio_offset))
    audio_ids = set(range(tok.audio_offset, tok.audio_offset + tok.codebook_size))
    assert not (set(specials) & text_ids) and not (text_ids & audio_ids) and not (set(specials) & audio_ids)
    assert len(tok) == tok.audio_offset + tok.codebook_size == len(tok.get_vocab())
    assert tok.codebook_size == 16384 and tok.tokens_per_frame == 19 and tok.slot_sizes[-1] == 16
    vocab = tok.get_vocab()
    assert len(set(vocab.values())) == len(vocab)  # one token per id
    assert vocab["<|a0|>"] == tok.audio_offset and vocab["<|a16383|>"] == len(tok) - 1
    for text in ["hello world", "zebra ✓ über 😀"]:  # unseen characters go through byte pieces
        ids = tok.encode(text, add_special_tokens=False)
        assert all(len(SPECIAL_TOKENS) <= i < tok.audio_offset for i in ids)


@pytest.mark.parametrize("text", ["hello world", "the lazy dog jumps 42 times", "zebra ✓ über 😀", "a  b"])
def test_text_round_trip(tok, text):
    ids = tok.encode(text)
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == " ".join(text.split())


def test_codes_ids_round_trip_exact(tok):
    codes = random_codes(tok, 7)
    ids = tok.codes_to_ids(codes)
    assert len(ids) == 7 * 19 and all(tok.is_audio_id(i) for i in ids)
    assert torch.equal(tok.ids_to_codes(ids), codes)
    assert tok.codes_to_ids(tok.ids_to_codes(ids)) == ids
    tokens = tok.convert_ids_to_tokens(ids[:3])
    assert tokens == [f"<|a{int(v)}|>" for v in codes[0, :3]]
    assert tok.convert_tokens_to_ids(tokens) == ids[:3]
    # Audio token strings in text map to the same ids.
    assert tok.encode("".join(tokens), add_special_tokens=False) == ids[:3]
    # Non-audio ids are dropped by default, refused when strict.
    mixed = [tok.bos_token_id, tok.audio_token_id, *ids, tok.eos_token_id]
    assert torch.equal(tok.ids_to_codes(mixed), codes)
    with pytest.raises(ValueError, match="not an audio token"):
        tok.ids_to_codes(mixed, strict=True)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    frames=st.integers(0, 9), cut=st.integers(0, 18), seed=st.integers(0, 2**16), text=st.text(max_size=30)
)
def test_round_trips_randomized(tok, frames, cut, seed, text):
    codes = random_codes(tok, frames, seed=seed)
    ids = tok.codes_to_ids(codes)
    assert torch.equal(tok.ids_to_codes(ids), codes) and tok.codes_to_ids(tok.ids_to_codes(ids)) == ids
    if frames and cut:
        with pytest.raises(ValueError, match="not whole frames"):
            tok.ids_to_codes(ids[:-cut])
    # Any text (byte fallback) survives the TTS template: the text span decodes back, the codes come back.
    seq = tok.build_tts_ids(text, codes)
    assert torch.equal(tok.ids_to_codes(seq), codes)
    start, end = 2, seq.index(tok.audio_token_id)
    assert tok.decode(seq[start:end]) == tok.sp_model.decode(tok.sp_model.encode(text))


def test_bad_ids_give_clear_errors(tok):
    ids = tok.codes_to_ids(random_codes(tok, 2))
    with pytest.raises(ValueError, match=r"not whole frames \(1 frames \+ 18 tokens\)"):
        tok.ids_to_codes(ids[:-1])  # truncated frame
    with pytest.raises(ValueError, match="out of range"):
        tok.ids_to_codes([len(tok)])
    with pytest.raises(ValueError, match="out of range"):
        tok.ids_to_codes([-1])
    bad = list(ids)
    bad[18] = tok.audio_offset + 16  # slot 18 holds only 0..15
    with pytest.raises(ValueError, match="slot 18 holds 0..15"):
        tok.ids_to_codes(bad)
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([len(tok) + 5])
    with pytest.raises(ValueError, match=r"shape \[frames, 19\]"):
        tok.codes_to_ids(torch.zeros(3, 18, dtype=torch.long))
    with pytest.raises(ValueError, match="must be integers"):
        tok.codes_to_ids(torch.zeros(3, 19))


def test_unknown_special_tokens_are_refused(tok):
    with pytest.raises(ValueError, match="unknown special token '<|speaker|>'"):
        tok.encode("hi <|speaker|> there")
    with pytest.raises(ValueError, match="out of range"):
        tok.encode("<|a16384|>")
    with pytest.raises(ValueError, match="unknown special token"):
        tok.convert_tokens_to_ids("<|b3|>")
    with pytest.raises(ValueError, match="template must be one of"):
        tok(text="hi", template="chat")


def test_decode_summarises_audio_spans(tok):
    codes = random_codes(tok, 12)
    ids = tok.build_tts_ids("hello world", codes)
    text = tok.decode(ids)
    seconds = f"{12 / tok.frame_rate:.2f}".rstrip("0").rstrip(".")
    assert text == f"<bos><text>hello world<audio>[audio: 12 frames, {seconds} s]<eos>"
    assert tok.decode(ids, skip_special_tokens=True) == f"hello world[audio: 12 frames, {seconds} s]"
    assert "[audio: 1 frames + 3 tokens" in tok.decode(tok.codes_to_ids(codes)[: 19 + 3])
    verbatim = tok.decode(ids, summarize_audio=False)
    assert tok.encode(verbatim, add_special_tokens=False) == ids  # verbatim decode re-encodes exactly


def test_templates_and_labels(tok):
    codes = random_codes(tok, 3)
    audio_ids = tok.codes_to_ids(codes)
    text_ids = tok.encode("hello world", add_special_tokens=False)
    tts = tok(text="hello world", audio_codes=codes, return_labels=True)
    prompt = [tok.bos_token_id, tok.text_token_id, *text_ids, tok.audio_token_id]
    assert tts["input_ids"] == prompt + audio_ids + [tok.eos_token_id]
    assert tts["labels"] == [-100] * len(prompt) + audio_ids + [tok.eos_token_id]
    assert tts["attention_mask"] == [1] * len(tts["input_ids"])
    cont = tok(audio_codes=codes, return_labels=True)
    assert cont["input_ids"] == [tok.bos_token_id, tok.audio_token_id, *audio_ids]
    assert cont["labels"] == [-100, -100, *audio_ids]
    assert tok(text="hello world", template="tts_prompt")["input_ids"] == prompt
    unmasked = tok(text="hello world", audio_codes=codes, return_labels=True, mask_text_labels=False)
    assert unmasked["labels"] == unmasked["input_ids"]
    # A transcript that contains special-token text stays text.
    injected = tok(text="say <eos> now", template="tts_prompt")["input_ids"]
    assert injected.count(tok.eos_token_id) == 0


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_batch_equals_one_by_one(tok, padding_side):
    texts = ["hello", "the quick brown fox jumps", "a"]
    codes = [random_codes(tok, n, seed=n) for n in (2, 1, 4)]
    tok.padding_side = padding_side
    try:
        batch = tok(
            text=texts, audio_codes=codes, return_labels=True, return_tensors="pt", pad_to_multiple_of=8
        )
    finally:
        tok.padding_side = "right"
    assert batch["input_ids"].shape[1] % 8 == 0
    for row, (t, c) in enumerate(zip(texts, codes)):
        single = tok(text=t, audio_codes=c, return_labels=True)
        mask = batch["attention_mask"][row].bool()
        assert batch["input_ids"][row][mask].tolist() == single["input_ids"]
        assert batch["labels"][row][mask].tolist() == single["labels"]
        assert (batch["labels"][row][~mask] == -100).all()
        assert (batch["input_ids"][row][~mask] == tok.pad_token_id).all()
        edge = mask[0] if padding_side == "right" else mask[-1]
        assert bool(edge)  # real tokens sit on the side opposite the padding
    stacked = tok(text=texts[:2], audio_codes=torch.stack([codes[0], codes[0]]), return_tensors="pt")
    assert stacked["input_ids"].shape[0] == 2


def test_call_errors(tok):
    codes = random_codes(tok, 2)
    with pytest.raises(ValueError, match="2 texts but 1 audio"):
        tok(text=["a", "b"], audio_codes=[codes])
    with pytest.raises(ValueError, match="never truncated"):
        tok(text="hello", audio_codes=codes, max_length=10, padding="max_length")
    with pytest.raises(ValueError, match="either audio"):
        tok(audio=[0.0, 0.1], audio_codes=codes)
    with pytest.raises(ValueError, match="nothing to tokenize"):
        tok()


def test_sentencepiece_training_validation():
    with pytest.raises(ValueError, match="text_vocab_size must be an integer >= 264"):
        train_sentencepiece(TEXTS, text_vocab_size=100)
    with pytest.raises(ValueError, match="model_type"):
        train_sentencepiece(TEXTS, text_vocab_size=300, model_type="word")
    assert train_sentencepiece(TEXTS, 300) == train_sentencepiece(TEXTS, 300)  # deterministic
    assert len(train_sentencepiece(None, 400)) > 0  # letters + byte pieces without texts
    with pytest.raises(ValueError, match="too small: the texts use"):
        train_sentencepiece(["".join(chr(0x4E00 + i) for i in range(100))], text_vocab_size=300)


def test_phonemize_gives_ipa_and_clear_errors(monkeypatch):
    from jepatok.tokenizer import phonemes

    ipa = phonemes.phonemize("The cat sat.")
    assert "k" in ipa and "æ" in ipa and len(ipa.split()) == 3  # three words, IPA letters
    assert phonemes.phonemize("-v xx the cat") != ""  # read from stdin: never an option
    assert phonemes.phonemize("   ") == ""
    texts = ["The cat sat.", "A dog ran home.", "", "The cat sat.", "Birds sing at dawn."]
    phonemes.phonemize.cache_clear()
    many = phonemes.phonemize_many(texts, workers=3)  # threads: same answers, in order, duplicates kept
    assert many[0] == many[3] == ipa and many[2] == "" and len(many) == 5
    assert phonemes.phonemize.cache_info().misses == 4  # 3 distinct texts + "" once; then all cached
    phonemes.phonemize("A dog ran home.")  # as the tokenizer calls it: a cache hit
    assert phonemes.phonemize.cache_info().misses == 4
    with pytest.raises(ValueError, match="text_frontend must be one of"):
        phonemes.check_text_frontend("arpabet")
    phonemes.phonemize.cache_clear()
    monkeypatch.setattr(phonemes.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="espeak-ng"):
        phonemes.phonemize("a new sentence")
    phonemes.phonemize.cache_clear()


def test_espeak_ipa_text_frontend_round_trips_and_keeps_spelling_configs_unchanged(tok, tmp_path):
    """text_frontend="espeak-ipa": pieces learned from and applied to phonemes, saved and reloaded with the
    tokenizer, kept by with_codec; a spelling tokenizer's saved config has no such key (as before it existed)."""
    import json

    from transformers import AutoTokenizer

    from jepatok.tokenizer.phonemes import phonemize

    codec = tok.codec
    ipa = JepaSpeechTokenizer.from_codec(codec, texts=TEXTS, text_vocab_size=320, text_frontend="espeak-ipa")
    ids = ipa("the lazy fox")["input_ids"]
    assert ipa.decode(ids, skip_special_tokens=True) == phonemize("the lazy fox")
    assert ipa.tokenize("the lazy fox") != tok.tokenize("the lazy fox")
    # audio tokens inside a text are kept as they are; only the text spans are phonemized
    assert ipa.tokenize("the fox<|a3|>")[-1] == "<|a3|>"
    ipa.save_pretrained(tmp_path / "ipa")
    saved = json.loads((tmp_path / "ipa" / "tokenizer_config.json").read_text())
    assert saved["text_frontend"] == "espeak-ipa"
    again = AutoTokenizer.from_pretrained(tmp_path / "ipa")
    assert again.text_frontend == "espeak-ipa" and again("the lazy fox")["input_ids"] == ids
    assert again.with_codec(codec).text_frontend == "espeak-ipa"
    tok.save_pretrained(tmp_path / "spelling")
    assert "text_frontend" not in json.loads((tmp_path / "spelling" / "tokenizer_config.json").read_text())
    assert AutoTokenizer.from_pretrained(tmp_path / "spelling").text_frontend == "spelling"
    with pytest.raises(ValueError, match="text_frontend"):
        JepaSpeechTokenizer.from_codec(codec, texts=TEXTS, text_vocab_size=320, text_frontend="ipa")
