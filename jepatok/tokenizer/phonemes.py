"""Phonemes as the tokenizer's text side: espeak-ng's IPA transcription of English text, offline.

A speech LM has to learn which text pieces sound like which audio frames. Spelling pieces make that mapping
irregular ("though", "through", "tough"); IPA phonemes make it nearly one to one. espeak-ng is already a
system dependency (the corpus voices), and transcribes a sentence in about a millisecond of its own time.

`JepaSpeechTokenizer.from_codec(..., text_frontend="espeak-ipa")` trains its SentencePiece pieces on the
phonemized transcripts and phonemizes every text it tokenizes; decoding text ids gives phonemes back.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

TEXT_FRONTENDS = ("spelling", "espeak-ipa")
ESPEAK_VOICE = "en-us"


def check_text_frontend(frontend: str) -> str:
    """`frontend` if it is one of `TEXT_FRONTENDS`, else a ValueError naming them."""
    if frontend not in TEXT_FRONTENDS:
        raise ValueError(f"text_frontend must be one of {list(TEXT_FRONTENDS)}, got {frontend!r}")
    return frontend


def espeak_binary() -> str:
    """The path of espeak-ng; a RuntimeError saying how to install it when it is missing."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise RuntimeError(
            "text_frontend='espeak-ipa' needs the espeak-ng program, which was not found on PATH; install it "
            "(`make install` does, or `apt-get install espeak-ng`)"
        )
    return path


@functools.lru_cache(maxsize=65536)
def phonemize(text: str, voice: str = ESPEAK_VOICE) -> str:
    """`text` -> its IPA phonemes from espeak-ng (words separated by single spaces; clauses joined). Text with
    nothing to say ("", whitespace) gives "". Raises RuntimeError when espeak-ng is missing or fails."""
    if not isinstance(text, str):
        raise TypeError(f"phonemize takes a str, got {type(text).__name__}")
    if not text.strip():
        return ""
    # The text goes through stdin, so a text starting with "-" is never read as an option.
    proc = subprocess.run(
        [espeak_binary(), "-q", "--ipa", "-v", voice],
        input=text.replace("\n", " "),
        capture_output=True,
        text=True,
        encoding="utf-8",
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"espeak-ng failed on {text[:60]!r} (exit {proc.returncode}): {proc.stderr.strip()}"
        )
    return " ".join(proc.stdout.split())


def phonemize_many(texts, voice: str = ESPEAK_VOICE, workers: int | None = None) -> list[str]:
    """`phonemize` of every text, several espeak-ng processes at a time (each call is mostly process start-up,
    so threads overlap them; about 2x on 2 cores). Results also fill `phonemize`'s cache, so later single calls
    on the same texts are free (how `build_examples` and `text-gain` use it)."""
    from concurrent.futures import ThreadPoolExecutor

    texts = list(texts)
    n = workers or 2 * (os.cpu_count() or 1)

    # lru_cache keys phonemize(t) and phonemize(t, voice) apart: call it the way the tokenizer does
    def one(t: str) -> str:
        return phonemize(t) if voice == ESPEAK_VOICE else phonemize(t, voice)

    unique = list(dict.fromkeys(t for t in texts if isinstance(t, str) and t.strip()))
    if len(unique) > 1 and n > 1:
        with ThreadPoolExecutor(max_workers=n) as pool:
            list(pool.map(one, unique))
    return [one(t) for t in texts]


__all__ = ["TEXT_FRONTENDS", "check_text_frontend", "espeak_binary", "phonemize", "phonemize_many"]
