"""Registration of jepatok classes with the transformers Auto classes (runs once, on `import jepatok`)."""

from __future__ import annotations

_DONE = False


def register_auto_classes() -> None:
    """Register configs, models, feature extractors, tokenizers and processors. Idempotent."""
    global _DONE
    if _DONE:
        return
    from transformers import AutoConfig

    from .tokenizer.configuration import JepaCodecConfig

    AutoConfig.register(JepaCodecConfig.model_type, JepaCodecConfig, exist_ok=True)
    # Further registrations (AutoModel, AutoFeatureExtractor, AutoTokenizer, AutoProcessor, pipelines)
    # are added below by the modules that define those classes.
    _DONE = True
