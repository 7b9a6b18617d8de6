"""How much does the text say about one codec frame? An upper-bound probe for the speech LM's text gain.

Two models with the same architecture learn the FSQ digits of frame K of each utterance (the 126 base-4 digits
of slots 0-17, most significant first, predicted left to right by a causal transformer decoder): one attends to
the utterance's text ids (a small transformer encoder over the tokenizer's TTS text), the other to a learned
constant. Their validation NLLs, in bits per frame, bound from above H(frame K) and H(frame K | text) for models
of this size and data; the difference is what the text can tell a model about that frame. Frame 0 needs no
alignment (the first words), so a speech LM whose text gain at frame 0 is far below this difference is not
using text it could use.

    python scripts/probe_text_frame.py --data runs/pretok --tokenizer jepatok/pretrained/small/tokenizer \
        --frame 0 --epochs 6 --out probe.json
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
from torch import nn


def frame_digits(frame: list[int], radix: int, digits: int) -> np.ndarray:
    """Slots 0-17 of one frame -> their base-`radix` digits, most significant first, flattened."""
    f = np.asarray(frame[:18])
    return np.stack([(f // radix**p) % radix for p in range(digits - 1, -1, -1)], 1).ravel()


def prepare(split, tokenizer, frame: int, max_text: int = 64):
    """(text ids [N, L], mask [N, L], digits [N, 126]) of the utterances with more than `frame` frames."""
    from jepatok.tokenizer.phonemes import phonemize_many

    texts, codes = list(split["text"]), split["audio_codes"]
    if getattr(tokenizer, "text_frontend", None) == "espeak-ipa":
        phonemize_many(texts)  # warms the cache in parallel
    empty = torch.zeros(0, tokenizer.tokens_per_frame, dtype=torch.long)
    xs, ys = [], []
    for text, c in zip(texts, codes):
        if len(c) <= frame or not text:
            continue
        ids = tokenizer.build_tts_ids(text, empty)
        xs.append(ids[2 : ids.index(tokenizer.audio_token_id)][:max_text])  # after <bos> <text>
        ys.append(frame_digits(c[frame], 4, 7))
    width = max(len(x) for x in xs)
    x = torch.zeros(len(xs), width, dtype=torch.long)
    mask = torch.zeros(len(xs), width, dtype=torch.bool)
    for i, ids in enumerate(xs):
        x[i, : len(ids)], mask[i, : len(ids)] = torch.tensor(ids), True
    return x, mask, torch.tensor(np.array(ys))


class DigitProbe(nn.Module):
    """Causal digit decoder over 126 4-way digits, cross-attending to the text encoding or to a constant."""

    def __init__(self, vocab: int, use_text: bool, width: int = 160, length: int = 126):
        super().__init__()
        self.use_text = use_text
        self.embed = nn.Embedding(vocab, width)
        self.text_pos = nn.Embedding(128, width)
        layer = nn.TransformerEncoderLayer(width, 4, 384, 0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.constant = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.digit_in = nn.Embedding(5, width)  # 4 digits + start
        self.digit_pos = nn.Embedding(length, width)
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(width, 4, 384, 0.1, batch_first=True), 3
        )
        self.out = nn.Linear(width, 4)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(length))

    def forward(self, x, mask, y):
        if self.use_text:
            pos = self.text_pos(torch.arange(x.shape[1], device=x.device))[None]
            memory, pad = self.encoder(self.embed(x) + pos, src_key_padding_mask=~mask), ~mask
        else:
            memory, pad = self.constant.expand(y.shape[0], 1, -1), None
        shifted = torch.cat([torch.full_like(y[:, :1], 4), y[:, :-1]], 1)
        h = self.decoder(
            self.digit_in(shifted) + self.digit_pos.weight[None],
            memory,
            tgt_mask=self.causal,
            memory_key_padding_mask=pad,
        )
        return self.out(h).log_softmax(-1)


def bits_per_frame(model, x, mask, y, batch: int = 256) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            lp = model(x[i : i + batch], mask[i : i + batch], y[i : i + batch])
            total += float(-lp.gather(-1, y[i : i + batch, :, None]).sum())
    model.train()
    return total / len(y) / math.log(2)


def main(argv=None):
    from jepatok.lm.train import load_pretokenized, load_tokenizer

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="pre-tokenized dataset (train + validation splits)")
    p.add_argument("--tokenizer", default="jepatok/pretrained/small/tokenizer")
    p.add_argument("--frame", type=int, default=0)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer(args.tokenizer)
    splits = load_pretokenized(args.data, tokenizer)
    train = prepare(splits["train"], tokenizer, args.frame)
    val = prepare(splits["validation"], tokenizer, args.frame)
    result = {
        "data": args.data,
        "frame": args.frame,
        "train_rows": len(train[2]),
        "validation_rows": len(val[2]),
    }
    for use_text in (False, True):
        torch.manual_seed(args.seed)
        model = DigitProbe(len(tokenizer), use_text)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
        start, curve = time.time(), []
        for epoch in range(args.epochs):
            for idx in torch.randperm(len(train[2])).split(64):
                lp = model(train[0][idx], train[1][idx], train[2][idx])
                loss = -lp.gather(-1, train[2][idx][..., None]).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            curve.append(bits_per_frame(model, *val))
            print(
                f"text={use_text} epoch {epoch}: validation {curve[-1]:.1f} bits/frame ({time.time() - start:.0f} s)"
            )
        result["with_text" if use_text else "without_text"] = curve
    result["text_bits_per_frame"] = result["without_text"][-1] - result["with_text"][-1]
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
