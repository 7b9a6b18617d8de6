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
from .fsq import FiniteScalarQuantizer
from .packing import pack, unpack

__all__ = [
    "DaamConfig",
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
