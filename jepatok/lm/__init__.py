"""Speech LM on jepatok ids (arXiv 2512.07168 tokens): builders, frame grammar, LoRA, generation pipeline.

Training lives in `jepatok.lm.train` (the `jepatok train-lm` command) and is not imported here.
"""

from .frame_model import FrameLevelSpeechLM, FrameLMConfig, build_frame_lm_config
from .generation import SpeechGenerationPipeline, register_pipelines
from .logits import FrameGrammar, FrameGrammarLogitsProcessor, check_frame_grammar
from .lora import apply_lora, merge_lora, parse_lora_spec
from .modeling import LM_PRESETS, build_lm, build_lm_config, check_lm_tokenizer

__all__ = [
    "LM_PRESETS",
    "FrameGrammar",
    "FrameGrammarLogitsProcessor",
    "FrameLMConfig",
    "FrameLevelSpeechLM",
    "SpeechGenerationPipeline",
    "apply_lora",
    "build_lm",
    "build_frame_lm_config",
    "build_lm_config",
    "check_frame_grammar",
    "check_lm_tokenizer",
    "merge_lora",
    "parse_lora_spec",
    "register_pipelines",
]
