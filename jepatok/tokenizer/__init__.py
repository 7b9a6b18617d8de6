"""The JEPA+DAAM speech codec as Hugging Face objects (arXiv 2512.07168)."""

from .configuration import (
    DaamConfig,
    DiscriminatorConfig,
    FsqConfig,
    JepaCodecConfig,
    JepaDecoderConfig,
    JepaEncoderConfig,
    JepaPredictorConfig,
)
from .conformer import ConformerBlock
from .daam import DaamGate
from .decoder import JepaDecoder
from .encoder import JepaEncoder, JepaEncoderOutput
from .feature_extraction import JepaCodecFeatureExtractor
from .fsq import FiniteScalarQuantizer
from .modeling import (
    JepaCodecDecoderOutput,
    JepaCodecEncoderOutput,
    JepaCodecModel,
    JepaCodecOutput,
    JepaQuantizerOutput,
    codec_identity,
)
from .packing import pack, unpack

__all__ = [
    "ConformerBlock",
    "DaamConfig",
    "DaamGate",
    "JepaCodecDecoderOutput",
    "JepaCodecEncoderOutput",
    "JepaCodecFeatureExtractor",
    "JepaCodecModel",
    "JepaCodecOutput",
    "JepaDecoder",
    "JepaEncoder",
    "JepaEncoderOutput",
    "JepaQuantizerOutput",
    "codec_identity",
    "DiscriminatorConfig",
    "FiniteScalarQuantizer",
    "FsqConfig",
    "JepaCodecConfig",
    "JepaDecoderConfig",
    "JepaEncoderConfig",
    "JepaPredictorConfig",
    "pack",
    "unpack",
]
