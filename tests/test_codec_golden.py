"""Golden regression test: a seeded micro codec's weights, input, codes and audio are committed in
tests/assets/codec_golden.safetensors; the forward code must keep reproducing them.

Regenerate (only after an intended numerical change) with:
    .venv/bin/python tests/test_codec_golden.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from jepatok import JepaCodecConfig, JepaCodecModel

ASSET = Path(__file__).parent / "assets" / "codec_golden.safetensors"
OVERRIDES = {
    "encoder_config": {
        "channels": [4, 4, 6],
        "latent_dim": 14,
        "conformer_heads": 2,
        "conformer_ff_mult": 2,
        "conformer_kernel_size": 3,
        "num_res_blocks": 2,
    },
    "fsq_config": {"levels": [4] * 12 + [3, 5], "group_size": 7},
    "decoder_config": {"channels": [8, 6, 4], "mrf_kernel_sizes": [3, 5], "mrf_dilations": [1, 3]},
    "predictor_config": {"hidden_dim": 8, "num_layers": 1, "heads": 2},
}


def _model() -> JepaCodecModel:
    torch.manual_seed(0)
    return JepaCodecModel(JepaCodecConfig.from_preset("tiny", **OVERRIDES)).eval()


def _input() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(10)  # every latent >= 4e-4 from an FSQ boundary: robust codes
    x = 0.3 * torch.randn(2, 1, 150, generator=g)
    mask = torch.ones(2, 150, dtype=torch.long)
    mask[1, 97:] = 0
    return x * mask.unsqueeze(1), mask


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small ops: one thread avoids OpenMP stalls on a shared CPU
    yield
    torch.set_num_threads(before)


def regenerate_golden() -> None:
    """Rewrite the asset (run `python tests/test_codec_golden.py` after an intended numerical change)."""
    model = _model()
    x, mask = _input()
    with torch.no_grad():
        out = model(x, mask)
    tensors = {f"weights.{k}": v.contiguous() for k, v in model.state_dict().items()}
    tensors.update(
        input_values=x, padding_mask=mask, audio_codes=out.audio_codes, audio_values=out.audio_values
    )
    ASSET.parent.mkdir(exist_ok=True)
    save_file(tensors, str(ASSET), metadata={"overrides": json.dumps(OVERRIDES)})


def test_golden_outputs():
    with safe_open(str(ASSET), framework="pt") as f:
        assert json.loads(f.metadata()["overrides"]) == OVERRIDES
        data = {k: f.get_tensor(k) for k in f.keys()}
    model = _model()
    weights = {k.removeprefix("weights."): v for k, v in data.items() if k.startswith("weights.")}
    model.load_state_dict(weights, strict=True)
    with torch.no_grad():
        out = model(data["input_values"], data["padding_mask"])
    assert out.audio_codes.shape == (2, 10, 2) and out.frame_mask.sum(-1).tolist() == [10, 7]
    assert torch.equal(out.audio_codes, data["audio_codes"])
    scale = data["audio_values"].abs().max()  # random weights: the audio is small (~4e-5)
    torch.testing.assert_close(out.audio_values, data["audio_values"], rtol=1e-4, atol=1e-4 * float(scale))
    assert scale > 0


if __name__ == "__main__":
    regenerate_golden()
