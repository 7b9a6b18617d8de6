"""Registration of jepatok classes with the transformers Auto classes (runs once, on `import jepatok`).

Each area registers its own classes in its own section below; keep the sections separate.
"""

from __future__ import annotations

_DONE = False


def _register_codec() -> None:
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

    from .tokenizer.configuration import JepaCodecConfig
    from .tokenizer.feature_extraction import JepaCodecFeatureExtractor
    from .tokenizer.modeling import JepaCodecModel

    AutoConfig.register(JepaCodecConfig.model_type, JepaCodecConfig, exist_ok=True)
    AutoModel.register(JepaCodecConfig, JepaCodecModel, exist_ok=True)
    AutoFeatureExtractor.register(JepaCodecConfig, JepaCodecFeatureExtractor, exist_ok=True)


def _register_tokenizer() -> None:
    # [tokenizer] AutoTokenizer / AutoProcessor registrations go here.
    from transformers import AutoProcessor, AutoTokenizer

    from .tokenizer.configuration import JepaCodecConfig
    from .tokenizer.processing import JepaSpeechProcessor
    from .tokenizer.tokenization import JepaSpeechTokenizer

    # Keyed by the codec config: AutoTokenizer/AutoProcessor then find the classes by the names saved in
    # tokenizer_config.json / processor_config.json (a tokenizer folder holds no top-level config.json).
    AutoTokenizer.register(JepaCodecConfig, tokenizer_class=JepaSpeechTokenizer, exist_ok=True)
    AutoProcessor.register(JepaCodecConfig, JepaSpeechProcessor, exist_ok=True)


def _register_lm() -> None:
    # [lm] pipeline task registrations go here.
    # `speech-continuation`, and `text-to-speech`/`text-to-audio` routed to SpeechGenerationPipeline for jepatok
    # LMs (the stock TextToAudioPipeline for everything else); see jepatok/lm/generation.py.
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from .lm.frame_model import FrameLevelSpeechLM, FrameLMConfig
    from .lm.generation import register_pipelines

    register_pipelines()
    AutoConfig.register(FrameLMConfig.model_type, FrameLMConfig, exist_ok=True)
    AutoModel.register(FrameLMConfig, FrameLevelSpeechLM, exist_ok=True)
    # Also an autoregressive LM for the pipeline factory: `pipeline("text-to-speech", model=DIR)` loads the model
    # with the task's AutoModelForCausalLM before it dispatches to SpeechGenerationPipeline.
    AutoModelForCausalLM.register(FrameLMConfig, FrameLevelSpeechLM, exist_ok=True)


def register_auto_classes() -> None:
    """Register configs, models, feature extractors, tokenizers, processors and pipelines. Idempotent."""
    global _DONE
    if _DONE:
        return
    _register_codec()
    _register_tokenizer()
    _register_lm()
    _DONE = True
