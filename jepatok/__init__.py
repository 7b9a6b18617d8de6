"""jepatok: JEPA+DAAM speech tokenizer (arXiv 2512.07168) and speech-LM toolkit on the Hugging Face stack.

Importing the package registers its classes with the transformers Auto classes.
"""

from .registration import register_auto_classes

# [codec] public exports
from .tokenizer import *  # noqa: F401,F403
from .tokenizer import __all__ as _codec_all

# [tokenizer] public exports (JepaSpeechTokenizer, JepaSpeechProcessor, ...)
from .tokenizer.processing import JepaSpeechProcessor  # noqa: F401
from .tokenizer.tokenization import JepaSpeechTokenizer  # noqa: F401

_tokenizer_all: list[str] = ["JepaSpeechTokenizer", "JepaSpeechProcessor"]

# [lm] public exports (speech LM builders, SpeechGenerationPipeline, ...)
from .lm import *  # noqa: E402,F401,F403
from .lm import __all__ as _lm_exports  # noqa: E402

_lm_all: list[str] = list(_lm_exports)

# [pretrained] shipped checkpoints (jepatok.load_pretrained("small") -> (tokenizer, lm))
from .pretrained import load_pretrained  # noqa: E402,F401

_pretrained_all: list[str] = ["load_pretrained"]

__version__ = "0.1.0"
__all__ = (
    list(_codec_all) + _tokenizer_all + _lm_all + _pretrained_all + ["register_auto_classes", "__version__"]
)

register_auto_classes()
