"""LM training sequences from a pre-tokenized jepatok dataset: TTS / continuation templates, packing, collation.

Templates (interfaces.md): TTS `<bos> <text> text-ids <audio> audio-ids <eos>` (with `tts_layout="interleaved"`
each text id also comes inside the audio part, before the frame it is aligned to: `jepatok.lm.align`); continuation
`<bos> <audio> audio-ids <eos>` (the `<eos>` marks the end of a whole clip, so the LM learns where speech
stops; windows cut out of a long clip have no `<eos>`).

Packing (the documented choice): whole sequences are packed first-fit-decreasing into blocks of
`block_size` tokens; a block restarts `position_ids` at 0 for each sequence and is passed to the model with
`attention_mask=None`, which makes transformers build a block-diagonal causal mask (`masking_utils.
find_packed_sequence_indices`), so no token attends across a sequence boundary. The first token of each
sequence and the padding tail carry label -100, so no loss crosses a boundary either. Sequences longer than a
block: continuation clips are cut into whole-frame windows, TTS examples are dropped (their text would not
match the truncated audio) and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

IGNORE_INDEX = -100
SEQUENCE_MODES = ("tts", "continuation", "both")
#: How a TTS example lays out its text (`LMTrainArgs.tts_layout`): "prefix" = `<bos> <text> pieces <audio> frames
#: <eos>`; "interleaved" = the same prefix, and inside the audio part each piece again just before the frame it is
#: aligned to (`jepatok.lm.align`).
TTS_LAYOUTS = ("prefix", "interleaved")


@dataclass
class SequenceStats:
    """Counts from building sequences (logged by the trainer)."""

    examples: int = 0
    tts: int = 0
    continuation: int = 0
    windows: int = 0  # extra continuation windows cut from long clips
    dropped_no_text: int = 0
    dropped_too_long: int = 0
    dropped_empty: int = 0
    dropped_unaligned: int = 0  # interleaved layout: no text_frames matching the text's pieces


@dataclass
class LMExample:
    """One training sequence."""

    input_ids: list[int]  # [S]
    labels: list[int]  # [S], IGNORE_INDEX where no loss


@dataclass
class LMBatch:
    """A collated batch of packed blocks."""

    input_ids: torch.Tensor  # [B, S] long
    labels: torch.Tensor  # [B, S] long, IGNORE_INDEX = no loss
    position_ids: torch.Tensor  # [B, S] long, restarts at 0 for each packed sequence

    def to(self, device) -> LMBatch:
        return LMBatch(*(t.to(device) for t in (self.input_ids, self.labels, self.position_ids)))


def _labels(ids: list[int], prompt_len: int) -> list[int]:
    """Labels for `ids`: the first token is never predicted (it follows another sequence in a block)."""
    return [IGNORE_INDEX] * max(1, prompt_len) + ids[max(1, prompt_len) :]


def _audio_ids(tokenizer, codes: list[list[int]]) -> list[int]:
    return tokenizer.codes_to_ids(
        torch.as_tensor(codes, dtype=torch.long).reshape(-1, tokenizer.tokens_per_frame)
    )


def build_examples(
    audio_codes: list[list[list[int]]],
    texts: list[str],
    tokenizer,
    mode: str = "both",
    block_size: int = 1024,
    mask_text_labels: bool = True,
    tts_layout: str = "prefix",
    text_frames: list[list[int]] | None = None,
) -> tuple[list[LMExample], SequenceStats]:
    """Turn pre-tokenized rows into LM training sequences.

    Args:
        audio_codes: per example, the codes [T][G] (the `audio_codes` column).
        texts: per example, the transcript ("" when none; the `text` column).
        tokenizer: the `JepaSpeechTokenizer` the data was made with.
        mode: "tts" (examples without text are skipped), "continuation", or "both" (each example gives a
            continuation sequence, and a TTS one when it has text).
        block_size: maximum sequence length.
        mask_text_labels: TTS sequences get no loss on `<bos> <text> text-ids <audio>` (the prompt).
        tts_layout: "prefix" or "interleaved" (TTS sequences repeat each text id before its aligned frame; the
            repeats are scored: the LM learns when to move on to the next piece).
        text_frames: per example, the frame of each text piece (the `text_frames` column of `jepatok
            align-text`); needed by the interleaved layout. Rows whose frames do not match the text's pieces
            are not used for TTS (counted as `dropped_unaligned`).
    """
    if mode not in SEQUENCE_MODES:
        raise ValueError(f"mode must be one of {SEQUENCE_MODES}, got {mode!r}")
    if len(audio_codes) != len(texts):
        raise ValueError(f"{len(audio_codes)} audio_codes rows but {len(texts)} texts")
    if tts_layout not in TTS_LAYOUTS:
        raise ValueError(f"tts_layout must be one of {TTS_LAYOUTS}, got {tts_layout!r}")
    interleaved = tts_layout == "interleaved" and mode in ("tts", "both")
    if interleaved and (text_frames is None or len(text_frames) != len(texts)):
        raise ValueError(
            "tts_layout=interleaved needs text_frames for every example (the text_frames column: run "
            f"`jepatok align-text` on the pre-tokenized data); got {None if text_frames is None else len(text_frames)} "
            f"for {len(texts)} examples"
        )
    G = int(tokenizer.tokens_per_frame)
    if block_size < 3 + G:
        raise ValueError(f"block_size={block_size} cannot hold even one frame of {G} tokens plus 3 specials")
    bos, aud, eos = int(tokenizer.bos_token_id), int(tokenizer.audio_token_id), int(tokenizer.eos_token_id)
    if mode in ("tts", "both") and getattr(tokenizer, "text_frontend", None) == "espeak-ipa":
        from ..tokenizer.phonemes import phonemize_many

        phonemize_many(
            [(t or "").strip() for t in texts]
        )  # all espeak-ng calls up front, in parallel (cached)
    stats = SequenceStats()
    out: list[LMExample] = []
    for row, (codes, text) in enumerate(zip(audio_codes, texts)):
        stats.examples += 1
        if len(codes) == 0:
            stats.dropped_empty += 1
            continue
        audio = _audio_ids(tokenizer, codes)
        text = (text or "").strip()
        if mode in ("tts", "both"):
            if text:
                if interleaved:
                    ids = _interleaved_ids(tokenizer, text, codes, text_frames[row])
                else:
                    ids = tokenizer.build_tts_ids(text, torch.as_tensor(codes, dtype=torch.long))
                if ids is None:
                    stats.dropped_unaligned += 1
                elif len(ids) > block_size:
                    stats.dropped_too_long += 1
                else:
                    prompt_len = ids.index(aud) + 1 if mask_text_labels else 1
                    out.append(LMExample(ids, _labels(ids, prompt_len)))
                    stats.tts += 1
            elif mode == "tts":
                stats.dropped_no_text += 1
        if mode in ("continuation", "both"):
            frames_per_window = (block_size - 3) // G  # room for <bos> <audio> ... <eos>
            n_frames = len(audio) // G
            for w, start in enumerate(range(0, n_frames, frames_per_window)):
                chunk = audio[start * G : (start + frames_per_window) * G]
                last = start + frames_per_window >= n_frames
                ids = [bos, aud] + chunk + ([eos] if last else [])
                out.append(LMExample(ids, _labels(ids, 2)))
                stats.continuation += 1
                stats.windows += int(w > 0)
    return out, stats


def _interleaved_ids(tokenizer, text: str, codes, frames) -> list[int] | None:
    """The interleaved TTS sequence, or None when `frames` is not one non-decreasing frame per text piece."""
    from .align import TextFramesMismatch, interleave_tts_ids

    frames = [int(f) for f in (frames or [])]
    try:
        return interleave_tts_ids(
            tokenizer, tokenizer._text_ids(text), torch.as_tensor(codes, dtype=torch.long), frames
        )
    except TextFramesMismatch:
        return None


def pack_examples(lengths: list[int], block_size: int) -> list[list[int]]:
    """First-fit-decreasing bin packing: lists of example indices whose lengths sum to <= block_size.

    Deterministic (ties broken by index). Args: lengths: sequence lengths; block_size: capacity per block.
    """
    bad = [n for n in lengths if n > block_size or n < 1]
    if bad:
        raise ValueError(f"sequence lengths {bad[:5]} do not fit blocks of {block_size} tokens")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = lengths[i]
        for b, free in enumerate(room):
            if free >= n:
                bins[b].append(i)
                room[b] -= n
                break
        else:
            bins.append([i])
            room.append(block_size - n)
    return [sorted(b) for b in bins]


@dataclass
class PackedDataset:
    """Examples grouped into fixed-size blocks; `collate(block_indices)` builds an `LMBatch`.

    Args:
        examples: the sequences.
        block_size: tokens per block.
        pad_token_id: id used for the padding tail.
        blocks: example indices per block (computed with `pack_examples` when omitted).
    """

    examples: list[LMExample]
    block_size: int
    pad_token_id: int
    blocks: list[list[int]] = field(default_factory=list)

    def __post_init__(self):
        if not self.blocks:
            self.blocks = pack_examples([len(e.input_ids) for e in self.examples], self.block_size)

    def __len__(self) -> int:
        return len(self.blocks)

    def collate(self, block_indices: list[int]) -> LMBatch:
        B, S = len(block_indices), self.block_size
        input_ids = torch.full((B, S), self.pad_token_id, dtype=torch.long)
        labels = torch.full((B, S), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros((B, S), dtype=torch.long)
        for row, b in enumerate(block_indices):
            cursor = 0
            for i in self.blocks[b]:
                ex = self.examples[i]
                n = len(ex.input_ids)
                input_ids[row, cursor : cursor + n] = torch.tensor(ex.input_ids)
                labels[row, cursor : cursor + n] = torch.tensor(ex.labels)
                position_ids[row, cursor : cursor + n] = torch.arange(n)
                cursor += n
            position_ids[row, cursor:] = torch.arange(S - cursor)  # the padding tail is its own "sequence"
        return LMBatch(input_ids, labels, position_ids)

    def num_label_tokens(self) -> int:
        return sum(sum(1 for t in e.labels if t != IGNORE_INDEX) for e in self.examples)


def epoch_batches(
    num_blocks: int, batch_size: int, epoch: int, seed: int, num_processes: int = 1, process_index: int = 0
) -> list[list[int]]:
    """This process's micro-batches (lists of block indices) for one epoch, in a seeded order.

    All processes get the same number of micro-batches (the tail that cannot be shared evenly is dropped), so a
    step index maps to the same data after a resume and DDP processes stay in lock-step.

    Args:
        num_blocks: blocks in the dataset.
        batch_size: blocks per micro-batch on each process.
        epoch: epoch number (part of the shuffle seed).
        seed: run seed.
        num_processes: data-parallel world size.
        process_index: this process's rank.
    """
    if num_blocks < batch_size * num_processes:
        raise ValueError(
            f"{num_blocks} packed blocks cannot fill one step of {batch_size} blocks x {num_processes} processes; "
            "use more data, a smaller block_size or a smaller batch size"
        )
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(num_blocks, generator=g).tolist()
    per_step = batch_size * num_processes
    usable = (num_blocks // per_step) * per_step
    batches = [perm[i : i + per_step] for i in range(0, usable, per_step)]
    return [b[process_index * batch_size : (process_index + 1) * batch_size] for b in batches]
