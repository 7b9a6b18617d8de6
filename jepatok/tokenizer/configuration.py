"""Configuration of the JEPA+DAAM speech codec (arXiv 2512.07168), with `tiny`, `small` and `paper` presets.

The architecture lives in one composite `JepaCodecConfig` with sub-configs (encoder, DAAM gate, FSQ,
decoder, predictor, discriminator). Derived quantities (hop, frame rate, tokens per frame, vocabulary,
bitrate) are properties, never stored, so they cannot drift from the fields they come from.
"""

from __future__ import annotations

import math
from typing import Any

from transformers import PretrainedConfig


def _positive_ints(name: str, values: Any, owner: str) -> list[int]:
    if not isinstance(values, (list, tuple)) or len(values) == 0:
        raise ValueError(f"{owner}.{name} must be a non-empty list of positive integers, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{owner}.{name} must hold positive integers, got {values!r} (bad entry {v!r})")
        out.append(int(v))
    return out


def _positive(name: str, value: Any, owner: str, integer: bool = True) -> Any:
    ok = (
        isinstance(value, int) and not isinstance(value, bool) if integer else isinstance(value, (int, float))
    )
    if not ok or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        raise ValueError(f"{owner}.{name} must be {kind}, got {value!r}")
    return value


def _non_negative(name: str, value: Any, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{owner}.{name} must be an int >= 0, got {value!r}")
    return value


DECODER_HEADS = ("hifigan", "istft")


class JepaEncoderConfig(PretrainedConfig):
    r"""Waveform encoder: Conv1d stem, strided blocks (conv -> Snake -> dilated residual stack -> DAAM gate),
    1x1 bottleneck to `latent_dim`, then Conformer blocks.

    Args:
        channels (`list[int]`, defaults to `[64, 128, 256, 384, 512, 512]`):
            Stem output width followed by the output width of each strided block (len = len(strides) + 1).
        strides (`list[int]`, defaults to `[8, 8, 5, 5, 6]`): Down-sampling factor of each block.
        num_res_blocks (`int`, defaults to 8): Dilated residual blocks per strided block.
        res_kernel_size (`int`, defaults to 3): Kernel of the residual convolutions.
        stem_kernel_size (`int`, defaults to 7): Kernel of the input convolution.
        latent_dim (`int`, defaults to 128): Width of z (and of the Conformers).
        conformer_layers (`int`, defaults to 8): Number of Conformer blocks after the bottleneck.
        conformer_heads (`int`, defaults to 16): Attention heads per Conformer block.
        conformer_ff_mult (`int`, defaults to 4): Feed-forward expansion.
        conformer_kernel_size (`int`, defaults to 31): Depthwise convolution kernel (odd).
        dropout (`float`, defaults to 0.1): Dropout inside the Conformers.
        conformer_final_norm (`bool`, defaults to `True`): Each Conformer block ends with a per-frame LayerNorm
            (authors' code). A per-frame norm divides out each frame's magnitude, and a freshly initialised
            conv stack encodes loudness mostly as magnitude, so `small` turns it off: measured on the corpus,
            a linear read-out of per-frame log-mel patches from z reaches R^2 0.80 in 200 steps without the
            norm and stays at 0.0 with it (the same read-out from the bottleneck, before the norms, reaches 0.8).
        spectral_input_bands (`int`, defaults to 0): When > 0, each frame's log-mel patch (`spectral_input_bands`
            mel bands x `spectral_input_subframes` STFT hops, the `jepa.spectral_patches` layout and scale) is
            mapped by a linear layer (started at zero) and added to the bottleneck output before the Conformers,
            so the encoder sees the within-frame spectral envelope directly instead of having to learn it from
            the waveform. 0 is the paper's waveform-only encoder.
        spectral_input_subframes (`int`, defaults to 20): STFT hops per frame of that patch (must divide the hop).
        spectral_input_hidden (`int`, defaults to 0): With a spectral input, 0 maps the patch by one linear
            layer; > 0 by a per-frame MLP (Linear(P, hidden) -> GELU -> Linear(hidden, latent_dim), the output
            layer started at zero), which lets the frame's 256 bits describe the envelope nonlinearly.
        pitch_input_subframes (`int`, defaults to 0): When > 0, each frame's pitch track at that many sub-frames
            (per sub-frame ln(f0 / 150 Hz) and the autocorrelation peak's strength, `pitch.pitch_features_window`;
            frame-local, so padding and chunked encoding never change it) goes through a per-frame MLP
            (Linear(2 x sub-frames, 256) -> GELU -> Linear(256, latent_dim), the output layer started at zero) and
            is added to the bottleneck output before the Conformers, so the codes can carry the F0 contour that
            the decoder's pitch path renders. 0 = off (every checkpoint before the pitch round).
    """

    model_type = "jepa_codec_encoder"
    base_config_key = "encoder_config"

    def __init__(
        self,
        channels: list[int] | None = None,
        strides: list[int] | None = None,
        num_res_blocks: int = 8,
        res_kernel_size: int = 3,
        stem_kernel_size: int = 7,
        latent_dim: int = 128,
        conformer_layers: int = 8,
        conformer_heads: int = 16,
        conformer_ff_mult: int = 4,
        conformer_kernel_size: int = 31,
        dropout: float = 0.1,
        conformer_final_norm: bool = True,
        spectral_input_bands: int = 0,
        spectral_input_subframes: int = 20,
        spectral_input_hidden: int = 0,
        pitch_input_subframes: int = 0,
        **kwargs,
    ):
        owner = "encoder"
        self.channels = _positive_ints("channels", channels or [64, 128, 256, 384, 512, 512], owner)
        self.strides = _positive_ints("strides", strides or [8, 8, 5, 5, 6], owner)
        if len(self.channels) != len(self.strides) + 1:
            raise ValueError(
                f"encoder.channels needs len(strides) + 1 = {len(self.strides) + 1} entries "
                f"(stem + one per block), got {len(self.channels)}: {self.channels}"
            )
        self.num_res_blocks = num_res_blocks
        if not isinstance(num_res_blocks, int) or num_res_blocks < 0:
            raise ValueError(f"encoder.num_res_blocks must be an integer >= 0, got {num_res_blocks!r}")
        self.res_kernel_size = _positive("res_kernel_size", res_kernel_size, owner)
        self.stem_kernel_size = _positive("stem_kernel_size", stem_kernel_size, owner)
        for name, k in (("res_kernel_size", res_kernel_size), ("stem_kernel_size", stem_kernel_size)):
            if k % 2 == 0:
                raise ValueError(f"encoder.{name} must be odd to keep 'same' padding, got {k}")
        self.latent_dim = _positive("latent_dim", latent_dim, owner)
        self.conformer_layers = conformer_layers
        if not isinstance(conformer_layers, int) or conformer_layers < 0:
            raise ValueError(f"encoder.conformer_layers must be an integer >= 0, got {conformer_layers!r}")
        self.conformer_heads = _positive("conformer_heads", conformer_heads, owner)
        if latent_dim % conformer_heads != 0:
            raise ValueError(
                f"encoder.latent_dim ({latent_dim}) must be divisible by conformer_heads ({conformer_heads})"
            )
        self.conformer_ff_mult = _positive("conformer_ff_mult", conformer_ff_mult, owner)
        self.conformer_kernel_size = _positive("conformer_kernel_size", conformer_kernel_size, owner)
        if conformer_kernel_size % 2 == 0:
            raise ValueError(f"encoder.conformer_kernel_size must be odd, got {conformer_kernel_size}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"encoder.dropout must be in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        self.conformer_final_norm = bool(conformer_final_norm)
        if not isinstance(spectral_input_bands, int) or spectral_input_bands < 0:
            raise ValueError(
                f"encoder.spectral_input_bands must be an integer >= 0, got {spectral_input_bands!r}"
            )
        self.spectral_input_bands = spectral_input_bands
        self.spectral_input_subframes = _positive("spectral_input_subframes", spectral_input_subframes, owner)
        if not isinstance(spectral_input_hidden, int) or spectral_input_hidden < 0:
            raise ValueError(
                f"encoder.spectral_input_hidden must be an integer >= 0, got {spectral_input_hidden!r}"
            )
        self.spectral_input_hidden = spectral_input_hidden
        if spectral_input_bands and self.hop_length % spectral_input_subframes != 0:
            raise ValueError(
                f"encoder.spectral_input_subframes ({spectral_input_subframes}) must divide the hop "
                f"({self.hop_length} samples)"
            )
        if not isinstance(pitch_input_subframes, int) or pitch_input_subframes < 0:
            raise ValueError(
                f"encoder.pitch_input_subframes must be an integer >= 0, got {pitch_input_subframes!r}"
            )
        if pitch_input_subframes and self.hop_length % pitch_input_subframes != 0:
            raise ValueError(
                f"encoder.pitch_input_subframes ({pitch_input_subframes}) must divide the hop ({self.hop_length} samples)"
            )
        self.pitch_input_subframes = pitch_input_subframes
        super().__init__(**kwargs)

    @property
    def hop_length(self) -> int:
        return math.prod(self.strides)


class DaamConfig(PretrainedConfig):
    r"""Density-Adaptive Attention gate applied after each strided encoder block.

    Args:
        enabled (`bool`, defaults to `True`): `False` gives the paper's "JEPA without DAAM" ablation.
        num_gaussians (`int`, defaults to 4): Mixture components K.
        alpha_init (`float`, defaults to 0.05): Initial gate strength alpha in y = x * (1 + alpha * G).
        scale_init (`float`, defaults to 0.5): nu_k is initialised to log(scale_init); scale = softplus(nu)+1e-3.
        var_floor (`float`, defaults to 1e-6): Lower clamp of the temporal variance of the projection.
    """

    model_type = "jepa_codec_daam"
    base_config_key = "daam_config"

    def __init__(
        self,
        enabled: bool = True,
        num_gaussians: int = 4,
        alpha_init: float = 0.05,
        scale_init: float = 0.5,
        var_floor: float = 1e-6,
        **kwargs,
    ):
        self.enabled = bool(enabled)
        self.num_gaussians = _positive("num_gaussians", num_gaussians, "daam")
        self.alpha_init = float(alpha_init)
        self.scale_init = _positive("scale_init", scale_init, "daam", integer=False)
        self.var_floor = _positive("var_floor", var_floor, "daam", integer=False)
        super().__init__(**kwargs)


class FsqConfig(PretrainedConfig):
    r"""Finite Scalar Quantization of the latent and mixed-radix packing of its indices into tokens.

    Args:
        levels (`list[int]`, defaults to `[4] * 128`): Quantization levels of each latent dimension
            (len must equal `encoder.latent_dim`; a single int is broadcast).
        group_size (`int`, defaults to 7): Dimensions packed into one token (little-endian mixed radix).
        pre_projection (`bool`, defaults to `False`): Apply a learned D x D affine map to the encoder's latents
            before FSQ's tanh (the codec's `pre_quant`). It starts as the identity; stage 2 sets it to a whitening
            of the frozen encoder's latents (`calibrate_quantizer_batches`) and trains it with the decoder. A
            stage-1 encoder concentrates its latents in a few directions, far from FSQ's grid: the first `small`
            encoder put 90% of its variance in 3 of 128 dimensions (participation ratio 1.9) with per-dimension
            means near +-1.9, so its 256 bits per frame carried 0.65 bit of index entropy per dimension, mostly
            copies of the same few values. `small` turns it on; `paper` keeps the authors' direct FSQ.
        input_rms (`float`, defaults to 0.0): When > 0, each frame's latent vector (after `pre_quant`) is rescaled
            to this root-mean-square over its dimensions before FSQ's tanh, so training can never push it into
            tanh's flat tails. 0.8 fills four bins about equally. Without it, fine-tuning the `small` encoder
            through FSQ grew the pre-tanh values of the third shipped codec to std ~760, 94% of them beyond
            +-2: its codes carried 0.65 bit per dimension, and the rounding's straight-through gradient (times
            tanh's slope) vanished there. 0 = off (the paper).
    """

    model_type = "jepa_codec_fsq"
    base_config_key = "fsq_config"

    def __init__(
        self,
        levels: list[int] | int | None = None,
        group_size: int = 7,
        pre_projection: bool = False,
        input_rms: float = 0.0,
        **kwargs,
    ):
        if levels is None:
            levels = [4] * 128
        if isinstance(levels, int) and not isinstance(levels, bool):
            levels = [levels] * 128
        self.levels = _positive_ints("levels", levels, "fsq")
        if min(self.levels) < 2:
            raise ValueError(
                f"fsq.levels must all be >= 2 (a 1-level dimension carries nothing), got {self.levels}"
            )
        self.group_size = _positive("group_size", group_size, "fsq")
        if not isinstance(pre_projection, bool):
            raise ValueError(f"fsq.pre_projection must be a bool, got {pre_projection!r}")
        self.pre_projection = pre_projection
        if isinstance(input_rms, bool) or not isinstance(input_rms, (int, float)) or not input_rms >= 0:
            raise ValueError(f"fsq.input_rms must be a number >= 0 (0 = off), got {input_rms!r}")
        self.input_rms = float(input_rms)
        super().__init__(**kwargs)

    @property
    def dim(self) -> int:
        return len(self.levels)

    @property
    def num_groups(self) -> int:
        return math.ceil(self.dim / self.group_size)

    def group_levels(self) -> list[list[int]]:
        """Levels of each packing group (the last may be shorter)."""
        g = self.group_size
        return [self.levels[i : i + g] for i in range(0, self.dim, g)]

    @property
    def slot_sizes(self) -> list[int]:
        """Number of distinct values each token slot can take (product of its group's levels)."""
        return [math.prod(grp) for grp in self.group_levels()]

    @property
    def codebook_size(self) -> int:
        """Values one token can take: the largest slot (4^7 = 16384 for the paper)."""
        return max(self.slot_sizes)

    @property
    def bits_per_frame(self) -> float:
        return sum(math.log2(level) for level in self.levels)


class JepaDecoderConfig(PretrainedConfig):
    r"""HiFi-GAN-style decoder: 1x1 in-projection, up-sampling blocks (Snake -> ConvTranspose1d -> MRF),
    Conv1d to one channel, tanh.

    Args:
        channels (`list[int]`, defaults to `[512, 512, 384, 256, 128, 64]`): In-projection width followed
            by the output width of each up-sampling block (len = len(strides) + 1).
        strides (`list[int]`, defaults to `[6, 5, 5, 8, 8]`): Up-sampling factor of each block.
        mrf_kernel_sizes (`list[int]`, defaults to `[3, 7, 11]`): Kernels of the MRF residual blocks (odd).
        mrf_dilations (`list[int]`, defaults to `[1, 3, 5]`): Dilations inside each MRF residual block.
        out_kernel_size (`int`, defaults to 7): Kernel of the output convolution.
        frame_layers (`int`, defaults to 0): Residual blocks at the frame rate before the in-projection
            (LayerNorm -> Conv1d(D, 4D, `frame_kernel_size`) -> GELU -> Conv1d(4D, D, 1)). They decode the
            quantized frame nonlinearly, with its neighbours, before any up-sampling, at almost no cost at
            2.5 frames/s. 0 is the paper's decoder; `small` uses 4.
        frame_kernel_size (`int`, defaults to 3): Kernel (in frames, odd) of those blocks.
        envelope_bands (`int`, defaults to 0): When > 0, the decoder predicts each frame's log-mel envelope
            (`envelope_bands` bands x `envelope_subframes` sub-frames, linear from the frame features; stage 2
            trains it against the input's log-mel with `envelope_weight`) and adds it, placed at its
            sub-frame positions, to the output of the up-sampling block whose total stride equals
            `envelope_subframes`. The up-sampling stack then only has to render a spectrogram locally
            instead of placing sound inside a 0.4 s frame. 0 is the paper's decoder; `small` uses 32.
        envelope_subframes (`int`, defaults to 20): Sub-frames per frame of that envelope (must equal the
            product of the first few decoder strides and divide the hop).
        head (`str`, defaults to `"hifigan"`): How the waveform is made. `"hifigan"`: every up-sampling block,
            then Conv1d -> tanh (the paper's decoder). `"istft"`: only the first `istft_blocks` up-sampling
            blocks run (those whose total stride divides hop / `istft_hop`); an iSTFT head (Vocos, arXiv
            2306.00814) then up-samples to one STFT frame per `istft_hop` samples, runs `istft_layers` ConvNeXt
            blocks of width `istft_channels`, predicts each frame's log-magnitude and phase and overlap-adds
            the inverse FFTs ("same" padding: T frames give exactly T * hop samples). It renders a spectrum
            directly instead of growing a waveform through narrow high-rate convolutions.
        istft_n_fft (`int`, defaults to 640): FFT size (and Hann window length) of the iSTFT head.
        istft_hop (`int`, defaults to 160): Hop of the iSTFT head in samples (must divide the hop).
        istft_channels (`int`, defaults to 256): Width of the iSTFT head's ConvNeXt blocks.
        istft_layers (`int`, defaults to 4): ConvNeXt blocks in the iSTFT head.
        pitch_subframes (`int`, defaults to 0): When > 0 (iSTFT head only), the decoder's pitch path: a head
            predicts each frame's F0 and voicing at `pitch_subframes` sub-frames (a small convolutional net on the
            frame features; stage 2 trains it against the input's autocorrelation pitch with `pitch_weight`), a
            band-limited harmonic source is synthesised at that F0 (`pitch.harmonic_source`), and the iSTFT head
            reads the source's log-spectrum (a 1x1 convolution started at zero), so it sees where the harmonics
            lie. 0 = off (every shipped checkpoint so far).
    """

    model_type = "jepa_codec_decoder"
    base_config_key = "decoder_config"

    def __init__(
        self,
        channels: list[int] | None = None,
        strides: list[int] | None = None,
        mrf_kernel_sizes: list[int] | None = None,
        mrf_dilations: list[int] | None = None,
        out_kernel_size: int = 7,
        frame_layers: int = 0,
        frame_kernel_size: int = 3,
        envelope_bands: int = 0,
        envelope_subframes: int = 20,
        head: str = "hifigan",
        istft_n_fft: int = 640,
        istft_hop: int = 160,
        istft_channels: int = 256,
        istft_layers: int = 4,
        pitch_subframes: int = 0,
        **kwargs,
    ):
        owner = "decoder"
        self.channels = _positive_ints("channels", channels or [512, 512, 384, 256, 128, 64], owner)
        self.strides = _positive_ints("strides", strides or [6, 5, 5, 8, 8], owner)
        if len(self.channels) != len(self.strides) + 1:
            raise ValueError(
                f"decoder.channels needs len(strides) + 1 = {len(self.strides) + 1} entries, "
                f"got {len(self.channels)}: {self.channels}"
            )
        self.mrf_kernel_sizes = _positive_ints("mrf_kernel_sizes", mrf_kernel_sizes or [3, 7, 11], owner)
        if any(k % 2 == 0 for k in self.mrf_kernel_sizes):
            raise ValueError(
                f"decoder.mrf_kernel_sizes must be odd ('same' padding), got {self.mrf_kernel_sizes}"
            )
        self.mrf_dilations = _positive_ints("mrf_dilations", mrf_dilations or [1, 3, 5], owner)
        self.out_kernel_size = _positive("out_kernel_size", out_kernel_size, owner)
        if out_kernel_size % 2 == 0:
            raise ValueError(f"decoder.out_kernel_size must be odd, got {out_kernel_size}")
        self.frame_layers = _non_negative("frame_layers", frame_layers, owner)
        self.frame_kernel_size = _positive("frame_kernel_size", frame_kernel_size, owner)
        if frame_kernel_size % 2 == 0:
            raise ValueError(f"decoder.frame_kernel_size must be odd, got {frame_kernel_size}")
        self.envelope_bands = _non_negative("envelope_bands", envelope_bands, owner)
        self.envelope_subframes = _positive("envelope_subframes", envelope_subframes, owner)
        if envelope_bands:
            _ = self.envelope_block  # raises when no prefix of the strides multiplies to envelope_subframes
        if head not in DECODER_HEADS:
            raise ValueError(f"decoder.head must be one of {DECODER_HEADS}, got {head!r}")
        self.head = head
        self.istft_n_fft = _positive("istft_n_fft", istft_n_fft, owner)
        self.istft_hop = _positive("istft_hop", istft_hop, owner)
        self.istft_channels = _positive("istft_channels", istft_channels, owner)
        self.istft_layers = _non_negative("istft_layers", istft_layers, owner)
        if head == "istft":
            if self.hop_length % istft_hop:
                raise ValueError(
                    f"decoder.istft_hop ({istft_hop}) must divide the hop ({self.hop_length} = prod {self.strides})"
                )
            if istft_n_fft < istft_hop or (istft_n_fft - istft_hop) % 2:
                raise ValueError(
                    f"decoder.istft_n_fft ({istft_n_fft}) must be >= istft_hop ({istft_hop}) and differ from it "
                    "by an even number (the 'same' padding trims (n_fft - hop) / 2 samples on each side)"
                )
            block = self.envelope_block
            if block is not None and block >= self.istft_blocks:
                raise ValueError(
                    f"decoder.head='istft' keeps the first {self.istft_blocks} up-sampling blocks (total stride "
                    f"dividing hop / istft_hop = {self.hop_length // istft_hop}), but the envelope is added after "
                    f"block {block}; use an istft_hop that keeps it"
                )
        self.pitch_subframes = _non_negative("pitch_subframes", pitch_subframes, owner)
        if pitch_subframes:
            if head != "istft":
                raise ValueError(
                    f"decoder.pitch_subframes needs head='istft' (its source enters the iSTFT head), got {head!r}"
                )
            if self.hop_length % pitch_subframes:
                raise ValueError(
                    f"decoder.pitch_subframes ({pitch_subframes}) must divide the hop ({self.hop_length} samples)"
                )
        super().__init__(**kwargs)

    @property
    def istft_blocks(self) -> int:
        """Up-sampling blocks that run before the iSTFT head: the most whose total stride divides
        hop / istft_hop (the head up-samples the rest)."""
        frames = self.hop_length // self.istft_hop
        total, count = 1, 0
        for s in self.strides:
            total *= s
            if frames % total:
                break
            count += 1
        return count

    @property
    def istft_upsample(self) -> int:
        """Up-sampling factor inside the iSTFT head (from the last kept block's rate to its frame rate)."""
        return self.hop_length // self.istft_hop // math.prod(self.strides[: self.istft_blocks])

    @property
    def envelope_block(self) -> int | None:
        """Index of the up-sampling block after which the envelope is added (None when it is off)."""
        if not self.envelope_bands:
            return None
        total = 1
        for i, s in enumerate(self.strides):
            total *= s
            if total == self.envelope_subframes:
                return i
        raise ValueError(
            f"decoder.envelope_subframes ({self.envelope_subframes}) must equal the product of the first few "
            f"decoder strides {self.strides} (e.g. {self.strides[0] * self.strides[1]})"
        )

    @property
    def hop_length(self) -> int:
        return math.prod(self.strides)


class JepaPredictorConfig(PretrainedConfig):
    r"""Stage-1 JEPA predictor: 1x1 up -> Conformer -> 1x1 -> Conformer -> 1x1 down (paper: 3.18 M params).

    Args:
        hidden_dim (`int`, defaults to 256): Width inside the predictor.
        num_layers (`int`, defaults to 2): Conformer blocks (each preceded by a 1x1 conv + GELU).
        heads (`int`, defaults to 16): Attention heads.
    """

    model_type = "jepa_codec_predictor"
    base_config_key = "predictor_config"

    def __init__(self, hidden_dim: int = 256, num_layers: int = 2, heads: int = 16, **kwargs):
        self.hidden_dim = _positive("hidden_dim", hidden_dim, "predictor")
        self.num_layers = _positive("num_layers", num_layers, "predictor")
        self.heads = _positive("heads", heads, "predictor")
        if hidden_dim % heads != 0:
            raise ValueError(f"predictor.hidden_dim ({hidden_dim}) must be divisible by heads ({heads})")
        super().__init__(**kwargs)


class DiscriminatorConfig(PretrainedConfig):
    r"""Stage-2 discriminators: MPD (HiFi-GAN) + MSD with cascaded x2 pools.

    Args:
        periods (`list[int]`, defaults to `[2, 3, 5, 7, 11]`): MPD periods.
        msd_scales (`int`, defaults to 3): MSD scales (raw, x2, x4, ... cascaded average pools).
        mpd_channels (`list[int]`, defaults to `[32, 128, 512, 1024, 1024]`): MPD Conv2d widths.
        msd_channels (`list[int]`, defaults to `[16, 64, 256, 1024, 1024, 1024]`): MSD Conv1d widths.
    """

    model_type = "jepa_codec_discriminator"
    base_config_key = "discriminator_config"

    def __init__(
        self,
        periods: list[int] | None = None,
        msd_scales: int = 3,
        mpd_channels: list[int] | None = None,
        msd_channels: list[int] | None = None,
        **kwargs,
    ):
        owner = "discriminator"
        self.periods = _positive_ints("periods", periods or [2, 3, 5, 7, 11], owner)
        self.msd_scales = _positive("msd_scales", msd_scales, owner)
        self.mpd_channels = _positive_ints("mpd_channels", mpd_channels or [32, 128, 512, 1024, 1024], owner)
        self.msd_channels = _positive_ints(
            "msd_channels", msd_channels or [16, 64, 256, 1024, 1024, 1024], owner
        )
        super().__init__(**kwargs)


_SUB_CONFIGS = {
    "encoder_config": JepaEncoderConfig,
    "daam_config": DaamConfig,
    "fsq_config": FsqConfig,
    "decoder_config": JepaDecoderConfig,
    "predictor_config": JepaPredictorConfig,
    "discriminator_config": DiscriminatorConfig,
}


PRESETS: dict[str, dict[str, Any]] = {
    # Unit tests: a forward+backward well under a second. Same 19 tokens/frame as the paper; a short hop
    # (4 * 4 = 16 samples at 8 kHz -> 500 Hz frames) keeps test clips tiny.
    "tiny": {
        "sampling_rate": 8000,
        "encoder_config": {
            "channels": [8, 16, 16],
            "strides": [4, 4],
            "num_res_blocks": 1,
            "latent_dim": 128,
            "conformer_layers": 1,
            "conformer_heads": 4,
            "conformer_ff_mult": 2,
            "conformer_kernel_size": 5,
            "dropout": 0.0,
        },
        "decoder_config": {
            "channels": [32, 16, 8],
            "strides": [4, 4],
            "mrf_kernel_sizes": [3],
            "mrf_dilations": [1, 3],
        },
        "predictor_config": {"hidden_dim": 32, "num_layers": 1, "heads": 4},
        "discriminator_config": {
            "periods": [2, 3],
            "msd_scales": 2,
            "mpd_channels": [4, 8, 8],
            "msd_channels": [4, 8, 16, 16],
        },
    },
    # Trained on 2 CPU cores: 16 kHz, hop 6400 (8*8*5*5*4) keeps 2.5 Hz, 19 tokens/frame, 640 bit/s.
    # Decoder tail (16 -> 8 channels, one MRF kernel) and half-width discriminators are sized so stage-2
    # training (discriminators included) runs at >= 10 s of audio per CPU-second (README, training section).
    "small": {
        "sampling_rate": 16000,
        "init_scheme": "fan_in",
        "encoder_config": {
            "channels": [16, 32, 64, 96, 128, 128],
            "strides": [8, 8, 5, 5, 4],
            "num_res_blocks": 2,
            "latent_dim": 128,
            "conformer_layers": 4,
            "conformer_heads": 8,
            "conformer_ff_mult": 4,
            "conformer_kernel_size": 7,
            "dropout": 0.1,
            "conformer_final_norm": False,
            "spectral_input_bands": 32,
            "spectral_input_hidden": 512,
        },
        "decoder_config": {
            "channels": [256, 192, 128, 48, 16, 8],
            "strides": [4, 5, 5, 8, 8],
            "mrf_kernel_sizes": [3],
            "mrf_dilations": [1, 3],
            "frame_layers": 4,
            "envelope_bands": 32,
            "envelope_subframes": 20,
        },
        "fsq_config": {"pre_projection": True, "input_rms": 0.8},
        "predictor_config": {"hidden_dim": 128, "num_layers": 2, "heads": 8},
        "discriminator_config": {
            "periods": [2, 3, 5, 7, 11],
            "msd_scales": 3,
            "mpd_channels": [4, 8, 16, 32, 32],
            "msd_channels": [4, 8, 16, 32, 32, 32],
        },
    },
    # The paper / authors' code defaults (every field at its default value).
    "paper": {"sampling_rate": 24000},
}


class JepaCodecConfig(PretrainedConfig):
    r"""Configuration of [`JepaCodecModel`]: JEPA+DAAM encoder -> FSQ -> mixed-radix tokens -> HiFi-GAN decoder.

    Args:
        sampling_rate (`int`, defaults to 24000): Audio rate the codec works at.
        encoder_config (`JepaEncoderConfig` or `dict`, *optional*): Encoder architecture.
        daam_config (`DaamConfig` or `dict`, *optional*): DAAM gate.
        fsq_config (`FsqConfig` or `dict`, *optional*): Quantizer levels and packing group size.
        decoder_config (`JepaDecoderConfig` or `dict`, *optional*): Decoder architecture.
        predictor_config (`JepaPredictorConfig` or `dict`, *optional*): Stage-1 predictor.
        discriminator_config (`DiscriminatorConfig` or `dict`, *optional*): Stage-2 discriminators.
        init_scheme (`str`, defaults to `"authors"`): Initialisation of conv / linear weights: `"authors"`
            (trunc_normal std 0.02, the authors' code) or `"fan_in"` (std 1 / sqrt(fan_in)). The fixed 0.02
            makes the signal vanish through narrow stacks (the `small` encoder's bottleneck starts at std
            ~6e-5 and its latents carry no information about the input), so `tiny` and `small` use `fan_in`.
        preset (`str`, *optional*): Name of the preset this config was made from (informational).

    Derived (read-only): `hop_length`, `frame_rate`, `tokens_per_frame`, `codebook_size`, `slot_sizes`,
    `tokens_per_second`, `bitrate`.
    """

    model_type = "jepa_codec"
    sub_configs_defaults = dict(_SUB_CONFIGS)

    def __init__(
        self,
        sampling_rate: int = 24000,
        encoder_config: JepaEncoderConfig | dict | None = None,
        daam_config: DaamConfig | dict | None = None,
        fsq_config: FsqConfig | dict | None = None,
        decoder_config: JepaDecoderConfig | dict | None = None,
        predictor_config: JepaPredictorConfig | dict | None = None,
        discriminator_config: DiscriminatorConfig | dict | None = None,
        init_scheme: str = "authors",
        preset: str | None = None,
        **kwargs,
    ):
        self.sampling_rate = _positive("sampling_rate", sampling_rate, "codec")
        given = {
            "encoder_config": encoder_config,
            "daam_config": daam_config,
            "fsq_config": fsq_config,
            "decoder_config": decoder_config,
            "predictor_config": predictor_config,
            "discriminator_config": discriminator_config,
        }
        for key, value in given.items():
            cls = _SUB_CONFIGS[key]
            if value is None:
                value = cls()
            elif isinstance(value, dict):
                value = cls(**value)
            elif not isinstance(value, cls):
                raise ValueError(f"{key} must be a {cls.__name__} or a dict, got {type(value).__name__}")
            setattr(self, key, value)
        if init_scheme not in ("authors", "fan_in"):
            raise ValueError(f"codec.init_scheme must be 'authors' or 'fan_in', got {init_scheme!r}")
        self.init_scheme = init_scheme
        self.preset = preset
        enc, dec, fsq = self.encoder_config, self.decoder_config, self.fsq_config
        if enc.hop_length != dec.hop_length:
            raise ValueError(
                f"decoder strides {dec.strides} multiply to {dec.hop_length} but encoder strides "
                f"{enc.strides} give a hop of {enc.hop_length}; they must match so decode(encode(x)) has len(x)"
            )
        if fsq.dim != enc.latent_dim:
            raise ValueError(
                f"fsq.levels has {fsq.dim} entries but encoder.latent_dim is {enc.latent_dim}; "
                "give one level per latent dimension"
            )
        super().__init__(**kwargs)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> JepaCodecConfig:
        """Build a preset (`tiny`, `small`, `paper`); `overrides` replace top-level keys or sub-config dicts."""
        if name not in PRESETS:
            raise ValueError(f"unknown codec preset {name!r}; choose one of {sorted(PRESETS)}")
        values: dict[str, Any] = {
            k: (dict(v) if isinstance(v, dict) else v) for k, v in PRESETS[name].items()
        }
        for key, value in overrides.items():
            if key in _SUB_CONFIGS and isinstance(value, dict):
                values[key] = {**values.get(key, {}), **value}
            else:
                values[key] = value
        values.setdefault("preset", name)
        return cls(**values)

    # --- derived quantities -------------------------------------------------------------------------
    @property
    def hop_length(self) -> int:
        return self.encoder_config.hop_length

    @property
    def frame_rate(self) -> float:
        return self.sampling_rate / self.hop_length

    @property
    def tokens_per_frame(self) -> int:
        return self.fsq_config.num_groups

    @property
    def slot_sizes(self) -> list[int]:
        return self.fsq_config.slot_sizes

    @property
    def codebook_size(self) -> int:
        return self.fsq_config.codebook_size

    @property
    def tokens_per_second(self) -> float:
        return self.frame_rate * self.tokens_per_frame

    @property
    def bitrate(self) -> float:
        """Information bitrate in bit/s (sum of log2 levels per frame times frame rate)."""
        return self.frame_rate * self.fsq_config.bits_per_frame
