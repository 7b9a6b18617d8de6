"""`JepaSpeechTokenizer`: one id space for text and JEPA codec tokens (arXiv 2512.07168), as an HF tokenizer.

Id layout (one vocabulary, nothing overlaps):

    0 <pad>  1 <bos>  2 <eos>  3 <unk>  4 <text>  5 <audio>  6 <end_of_audio>   special tokens
    7 .. audio_offset - 1                                                        SentencePiece text pieces
                                                                                 (256 byte pieces first, so
                                                                                 any text encodes)
    audio_offset + v, v in [0, codebook_size)                                    audio token `<|a{v}|>`

The special tokens are the SentencePiece model's own first pieces (trained as pad/bos/eos/unk + control
symbols), so text ids are SentencePiece ids unchanged and `audio_offset` is the SentencePiece vocabulary
size. `len(tokenizer)` is the LM vocabulary size. Slot k of a frame (k = 0..tokens_per_frame-1) takes only
`slot_sizes[k]` values (the 19th slot of the paper codec holds 16), which `ids_to_codes` checks.

The codec is attached lazily (`tokenizer.codec`), so LM training that only needs ids never loads it.
This file holds the SentencePiece training helper, the vocabulary, ids <-> codes, decoding and saving;
the LM templates (`__call__`) are in `templates.py` and waveform encode/decode in `codec_io.py`.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sentencepiece as spm
from transformers import PreTrainedTokenizer

from .codec_io import CodecAudioMixin, as_int_list
from .processing import REMOTE_MODULE, write_remote_module
from .templates import TemplateMixin

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>", "<text>", "<audio>", "<end_of_audio>")
AUDIO_TOKEN_RE = re.compile(r"<\|a(\d+)\|>")
# `<|...|>` is reserved for audio tokens: anything else written that way is an unknown special token.
RESERVED_RE = re.compile(r"<\|[^|<>]*\|>")
CODEC_SUBFOLDER = "codec"


def train_sentencepiece(
    texts: Iterable[str] | None,
    text_vocab_size: int = 4000,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
) -> bytes:
    """Train the text vocabulary; returns the serialized SentencePiece model.

    Args:
        texts: Transcripts to learn pieces from. `None`/empty gives a byte-level vocabulary (still encodes
            any text through byte fallback).
        text_vocab_size: Target size of the SentencePiece vocabulary, special and byte pieces included
            (a soft limit: small corpora give fewer pieces).
        model_type: `"unigram"` or `"bpe"`.
        character_coverage: Share of characters covered by character pieces (the rest fall back to bytes).
    """
    minimum = len(SPECIAL_TOKENS) + 256 + 1
    if not isinstance(text_vocab_size, int) or text_vocab_size < minimum:
        raise ValueError(
            f"text_vocab_size must be an integer >= {minimum} (7 special + 256 byte pieces + 1), got {text_vocab_size!r}"
        )
    if model_type not in ("unigram", "bpe"):
        raise ValueError(f"model_type must be 'unigram' or 'bpe', got {model_type!r}")
    sentences = [t.strip() for t in (texts or []) if isinstance(t, str) and t.strip()]
    if not sentences:  # no transcripts: letters, digits and punctuation; everything else via byte pieces
        sentences = ["abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:?!'\"-"]
    chars = {c for s in sentences for c in s if not c.isspace()}
    if character_coverage >= 1.0 and text_vocab_size < minimum - 1 + len(chars):
        raise ValueError(
            f"text_vocab_size={text_vocab_size} is too small: the texts use {len(chars)} distinct characters, "
            f"so at least {minimum - 1 + len(chars)} pieces are needed (7 special + 256 byte + characters)"
        )
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=text_vocab_size,
        model_type=model_type,
        byte_fallback=True,
        character_coverage=character_coverage,
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        pad_piece=SPECIAL_TOKENS[0],
        bos_piece=SPECIAL_TOKENS[1],
        eos_piece=SPECIAL_TOKENS[2],
        unk_piece=SPECIAL_TOKENS[3],
        control_symbols=list(SPECIAL_TOKENS[4:]),
        hard_vocab_limit=False,
        split_digits=True,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


class JepaSpeechTokenizer(CodecAudioMixin, TemplateMixin, PreTrainedTokenizer):
    r"""Joint text + audio tokenizer for a speech LM on JEPA codec tokens.

    Build one with [`JepaSpeechTokenizer.from_codec`]; reload with `AutoTokenizer.from_pretrained(dir)`.

    Args:
        vocab_file (`str`): SentencePiece model file (`spm.model`).
        codebook_size (`int`): Values one audio token can take (16384 for the paper codec).
        codec_identity (`dict`): `codec_identity(codec)` of the attached codec: model_type, config_hash,
            weights_hash, codes_hash (since 2026-12-03), sampling_rate, frame_rate, tokens_per_frame, slot_sizes.
        codec_config_file (`str`, *optional*): Path of the codec's `config.json` (set by `from_pretrained`
            from the `codec/` subfolder); the codec loads lazily from its folder.
        codec_weights_file (`str`, *optional*): Path of the codec's safetensors (resolved alongside).
        text_token, audio_token, end_of_audio_token (`str`): Template markers.
        text_frontend (`str`, "spelling"): What the SentencePiece pieces are made of: "spelling" (the text
            as written) or "espeak-ipa" (espeak-ng's IPA phonemes of it, `tokenizer.phonemes`; decoding text
            ids then gives phonemes). Saved in tokenizer_config.json when not "spelling".
    """

    vocab_files_names = {
        "vocab_file": "spm.model",
        "codec_config_file": f"{CODEC_SUBFOLDER}/config.json",
        "codec_weights_file": f"{CODEC_SUBFOLDER}/model.safetensors",
    }
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: str,
        codebook_size: int,
        codec_identity: dict,
        codec_config_file: str | None = None,
        codec_weights_file: str | None = None,
        bos_token: str = "<bos>",
        eos_token: str = "<eos>",
        pad_token: str = "<pad>",
        unk_token: str = "<unk>",
        text_token: str = "<text>",
        audio_token: str = "<audio>",
        end_of_audio_token: str = "<end_of_audio>",
        text_frontend: str = "spelling",
        **kwargs,
    ):
        from .phonemes import check_text_frontend

        self.text_frontend = check_text_frontend(text_frontend)
        # Saved only when not "spelling", so spelling tokenizers keep the config they had before it existed.
        if text_frontend != "spelling":
            kwargs["text_frontend"] = text_frontend
        if vocab_file is None or not os.path.isfile(vocab_file):
            raise ValueError(f"vocab_file must be an existing SentencePiece model file, got {vocab_file!r}")
        # After a save/load round trip HF hands the *_token markers over as model_specific_special_tokens.
        named = dict(kwargs.get("model_specific_special_tokens") or {})
        text_token = named.get("text_token", text_token)
        audio_token = named.get("audio_token", audio_token)
        end_of_audio_token = named.get("end_of_audio_token", end_of_audio_token)
        self.sp_model_bytes = Path(vocab_file).read_bytes()
        self.sp_model = spm.SentencePieceProcessor(model_proto=self.sp_model_bytes)
        given = (pad_token, bos_token, eos_token, unk_token, text_token, audio_token, end_of_audio_token)
        pieces = tuple(
            self.sp_model.id_to_piece(i) for i in range(min(len(SPECIAL_TOKENS), len(self.sp_model)))
        )
        if tuple(str(t) for t in given) != SPECIAL_TOKENS or pieces != SPECIAL_TOKENS:
            raise ValueError(
                f"special tokens must be {list(SPECIAL_TOKENS)} at ids 0..6 of the SentencePiece model "
                f"(got tokens {[str(t) for t in given]}, model pieces {list(pieces)}); build the tokenizer with "
                "JepaSpeechTokenizer.from_codec"
            )
        if isinstance(codebook_size, bool) or not isinstance(codebook_size, int) or codebook_size <= 0:
            raise ValueError(f"codebook_size must be a positive integer, got {codebook_size!r}")
        if not isinstance(codec_identity, dict) or not {"tokens_per_frame", "slot_sizes"} <= set(
            codec_identity
        ):
            raise ValueError(
                f"codec_identity must be the dict of codec_identity(codec), got {codec_identity!r}"
            )
        slot_sizes = [int(s) for s in codec_identity["slot_sizes"]]
        if len(slot_sizes) != int(codec_identity["tokens_per_frame"]) or max(slot_sizes) > codebook_size:
            raise ValueError(
                f"codec_identity slot_sizes {slot_sizes} must have tokens_per_frame="
                f"{codec_identity['tokens_per_frame']} entries, each <= codebook_size={codebook_size}"
            )
        self.codebook_size = int(codebook_size)
        self.codec_identity = dict(codec_identity)
        self.audio_offset = len(self.sp_model)
        self._codec = None
        self._feature_extractor = None
        self._codec_dir = os.path.dirname(codec_config_file) if codec_config_file else None
        self._vocab_cache: dict[str, int] | None = None
        self._auto_map = {"AutoTokenizer": [f"{REMOTE_MODULE}.JepaSpeechTokenizer", None]}
        kwargs.setdefault("special_tokens_pattern", "bos")
        super().__init__(
            bos_token=bos_token,
            eos_token=eos_token,
            pad_token=pad_token,
            unk_token=unk_token,
            text_token=text_token,
            audio_token=audio_token,
            end_of_audio_token=end_of_audio_token,
            codebook_size=codebook_size,
            codec_identity=codec_identity,
            **kwargs,
        )

    # --- construction ----------------------------------------------------------------------------
    @classmethod
    def from_codec(
        cls,
        codec: Any,
        texts: Iterable[str] | None = None,
        text_vocab_size: int = 4000,
        model_type: str = "unigram",
        text_frontend: str = "spelling",
        **kwargs,
    ) -> JepaSpeechTokenizer:
        """Train the SentencePiece text vocabulary on `texts` and attach `codec`.

        Args:
            codec: A `JepaCodecModel` or a directory holding one (`save_pretrained` output).
            texts: Transcripts for the text vocabulary (see `train_sentencepiece`).
            text_vocab_size: Soft size of the text vocabulary, special and byte pieces included.
            model_type: SentencePiece model type, `"unigram"` or `"bpe"`.
            text_frontend: `"spelling"` or `"espeak-ipa"`: the pieces are learned from (and every text is
                tokenized as) espeak-ng's IPA phonemes of the text (`tokenizer.phonemes`).
            kwargs: Passed to `__init__` (e.g. `model_max_length`, `padding_side`).
        """
        from .phonemes import check_text_frontend, phonemize

        codec, codec_dir = _codec_argument(codec)
        if check_text_frontend(text_frontend) == "espeak-ipa" and texts is not None:
            texts = [phonemize(t) if isinstance(t, str) else t for t in texts]
        model = train_sentencepiece(texts, text_vocab_size=text_vocab_size, model_type=model_type)
        return cls._attach(
            model, codec, codec_dir, int(codec.config.codebook_size), text_frontend=text_frontend, **kwargs
        )

    @classmethod
    def _attach(cls, sp_model: bytes, codec, codec_dir: str | None, codebook_size: int, **kwargs):
        import tempfile

        from .modeling import codec_identity

        with tempfile.TemporaryDirectory() as tmp:
            vocab_file = os.path.join(tmp, "spm.model")
            Path(vocab_file).write_bytes(sp_model)
            tok = cls(
                vocab_file=vocab_file,
                codebook_size=codebook_size,
                codec_identity=codec_identity(codec),
                **kwargs,
            )
        tok.init_kwargs.pop("vocab_file", None)
        tok._codec = codec.eval()
        tok._codec_dir = codec_dir
        return tok

    def with_codec(self, codec: Any) -> JepaSpeechTokenizer:
        """This tokenizer (same SentencePiece model, so the same ids) attached to `codec`, which must make the same
        tokens: an equal `codes_hash`, e.g. the same codec after decoder-only training (`train-stage2 ...
        freeze_codes=true`). LMs and pre-tokenized datasets made with this tokenizer stay valid with the result.

        Args:
            codec: A `JepaCodecModel` or a directory holding one.

        Raises:
            ValueError: the codec makes other tokens, or this tokenizer was built before `codes_hash` existed
                (then rebuild it with `from_codec` and re-tokenize).
        """
        from .modeling import codec_identity, identity_mismatch

        codec, codec_dir = _codec_argument(codec)
        new = codec_identity(codec)
        if not self.codec_identity.get("codes_hash"):
            raise ValueError(
                "this tokenizer records no codes_hash (built before it existed), so whether the codec makes the "
                "same tokens cannot be checked; build a new one with JepaSpeechTokenizer.from_codec"
            )
        diff = identity_mismatch(self.codec_identity, new)
        if diff is not None:
            raise ValueError(
                f"the codec makes different tokens: {diff[0]} {diff[2]} != {diff[1]} (this tokenizer's); build a "
                "new tokenizer with JepaSpeechTokenizer.from_codec and re-tokenize your data"
            )
        kwargs = {
            "model_max_length": self.model_max_length,
            "padding_side": self.padding_side,
            "text_frontend": self.text_frontend,
        }
        return type(self)._attach(self.sp_model_bytes, codec, codec_dir, self.codebook_size, **kwargs)

    @property
    def tokens_per_frame(self) -> int:
        return int(self.codec_identity["tokens_per_frame"])

    @property
    def slot_sizes(self) -> list[int]:
        return [int(s) for s in self.codec_identity["slot_sizes"]]

    @property
    def sampling_rate(self) -> int:
        return int(self.codec_identity["sampling_rate"])

    @property
    def frame_rate(self) -> float:
        return float(self.codec_identity["frame_rate"])

    @property
    def text_token_id(self) -> int:
        return SPECIAL_TOKENS.index("<text>")

    @property
    def audio_token_id(self) -> int:
        return SPECIAL_TOKENS.index("<audio>")

    @property
    def end_of_audio_token_id(self) -> int:
        return SPECIAL_TOKENS.index("<end_of_audio>")

    @property
    def num_special_ids(self) -> int:
        return len(SPECIAL_TOKENS)

    # --- vocabulary -------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.audio_offset + self.codebook_size

    def get_vocab(self) -> dict[str, int]:
        if self._vocab_cache is None:
            vocab = {self.sp_model.id_to_piece(i): i for i in range(self.audio_offset)}
            vocab.update({f"<|a{v}|>": self.audio_offset + v for v in range(self.codebook_size)})
            self._vocab_cache = vocab
        vocab = dict(self._vocab_cache)
        vocab.update(getattr(self, "_added_tokens_encoder", {}))
        return vocab

    def is_audio_id(self, token_id: int) -> bool:
        return self.audio_offset <= int(token_id) < self.audio_offset + self.codebook_size

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        pieces: list[str] = []
        pos = 0
        for match in RESERVED_RE.finditer(text):
            self._check_audio_token(match.group(0))
            if match.start() > pos:
                pieces.extend(self._text_pieces(text[pos : match.start()]))
            pieces.append(match.group(0))
            pos = match.end()
        if pos < len(text):
            pieces.extend(self._text_pieces(text[pos:]))
        return pieces

    def _text_pieces(self, text: str) -> list[str]:
        """SentencePiece pieces of a plain text span (phonemized first with the espeak-ipa front-end)."""
        if self.text_frontend == "espeak-ipa":
            from .phonemes import phonemize

            text = phonemize(text)
        return self.sp_model.encode(text, out_type=str)

    def _check_audio_token(self, token: str) -> int:
        match = AUDIO_TOKEN_RE.fullmatch(token)
        if match is None:
            raise ValueError(
                f"unknown special token {token!r}: `<|...|>` is reserved for audio tokens <|a0|>..<|a{self.codebook_size - 1}|>; "
                f"the special tokens are {list(SPECIAL_TOKENS)}"
            )
        value = int(match.group(1))
        if value >= self.codebook_size:
            raise ValueError(f"audio token {token!r} is out of range: values are 0..{self.codebook_size - 1}")
        return value

    def _convert_token_to_id(self, token: str) -> int:
        if token.startswith("<|"):
            return self.audio_offset + self._check_audio_token(token)
        return self.sp_model.piece_to_id(token)

    def _convert_id_to_token(self, index: int) -> str:
        if not 0 <= index < self.vocab_size:
            raise ValueError(
                f"token id {index} is out of range: this tokenizer has ids 0..{self.vocab_size - 1}"
            )
        if index >= self.audio_offset:
            return f"<|a{index - self.audio_offset}|>"
        return self.sp_model.id_to_piece(index)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return self.sp_model.decode_pieces(tokens)

    # --- decoding ids to text ---------------------------------------------------------------------
    def _decode(
        self,
        token_ids: int | list[int],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        summarize_audio: bool = True,
        **kwargs,
    ) -> str:
        """Text pieces become text; each run of audio ids becomes `[audio: N frames, S s]` (or the
        `<|a{v}|>` tokens when `summarize_audio=False`); special tokens are kept unless skipped."""
        ids = as_int_list(token_ids)
        parts: list[str] = []
        text_run: list[int] = []
        after_special = [False]  # the last emitted part was a special token (they glue to their text)
        i = 0

        def flush() -> None:
            if text_run:
                text = self.sp_model.decode(text_run)
                # SentencePiece drops the word-boundary space of a run's first piece; keep it mid-sequence.
                if (
                    parts
                    and not after_special[0]
                    and self.sp_model.id_to_piece(text_run[0]).startswith("\u2581")
                ):
                    text = " " + text
                parts.append(text)
                after_special[0] = False
                text_run.clear()

        while i < len(ids):
            tid = ids[i]
            if not 0 <= tid < len(self):
                raise ValueError(f"token id {tid} is out of range: this tokenizer has ids 0..{len(self) - 1}")
            if self.is_audio_id(tid):
                flush()
                j = i
                while j < len(ids) and self.is_audio_id(ids[j]):
                    j += 1
                after_special[0] = False
                if summarize_audio:
                    parts.append(self._summarize_audio(j - i))
                else:
                    parts.append("".join(f"<|a{t - self.audio_offset}|>" for t in ids[i:j]))
                i = j
                continue
            if tid in self._added_tokens_decoder:
                flush()
                if not skip_special_tokens:
                    parts.append(self._added_tokens_decoder[tid].content)
                    after_special[0] = True
            else:
                text_run.append(tid)
            i += 1
        flush()
        return "".join(parts)

    def _summarize_audio(self, n_tokens: int) -> str:
        g = self.tokens_per_frame
        frames, rest = divmod(n_tokens, g)
        extra = f" + {rest} tokens" if rest else ""
        seconds = f"{frames / self.frame_rate:.2f}".rstrip("0").rstrip(".")
        return f"[audio: {frames} frames{extra}, {seconds} s]"

    # --- pickling (datasets.map with num_proc) ------------------------------------------------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["sp_model"] = None
        state["_feature_extractor"] = None
        if state.get("_codec_dir"):  # reloaded lazily in the worker from its folder
            state["_codec"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.sp_model = spm.SentencePieceProcessor(model_proto=self.sp_model_bytes)

    # --- saving -----------------------------------------------------------------------------------
    @classmethod
    def register_for_auto_class(cls, auto_class: str = "AutoTokenizer") -> None:
        """No-op: jepatok writes its own `auto_map` shim (HF's would copy this module, whose relative
        imports cannot run from a model folder)."""

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        """Write `spm.model`, the codec (`codec/config.json` + safetensors) and the `auto_map` loader shim."""
        save_directory = str(save_directory)
        name = (filename_prefix + "-" if filename_prefix else "") + self.vocab_files_names["vocab_file"]
        path = os.path.join(save_directory, name)
        tmp = f"{path}.tmp-{os.getpid()}"
        Path(tmp).write_bytes(self.sp_model_bytes)
        os.replace(tmp, path)
        files = [path, write_remote_module(save_directory)]
        codec_out = os.path.join(save_directory, CODEC_SUBFOLDER)
        if self._codec is not None or self._codec_dir is not None:
            same = self._codec_dir is not None and os.path.abspath(self._codec_dir) == os.path.abspath(
                codec_out
            )
            if not same:
                tmp_dir = f"{codec_out}.tmp-{os.getpid()}"
                shutil.rmtree(tmp_dir, ignore_errors=True)
                self.codec.save_pretrained(tmp_dir)
                shutil.rmtree(codec_out, ignore_errors=True)
                os.replace(tmp_dir, codec_out)
            files.append(codec_out)
        return tuple(files)


def _codec_argument(codec: Any) -> tuple[Any, str | None]:
    """(JepaCodecModel, its directory or None) from a model or a `save_pretrained` directory."""
    from .modeling import JepaCodecModel

    codec_dir = None
    if isinstance(codec, (str, os.PathLike)):
        codec_dir = str(codec)
        if not os.path.isfile(os.path.join(codec_dir, "config.json")):
            raise ValueError(
                f"{codec_dir!r} holds no codec (config.json missing); pass a JepaCodecModel or its directory"
            )
        codec = JepaCodecModel.from_pretrained(codec_dir)
    if not isinstance(codec, JepaCodecModel):
        raise ValueError(
            f"codec must be a JepaCodecModel or a directory holding one, got {type(codec).__name__}"
        )
    return codec, codec_dir


__all__ = ["JepaSpeechTokenizer", "train_sentencepiece", "SPECIAL_TOKENS"]
