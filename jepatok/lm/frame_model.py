"""Frame-level speech LM: one backbone step per codec frame plus a small depth transformer for its 19 tokens.

The flat LM (jepatok.lm.modeling) runs one forward pass per token: 47.5 per second of audio at 2.5 frames/s
x 19 tokens (arXiv 2512.07168 tokens). Here, as CSM/Moshi do for codebooks, a Llama backbone steps once per
*frame* (2.5 per audio second; text prompt tokens stay one step each) and a depth transformer, conditioned on
the backbone state, predicts the next frame's 19 slot values left to right, each over its own legal range (the
frame grammar holds by construction). A 2-way head on the backbone state predicts "another frame" vs "stop"
(the flat model's `<eos>`). The loss is the NLL of the frames plus the stop decisions, so nats per audio second
compare directly with the flat model's (audio tokens + `<eos>`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaModel, PretrainedConfig, PreTrainedModel

from .data import IGNORE_INDEX, LMExample
from .modeling import LM_PRESETS, lm_metadata

DEPTH_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4),
    "small": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4),
    "base": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=4, num_attention_heads=8),
}


def _slot_valid(slot_sizes: list[int], n_values: int) -> torch.Tensor:
    """[G, n_values] bool: value v is legal in slot k iff v < slot_sizes[k]."""
    return torch.arange(n_values)[None, :] < torch.tensor(slot_sizes)[:, None]


def _digit_buffers(radix: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(place value of each of n base-`radix` digits, most significant first [n]; mask of the (earlier i, later
    j) digit pairs [n, n]) of value_radix mode."""
    order = torch.arange(n)
    return radix ** order.flip(0), (order[:, None] < order[None, :]).float()


class FrameLMConfig(PretrainedConfig):
    r"""Frame-level speech LM.

    Args:
        backbone (`dict`): LlamaConfig fields of the per-frame backbone (vocab = text + special ids).
        depth (`dict`): LlamaConfig fields of the depth transformer over the slots of one frame.
        vocab_size (`int`): the tokenizer's `len()` (token embeddings for the text prompt).
        slot_sizes (`list[int]`): legal values per slot (19 slots; the last has 16).
        frame_embed_dim (`int`, 32): per-slot value embedding width (frame input = Linear(concat of 19)).
        value_split (`int`, 0): 0 = each slot value is one softmax over all values (16384 for the `small`
            codec); S > 0 = the value v is predicted as (v // S, then v % S given it): two small softmaxes
            instead of one large one, the same exact likelihood by the chain rule, ~S/2 times less work in the
            output layer (the cost of the 16384-way version dominated a CPU training step).
        value_radix (`int`, 0): R > 0 = work on the base-R digits of each slot value (R = the codec's FSQ levels,
            4 for the `small` codec: each value is 7 FSQ indices). The frame input is a linear map of the one-hot
            digits of all 19 slots, the depth transformer's slot input one of the previous slot's digits, and each
            value is predicted digit by digit, most significant first: p(d_j | state, d_<j), a 4-way softmax whose
            logits are a projection of the slot's depth state plus a learned bias for every earlier digit
            (exact likelihood by the chain rule). Every FSQ dimension is then learned from every frame, where a
            16384-row value table sees each value a handful of times. Excludes `value_split`.
        frame_dropout (`float`, 0.0): p > 0 = in training, each frame *input* of a TTS row is replaced by a
            learned mask vector with probability p (the targets stay): the LM cannot predict a frame from the
            frames before it alone and has to read its text (the decoder-prenet dropout of Tacotron, for an LM).
            Evaluation, scoring and generation never drop.
        align_layer (`int`, -1): >= 0 = the backbone layer whose first `align_heads` heads get the guided
            attention loss of TTS rows (`align_sum`/`align_count` in the output; -1 = off). The backbone then
            runs eager attention so the probabilities exist.
        align_heads (`int`, 1), align_sigma (`float`, 0.2): heads under the loss and the width of the diagonal
            band (in fractions of the text and of the speech).
        ctc_substeps (`int`, 0): > 0 adds a phoneme-recognition head: the backbone state after each frame of a
            TTS row emits `ctc_substeps` symbols over the text ids + blank, trained with CTC against the row's
            text (`ctc_sum`/`ctc_count` in the output): the backbone learns which text its speech has said so
            far (the speech-to-text direction). 0 = off.
        audio_offset, bos_token_id, eos_token_id, pad_token_id, audio_token_id (`int`): tokenizer ids.
        jepatok (`dict`): tokenizer/codec metadata, as for the flat LM.
    """

    model_type = "jepatok_frame_lm"

    def __init__(
        self,
        backbone: dict | None = None,
        depth: dict | None = None,
        vocab_size: int = 32,
        slot_sizes: list[int] | None = None,
        audio_offset: int = 0,
        audio_token_id: int = 0,
        frame_embed_dim: int = 32,
        value_split: int = 0,
        value_radix: int = 0,
        frame_dropout: float = 0.0,
        align_layer: int = -1,
        align_heads: int = 1,
        align_sigma: float = 0.2,
        ctc_substeps: int = 0,
        jepatok: dict | None = None,
        **kwargs,
    ):
        self.backbone = dict(backbone or LM_PRESETS["tiny"])
        self.depth = dict(depth or DEPTH_PRESETS["tiny"])
        self.vocab_size = int(vocab_size)
        self.slot_sizes = [int(s) for s in (slot_sizes or [4])]
        if min(self.slot_sizes) < 1:
            raise ValueError(f"slot_sizes must be positive, got {self.slot_sizes}")
        self.audio_offset = int(audio_offset)
        self.audio_token_id = int(audio_token_id)
        self.frame_embed_dim = int(frame_embed_dim)
        self.value_split = int(value_split)
        self.value_radix = int(value_radix)
        if self.value_radix < 0 or self.value_radix == 1:
            raise ValueError(f"value_radix must be 0 (off) or >= 2, got {value_radix}")
        if self.value_radix and self.value_split:
            raise ValueError("value_radix and value_split are exclusive: set one of them to 0")
        self.ctc_substeps = int(ctc_substeps)
        self.frame_dropout = float(frame_dropout)
        if not 0.0 <= self.frame_dropout < 1.0:
            raise ValueError(f"frame_dropout must be in [0, 1), got {frame_dropout}")
        if self.ctc_substeps < 0:
            raise ValueError(f"ctc_substeps must be >= 0, got {ctc_substeps}")
        self.align_layer, self.align_heads, self.align_sigma = (
            int(align_layer),
            int(align_heads),
            float(align_sigma),
        )
        if self.value_split < 0 or self.value_split == 1:
            raise ValueError(f"value_split must be 0 (off) or >= 2, got {value_split}")
        self.jepatok = dict(jepatok or {})
        super().__init__(**kwargs)

    @property
    def tokens_per_frame(self) -> int:
        return len(self.slot_sizes)


def build_frame_lm_config(
    preset: str,
    tokenizer,
    value_split: int = 0,
    align_layer: int = -1,
    ctc_substeps: int = 0,
    value_radix: int = 0,
    frame_dropout: float = 0.0,
    **overrides,
) -> FrameLMConfig:
    """A FrameLMConfig whose backbone matches flat preset `preset` (for like-for-like comparisons);
    `overrides` are LlamaConfig fields replacing the backbone preset's values (as `model_overrides` of the flat
    LM)."""
    if preset not in LM_PRESETS:
        raise ValueError(f"unknown LM preset {preset!r}; expected one of {sorted(LM_PRESETS)}")
    return FrameLMConfig(
        backbone={**LM_PRESETS[preset], **overrides},
        depth=dict(DEPTH_PRESETS[preset]),
        vocab_size=len(tokenizer),
        slot_sizes=list(tokenizer.slot_sizes),
        audio_offset=int(tokenizer.audio_offset),
        audio_token_id=int(tokenizer.audio_token_id),
        bos_token_id=int(tokenizer.bos_token_id),
        eos_token_id=int(tokenizer.eos_token_id),
        pad_token_id=int(tokenizer.pad_token_id),
        value_split=value_split,
        value_radix=value_radix,
        frame_dropout=frame_dropout,
        align_layer=align_layer,
        ctc_substeps=ctc_substeps,
        jepatok=lm_metadata(tokenizer),
    )


@dataclass
class FrameBatch:
    """Packed frame-level steps. A step is a text/special token (`frame_codes` row all -1) or an audio frame."""

    input_ids: torch.Tensor  # [B, S] token id of token steps (pad at frame steps)
    frame_codes: torch.Tensor  # [B, S, G] codes of frame steps, -1 at token steps
    target_codes: torch.Tensor  # [B, S, G] the frame that follows step s, -1 where none is predicted
    stop_labels: (
        torch.Tensor
    )  # [B, S] 1 = speech ends after step s, 0 = another frame follows, -100 = no label
    position_ids: torch.Tensor  # [B, S] restarts at 0 per packed sequence

    def to(self, device) -> FrameBatch:
        return FrameBatch(*(t.to(device) for t in vars(self).values()))

    def num_frames(self) -> int:
        """Predicted frames (steps whose next frame is a target)."""
        return int((self.target_codes[..., 0] >= 0).sum())

    def num_targets(self) -> int:
        """Scored values: the slot values of every predicted frame plus every stop decision."""
        return self.num_frames() * self.target_codes.shape[-1] + int((self.stop_labels >= 0).sum())


@dataclass
class FrameExample:
    """One training sequence in frame steps, stored compactly (collate_frames expands it)."""

    prompt_ids: list[int]  # token steps, ending with <audio>
    frames: torch.Tensor  # [T, G] int16 codes of the frame steps that follow
    ended: bool  # the speech ends after the last frame (a stop decision is scored there)

    @property
    def num_steps(self) -> int:
        return len(self.prompt_ids) + int(self.frames.shape[0])


def to_frame_example(example: LMExample, tokenizer) -> FrameExample:
    """Flat sequence (`... <audio> audio ids [<eos>]`) -> prompt token steps + frames (+ whether it ends)."""
    ids = example.input_ids
    G, off, eos = int(tokenizer.tokens_per_frame), int(tokenizer.audio_offset), int(tokenizer.eos_token_id)
    a = ids.index(int(tokenizer.audio_token_id))
    audio = ids[a + 1 :]
    ended = bool(audio) and audio[-1] == eos
    audio = audio[:-1] if ended else audio
    if len(audio) % G:
        raise ValueError(f"{len(audio)} audio ids are not whole frames of {G}")
    frames = (torch.tensor(audio, dtype=torch.long) - off).reshape(-1, G)
    if len(audio) and (frames.min() < 0 or frames.max() > torch.iinfo(torch.int16).max):
        raise ValueError("audio ids outside the tokenizer's audio range")
    return FrameExample(list(ids[: a + 1]), frames.to(torch.int16), ended)


def collate_frames(examples: list[FrameExample], pad_id: int) -> FrameBatch:
    """One example per row, right-padded. Step s of a row predicts the frame at step s + 1 (`target_codes`)
    from the prompt's `<audio>` step on, and before each frame and after the last one whether speech stops
    (`stop_labels`: 0 = another frame, 1 = stop, the latter only when the example ended). Padding carries no
    targets; its positions restart at 0 so it stays isolated under the causal mask."""
    B, S = len(examples), max(e.num_steps for e in examples)
    G = next((int(e.frames.shape[1]) for e in examples if e.frames.dim() == 2), 1)
    input_ids = torch.full((B, S), pad_id, dtype=torch.long)
    codes = torch.full((B, S, G), -1, dtype=torch.long)
    targets = torch.full((B, S, G), -1, dtype=torch.long)
    stops = torch.full((B, S), IGNORE_INDEX, dtype=torch.long)
    pos = torch.zeros((B, S), dtype=torch.long)
    for i, e in enumerate(examples):
        n, T = len(e.prompt_ids), int(e.frames.shape[0])
        input_ids[i, :n] = torch.tensor(e.prompt_ids, dtype=torch.long)
        codes[i, n : n + T] = e.frames.long()
        targets[i, n - 1 : n - 1 + T] = e.frames.long()
        stops[i, n - 1 : n - 1 + T] = 0
        if e.ended:
            stops[i, n - 1 + T] = 1
        pos[i, : n + T] = torch.arange(n + T)
        pos[i, n + T :] = torch.arange(S - n - T)
    return FrameBatch(input_ids, codes, targets, stops, pos)


class FrameDataset:
    """Frame examples of one split for `train-lm` (architecture "frame"): one example per batch row."""

    def __init__(self, examples: list[FrameExample], pad_id: int):
        self.examples, self.pad_id = examples, int(pad_id)

    def __len__(self) -> int:
        return len(self.examples)

    def collate(self, indices: list[int]) -> FrameBatch:
        return collate_frames([self.examples[i] for i in indices], self.pad_id)


@dataclass
class FrameLMOutput:
    """Sums over the batch (divide by counts for means)."""

    frame_nll: torch.Tensor  # [] nats over all predicted frame tokens
    stop_nll: torch.Tensor  # [] nats over stop decisions
    frames: int  # predicted frames
    stops: int  # stop decisions
    align_sum: torch.Tensor | None = None  # [] guided-attention loss summed over (head, frame) pairs
    align_count: int = 0
    ctc_sum: torch.Tensor | None = (
        None  # [] CTC loss (nats) of the text given the speech, summed over TTS rows
    )
    ctc_count: int = 0  # text tokens under that loss


class FrameLevelSpeechLM(PreTrainedModel):
    """Backbone over steps (tokens / frames) + depth transformer over the 19 slots of the next frame."""

    config_class = FrameLMConfig
    base_model_prefix = "frame_lm"
    _no_split_modules = ["LlamaDecoderLayer"]

    def __init__(self, config: FrameLMConfig):
        super().__init__(config)
        G, V = config.tokens_per_frame, max(config.slot_sizes)
        # The backbone embeds only text and special ids (below audio_offset): frames enter through value_embed.
        n_tok = config.audio_offset if 0 < config.audio_offset <= config.vocab_size else config.vocab_size
        if config.pad_token_id is not None and config.pad_token_id >= n_tok:
            raise ValueError(f"pad_token_id {config.pad_token_id} must be a text/special id (< {n_tok})")
        bb = LlamaConfig(vocab_size=n_tok, **config.backbone)
        if config.align_layer >= 0:
            if (
                config.align_layer >= bb.num_hidden_layers
                or not 0 < config.align_heads <= bb.num_attention_heads
            ):
                raise ValueError(
                    f"align_layer {config.align_layer} / align_heads {config.align_heads} do not fit a backbone of "
                    f"{bb.num_hidden_layers} layers x {bb.num_attention_heads} heads"
                )
            bb._attn_implementation = "eager"  # attention probabilities for the guided attention loss
        dp = LlamaConfig(
            vocab_size=1, bos_token_id=None, eos_token_id=None, pad_token_id=None, **config.depth
        )
        d, dd, e = bb.hidden_size, dp.hidden_size, config.frame_embed_dim
        self.backbone = LlamaModel(bb)
        self.radix = R = config.value_radix
        if R:  # digits of every slot value, most significant first
            n = 1
            while R**n < V:
                n += 1
            self.n_digits = n
            place, pair_mask = _digit_buffers(R, n)
            self.register_buffer("digit_place", place, persistent=False)
            # Frame step input: one-hot digits of all slots [G * n * R] -> d.
            self.digit_frame_proj = nn.Linear(G * n * R, d)
        else:
            # Frame step input: a small embedding per slot value, concatenated in slot order, projected to d
            # (one shared table: slot identity comes from the position in the concatenation).
            self.value_embed = nn.Embedding(V, e)
            self.frame_proj = nn.Linear(G * e, d)
        self.stop_head = nn.Linear(d, 2)
        if config.frame_dropout:
            self.frame_mask_embed = nn.Parameter(torch.zeros(d))
        self.n_text = n_tok  # text + special ids; the CTC blank is n_text
        if config.ctc_substeps:
            self.ctc_proj = nn.Linear(d, config.ctc_substeps * 128)
            self.ctc_head = nn.Linear(128, n_tok + 1)
        self.depth_in = nn.Linear(d, dd)
        self.depth = LlamaModel(dp)
        # The depth transformer always gets inputs_embeds: its 1-row token table is never used, and DDP refuses
        # a trainable parameter without a gradient.
        self.depth.embed_tokens.weight.requires_grad_(False)
        self.split = config.value_split
        if R:
            self.depth_digit_embed = nn.Linear(n * R, dd)  # previous slot's one-hot digits
            self.digit_head = nn.Linear(dd, n * R)  # digit j's logits from the slot state ...
            # ... plus digit_pair[i, d_i, j, :] for each earlier digit i < j (zero where i >= j).
            self.digit_pair = nn.Parameter(torch.zeros(n, R, n, R))
            self.register_buffer("pair_mask", pair_mask, persistent=False)
        else:  # previous slot's value (slot identity: RoPE position)
            self.depth_value_embed = nn.Embedding(V, dd)
        if self.split:  # v = hi * split + lo: p(hi | state) p(lo | state, hi)
            n_hi = -(-V // self.split)
            self.depth_head_hi = nn.Linear(dd, n_hi)
            self.hi_embed = nn.Embedding(n_hi, dd)
            self.depth_head_lo = nn.Linear(dd, self.split)
        elif not R:
            self.depth_head = nn.Linear(dd, V)
        self.register_buffer("slot_valid", _slot_valid(config.slot_sizes, V), persistent=False)
        self.post_init()

    def _init_weights(self, module):
        std = self.config.backbone.get("initializer_range", 0.02)
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        elif hasattr(module, "weight") and module.weight is not None and module.weight.dim() == 1:
            nn.init.ones_(module.weight)  # RMSNorm
        if isinstance(module, FrameLevelSpeechLM):
            if getattr(module, "frame_mask_embed", None) is not None:
                nn.init.zeros_(module.frame_mask_embed)
            if module.radix:  # non-persistent buffers are not in checkpoints: set them again
                nn.init.zeros_(module.digit_pair)
                place, pair_mask = _digit_buffers(module.radix, module.n_digits)
                module.digit_place.copy_(place)
                module.pair_mask.copy_(pair_mask)
            module.slot_valid.copy_(_slot_valid(self.config.slot_sizes, module.slot_valid.shape[1]))

    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.embed_tokens

    def get_output_embeddings(self):
        return None  # no token head: frames come from the depth head, stops from the stop head

    # --- embeddings --------------------------------------------------------------------------------------
    def embed_steps(self, input_ids: torch.Tensor, frame_codes: torch.Tensor) -> torch.Tensor:
        """[B, S] ids + [B, S, G] codes -> step embeddings [B, S, d]."""
        is_frame = frame_codes[..., 0] >= 0  # [B, S]
        tok = self.backbone.embed_tokens(input_ids)
        if self.radix:
            frame = self.digit_frame_proj(self._one_hot_digits(frame_codes.clamp_min(0)).flatten(-2))
        else:
            frame = self.frame_proj(self.value_embed(frame_codes.clamp_min(0)).flatten(-2))  # [B, S, d]
        return torch.where(is_frame[..., None], frame, tok)

    def _digits(self, values: torch.Tensor) -> torch.Tensor:
        """values [...] -> base-`value_radix` digits [..., n], most significant first."""
        return torch.div(values[..., None], self.digit_place, rounding_mode="floor") % self.radix

    def _one_hot_digits(self, values: torch.Tensor) -> torch.Tensor:
        """values [...] -> one-hot digits [..., n * R] (float)."""
        return F.one_hot(self._digits(values), self.radix).flatten(-2).to(self.digit_frame_proj.weight.dtype)

    def _slot_input(self, values: torch.Tensor) -> torch.Tensor:
        """Depth transformer input [..., dd] for the previous slot's values [...]."""
        if self.radix:
            return self.depth_digit_embed(self._one_hot_digits(values))
        return self.depth_value_embed(values)

    def depth_hidden(self, h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Teacher-forced depth states [N, k, dd] for backbone states h [N, d] and slot values codes [N, k-1]."""
        cond = self.depth_in(h)[:, None, :]  # [N, 1, dd]
        prev = self._slot_input(codes)  # [N, k-1, dd]
        # Position 0 carries the backbone state, later positions the previous slot value only (adding the
        # state to every position drowned the value signal: a memorisation test plateaued at ln(18)).
        x = torch.cat([cond, prev], dim=1)  # [N, k, dd]
        return self.depth(inputs_embeds=x, use_cache=False).last_hidden_state

    def _split_logits(
        self, out: torch.Tensor, hi: torch.Tensor | None, slots: torch.Tensor, guidance_scale: float = 1.0
    ) -> torch.Tensor:
        """value_split mode: masked logits of hi (`hi` None) [..., n_hi], or of lo given hi [..., split].
        `out` [..., dd] are depth states of slots `slots` (broadcast over out's leading dims)."""
        sizes = torch.tensor(self.config.slot_sizes, device=out.device)[slots]
        if hi is None:
            logits = self._guide(self.depth_head_hi(out).float(), guidance_scale)
            starts = torch.arange(logits.shape[-1], device=out.device) * self.split
            return logits.masked_fill(starts >= sizes[..., None], float("-inf"))
        logits = self._guide(self.depth_head_lo(out + self.hi_embed(hi)).float(), guidance_scale)
        if guidance_scale != 1.0:
            hi = hi.chunk(2)[0]
        room = sizes - hi * self.split  # legal lo values below this
        return logits.masked_fill(
            torch.arange(self.split, device=out.device) >= room[..., None], float("-inf")
        )

    def _masked_pair(self) -> torch.Tensor:
        """digit_pair with the pairs (i, j), i >= j, zeroed: [n(i), R, n(j), R]."""
        return self.digit_pair * self.pair_mask[:, None, :, None]

    def _digit_bias(self, digits: torch.Tensor) -> torch.Tensor:
        """Earlier-digit biases [..., n, R] of every digit position for digits [..., n] (zero for digit 0)."""
        pair = self._masked_pair()
        one_hot = F.one_hot(digits, self.radix).to(pair.dtype)  # [..., n, R]
        return torch.einsum("...ia,iajb->...jb", one_hot, pair)

    def _digit_allowed(
        self, prefix: torch.Tensor, position: torch.Tensor, sizes: torch.Tensor
    ) -> torch.Tensor:
        """Legal digits [..., R]: digit c at `position` after the value `prefix` of the earlier digits is legal
        iff (prefix * R + c) * R^(digits after it) < the slot size (all tensors broadcast)."""
        c = torch.arange(self.radix, device=prefix.device)
        place = self.digit_place[position]
        return (prefix[..., None] * self.radix + c) * place[..., None] < sizes[..., None]

    def _digit_logits(
        self, out: torch.Tensor, values: torch.Tensor, slots: torch.Tensor, guidance_scale: float = 1.0
    ) -> torch.Tensor:
        """value_radix mode, teacher-forced: masked logits [..., n, R] of every digit of `values` [...] given
        the earlier ones, from depth states `out` [..., dd] of slots `slots` (broadcast over values' dims)."""
        n, R = self.n_digits, self.radix
        base = self._guide(self.digit_head(out).float(), guidance_scale).unflatten(-1, (n, R))
        digits = self._digits(values)
        logits = base + self._digit_bias(digits).float()
        sizes = torch.tensor(self.config.slot_sizes, device=out.device)[slots]
        prefix = torch.div(values[..., None], self.digit_place * R, rounding_mode="floor")  # [..., n]
        allowed = self._digit_allowed(prefix, torch.arange(n, device=out.device), sizes[..., None])
        return logits.masked_fill(~allowed, float("-inf"))

    def depth_logits(self, h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Teacher-forced slot scores [N, k, V] for states h [N, d] and the first k slot values codes [N, k-1]:
        logits, or with `value_split` the log-probabilities log p(hi) + log p(lo | hi) of every value (either
        way -inf on illegal values; softmax gives the model's distribution)."""
        out = self.depth_hidden(h, codes)  # [N, k, dd]
        k, V = out.shape[1], self.slot_valid.shape[1]
        if self.radix:  # sum over digits of log p(d_j | d_<j), for every value at once
            every = torch.arange(V, device=out.device)
            slots = torch.arange(k, device=out.device)
            lp = self._digit_logits(out[:, :, None, :], every[None, :], slots[:, None]).log_softmax(-1)
            scores = lp.gather(-1, self._digits(every)[None, None, :, :, None].expand(*lp.shape[:-1], 1))
            return scores[..., 0].sum(-1).masked_fill(~self.slot_valid[:k], float("-inf"))
        if not self.split:
            return self.depth_head(out).float().masked_fill(~self.slot_valid[:k], float("-inf"))
        slots = torch.arange(k, device=out.device)
        hi_lp = self._split_logits(out, None, slots).log_softmax(-1)  # [N, k, H]
        n_hi = hi_lp.shape[-1]
        every_hi = torch.arange(n_hi, device=out.device)
        lo = self._split_logits(out[:, :, None, :], every_hi, slots[:, None])  # [N, k, H, split]
        lo = lo.masked_fill(torch.isinf(lo).all(-1, keepdim=True), 0.0).log_softmax(
            -1
        )  # hi rows that are empty
        scores = (hi_lp[..., None] + lo).flatten(-2)[..., :V]
        return scores.masked_fill(~self.slot_valid[:k], float("-inf"))

    # --- training ----------------------------------------------------------------------------------------
    def _nlls(self, h: torch.Tensor, batch: FrameBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Unreduced NLLs (nats): of each predicted frame [N] (its 19 values; row-major order of the steps)
        and of each stop decision [M], from backbone states h [B, S, d]."""
        has_target = batch.target_codes[..., 0] >= 0  # [B, S]
        hs, tgt = h[has_target], batch.target_codes[has_target]  # [N, d], [N, G]
        if hs.shape[0] and self.radix:
            out = self.depth_hidden(hs, tgt[:, :-1])  # [N, G, dd]
            slots = torch.arange(tgt.shape[1], device=tgt.device)
            logits = self._digit_logits(out, tgt, slots)  # [N, G, n, R]
            nll = F.cross_entropy(logits.flatten(0, 2), self._digits(tgt).flatten(), reduction="none")
            per_frame = nll.view(tgt.shape[0], -1).sum(-1)
        elif hs.shape[0] and self.split:
            out = self.depth_hidden(hs, tgt[:, :-1])  # [N, G, dd]
            slots = torch.arange(tgt.shape[1], device=tgt.device)
            hi, lo = tgt // self.split, tgt % self.split
            hi_logits = self._split_logits(out, None, slots)
            lo_logits = self._split_logits(out, hi, slots)
            nll = F.cross_entropy(hi_logits.flatten(0, 1), hi.flatten(), reduction="none")
            nll = nll + F.cross_entropy(lo_logits.flatten(0, 1), lo.flatten(), reduction="none")
            per_frame = nll.view_as(tgt).sum(-1)
        elif hs.shape[0]:
            logits = self.depth_logits(hs, tgt[:, :-1])  # [N, G, V]
            nll = F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), reduction="none")
            per_frame = nll.view_as(tgt).sum(-1)
        else:
            per_frame = h.new_zeros(0)
        has_stop = batch.stop_labels >= 0
        stop_logits = self.stop_head(h[has_stop]).float()
        return per_frame, F.cross_entropy(stop_logits, batch.stop_labels[has_stop], reduction="none")

    def _run_backbone(self, batch: FrameBatch, attentions: bool = False):
        """The backbone over a packed batch (causal, positions restarting per row); `attentions` also returns
        the attention probabilities (eager attention: the guided-attention loss)."""
        emb = self.embed_steps(batch.input_ids, batch.frame_codes)
        if self.training and self.config.frame_dropout:
            emb = torch.where(
                self._dropped_frames(batch)[..., None], self.frame_mask_embed.to(emb.dtype), emb
            )
        return self.backbone(
            inputs_embeds=emb,
            position_ids=batch.position_ids,
            attention_mask=None,
            use_cache=False,
            output_attentions=attentions,
        )

    def _dropped_frames(self, batch: FrameBatch) -> torch.Tensor:
        """[B, S] frame inputs of TTS rows (first frame-predicting step after `<bos> <text>` + text) replaced by
        the mask vector, each with probability `frame_dropout`."""
        is_frame = batch.frame_codes[..., 0] >= 0
        tts = self._tts_row_mask(batch)
        coin = torch.rand(is_frame.shape, device=is_frame.device) < self.config.frame_dropout
        return is_frame & tts[:, None] & coin

    @torch.no_grad()
    def score(self, batch: FrameBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame NLLs [N] and per-stop-decision NLLs [M] (nats) of a batch, for analyses (`text-gain`'s
        gain by frame); their sums are `forward`'s frame_nll and stop_nll."""
        return self._nlls(self._run_backbone(batch).last_hidden_state, batch)

    @staticmethod
    def _tts_row_mask(batch: FrameBatch) -> torch.Tensor:
        """[B] rows that are TTS rows: their first frame-predicting step (`<audio>`) comes after `<bos> <text>`
        and at least one text token (a row without targets has argmax 0: not TTS)."""
        return (batch.target_codes[..., 0] >= 0).float().argmax(-1) > 2

    @staticmethod
    def _tts_rows(batch: FrameBatch):
        """(row, steps that predict a frame [T], end of the text) for each TTS row of a batch (`_tts_row_mask`),
        whose text ids are `input_ids[row, 2:end]`. Continuation rows (`<bos> <audio>`) are skipped."""
        has_target = batch.target_codes[..., 0] >= 0
        for i in FrameLevelSpeechLM._tts_row_mask(batch).nonzero()[:, 0].tolist():
            q = has_target[i].nonzero()[:, 0]
            yield i, q, int(q[0])

    def _align_loss(self, attn: torch.Tensor, batch: FrameBatch) -> tuple[torch.Tensor, int]:
        """Guided attention (Tachibana et al. 2017, for a decoder-only LM): in TTS rows (`<bos> <text> text
        <audio> frames`) the attention of the chosen heads from the step predicting frame j of T to the N text
        tokens should lie near the diagonal: loss -log sum_n A[j, n] exp(-(n/N - j/T)^2 / 2 sigma^2), summed over
        heads and frames. attn: [B, H, S, S] probabilities of the align layer."""
        heads = attn[:, : self.config.align_heads].float()
        total, count = attn.new_zeros(()), 0
        for i, q, end in self._tts_rows(batch):
            text = torch.arange(2, end, device=attn.device)  # after <bos> <text>
            T, N = q.numel(), text.numel()
            a = heads[i][:, q][:, :, text]  # [h, T, N]
            t = (torch.arange(T, device=attn.device) + 0.5) / T
            n = (torch.arange(N, device=attn.device) + 0.5) / N
            band = torch.exp(-((n[None, :] - t[:, None]) ** 2) / (2 * self.config.align_sigma**2))  # [T, N]
            total = total - ((a * band).sum(-1) + 1e-4).log().sum()
            count += a.shape[0] * T
        return total, count

    def _ctc_loss(self, h: torch.Tensor, batch: FrameBatch) -> tuple[torch.Tensor, int]:
        """CTC of each TTS row's text ids given the backbone states after its frames (causal: the symbols of
        frame t are read from frames <= t), `ctc_substeps` symbols per frame."""
        k = self.config.ctc_substeps
        is_frame = batch.frame_codes[..., 0] >= 0
        logps, targets, in_lens, tgt_lens = [], [], [], []
        for i, _, end in self._tts_rows(batch):
            text = batch.input_ids[i, 2:end]
            frames = is_frame[i].nonzero()[:, 0]
            if frames.numel() * k < text.numel():
                continue  # too few symbols to spell the text
            z = self.ctc_proj(h[i, frames]).view(-1, 128)  # [T * k, 128]
            logps.append(self.ctc_head(z).float().log_softmax(-1))
            targets.append(text)
            in_lens.append(z.shape[0])
            tgt_lens.append(text.numel())
        if not logps:
            return h.sum() * 0, 0
        padded = torch.nn.utils.rnn.pad_sequence(logps)  # [L, R, C]
        loss = F.ctc_loss(
            padded,
            torch.cat(targets),
            torch.tensor(in_lens),
            torch.tensor(tgt_lens),
            blank=self.n_text,
            reduction="sum",
            zero_infinity=True,
        )
        return loss, sum(tgt_lens)

    def forward(self, batch: FrameBatch) -> FrameLMOutput:
        align = self.config.align_layer >= 0
        bb = self._run_backbone(batch, attentions=align)
        h = bb.last_hidden_state  # [B, S, d]
        per_frame, per_stop = self._nlls(h, batch)
        frame_nll = per_frame.sum() if per_frame.numel() else h.sum() * 0
        out = FrameLMOutput(frame_nll, per_stop.sum(), int(per_frame.numel()), int(per_stop.numel()))
        if align:
            out.align_sum, out.align_count = self._align_loss(bb.attentions[self.config.align_layer], batch)
        if self.config.ctc_substeps:
            out.ctc_sum, out.ctc_count = self._ctc_loss(h, batch)
        return out

    # --- generation --------------------------------------------------------------------------------------
    @staticmethod
    def _pick(
        logits: torch.Tensor, temperature: float, top_k: int, top_p: float, do_sample: bool
    ) -> torch.Tensor:
        """One value per row [B, 1] from logits [B, V] (-inf = illegal): greedy, or sampled after
        temperature, top-k and nucleus (top-p) filtering."""
        from transformers import TopKLogitsWarper, TopPLogitsWarper

        if not do_sample:
            return logits.argmax(-1, keepdim=True)
        logits = logits / max(temperature, 1e-5)
        # transformers' own warpers: the same top-k / nucleus rules as the flat LM's `generate`
        if top_k:
            logits = TopKLogitsWarper(top_k)(None, logits)
        if top_p < 1.0:
            logits = TopPLogitsWarper(top_p)(None, logits)
        return torch.multinomial(logits.softmax(-1), 1)

    @staticmethod
    def _guide(logits: torch.Tensor, scale: float) -> torch.Tensor:
        """Rows [cond; uncond] (2B) -> B guided rows uncond + scale * (cond - uncond) (identity at scale 1)."""
        if scale == 1.0:
            return logits
        cond, uncond = logits.chunk(2)
        return uncond + scale * (cond - uncond)

    @torch.no_grad()
    def _sample_frame(
        self,
        h: torch.Tensor,
        temperature: float,
        top_k: int,
        top_p: float = 1.0,
        do_sample: bool = True,
        guidance_scale: float = 1.0,
    ) -> torch.Tensor:
        """Sample one frame [B, G] slot by slot from the depth transformer (KV cache across the slots). With
        guidance (scale != 1) `h` holds 2B states, the conditional rows then the unconditional ones; each slot
        is chosen from the guided logits and fed to both halves."""
        from transformers import DynamicCache

        cache = DynamicCache()
        x = self.depth_in(h)[:, None, :]  # [N, 1, dd]: position 0 = the backbone state
        codes = []
        for k in range(self.config.tokens_per_frame):
            out = self.depth(inputs_embeds=x, past_key_values=cache, use_cache=True).last_hidden_state[:, -1]
            if self.radix:
                nxt = self._sample_digits(out, k, temperature, top_k, top_p, do_sample, guidance_scale)
            elif self.split:  # hi, then lo given hi (top-k / top-p apply to each choice)
                slot = torch.tensor(k, device=out.device)  # every row is at slot k
                hi = self._pick(
                    self._split_logits(out, None, slot, guidance_scale), temperature, top_k, top_p, do_sample
                )
                hi_fed = hi[:, 0] if guidance_scale == 1.0 else torch.cat([hi, hi])[:, 0]
                lo_logits = self._split_logits(out, hi_fed, slot, guidance_scale)
                nxt = hi * self.split + self._pick(lo_logits, temperature, top_k, top_p, do_sample)
            else:
                logits = self._guide(self.depth_head(out).float(), guidance_scale)
                logits = logits.masked_fill(~self.slot_valid[k], float("-inf"))
                nxt = self._pick(logits, temperature, top_k, top_p, do_sample)  # [B, 1]
            codes.append(nxt)
            fed = nxt if guidance_scale == 1.0 else torch.cat([nxt, nxt])
            x = self._slot_input(fed)  # [N, 1, dd]
        return torch.cat(codes, dim=1)

    def _sample_digits(
        self,
        out: torch.Tensor,
        slot: int,
        temperature: float,
        top_k: int,
        top_p: float,
        do_sample: bool,
        guidance_scale: float,
    ) -> torch.Tensor:
        """value_radix mode: one value [B, 1] of slot `slot`, digit by digit, from depth states `out` [N, dd]
        (N = 2B under guidance: the guided base logits, the same earlier-digit biases)."""
        n, R = self.n_digits, self.radix
        base = self._guide(self.digit_head(out).float(), guidance_scale).unflatten(-1, (n, R))  # [B, n, R]
        pair = self._masked_pair().float()  # [n, R, n, R]
        value = torch.zeros(base.shape[0], dtype=torch.long, device=out.device)
        bias = torch.zeros_like(base)
        size = torch.tensor(self.config.slot_sizes[slot], device=out.device)
        for j in range(n):
            allowed = self._digit_allowed(value, torch.tensor(j, device=out.device), size)
            logits = (base[:, j] + bias[:, j]).masked_fill(~allowed, float("-inf"))
            digit = self._pick(logits, temperature, top_k, top_p, do_sample)[:, 0]
            value = value * R + digit
            bias = bias + pair[j, digit]
        return value[:, None]

    @torch.no_grad()
    def generate_frames(
        self,
        prompt_ids: list[list[int]],
        max_frames: int,
        min_frames: int = 1,
        temperature: float = 1.0,
        top_k: int = 50,
        top_p: float = 1.0,
        do_sample: bool = True,
        prompt_frames: list[torch.Tensor | None] | None = None,
        guidance_scale: float = 1.0,
        unconditional_ids: list[list[int]] | None = None,
    ) -> list[torch.Tensor]:
        """Continue prompts with frames; returns the new codes [T_i, G] per prompt.

        Args:
            prompt_ids: token prompts ending with `<audio>`, e.g. the tokenizer's TTS prompt
                `<bos> <text> text-ids <audio>` or the continuation prompt `<bos> <audio>`.
            max_frames: frames after `<audio>` at most, the prompt's own frames included (as the flat LM's
                `max_seconds`); min_frames: frames after `<audio>` before "stop" may be chosen.
            temperature, top_k, top_p, do_sample: choice of slot values (greedy when do_sample is False); the
                stop decision is sampled at temperature 1 (greedy: stop when its probability exceeds 1/2).
            prompt_frames: per prompt, codes [T, G] already spoken after `<audio>` (a voice prompt or the
                speech to continue), or None.
            guidance_scale: classifier-free guidance toward the text (1 = off): every step also runs the
                backbone on `unconditional_ids` (default `<bos> <audio>`) followed by the same frames, and
                each slot value and stop decision is chosen from uncond + scale * (cond - uncond) logits.
            unconditional_ids: per prompt, the text-free token prompt (ending with `<audio>`).
        """
        from transformers import DynamicCache

        device, G, pad = self.device, self.config.tokens_per_frame, int(self.config.pad_token_id)
        B = len(prompt_ids)
        given = [
            torch.zeros(0, G, dtype=torch.long)
            if f is None
            else torch.as_tensor(f, dtype=torch.long).reshape(-1, G)
            for f in (prompt_frames or [None] * B)
        ]
        if len(given) != B:
            raise ValueError(f"{len(given)} prompt_frames for {B} prompts")
        guided = guidance_scale != 1.0
        if guided:
            if unconditional_ids is None:
                unconditional_ids = [[int(self.config.bos_token_id), int(self.config.audio_token_id)]] * B
            if len(unconditional_ids) != B:
                raise ValueError(f"{len(unconditional_ids)} unconditional prompts for {B} prompts")
            prompt_ids, given = list(prompt_ids) + list(unconditional_ids), given + given
        for p in prompt_ids:
            if not p or int(p[-1]) != int(self.config.audio_token_id):
                raise ValueError("each frame-LM prompt must end with the <audio> token")
        N = len(prompt_ids)  # B, or 2B rows (cond then uncond) under guidance
        steps = [len(p) + len(f) for p, f in zip(prompt_ids, given)]
        width = max(steps)
        ids = torch.full((N, width), pad, dtype=torch.long)
        codes = torch.full((N, width, G), -1, dtype=torch.long)
        mask = torch.zeros(N, width, dtype=torch.long)
        for i, (p, f) in enumerate(zip(prompt_ids, given)):
            s = width - steps[i]
            ids[i, s : s + len(p)] = torch.tensor(p, dtype=torch.long)
            codes[i, s + len(p) :] = f
            mask[i, s:] = 1
        ids, codes, mask = ids.to(device), codes.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        cache = DynamicCache()
        out = self.backbone(
            inputs_embeds=self.embed_steps(ids, codes),
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        )
        h = out.last_hidden_state[:, -1]  # [N, d]
        total = torch.tensor(
            [len(f) for f in given[:B]], dtype=torch.long, device=device
        )  # frames after <audio>
        alive = total < max_frames
        frames: list[torch.Tensor] = []
        lengths = torch.zeros(B, dtype=torch.long, device=device)
        while alive.any():
            may_stop = alive & (total >= min_frames)
            if may_stop.any():
                p_stop = self._guide(self.stop_head(h).float(), guidance_scale).softmax(-1)[:, 1]
                stop = torch.bernoulli(p_stop).bool() if do_sample else p_stop > 0.5
                alive &= ~(stop & may_stop)
            if not alive.any():
                break
            frame = self._sample_frame(h, temperature, top_k, top_p, do_sample, guidance_scale)  # [B, G]
            frames.append(frame)
            lengths += alive.long()
            total += alive.long()
            alive &= total < max_frames
            fed = torch.cat([frame, frame]) if guided else frame  # [N, G]
            mask = torch.cat([mask, torch.ones(N, 1, dtype=torch.long, device=device)], dim=1)
            positions = positions[:, -1:] + 1
            emb = self.embed_steps(torch.full((N, 1), pad, dtype=torch.long, device=device), fed[:, None])
            out = self.backbone(
                inputs_embeds=emb,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
            )
            h = out.last_hidden_state[:, -1]
        stacked = (
            torch.stack(frames, dim=1) if frames else torch.zeros(B, 0, G, dtype=torch.long, device=device)
        )
        return [stacked[i, : int(lengths[i])].cpu() for i in range(B)]
