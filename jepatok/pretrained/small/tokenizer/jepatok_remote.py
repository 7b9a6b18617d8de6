"""Loader shim written by jepatok's save_pretrained.

`auto_map` in tokenizer_config.json / processor_config.json points here so that
`AutoTokenizer.from_pretrained(folder, trust_remote_code=True)` and `AutoProcessor...` work where the
`jepatok` package is installed but was never imported. The classes are the installed package's own.
"""

import jepatok  # noqa: F401  (registers the Auto classes)
from jepatok.tokenizer.processing import JepaSpeechProcessor
from jepatok.tokenizer.tokenization import JepaSpeechTokenizer

__all__ = ["JepaSpeechProcessor", "JepaSpeechTokenizer"]
