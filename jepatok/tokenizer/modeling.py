"""`JepaCodecModel`: the JEPA+DAAM speech codec as a Hugging Face audio tokenizer (arXiv 2512.07168).

    audio [B, 1, L] --encoder--> latents [B, T, 128] --FSQ--> indices [B, T, 128] --pack--> codes [B, T, 19]
    codes --unpack--> indices --grid--> quantized [B, T, 128] --decoder--> audio [B, 1, T * hop]

T = ceil(L / hop) (2.5 frames/s for the `small` and `paper` presets); codes are little-endian mixed-radix
packed FSQ indices (values < 4^7, last slot < 16). `codec_identity(model)` fingerprints architecture and weights
so token files and datasets can refuse codes from a different codec.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import torch
from torch import nn
from transformers import initialization as init
from transformers.modeling_utils import PreTrainedAudioTokenizerBase
from transformers.utils import ModelOutput

from .configuration import JepaCodecConfig
from .conformer import MaskedGroupNorm
from .daam import DaamGate
from .decoder import JepaDecoder
from .encoder import JepaEncoder
from .fsq import FiniteScalarQuantizer
from .layers import Snake, init_weight_std
from .packing import pack, unpack


@dataclass
class JepaQuantizerOutput(ModelOutput):
    quantized: torch.Tensor | None = None  # [B, T, D] float32 grid values (straight-through)
    indices: torch.Tensor | None = None  # [B, T, D] long FSQ indices
    audio_codes: torch.Tensor | None = None  # [B, T, G] long packed tokens


@dataclass
class JepaCodecEncoderOutput(ModelOutput):
    audio_codes: torch.Tensor | None = None  # [B, T, G] long packed tokens (G = 19 for 128 dims / 7)
    frame_mask: torch.Tensor | None = None  # [B, T] bool, True on frames covering real samples
    latents: torch.Tensor | None = None  # [B, T, D] float encoder output before FSQ


@dataclass
class JepaCodecDecoderOutput(ModelOutput):
    audio_values: torch.Tensor | None = None  # [B, 1, T * hop] float in [-1, 1]


@dataclass
class JepaCodecOutput(ModelOutput):
    audio_codes: torch.Tensor | None = None  # [B, T, G] long
    audio_values: torch.Tensor | None = None  # [B, 1, T * hop] float
    frame_mask: torch.Tensor | None = None  # [B, T] bool


# Fields added after codecs were first saved: omitted from the identity while at the value that reproduces
# the earlier architecture, so config hashes recorded by existing tokenizers stay valid.
_LATER_FIELDS = {
    ("encoder_config", "conformer_final_norm"): True,
    ("encoder_config", "spectral_input_bands"): 0,
    ("encoder_config", "spectral_input_subframes"): 20,
    ("encoder_config", "spectral_input_hidden"): 0,
    ("encoder_config", "pitch_input_subframes"): 0,
    ("fsq_config", "pre_projection"): False,
    ("fsq_config", "input_rms"): 0.0,
    ("decoder_config", "frame_layers"): 0,
    ("decoder_config", "frame_kernel_size"): 3,
    ("decoder_config", "envelope_bands"): 0,
    ("decoder_config", "envelope_subframes"): 20,
    ("decoder_config", "head"): "hifigan",
    ("decoder_config", "istft_n_fft"): 640,
    ("decoder_config", "istft_hop"): 160,
    ("decoder_config", "istft_channels"): 256,
    ("decoder_config", "istft_layers"): 4,
    ("decoder_config", "pitch_subframes"): 0,
}


def _architecture_dict(config: JepaCodecConfig) -> dict:
    """Architecture fields only (no bookkeeping such as transformers version or dtype)."""
    keys = ("encoder_config", "daam_config", "fsq_config", "decoder_config")
    skip = {"transformers_version", "_name_or_path", "architectures", "dtype", "torch_dtype", "model_type"}
    out: dict = {"sampling_rate": config.sampling_rate}
    for key in keys:
        sub = getattr(config, key).to_dict()
        out[key] = {k: v for k, v in sorted(sub.items()) if k not in skip and not k.startswith("_")}
        # PretrainedConfig.to_dict adds generic defaults; keep only the sub-config's own __init__ fields.
        own = set(getattr(config, key).__class__.__init__.__code__.co_varnames)
        out[key] = {
            k: v for k, v in out[key].items() if k in own and _LATER_FIELDS.get((key, k), object()) != v
        }
    return out


def _hash_tensors(digest, state: dict) -> None:
    for key in sorted(state):
        tensor = state[key].detach().to("cpu").contiguous().reshape(-1)
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(state[key].shape)).encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


def codec_identity(model: JepaCodecModel) -> dict:
    """Fingerprint of a codec. Two codecs make the same tokens iff their `codes_hash` is equal; they are the
    same codec iff `config_hash` and `weights_hash` are equal (see `identity_mismatch`).

    Args:
        model (`JepaCodecModel`): The codec (its inference weights: encoder, quantizer, decoder).

    Returns:
        `dict` with `model_type`, `config_hash` (sha256 of the canonical architecture JSON), `weights_hash`
        (sha256 over the state_dict tensors in sorted key order), `codes_hash` (the same over what decides the
        codes only: the architecture without `decoder_config` and every tensor outside `decoder.`),
        `sampling_rate`, `frame_rate`, `tokens_per_frame` and `slot_sizes`.
    """
    config = model.config
    arch = _architecture_dict(config)
    canonical = json.dumps(arch, sort_keys=True, separators=(",", ":"))
    state = model.state_dict()
    weights = hashlib.sha256()
    _hash_tensors(weights, state)
    codes_arch = {k: v for k, v in arch.items() if k != "decoder_config"}
    codes = hashlib.sha256(json.dumps(codes_arch, sort_keys=True, separators=(",", ":")).encode())
    _hash_tensors(codes, {k: v for k, v in state.items() if not k.startswith("decoder.")})
    return {
        "model_type": "jepa_codec",
        "config_hash": hashlib.sha256(canonical.encode()).hexdigest(),
        "weights_hash": weights.hexdigest(),
        "codes_hash": codes.hexdigest(),
        "sampling_rate": int(config.sampling_rate),
        "frame_rate": float(config.frame_rate),
        "tokens_per_frame": int(config.tokens_per_frame),
        "slot_sizes": [int(s) for s in config.slot_sizes],
    }


def identity_mismatch(
    expected: dict, found: dict, lenient: bool = False
) -> tuple[str, object, object] | None:
    """Whether tokens made under codec identity `found` are valid for `expected`: None when they are, else the
    first differing key with both values. When both identities carry `codes_hash` it alone decides (a
    retrained decoder keeps the tokens, LMs and pre-tokenized datasets valid); identities recorded before it
    existed fall back to `config_hash` and `weights_hash`. `lenient`: a key missing on either side is not a
    difference."""
    keys = (
        ("codes_hash",)
        if expected.get("codes_hash") and found.get("codes_hash")
        else ("config_hash", "weights_hash")
    )
    for key in keys:
        a, b = expected.get(key), found.get(key)
        if lenient and not (a and b):
            continue
        if a != b:
            return key, a, b
    return None


class JepaCodecPreTrainedModel(PreTrainedAudioTokenizerBase):
    config_class = JepaCodecConfig
    config: JepaCodecConfig
    base_model_prefix = "jepa_codec"
    main_input_name = "input_values"
    supports_gradient_checkpointing = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Conv / linear weights per `config.init_scheme` (authors: trunc_normal(0.02); fan_in: 1/sqrt(fan_in)),
        zero biases; gate and Snake defaults."""
        if getattr(module, "_identity_init", False):  # the pre-quantization projection starts as the identity
            init.copy_(module.weight, torch.eye(module.weight.shape[0], dtype=module.weight.dtype))
            init.zeros_(module.bias)
        elif getattr(module, "_zero_init", False):  # the encoder's spectral input starts as a no-op
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, (nn.Conv1d, nn.ConvTranspose1d, nn.Linear)):
            init.trunc_normal_(module.weight, std=init_weight_std(module, self.config.init_scheme))
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, MaskedGroupNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, Snake):
            init.zeros_(module.raw_alpha)
        elif isinstance(module, DaamGate):
            init.zeros_(module.offsets)
            init.constant_(module.log_scales, float(torch.tensor(module.scale_init).log()))
            init.constant_(module.alpha, module.alpha_init)
        elif isinstance(module, FiniteScalarQuantizer):
            init.copy_(module.levels, torch.tensor(self.config.fsq_config.levels, dtype=torch.long))


class JepaCodecModel(JepaCodecPreTrainedModel):
    """JEPA+DAAM encoder, FSQ with mixed-radix packing, and HiFi-GAN-style decoder.

    Args:
        config (`JepaCodecConfig`): The codec architecture (see `JepaCodecConfig.from_preset`).
    """

    def __init__(self, config: JepaCodecConfig):
        super().__init__(config)
        self.encoder = JepaEncoder(config)
        self.quantizer = FiniteScalarQuantizer(config.fsq_config.levels)
        dim = config.fsq_config.dim
        self.pre_quant = nn.Linear(dim, dim) if config.fsq_config.pre_projection else None
        if self.pre_quant is not None:
            self.pre_quant._identity_init = True
        self.decoder = JepaDecoder(config)
        self.post_init()

    # --- quantization ------------------------------------------------------------------------------
    def quantizer_input(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, T, D] -> what FSQ rounds: through `pre_quant` first when the config has
        `fsq.pre_projection`, then rescaled to `fsq.input_rms` per frame when it is > 0 (in fp32 like FSQ)."""
        with torch.autocast(device_type=latents.device.type, enabled=False):
            if self.pre_quant is not None:
                latents = self.pre_quant(latents.float())
            rms = self.config.fsq_config.input_rms
            if rms > 0:  # each frame's vector to RMS `input_rms`: FSQ's tanh is never saturated
                latents = latents.float()
                latents = latents * (rms / latents.pow(2).mean(-1, keepdim=True).add(1e-12).sqrt())
        return latents

    def quantize(self, latents: torch.Tensor) -> JepaQuantizerOutput:
        """latents [B, T, D] -> quantized [B, T, D], FSQ indices [B, T, D] and packed codes [B, T, G]
        (FSQ of `quantizer_input(latents)`)."""
        out = self.quantizer(self.quantizer_input(latents))
        codes = pack(out.indices, self.config.fsq_config.levels, self.config.fsq_config.group_size)
        return JepaQuantizerOutput(quantized=out.quantized, indices=out.indices, audio_codes=codes)

    def dequantize(self, audio_codes: torch.Tensor) -> torch.Tensor:
        """Packed codes [B, T, G] -> quantized latents [B, T, D] (float32 grid values)."""
        if audio_codes.dim() != 3:
            raise ValueError(f"audio_codes must be [B, T, G], got shape {list(audio_codes.shape)}")
        indices = unpack(audio_codes, self.config.fsq_config.levels, self.config.fsq_config.group_size)
        return self.quantizer.indices_to_codes(indices)

    # --- encode / decode ---------------------------------------------------------------------------
    def encode(
        self,
        input_values: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        chunk_length_s: float | None = None,
    ) -> JepaCodecEncoderOutput:
        """Audio -> packed codes.

        Args:
            input_values (`torch.Tensor` [B, 1, L] or [B, L]): Mono audio at `config.sampling_rate`.
            padding_mask (`torch.Tensor` [B, L], *optional*): 1 on real samples, 0 on right padding.
            chunk_length_s (`float`, *optional*): Process long audio in windows of this many seconds
                (with overlapping context) to bound memory; `None` encodes in one pass.

        Returns:
            `JepaCodecEncoderOutput` with `audio_codes` [B, ceil(L / hop), G], `frame_mask`, `latents`.
        """
        if chunk_length_s is None:
            enc = self.encoder(input_values, padding_mask)
            latents, frame_mask = enc.latents, enc.frame_mask
        else:
            from .chunking import encode_latents_chunked

            latents, frame_mask = encode_latents_chunked(
                self.encoder, input_values, padding_mask, chunk_length_s, self.config.sampling_rate
            )
        codes = self.quantize(latents).audio_codes
        return JepaCodecEncoderOutput(audio_codes=codes, frame_mask=frame_mask, latents=latents)

    def decode_latents(self, quantized: torch.Tensor) -> torch.Tensor:
        """Quantized latents [B, T, D] -> audio [B, 1, T * hop] (differentiable; used by stage-2 training)."""
        return self.decoder(quantized)

    def decode(
        self,
        audio_codes: torch.Tensor,
        frame_mask: torch.Tensor | None = None,
        chunk_length_s: float | None = None,
    ) -> JepaCodecDecoderOutput:
        """Packed codes -> audio.

        Args:
            audio_codes (`torch.Tensor` [B, T, G] or [T, G]): Packed tokens.
            frame_mask (`torch.Tensor` [B, T], *optional*): Valid frames: audio of padded frames is zeroed, and
                the decoder's frame blocks do not read the padding (chunked or not).
            chunk_length_s (`float`, *optional*): Decode in windows of this many seconds with enough overlap
                to cover the decoder's receptive field (the result equals whole-sequence decoding).

        Returns:
            `JepaCodecDecoderOutput` with `audio_values` [B, 1, T * hop]; trim with `trim_audio`.
        """
        if audio_codes.dim() == 2:
            audio_codes = audio_codes.unsqueeze(0)
        quantized = self.dequantize(audio_codes.to(self.device))
        if frame_mask is not None:
            frame_mask = frame_mask.to(quantized.device).bool()
            frame_mask = frame_mask.unsqueeze(0) if frame_mask.dim() == 1 else frame_mask
        if chunk_length_s is None:
            # The mask keeps each clip's right padding out of its valid frames' features (a batch decodes
            # like its clips one by one, up to the waveform stack's reach across the padding).
            audio = self.decoder(quantized, frame_mask=frame_mask)
        else:
            from .chunking import decode_latents_chunked

            audio = decode_latents_chunked(
                self.decoder, quantized, chunk_length_s, self.config.sampling_rate, frame_mask=frame_mask
            )
        if frame_mask is not None:
            hop = self.config.hop_length
            sample_mask = frame_mask.to(audio.device).repeat_interleave(hop, dim=1)  # [B, T * hop]
            audio = audio * sample_mask.unsqueeze(1).to(audio.dtype)
        return JepaCodecDecoderOutput(audio_values=audio)

    def forward(
        self, input_values: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> JepaCodecOutput:
        """Encode then decode; `audio_values` [B, 1, T * hop] (padded frames zeroed)."""
        enc = self.encode(input_values, padding_mask)
        dec = self.decode(enc.audio_codes, frame_mask=enc.frame_mask)
        return JepaCodecOutput(
            audio_codes=enc.audio_codes, audio_values=dec.audio_values, frame_mask=enc.frame_mask
        )

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus the matching feature extractor (`preprocessor_config.json`)
        so `AutoFeatureExtractor.from_pretrained(save_directory)` works on a saved codec."""
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            from .feature_extraction import JepaCodecFeatureExtractor

            JepaCodecFeatureExtractor.from_codec_config(self.config).save_pretrained(save_directory)
        return result

    @staticmethod
    def trim_audio(audio_values: torch.Tensor, lengths: list[int] | torch.Tensor) -> list[torch.Tensor]:
        """Cut decoded audio [B, 1, L'] (or [B, L']) back to each clip's length: a list of [L_i] tensors."""
        if audio_values.dim() == 3:
            audio_values = audio_values[:, 0]
        lengths = [int(n) for n in (lengths.tolist() if torch.is_tensor(lengths) else lengths)]
        if len(lengths) != audio_values.shape[0]:
            raise ValueError(f"got {len(lengths)} lengths for a batch of {audio_values.shape[0]} clips")
        if any(n < 0 or n > audio_values.shape[-1] for n in lengths):
            raise ValueError(f"lengths {lengths} must lie in [0, {audio_values.shape[-1]}]")
        return [audio_values[i, :n] for i, n in enumerate(lengths)]
