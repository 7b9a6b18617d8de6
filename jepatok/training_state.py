"""Pickle-free training checkpoints: models, optimizers, schedulers and RNG states in safetensors + JSON.

`accelerator.save_state` writes (and `load_state` reads back) pickles: `optimizer.bin`, `scheduler.bin`,
`random_states_<rank>.pkl`, `custom_checkpoint_<i>.pkl`. jepatok's rule is "weights in safetensors, never load a
pickle", so the codec and LM trainers checkpoint with `save_training_state` / `load_training_state` instead.
A checkpoint directory holds:

* `model.safetensors`, `model_1.safetensors`, ...: the unwrapped `state_dict` of each model (the names
  `save_state` used, so tools reading them keep working; tied weights are stored once);
* `optimizer.safetensors` + `optimizer.json` (`optimizer_1.*`, ...): every tensor of `optimizer.state_dict()`
  under `state.<param_id>.<name>` (`param_groups.<i>.<name>` for tensor-valued hyper-parameters), the rest
  (param_groups, scalars) as JSON pointing at those keys; loading rebuilds the exact state_dict;
* `scheduler.json` (`scheduler_1.json`, ...): `scheduler.state_dict()`, callables replaced by null as torch's
  own `LambdaLR.state_dict` does; `scaler.json` for an enabled fp16 `GradScaler`;
* `rng_state_<rank>.safetensors` (torch CPU generator, CUDA generators when present) and
  `rng_state_<rank>.json` (numpy and python `random`), one pair per process;
* `training_state.json`: the manifest, written last by the main process (format, counts, process count).

Every file is written atomically (temporary file + `os.replace`), JSON with sorted keys. Loading never calls
`torch.load` or `pickle`: a missing or malformed file raises ValueError naming it and what was expected, and a
directory written by `accelerator.save_state` (pickles, no manifest) is refused with `LegacyCheckpointError`.

With several processes (DDP, MULTI_CPU) the main process writes the model/optimizer/scheduler files and every
rank its own RNG files; callers `wait_for_everyone` around the call. FSDP and DeepSpeed shard model and optimizer
states in their own formats, so with those distributed types both functions fall back to accelerate's
`save_state` / `load_state` (which do use pickles there).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch

MANIFEST = "training_state.json"
FORMAT = "jepatok-training-state"
VERSION = 1
_TAGS = ("__tensor__", "__tuple__", "__dict__")
# What accelerate's save_state writes with torch.save: their presence (and no manifest) marks an old checkpoint.
_PICKLED = (
    "optimizer*.bin",
    "scheduler*.bin",
    "sampler*.bin",
    "pytorch_model*.bin",
    "random_states_*.pkl",
    "custom_checkpoint_*.pkl",
    "scaler.pt",
)


class LegacyCheckpointError(ValueError):
    """A checkpoint written by `accelerator.save_state` (pickled optimizer/RNG state): never loaded."""


# ----------------------------------------------------------------------------------------------------
# Files: atomic writes, validated reads
# ----------------------------------------------------------------------------------------------------
def _indexed(stem: str, i: int, suffix: str) -> str:
    return f"{stem}{'' if i == 0 else f'_{i}'}{suffix}"


def _replace_into(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_json(path: Path, data) -> None:
    text = json.dumps(data, sort_keys=True, indent=1) + "\n"
    _replace_into(path, lambda tmp: tmp.write_text(text))


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    _replace_into(path, lambda tmp: save_file(flat, str(tmp), metadata={"format": "pt"}))


def _read_json(path: Path, expected: str) -> dict:
    if not path.is_file():
        raise ValueError(f"{str(path)!r} is missing; expected {expected}")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{str(path)!r} is not valid JSON ({err}); expected {expected}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} holds a JSON {type(data).__name__}; expected {expected} (an object)")
    return data


def _read_tensors(path: Path, expected: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise ValueError(f"{str(path)!r} is missing; expected {expected}")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error type for truncated/garbled files
        raise ValueError(
            f"{str(path)!r} is not a readable safetensors file ({err}); expected {expected}"
        ) from err


# ----------------------------------------------------------------------------------------------------
# State dicts <-> JSON + a flat tensor dict
# ----------------------------------------------------------------------------------------------------
def _encode(value, path: str, tensors: dict, drop_callables: bool = False):
    """JSON-able form of a state_dict value; tensors go to `tensors[path]`, tuples and non-str-keyed dicts
    are tagged so that `_decode` rebuilds them exactly."""

    def sub(key) -> str:
        return f"{path}.{key}" if path else str(key)

    if isinstance(value, torch.Tensor):
        tensors[path] = value
        return {"__tensor__": path}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, sub(i), tensors, drop_callables) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, sub(i), tensors, drop_callables) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not any(k in _TAGS for k in value):
            return {k: _encode(v, sub(k), tensors, drop_callables) for k, v in value.items()}
        if not all(isinstance(k, (str, int)) and not isinstance(k, bool) for k in value):
            raise ValueError(
                f"state key types {sorted({type(k).__name__ for k in value})} at {path!r}: expected int/str"
            )
        return {"__dict__": [[k, _encode(v, sub(k), tensors, drop_callables)] for k, v in value.items()]}
    if drop_callables and callable(value):
        return None
    raise ValueError(
        f"cannot store a {type(value).__name__} at {path!r}: expected tensors, numbers, strings, lists, dicts"
    )


def _decode(value, tensors: dict, where: str):
    if isinstance(value, list):
        return [_decode(v, tensors, where) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1 and "__tensor__" in value:
        key = value["__tensor__"]
        if key not in tensors:
            raise ValueError(f"{where} refers to tensor {key!r}, which its safetensors file lacks")
        return tensors[key]
    if len(value) == 1 and "__tuple__" in value:
        return tuple(_decode(v, tensors, where) for v in value["__tuple__"])
    if len(value) == 1 and "__dict__" in value:
        pairs = value["__dict__"]
        if not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            raise ValueError(f"{where}: malformed '__dict__' entry; expected [key, value] pairs")
        return {k: _decode(v, tensors, where) for k, v in pairs}
    return {k: _decode(v, tensors, where) for k, v in value.items()}


# ----------------------------------------------------------------------------------------------------
# Processes, models, RNG
# ----------------------------------------------------------------------------------------------------
def _process(accelerator) -> tuple[int, int, bool]:
    """(rank, world size, is main process)."""
    if accelerator is not None:
        return accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), dist.get_rank() == 0
    return 0, 1, True


def _uses_accelerate_state(accelerator) -> bool:
    kind = getattr(accelerator, "distributed_type", None)
    return getattr(kind, "value", kind) in ("FSDP", "DEEPSPEED")


def _register(accelerator, schedulers) -> None:
    """FSDP/DeepSpeed path: let accelerate checkpoint the explicitly passed schedulers (once each)."""
    known = list(accelerator._custom_objects) + list(accelerator._schedulers)
    for scheduler in schedulers:
        if not any(scheduler is obj for obj in known):
            accelerator.register_for_checkpointing(scheduler)


def _unwrap(model, accelerator):
    if accelerator is not None:
        return accelerator.unwrap_model(model)
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):  # DDP / torch.compile wrappers
        model = getattr(model, "module", None) or model._orig_mod
    return model


def _rng_states(rank: int) -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = state
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    info = {
        "rank": rank,
        "cuda_devices": len(tensors) - 1,
        "numpy": {
            "name": name,
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    return tensors, info


def _set_rng_states(tensors: dict[str, torch.Tensor], info: dict, where: str) -> None:
    try:
        cpu = tensors["torch_cpu"]
        if cpu.dtype != torch.uint8:
            raise TypeError(f"torch_cpu has dtype {cpu.dtype}, expected uint8")
        np_state = info["numpy"]
        numpy_state = (
            str(np_state["name"]),
            np.asarray(np_state["keys"], dtype=np.uint32),
            int(np_state["pos"]),
            int(np_state["has_gauss"]),
            float(np_state["cached_gaussian"]),
        )
        py = info["python"]
        python_state = (int(py["version"]), tuple(int(x) for x in py["internal"]), py["gauss_next"])
        cuda = [tensors[f"cuda.{i}"] for i in range(int(info.get("cuda_devices", 0)))]
        # validate everything before touching any generator
        np.random.RandomState().set_state(numpy_state)
        random.Random().setstate(python_state)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"{where} is malformed ({type(err).__name__}: {err}); expected torch_cpu (uint8) [+ cuda.<i>] "
            "tensors and numpy/python generator states as written by save_training_state"
        ) from err
    torch.set_rng_state(cpu)
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    np.random.set_state(numpy_state)
    random.setstate(python_state)


# ----------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------
def save_training_state(
    directory: str | os.PathLike,
    *,
    models: list,
    optimizers: list,
    schedulers: list,
    scaler=None,
    extra_rng: bool = True,
    accelerator=None,
) -> Path:
    """Write models, optimizers, schedulers (+ scaler) and this process's RNG states to `directory`.

    Under FSDP/DeepSpeed (`accelerator.distributed_type`) this is `accelerator.save_state` with the schedulers
    registered, since their sharded states need it; NO / MULTI_CPU / MULTI_GPU use the pickle-free format.

    Args:
        directory (`str` or `os.PathLike`): Checkpoint folder (created; files in it are replaced).
        models (`list[nn.Module]`): Models, possibly wrapped (DDP, compile); saved as `model[_i].safetensors`.
        optimizers (`list[torch.optim.Optimizer]`): Optimizers (an `AcceleratedOptimizer` works too).
        schedulers (`list`): LR schedulers (anything with `state_dict` / `load_state_dict`).
        scaler (`torch.amp.GradScaler`, *optional*): fp16 loss scaler (`accelerator.scaler`); None or disabled: skipped.
        extra_rng (`bool`, defaults to True): Also save the per-process RNG states (torch CPU, CUDA, numpy, python
            `random`); needed for exact resume whenever anything draws from the global generators.
        accelerator (`accelerate.Accelerator`, *optional*): Gives rank, main process, unwrapping and distributed
            type; without it torch.distributed (if initialised) decides the rank.
    Returns:
        `Path`: the directory.
    """
    directory = Path(directory)
    if _uses_accelerate_state(accelerator):
        _register(accelerator, schedulers)
        accelerator.save_state(str(directory))
        return directory
    rank, world, is_main = _process(accelerator)
    directory.mkdir(parents=True, exist_ok=True)
    if extra_rng:
        tensors, info = _rng_states(rank)
        _write_tensors(directory / f"rng_state_{rank}.safetensors", tensors)
        _write_json(directory / f"rng_state_{rank}.json", info)
    if not is_main:
        return directory
    from safetensors.torch import save_model

    for i, model in enumerate(models):
        module = _unwrap(model, accelerator)
        _replace_into(
            directory / _indexed("model", i, ".safetensors"),
            lambda tmp, m=module: save_model(m, str(tmp), metadata={"format": "pt"}, force_contiguous=True),
        )
    for i, optimizer in enumerate(optimizers):
        tensors: dict[str, torch.Tensor] = {}
        encoded = _encode(optimizer.state_dict(), "", tensors)
        _write_tensors(directory / _indexed("optimizer", i, ".safetensors"), tensors)
        _write_json(directory / _indexed("optimizer", i, ".json"), {"state_dict": encoded})
    for i, scheduler in enumerate(schedulers):
        _write_json(directory / _indexed("scheduler", i, ".json"), _json_state(scheduler, f"scheduler {i}"))
    use_scaler = scaler is not None and scaler.is_enabled()
    if use_scaler:
        _write_json(directory / "scaler.json", _json_state(scaler, "the GradScaler"))
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "models": len(models),
        "optimizers": len(optimizers),
        "schedulers": len(schedulers),
        "scaler": use_scaler,
        "rng": extra_rng,
        "num_processes": world,
        "accelerator_step": getattr(accelerator, "step", None),
    }
    _write_json(directory / MANIFEST, manifest)
    return directory


def _json_state(obj, what: str) -> dict:
    """`{"state_dict": ...}` of a scheduler/scaler; callables become null (as torch's LambdaLR.state_dict does)."""
    tensors: dict[str, torch.Tensor] = {}
    encoded = _encode(obj.state_dict(), "", tensors, drop_callables=True)
    if tensors:
        raise ValueError(
            f"{what} ({type(obj).__name__}) holds tensors {sorted(tensors)}; expected JSON values"
        )
    return {"state_dict": encoded}


def _check_manifest(directory: Path, models, optimizers, schedulers, scaler) -> dict:
    path = directory / MANIFEST
    if not path.is_file():
        pickled = sorted({p.name for pattern in _PICKLED for p in directory.glob(pattern)})
        if pickled:
            raise LegacyCheckpointError(
                f"checkpoint {str(directory)!r} was written by an older jepatok with pickled optimizer/RNG state "
                f"({', '.join(pickled)}); resuming would load pickles; start a new run (its model*.safetensors "
                "weights are safe to reuse) or finish this one with the jepatok version that wrote it"
            )
    manifest = _read_json(path, "the manifest of a checkpoint written by save_training_state")
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ValueError(
            f"{str(path)!r} has format {manifest.get('format')!r} version {manifest.get('version')!r}; "
            f"expected {FORMAT!r} version {VERSION}"
        )
    given = {"models": len(models), "optimizers": len(optimizers), "schedulers": len(schedulers)}
    for key, n in given.items():
        if manifest.get(key) != n:
            raise ValueError(f"{str(path)!r} holds {manifest.get(key)!r} {key}; this run has {n}")
    if manifest.get("scaler") and scaler is None:
        raise ValueError(
            f"{str(path)!r} holds a GradScaler state; this run has no scaler (fp16 mixed precision)"
        )
    return manifest


def load_training_state(
    directory: str | os.PathLike,
    *,
    models: list,
    optimizers: list,
    schedulers: list,
    scaler=None,
    accelerator=None,
) -> dict:
    """Restore what `save_training_state` wrote, in place; never unpickles anything.

    Under FSDP/DeepSpeed this is `accelerator.load_state` (see `save_training_state`).

    Args:
        directory (`str` or `os.PathLike`): Checkpoint folder.
        models, optimizers, schedulers, scaler, accelerator: As for `save_training_state`, in the same order.
    Returns:
        `dict`: the manifest (`{}` under FSDP/DeepSpeed).
    Raises:
        LegacyCheckpointError (a ValueError): the folder was written by `accelerator.save_state`.
        ValueError: a file is missing or malformed, or the counts differ from what was saved.
    """
    from safetensors.torch import load_model

    directory = Path(directory)
    if _uses_accelerate_state(accelerator):
        _register(accelerator, schedulers)
        accelerator.load_state(str(directory))
        return {}
    manifest = _check_manifest(directory, models, optimizers, schedulers, scaler)
    rank, world, _ = _process(accelerator)
    for i, model in enumerate(models):
        path = directory / _indexed("model", i, ".safetensors")
        if not path.is_file():
            raise ValueError(f"{str(path)!r} is missing; expected the safetensors weights of model {i}")
        try:
            load_model(_unwrap(model, accelerator), str(path), strict=True)
        except Exception as err:
            raise ValueError(
                f"{str(path)!r} cannot be loaded into model {i} ({err}); expected its weights"
            ) from err
    for i, optimizer in enumerate(optimizers):
        where = directory / _indexed("optimizer", i, ".json")
        data = _read_json(where, f"the JSON part of optimizer {i}'s state")
        tensors = _read_tensors(
            directory / _indexed("optimizer", i, ".safetensors"), f"optimizer {i}'s tensors"
        )
        state = _decode(data.get("state_dict"), tensors, repr(str(where)))
        if not isinstance(state, dict) or not {"state", "param_groups"} <= set(state):
            raise ValueError(f"{str(where)!r} has no state_dict with 'state' and 'param_groups'")
        try:
            optimizer.load_state_dict(state)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{str(where)!r} does not fit optimizer {i} of this run: {err}") from err
    for i, scheduler in enumerate(schedulers):
        where = directory / _indexed("scheduler", i, ".json")
        state = _decode(
            _read_json(where, f"scheduler {i}'s state_dict").get("state_dict"), {}, repr(str(where))
        )
        if not isinstance(state, dict):
            raise ValueError(f"{str(where)!r} has no 'state_dict' object")
        try:
            scheduler.load_state_dict(state)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{str(where)!r} does not fit scheduler {i} of this run: {err}") from err
    if manifest.get("scaler"):
        where = directory / "scaler.json"
        scaler.load_state_dict(
            _decode(_read_json(where, "the GradScaler state").get("state_dict"), {}, str(where))
        )
    if manifest.get("rng", True):
        if manifest.get("num_processes") != world:
            raise ValueError(
                f"{str(directory / MANIFEST)!r} was saved by {manifest.get('num_processes')} process(es); this run has "
                f"{world}: resume with the same number of processes (the RNG and data positions are per process)"
            )
        info_path = directory / f"rng_state_{rank}.json"
        info = _read_json(info_path, f"process {rank}'s numpy/python RNG states")
        tensors = _read_tensors(
            directory / f"rng_state_{rank}.safetensors", f"process {rank}'s torch RNG states"
        )
        _set_rng_states(tensors, info, repr(str(info_path)))
    if accelerator is not None and isinstance(manifest.get("accelerator_step"), int):
        accelerator.step = manifest["accelerator_step"]
    return manifest
