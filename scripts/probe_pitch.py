"""Where does F0 precision get lost on its way through the codec? Ridge probes at every stage of the frame path.

For each stage of a codec with a pitch path (the encoder's pitch input, the bottleneck with it added, the
Conformer output, FSQ's input after the projection and RMS rescaling, the quantized latents, the decoder's frame
features) a ridge regression from that stage's frame vector (with `--context 1`, and its two neighbours) to the
ln-F0 values of the frame's sub-frames is fitted on clips of one split and scored on another: the median absolute
error in cents over voiced sub-frames and the gross error rate (> 20 % off). The decoder's own pitch head's
output is scored on the same sub-frames, without a probe.
With `--mlp N`, a two-layer MLP probe (hidden 256, N full-batch Adam steps on the L1 of ln F0 over voiced
sub-frames, the pitch head's own loss) is scored beside the ridge one: a linear probe only bounds what a stage
carries from below. A stage whose probe is much worse than the one before it is where precision is lost.

    .venv/bin/python scripts/probe_pitch.py --codec jepatok/pretrained/small/tokenizer/codec \
        --data corpus/v17h8 --fit-clips 1500 --max-clips 430
"""

from __future__ import annotations

import argparse
import math

import torch


def neighbours(x: torch.Tensor) -> torch.Tensor:
    """[T, D] -> [T, 3D]: each frame with the previous and next frame (zeros at the ends)."""
    pad = torch.nn.functional.pad(x, (0, 0, 1, 1))
    return torch.cat([pad[:-2], pad[1:-1], pad[2:]], dim=-1)


def ridge_probe(train_x, train_y, train_m, test_x, test_y, test_m, lam: float) -> torch.Tensor:
    """One ridge regression per sub-frame column, fitted on that column's voiced rows; -> test predictions."""
    mu, sd = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    a = torch.cat([(train_x - mu) / sd, torch.ones(len(train_x), 1, dtype=train_x.dtype)], 1)
    b = torch.cat([(test_x - mu) / sd, torch.ones(len(test_x), 1, dtype=test_x.dtype)], 1)
    reg = lam * torch.eye(a.shape[1], dtype=a.dtype)
    reg[-1, -1] = 0.0
    pred = torch.zeros_like(test_y)
    for j in range(train_y.shape[1]):
        rows = train_m[:, j]
        aj = a[rows]
        w = torch.linalg.solve(aj.T @ aj + reg, aj.T @ train_y[rows, j])
        pred[:, j] = b @ w
    return pred


def mlp_probe(train_x, train_y, train_m, test_x, steps: int, seed: int = 0) -> torch.Tensor:
    """A two-layer MLP (hidden 256) fitted with full-batch Adam on the masked L1; -> test predictions."""
    torch.manual_seed(seed)
    mu, sd = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    xs, xt = ((train_x - mu) / sd).float(), ((test_x - mu) / sd).float()
    y, m = train_y.float(), train_m.float()
    net = torch.nn.Sequential(
        torch.nn.Linear(xs.shape[1], 256), torch.nn.GELU(), torch.nn.Linear(256, y.shape[1])
    )
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        loss = ((net(xs) - y).abs() * m).sum() / m.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        return net(xt).double()


def score(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    cents = (1200.0 / math.log(2.0)) * (pred - target)[mask].abs()
    return float(cents.median()), float((cents > 1200 * math.log2(1.2)).float().mean())


@torch.no_grad()
def stages(codec, clip: dict) -> dict[str, torch.Tensor]:
    """The frame vectors [T, *] of one cached clip at each stage of the frame path (and the head's ln F0)."""
    from jepatok.tokenizer.envelope_warmup import collate
    from jepatok.tokenizer.layers import apply_mask

    b = collate([clip], [0])
    enc, dec = codec.encoder, codec.decoder
    out = {"pitch_input": b["pitch_in"][0].double()}
    z = enc.bottleneck(b["front"])
    out["_rms_front"] = z.pow(2).mean().sqrt().double()
    if b["spectral"] is not None:
        term = enc.spectral_input(b["spectral"]).transpose(1, 2)
        out["_rms_spectral"] = term.pow(2).mean().sqrt().double()
        z = z + term
    term = enc.pitch_input(b["pitch_in"]).transpose(1, 2)
    out["pitch_term"] = term[0].T.double()
    out["_rms_pitch"] = term.pow(2).mean().sqrt().double()
    z = z + term
    z = apply_mask(z, b["mask"].unsqueeze(1).to(z.dtype)).transpose(1, 2)
    out["bottleneck"] = z[0].double()
    h = enc.conformer_stack(z, None)[0]
    out["conformer"] = h[0].double()
    lat = codec.quantizer_input(h)
    out["fsq_input"] = lat[0].double()
    q = codec.quantizer(lat).quantized
    out["quantized"] = q[0].double()
    feats = dec.frame_features(q, b["mask"])
    out["frame_features"] = feats[0].T.double()
    out["_head"] = dec.predict_pitch(feats)[0, 0].view(-1, dec.pitch_subframes).double()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--codec", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--fit-split", default="train")
    p.add_argument("--fit-clips", type=int, default=1500)
    p.add_argument("--split", default="validation", help="the split the probes are scored on")
    p.add_argument("--max-clips", type=int, default=430)
    p.add_argument("--mlp", type=int, default=0, help="also fit an MLP probe with this many steps")
    p.add_argument("--context", type=int, choices=(0, 1), default=0, help="1: add the neighbouring frames")
    p.add_argument("--max-seconds", type=float, default=8.0)
    p.add_argument("--ridge", type=float, default=1.0)
    args = p.parse_args()

    from tqdm.auto import tqdm

    from jepatok.data.training_data import AudioTrainingDataset, load_audio_source
    from jepatok.tokenizer.envelope_warmup import frame_inputs
    from jepatok.tokenizer.modeling import JepaCodecModel
    from jepatok.tokenizer.pitch import PITCH_REF_HZ

    codec = JepaCodecModel.from_pretrained(args.codec).eval()
    dec = codec.config.decoder_config
    if not dec.pitch_subframes or codec.encoder.pitch_input is None:
        raise SystemExit(
            f"{args.codec} has no pitch path (decoder pitch_subframes and encoder pitch input needed)"
        )

    def collect(split: str, limit: int):
        data = AudioTrainingDataset(
            load_audio_source(args.data, split=split),
            codec.config.sampling_rate,
            crop_seconds=args.max_seconds,
        )
        rows: dict[str, list[torch.Tensor]] = {}
        targets, masks = [], []
        for i in tqdm(range(min(len(data), limit)), desc=f"clips ({split})"):
            clip = frame_inputs(
                codec.encoder, data[(0, i)], dec.envelope_bands, dec.envelope_subframes, dec.pitch_subframes
            )
            for k, v in stages(codec, clip).items():
                if k.startswith("_rms"):
                    v = v.view(1)
                elif args.context and not k.startswith("_"):
                    v = neighbours(v)
                rows.setdefault(k, []).append(v)
            targets.append(torch.log(clip["f0"].clamp_min(1.0) / PITCH_REF_HZ).double())
            masks.append(clip["voiced"].bool())
        return {k: torch.cat(v) for k, v in rows.items()}, torch.cat(targets), torch.cat(masks)

    fit, fit_y, fit_m = collect(args.fit_split, args.fit_clips)
    ev, y, m = collect(args.split, args.max_clips)
    print(
        f"fitted on {len(fit_y)} frames of {args.fit_split} ({int(fit_m.sum())} voiced sub-frames), "
        f"scored on {len(y)} frames of {args.split} ({int(m.sum())} voiced sub-frames)"
    )
    rms = {k[5:]: float(v.mean()) for k, v in ev.items() if k.startswith("_rms")}
    print("RMS of the bottleneck's terms: " + ", ".join(f"{k} {v:.3f}" for k, v in rms.items()))
    mlp = f" {'MLP cents':>10} {'MLP gross':>10}" if args.mlp else ""
    print(f"{'stage':<16} {'dims':>6} {'median cents':>13} {'gross error':>12}{mlp}")
    for name, x in fit.items():
        if name.startswith("_"):
            continue
        pred = ridge_probe(x, fit_y, fit_m, ev[name], y, m, args.ridge)
        med, gross = score(pred, y, m)
        extra = ""
        if args.mlp:
            mmed, mgross = score(mlp_probe(x, fit_y, fit_m, ev[name], args.mlp), y, m)
            extra = f" {mmed:>10.1f} {mgross:>10.3f}"
        print(f"{name:<16} {x.shape[1]:>6} {med:>13.1f} {gross:>12.3f}{extra}")
    med, gross = score(ev["_head"], y, m)
    print(f"{'pitch head':<16} {'-':>6} {med:>13.1f} {gross:>12.3f}")


if __name__ == "__main__":
    main()
