"""`jepatok` command line: one sub-command per job, each implemented in the module that owns it.

Sub-commands are registered lazily (module path + function names) so `jepatok --help` stays fast and a
missing optional dependency only breaks the command that needs it. Each owning module exposes
`add_arguments(parser)` and `run(args) -> int | None`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). The module defines add_arguments(parser) and run(args).
COMMANDS: dict[str, tuple[str, str]] = {
    "encode": ("jepatok.tokenizer.cli_codec", "encode audio files to codes (a versioned .jtok file)"),
    "decode": ("jepatok.tokenizer.cli_codec", "decode a .jtok file back to a WAV"),
    "train-stage1": ("jepatok.tokenizer.train_stage1", "stage 1: self-supervised JEPA+DAAM encoder training"),
    "train-stage2": ("jepatok.tokenizer.train_stage2", "stage 2: FSQ + HiFi-GAN decoder training"),
    "train-envelope": (
        "jepatok.tokenizer.envelope_warmup",
        "envelope warm-up: train the frame-rate path to carry log-mel envelopes (cached front-end)",
    ),
    "pretokenize": ("jepatok.data.pretokenize", "turn an audio dataset into codec tokens with datasets.map"),
    "build-corpus": ("jepatok.data.corpus", "build an offline multi-voice English speech corpus"),
    "eval-codec": (
        "jepatok.eval.evaluate_codec",
        "reconstruct a dataset and write metrics.json + report.html",
    ),
    "eval-tts": (
        "jepatok.eval.evaluate_tts",
        "text-to-speech WER of a speech LM on held-out sentences, beside ground truth and codec resynthesis",
    ),
    "compare-tts": (
        "jepatok.eval.compare_tts",
        "paired bootstrap of two eval-tts runs on the same sentences: is B's WER really lower than A's?",
    ),
    "text-gain": (
        "jepatok.lm.text_gain",
        "how many bits per audio second the text saves a speech LM (audio NLL without minus with the text)",
    ),
    "probe-phonemes": (
        "jepatok.eval.phonetic_probe",
        "phoneme error rate of a CTC probe reading a codec's codes (vs a control), from pre-tokenized data",
    ),
    "align-text": (
        "jepatok.lm.align",
        "add a text_frames column (each text piece's codec frame) to pre-tokenized data, for tts_layout=interleaved",
    ),
    "bench": ("jepatok.eval.bench", "codec encode/decode speed next to HF MimiModel"),
    "train-lm": ("jepatok.lm.train", "train the speech LM on pre-tokenized data"),
    "generate": ("jepatok.lm.cli_generate", "text-to-speech or speech continuation with a trained LM"),
}


def _load(name: str):
    module_name, _ = COMMANDS[name]
    module = importlib.import_module(module_name)
    suffix = name.replace("-", "_")
    # A module that serves several commands (encode/decode) names them add_<cmd>_arguments / run_<cmd>.
    add = getattr(module, f"add_{suffix}_arguments", None) or module.add_arguments
    run = getattr(module, f"run_{suffix}", None) or module.run
    return add, run


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jepatok", description="JEPA speech tokenizer and speech LM toolkit"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:  # only import the module of the command being run
            add, run = _load(name)
            add(p)
            p.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command is not None and command not in COMMANDS:
        build_parser().parse_args(argv)  # argparse prints the "invalid choice" error and exits 2
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        result = args._run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"jepatok {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
