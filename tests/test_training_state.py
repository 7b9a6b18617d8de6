"""Pickle-free training checkpoints (jepatok.training_state): exact resume, no pickles, loud refusals."""

from __future__ import annotations

import copy
import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from jepatok.training_state import LegacyCheckpointError, load_training_state, save_training_state


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 8)
        self.drop = nn.Dropout(0.3)  # draws from the torch generator: RNG state matters for exact resume
        self.out = nn.Linear(8, 6)
        self.register_buffer("seen", torch.zeros(()))

    def forward(self, x):
        self.seen += 1
        return self.out(self.drop(torch.tanh(self.inp(x))))


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = TinyNet()
    opt = torch.optim.AdamW(
        [
            {"params": [model.inp.weight, model.inp.bias]},
            {"params": list(model.out.parameters()), "lr": 3e-3},
        ],
        lr=1e-2,
        weight_decay=0.1,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 3))
    return model, opt, sched


def _steps(model, opt, sched, n: int) -> None:
    for _ in range(n):
        # inputs drawn from torch, numpy and python generators: all three must be restored
        x = torch.randn(4, 6) + float(np.random.rand()) + random.random()
        loss = (model(x) - x).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def test_resume_is_bit_identical_and_pickle_free(tmp_path):
    _seed_all(1)
    model, opt, sched = _setup()
    _steps(model, opt, sched, 5)
    reference = _state(model)
    ref_lr = sched.get_last_lr()

    _seed_all(1)
    model, opt, sched = _setup()
    _steps(model, opt, sched, 2)
    ckpt = save_training_state(tmp_path / "ck", models=[model], optimizers=[opt], schedulers=[sched])
    saved_opt = copy.deepcopy(opt.state_dict())  # state_dict() holds live tensors
    _steps(model, opt, sched, 1)  # the lost work after the checkpoint
    _seed_all(99)  # the process that resumes starts from other generator states

    model, opt, sched = _setup(seed=7)  # fresh objects, different init
    load_training_state(ckpt, models=[model], optimizers=[opt], schedulers=[sched])
    loaded = opt.state_dict()
    assert loaded["param_groups"] == saved_opt["param_groups"]
    assert loaded["state"].keys() == saved_opt["state"].keys()
    for pid, entry in saved_opt["state"].items():
        for name, value in entry.items():
            assert torch.equal(loaded["state"][pid][name], value), (pid, name)
    assert sched.last_epoch == 2
    _steps(model, opt, sched, 3)
    resumed = _state(model)
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference), "resume is not bit-identical"
    assert sched.get_last_lr() == ref_lr

    names = sorted(p.name for p in ckpt.iterdir())
    assert names == [
        "model.safetensors",
        "optimizer.json",
        "optimizer.safetensors",
        "rng_state_0.json",
        "rng_state_0.safetensors",
        "scheduler.json",
        "training_state.json",
    ]
    for path in ckpt.iterdir():
        assert path.suffix in {".json", ".safetensors"}
        assert not path.read_bytes().startswith(b"\x80"), f"{path.name} looks like a pickle"
    keys = json.loads((ckpt / "optimizer.json").read_text())
    assert "state.0.exp_avg" in json.dumps(keys)


def test_two_models_two_optimizers_and_tied_weights(tmp_path):
    torch.manual_seed(0)
    tied = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5, bias=False))
    tied[1].weight = tied[0].weight  # one tensor under two names
    other = nn.Linear(3, 3)
    opts = [torch.optim.AdamW(tied.parameters(), lr=0.1), torch.optim.AdamW(other.parameters(), lr=0.2)]
    tied(torch.tensor([1, 2])).sum().backward()
    other(torch.ones(1, 3)).sum().backward()
    for o in opts:
        o.step()
    ckpt = save_training_state(tmp_path / "ck", models=[tied, other], optimizers=opts, schedulers=[])
    assert (ckpt / "model_1.safetensors").is_file() and (ckpt / "optimizer_1.json").is_file()

    torch.manual_seed(5)
    tied2 = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5, bias=False))
    tied2[1].weight = tied2[0].weight
    other2 = nn.Linear(3, 3)
    opts2 = [torch.optim.AdamW(tied2.parameters(), lr=0.1), torch.optim.AdamW(other2.parameters(), lr=0.2)]
    load_training_state(ckpt, models=[tied2, other2], optimizers=opts2, schedulers=[])
    assert torch.equal(tied2[0].weight, tied[0].weight) and tied2[1].weight is tied2[0].weight
    assert torch.equal(other2.weight, other.weight)
    assert torch.equal(
        opts2[1].state_dict()["state"][0]["exp_avg"], opts[1].state_dict()["state"][0]["exp_avg"]
    )
    with pytest.raises(ValueError, match="holds 2 optimizers; this run has 1"):
        load_training_state(ckpt, models=[tied2, other2], optimizers=opts2[:1], schedulers=[])


def test_refuses_accelerate_checkpoints_without_loading_them(tmp_path):
    model, opt, sched = _setup()
    old = tmp_path / "old"
    old.mkdir()
    (old / "model.safetensors").write_bytes(b"")
    (old / "optimizer.bin").write_bytes(b"\x80\x04 not to be unpickled")
    (old / "random_states_0.pkl").write_bytes(b"\x80\x04")
    with pytest.raises(
        LegacyCheckpointError, match=r"older jepatok with pickled.*optimizer\.bin.*start a new run"
    ):
        load_training_state(old, models=[model], optimizers=[opt], schedulers=[sched])
    with pytest.raises(ValueError, match="training_state.json' is missing"):
        load_training_state(tmp_path, models=[model], optimizers=[opt], schedulers=[sched])


@pytest.mark.parametrize(
    "name, damage, expected",
    [
        ("scheduler.json", "{not json", "scheduler.json' is not valid JSON"),
        ("optimizer.json", '{"state_dict": [1, 2]}', "optimizer.json' has no state_dict"),
        ("rng_state_0.json", '{"numpy": {}}', "rng_state_0.json' is malformed"),
        ("optimizer.safetensors", None, "optimizer.safetensors' is missing"),
        ("model.safetensors", b"\x00" * 5, "model.safetensors' cannot be loaded"),
    ],
)
def test_damaged_files_raise_value_error_naming_the_file(tmp_path, name, damage, expected):
    model, opt, sched = _setup()
    _steps(model, opt, sched, 1)
    ckpt = save_training_state(tmp_path / "ck", models=[model], optimizers=[opt], schedulers=[sched])
    path = ckpt / name
    if damage is None:
        path.unlink()
    elif isinstance(damage, bytes):
        path.write_bytes(damage)
    else:
        path.write_text(damage)
    state = torch.get_rng_state()
    with pytest.raises(ValueError, match=expected):
        load_training_state(ckpt, models=[model], optimizers=[opt], schedulers=[sched])
    assert torch.equal(torch.get_rng_state(), state)  # a failed load leaves the generators alone


def test_without_rng_and_lambda_objects(tmp_path):
    class Warmup:  # a callable object: its attributes are saved, as torch's LambdaLR.state_dict does
        def __init__(self, n):
            self.n = n

        def __call__(self, step):
            return min(1.0, (step + 1) / self.n)

    model, opt, _ = _setup()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, [Warmup(4), lambda s: 0.5])
    ckpt = save_training_state(
        tmp_path / "ck", models=[model], optimizers=[opt], schedulers=[sched], extra_rng=False
    )
    assert not list(ckpt.glob("rng_state_*"))
    saved = json.loads((ckpt / "scheduler.json").read_text())["state_dict"]["lr_lambdas"]
    assert saved == [{"n": 4}, None]
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt, [Warmup(9), lambda s: 0.5])
    load_training_state(ckpt, models=[model], optimizers=[opt], schedulers=[sched2])
    assert sched2.lr_lambdas[0].n == 4
