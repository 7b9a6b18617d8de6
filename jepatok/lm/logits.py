"""Frame-aware constrained sampling for jepatok speech LMs (arXiv 2512.07168: 19 packed tokens per frame).

Grammar of the audio part of a sequence: after the last `<audio>` token come whole frames of
`tokens_per_frame` (G) audio ids, slot k of a frame taking one of its `slot_sizes[k]` legal values
(`audio_offset + v`, 0 <= v < slot_sizes[k]; the 19th slot of the paper layout has 16). `<eos>` may
only follow a complete frame. `FrameGrammarLogitsProcessor` enforces this on every step of
`model.generate` (vectorised over the batch, KV cache friendly: it only reads `input_ids`), and
`check_frame_grammar` validates a finished sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor


@dataclass(frozen=True)
class FrameGrammar:
    """The token layout the LM must follow; built from the tokenizer with `FrameGrammar.from_tokenizer`.

    Args:
        audio_offset: id of audio value 0.
        slot_sizes: legal values per slot of a frame (length = tokens per frame).
        audio_token_id: id of `<audio>` (starts the audio part).
        eos_token_id: id of `<eos>`.
        vocab_size: LM vocabulary size.
        frame_rate: frames per second of the codec (for max-duration limits).
    """

    audio_offset: int
    slot_sizes: tuple[int, ...]
    audio_token_id: int
    eos_token_id: int
    vocab_size: int
    frame_rate: float

    def __post_init__(self):
        if not self.slot_sizes or min(self.slot_sizes) < 1:
            raise ValueError(f"slot_sizes must be non-empty positive ints, got {self.slot_sizes}")
        top = self.audio_offset + max(self.slot_sizes)
        if self.audio_offset < 0 or top > self.vocab_size:
            raise ValueError(
                f"audio ids [{self.audio_offset}, {top}) do not fit in a vocabulary of {self.vocab_size}"
            )
        for name in ("audio_token_id", "eos_token_id"):
            value = getattr(self, name)
            if not 0 <= value < self.vocab_size:
                raise ValueError(f"{name}={value} outside the vocabulary [0, {self.vocab_size})")
        if self.frame_rate <= 0:
            raise ValueError(f"frame_rate must be > 0, got {self.frame_rate}")

    @property
    def tokens_per_frame(self) -> int:
        return len(self.slot_sizes)

    @classmethod
    def from_tokenizer(cls, tokenizer, vocab_size: int | None = None) -> FrameGrammar:
        """Args: tokenizer: a `JepaSpeechTokenizer`; vocab_size: the LM's vocab (default `len(tokenizer)`)."""
        return cls(
            audio_offset=int(tokenizer.audio_offset),
            slot_sizes=tuple(int(s) for s in tokenizer.slot_sizes),
            audio_token_id=int(tokenizer.audio_token_id),
            eos_token_id=int(tokenizer.eos_token_id),
            vocab_size=int(vocab_size if vocab_size is not None else len(tokenizer)),
            frame_rate=float(tokenizer.frame_rate),
        )

    def slot_table(self, device=None) -> torch.Tensor:
        """Allowed-token table [G, V] (bool): row k = the legal ids of slot k."""
        table = torch.zeros(self.tokens_per_frame, self.vocab_size, dtype=torch.bool, device=device)
        for k, size in enumerate(self.slot_sizes):
            table[k, self.audio_offset : self.audio_offset + size] = True
        return table

    def max_frames(self, max_seconds: float | None) -> int | None:
        """Whole frames that fit in `max_seconds` (at least 1), or None for no limit."""
        if max_seconds is None:
            return None
        if max_seconds <= 0:
            raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
        return max(1, math.floor(max_seconds * self.frame_rate + 1e-9))


def last_position(input_ids: torch.Tensor, token_id: int) -> torch.Tensor:
    """Index of the last `token_id` in each row of `input_ids` [B, S], -1 where absent -> [B]."""
    pos = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    return torch.where(input_ids == token_id, pos, torch.full_like(pos, -1)).amax(dim=1)


class FrameGrammarLogitsProcessor(LogitsProcessor):
    """Masks logits so sampled sequences obey the frame grammar.

    Rows that have not produced `<audio>` yet are left as they are except that audio ids are forbidden
    there (audio only follows `<audio>`). After `<audio>`: slot k of the current frame allows only its
    legal audio ids; `<eos>` is allowed only on a frame boundary after at least `min_frames` frames and
    forced once `max_frames` frames exist. Rows already finished (an `<eos>` after `<audio>`) keep
    `<eos>` as their only finite logit so sampling never sees an all -inf row.

    Args:
        grammar: the token layout.
        max_seconds: force `<eos>` after this much audio (whole frames); None for no limit.
        min_frames: frames to produce before `<eos>` is allowed (default 1).
    """

    def __init__(self, grammar: FrameGrammar, max_seconds: float | None = None, min_frames: int = 1):
        if min_frames < 0:
            raise ValueError(f"min_frames must be >= 0, got {min_frames}")
        self.grammar = grammar
        self.max_frames = grammar.max_frames(max_seconds)
        if self.max_frames is not None and min_frames > self.max_frames:
            raise ValueError(f"min_frames={min_frames} exceeds the {self.max_frames} frames of max_seconds")
        self.min_frames = min_frames
        self._table: torch.Tensor | None = None
        self._audio_any: torch.Tensor | None = None

    def _tables(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        if self._table is None or self._table.device != torch.device(device):
            self._table = self.grammar.slot_table(device)  # [G, V]
            self._audio_any = self._table.any(dim=0)  # [V]
        return self._table, self._audio_any

    def _scored_tables(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The slot table and its any-audio row for `scores` [B, V'] (a padded LM head's extra ids are never
        legal audio)."""
        g = self.grammar
        vocab = scores.shape[-1]
        if vocab < g.vocab_size:
            raise ValueError(f"scores have {vocab} entries, the grammar needs a vocabulary of {g.vocab_size}")
        table, audio_any = self._tables(scores.device)
        if vocab > g.vocab_size:
            pad = torch.zeros(table.shape[0], vocab - g.vocab_size, dtype=torch.bool, device=scores.device)
            table = torch.cat([table, pad], dim=1)
            audio_any = table.any(dim=0)
        return table, audio_any

    def _end_rules(
        self, allowed: torch.Tensor, at_boundary: torch.Tensor, frames: torch.Tensor, eos_ok: torch.Tensor
    ) -> torch.Tensor:
        """`<eos>` where `eos_ok`, and forced (nothing else) on a boundary once `max_frames` frames exist."""
        if self.max_frames is not None:
            force = at_boundary & (frames >= self.max_frames)
            allowed = allowed & ~force[:, None]
            eos_ok = eos_ok | force
        allowed[:, self.grammar.eos_token_id] |= eos_ok
        return allowed

    def _masked(self, scores: torch.Tensor, allowed: torch.Tensor, finished: torch.Tensor) -> torch.Tensor:
        """`scores` with -inf outside `allowed`; finished rows keep only `<eos>` (generate() pads them anyway)."""
        eos_only = torch.zeros_like(allowed[0])
        eos_only[self.grammar.eos_token_id] = True
        allowed = torch.where(finished[:, None], eos_only[None, :], allowed)
        return scores.masked_fill(~allowed, -math.inf)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        g = self.grammar
        table, audio_any = self._scored_tables(scores)
        G = g.tokens_per_frame
        last_audio = last_position(input_ids, g.audio_token_id)  # [B]
        has_audio = last_audio >= 0
        n_after = input_ids.shape[1] - 1 - last_audio  # audio tokens so far (when unfinished)
        finished = has_audio & (last_position(input_ids, g.eos_token_id) > last_audio)
        slot = n_after % G
        frames = n_after // G
        at_boundary = slot == 0
        allowed = self._end_rules(table[slot], at_boundary, frames, at_boundary & (frames >= self.min_frames))
        # Before `<audio>`: everything but audio ids.
        allowed = torch.where(has_audio[:, None], allowed, ~audio_any[None, :])
        return self._masked(scores, allowed, finished)


def check_frame_grammar(
    ids: list[int] | torch.Tensor, grammar: FrameGrammar, require_eos: bool = False
) -> list[str]:
    """Violations of the frame grammar in one sequence (empty list = valid).

    The audio part starts after the last `<audio>`; trailing `<eos>` (and anything after it, i.e. padding)
    ends it. Args: ids: the token ids; grammar: the layout; require_eos: an `<eos>` must end the audio.
    """
    ids = [int(i) for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids)]
    if grammar.audio_token_id not in ids:
        return ["no <audio> token"]
    start = len(ids) - 1 - ids[::-1].index(grammar.audio_token_id)
    audio = ids[start + 1 :]
    problems: list[str] = []
    if grammar.eos_token_id in audio:
        end = audio.index(grammar.eos_token_id)
        audio = audio[:end]
    elif require_eos:
        problems.append("audio part does not end with <eos>")
    G = grammar.tokens_per_frame
    if len(audio) % G:
        problems.append(f"audio part has {len(audio)} tokens, not a multiple of {G}")
    for i, tok in enumerate(audio):
        k = i % G
        value = tok - grammar.audio_offset
        if not 0 <= value < grammar.slot_sizes[k]:
            problems.append(
                f"token {i} (slot {k}) = {tok} outside [{grammar.audio_offset}, "
                f"{grammar.audio_offset + grammar.slot_sizes[k]})"
            )
    return problems


class InterleavedTextLogitsProcessor(FrameGrammarLogitsProcessor):
    """The frame grammar for an LM trained on the interleaved TTS layout (`tts_layout="interleaved"`,
    `jepatok.lm.align`): inside the audio part the LM reads the prompt's text again, piece by piece, each just
    before the frame it is spoken in.

    Each row's text is the prompt's ids between its last `<text>` and the `<audio>` that ends the prompt. On a
    frame boundary the row may emit the next unread piece (and only that one: the text is read in order, never
    skipped or made up) or start the next frame; inside a frame, the slot's audio ids as in the plain grammar.
    `<eos>` needs a frame boundary, `min_frames` frames and every piece read; `max_seconds` forces it as before.
    A row without text (a continuation prompt, whose own frames count) follows the plain frame grammar. A
    processor serves one `generate` call (it reads the prompts on its first step).

    Which piece comes next is known, so the LM only decides *when* to read it. With `text_ids` given (the
    vocabulary's text pieces), the next piece gets the probability the LM gives to reading any piece there (the
    log-sum-exp of the text ids' logits), so an LM that is sure a piece comes but unsure which one still reads
    on; without, only the next piece's own logit counts.

    Args:
        grammar: the token layout.
        text_token_id: id of `<text>`.
        max_seconds / min_frames: as in `FrameGrammarLogitsProcessor`.
        text_ids: the ids of the text pieces (pooled as above), or None.
    """

    def __init__(
        self,
        grammar: FrameGrammar,
        text_token_id: int,
        max_seconds: float | None = None,
        min_frames: int = 1,
        text_ids: list[int] | torch.Tensor | None = None,
        pieces_per_frame: float | None = None,
        reading_slack: int = 0,
    ):
        super().__init__(grammar, max_seconds=max_seconds, min_frames=min_frames)
        if pieces_per_frame is not None and pieces_per_frame <= 0:
            raise ValueError(f"pieces_per_frame must be > 0 (or None), got {pieces_per_frame}")
        if reading_slack < 0:
            raise ValueError(f"reading_slack must be >= 0, got {reading_slack}")
        self.pieces_per_frame, self.reading_slack = pieces_per_frame, int(reading_slack)
        self.text_token_id = int(text_token_id)
        self.text_ids = None if text_ids is None else torch.as_tensor(text_ids, dtype=torch.long).flatten()
        if self.text_ids is not None:
            if self.text_ids.numel() == 0:
                raise ValueError("text_ids must name at least one text piece (or be None)")
            bad = (self.text_ids < 0) | (self.text_ids >= grammar.audio_offset)
            if bool(bad.any()):
                raise ValueError(
                    f"text_ids must lie below the audio ids (audio_offset {grammar.audio_offset}), got "
                    f"{self.text_ids[bad][:5].tolist()}"
                )
        self._prompt_len: int | None = None
        self._pieces: torch.Tensor | None = None  # [B, L] text ids, -1 padded
        self._n_pieces: torch.Tensor | None = None  # [B]

    def _read_prompt(self, input_ids: torch.Tensor) -> None:
        """The text and prompt audio of every row, read once: generation only appends to the prompt."""
        audio = last_position(input_ids, self.grammar.audio_token_id)
        if bool((audio < 0).any()):
            raise ValueError("every prompt must contain <audio>")
        rows, prompt_audio = [], []
        for b in range(input_ids.shape[0]):
            ids = input_ids[b].tolist()
            a = int(audio[b])
            text = self._text_before(ids, a)
            if text and a != len(ids) - 1:
                raise ValueError(
                    "an LM of the interleaved layout aligns the text to the audio it generates itself: a "
                    "text-to-speech prompt must end with <audio> (a voice prompt's frames are not supported)"
                )
            rows.append(text)
            prompt_audio.append(len(ids) - 1 - a)
        longest = max(1, max(len(r) for r in rows))
        self._pieces = torch.full((len(rows), longest), -1, dtype=torch.long, device=input_ids.device)
        for b, r in enumerate(rows):
            if r:
                self._pieces[b, : len(r)] = torch.tensor(r, dtype=torch.long)
        self._n_pieces = torch.tensor([len(r) for r in rows], dtype=torch.long, device=input_ids.device)
        self._prompt_audio = torch.tensor(prompt_audio, dtype=torch.long, device=input_ids.device)
        self._prompt_len = int(input_ids.shape[1])

    def max_text_tokens(self, prompts: list[list[int]]) -> int:
        """The most pieces any prompt's text has (extra new tokens generation must allow for)."""
        audio = self.grammar.audio_token_id
        return max(
            (
                len(self._text_before(ids, len(ids) - 1 - ids[::-1].index(audio)))
                for ids in prompts
                if audio in ids
            ),
            default=0,
        )

    def _text_before(self, ids: list[int], audio_pos: int) -> list[int]:
        """The text ids between the last `<text>` before `audio_pos` (an `<audio>`) and it; [] without `<text>`."""
        start = max((i for i, t in enumerate(ids[:audio_pos]) if t == self.text_token_id), default=None)
        return ids[start + 1 : audio_pos] if start is not None else []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        g = self.grammar
        if (
            self._prompt_len is None
            or input_ids.shape[1] < self._prompt_len
            or len(input_ids) != len(self._pieces)
        ):
            self._read_prompt(input_ids)  # a new generate() call
        table, _ = self._scored_tables(scores)
        G = g.tokens_per_frame
        new = input_ids[:, self._prompt_len :]  # [B, N]
        is_audio = (new >= g.audio_offset) & (new < g.audio_offset + max(g.slot_sizes))
        is_eos = new == g.eos_token_id
        finished = is_eos.any(dim=1)
        # pieces read: new ids that are neither audio nor <eos>, counted before the first <eos>
        before_eos = is_eos.long().cumsum(dim=1) == 0
        n_audio = self._prompt_audio + (is_audio & before_eos).sum(dim=1)
        n_read = (~is_audio & ~is_eos & before_eos).sum(dim=1)
        slot, frames = n_audio % G, n_audio // G
        allowed = table[slot]  # [B, V] (a copy: advanced indexing)
        at_boundary = slot == 0
        left = n_read < self._n_pieces
        rows = torch.arange(new.shape[0], device=scores.device)
        next_piece = self._pieces[rows, n_read.clamp(max=self._pieces.shape[1] - 1)]
        offer = at_boundary & left
        if self.pieces_per_frame is not None:
            # the reading schedule: before frame t, round((t + 1) * pieces_per_frame) pieces, +- reading_slack
            target = torch.round((frames + 1).float() * self.pieces_per_frame).long()
            must = offer & (n_read < target - self.reading_slack)
            offer = offer & (n_read < target + self.reading_slack)
            allowed[must] = False  # no frame and no <eos> before the scheduled pieces are read
        allowed[rows[offer], next_piece[offer]] = True
        if self.text_ids is not None and bool(offer.any()):
            pooled = torch.logsumexp(scores[:, self.text_ids.to(scores.device)].float(), dim=-1)
            scores = scores.clone()
            scores[rows[offer], next_piece[offer]] = pooled[offer].to(scores.dtype)
        eos_ok = at_boundary & (frames >= self.min_frames) & ~left
        return self._masked(scores, self._end_rules(allowed, at_boundary, frames, eos_ok), finished)
