"""The pre-tokenized dataset format (JEPA codec tokens, arXiv 2512.07168): a versioned header in the dataset info.

`jepatok pretokenize` stores `{"jepatok_pretokenized": {format_version, codec_identity, source, settings}}`
as JSON in `Dataset.info.description` (saved with `save_to_disk` in `dataset_info.json`). Training reads
it back with `read_codec_identity` and refuses a dataset made with another codec via `check_codec_identity`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
HEADER_KEY = "jepatok_pretokenized"


def make_header(identity: dict, source: str, settings: dict) -> str:
    """The JSON header string stored in `info.description`."""
    return json.dumps(
        {
            HEADER_KEY: {
                "format_version": FORMAT_VERSION,
                "codec_identity": identity,
                "source": source,
                "settings": settings,
            }
        },
        sort_keys=True,
    )


def read_header(dataset_or_dir: Any) -> dict:
    """The versioned jepatok header of a pre-tokenized dataset (Dataset, DatasetDict or save_to_disk folder)."""
    import datasets

    ds = dataset_or_dir
    if isinstance(ds, (str, os.PathLike)):
        if not Path(ds).is_dir():
            raise FileNotFoundError(f"pre-tokenized dataset folder {str(ds)!r} does not exist")
        ds = datasets.load_from_disk(str(ds))
    if isinstance(ds, datasets.DatasetDict):
        ds = next(iter(ds.values()))
    try:
        header = json.loads(ds.info.description or "")[HEADER_KEY]
    except (ValueError, KeyError, TypeError):
        raise ValueError(
            "this dataset carries no jepatok codec identity (not written by `jepatok pretokenize`)"
        ) from None
    if header.get("format_version") not in SUPPORTED_VERSIONS:
        raise ValueError(
            f"pre-tokenized format_version {header.get('format_version')!r} is not supported (supported: {SUPPORTED_VERSIONS})"
        )
    return header


def read_codec_identity(dataset_or_dir: Any) -> dict:
    """The codec identity (`codec_identity(codec)` dict) a pre-tokenized dataset was made with."""
    return dict(read_header(dataset_or_dir)["codec_identity"])


def check_codec_identity(dataset_or_dir: Any, tokenizer_or_identity: Any) -> None:
    """Raise ValueError unless the dataset's codec equals the tokenizer's (or identity dict's / codec's).

    Args:
        dataset_or_dir: Pre-tokenized Dataset/DatasetDict or its folder.
        tokenizer_or_identity: A `JepaSpeechTokenizer`, a `JepaCodecModel` or a codec identity dict.
    """
    expected = tokenizer_or_identity
    if hasattr(expected, "codec_identity") and isinstance(expected.codec_identity, dict):
        expected = expected.codec_identity
    elif not isinstance(expected, dict):
        from ..tokenizer.modeling import codec_identity

        expected = codec_identity(expected)
    from ..tokenizer.modeling import identity_mismatch

    found = read_codec_identity(dataset_or_dir)
    diff = identity_mismatch(expected, found)
    if diff is not None:
        key, want, got = diff
        raise ValueError(
            f"codec mismatch: the dataset was tokenized with {key} {got} but the tokenizer's codec "
            f"has {key} {want}; re-run `jepatok pretokenize` with this codec"
        )


__all__ = ["FORMAT_VERSION", "check_codec_identity", "make_header", "read_codec_identity", "read_header"]
