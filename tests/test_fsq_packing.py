"""FSQ and mixed-radix packing: exact inverses, ranges, the paper's worked example, fp32 under autocast."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from jepatok.tokenizer.fsq import FiniteScalarQuantizer, codes_to_indices, indices_to_codes
from jepatok.tokenizer.packing import pack, slot_sizes, unpack


def test_paper_configuration_slots():
    sizes = slot_sizes([4] * 128, 7)
    assert len(sizes) == 19
    assert sizes[:18] == [16384] * 18 and sizes[18] == 16


def test_worked_example_is_little_endian():
    # indices [2,1,3,0,2,1,3]: big-endian gives 10023 (paper text), little-endian 13878 (authors' code).
    assert pack(torch.tensor([2, 1, 3, 0, 2, 1, 3]), [4] * 7, 7).item() == 13878


@settings(max_examples=40, deadline=None)
@given(
    levels=st.lists(st.integers(2, 8), min_size=1, max_size=40),
    group=st.integers(1, 9),
    frames=st.integers(0, 4),
    seed=st.integers(0, 2**16),
)
def test_pack_unpack_exact_inverse(levels, group, frames, seed):
    g = torch.Generator().manual_seed(seed)
    lv = torch.tensor(levels)
    idx = (torch.rand(frames, len(levels), generator=g) * lv).long()
    tokens = pack(idx, levels, group)
    assert tokens.shape == (frames, -(-len(levels) // group))
    assert bool((tokens < torch.tensor(slot_sizes(levels, group))).all())
    assert torch.equal(unpack(tokens, levels, group), idx)


def test_every_token_value_unpacks_and_repacks():
    levels = [4] * 9  # slots of 4^7 and 4^2
    tokens = torch.stack(torch.meshgrid(torch.arange(16384), torch.arange(16), indexing="ij"), -1).view(-1, 2)
    assert torch.equal(pack(unpack(tokens, levels, 7), levels, 7), tokens)


def test_pack_rejects_bad_input():
    with pytest.raises(ValueError, match="out of range"):
        pack(torch.tensor([[4, 0]]), [4, 4], 7)
    with pytest.raises(ValueError, match="last dimension"):
        pack(torch.zeros(1, 3, dtype=torch.long), [4, 4], 7)
    with pytest.raises(ValueError, match="slot 0 holds 0..15"):
        unpack(torch.tensor([[16]]), [4, 4], 7)
    with pytest.raises(ValueError, match="integer"):
        unpack(torch.tensor([[1.0]]), [4, 4], 7)


def test_fsq_grid_and_index_roundtrip():
    levels = torch.tensor([4, 3, 5, 2])
    idx = torch.tensor([[0, 0, 0, 0], [3, 2, 4, 1], [1, 1, 2, 0]])
    assert torch.equal(codes_to_indices(indices_to_codes(idx, levels), levels), idx)
    assert torch.allclose(
        indices_to_codes(torch.arange(4), torch.tensor(4)), torch.tensor([-0.75, -0.25, 0.25, 0.75])
    )


def test_fsq_straight_through_and_fp32_under_autocast():
    q = FiniteScalarQuantizer([4] * 16)
    z = torch.randn(2, 5, 16, dtype=torch.bfloat16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(z)
    assert out.quantized.dtype == torch.float32
    assert set(out.quantized.unique().tolist()) <= {-0.75, -0.25, 0.25, 0.75}
    assert torch.equal(out.indices, codes_to_indices(out.quantized.detach(), q.levels))
    out.quantized.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    # nearest-grid assignment: tanh(z) in [0, 0.5) -> index 2 (0.25)
    assert q(torch.full((1, 16), 0.1)).indices.unique().tolist() == [2]
