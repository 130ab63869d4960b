"""Checkpoints: safetensors only, never pickle.

A checkpoint is a directory ``<run>/checkpoints/step_<step:09d>/`` holding

- ``model.safetensors``      the model tensors (a flat ``{name: tensor}``, e.g. ``model.state_dict()``);
- ``optimizer.safetensors``  the optimizers' tensors (``flatten_optimizer_state``), when optimizers are given
                             (one unnamed ``optimizer`` and/or any number of named ``optimizers``);
- ``state.json``             step, config, RNG states, the optimizer's non-tensor state and ``extra``.

It is written under a temporary name and renamed into place, so a crash never leaves a half-written
checkpoint under a ``step_*`` name; only the newest ``keep`` checkpoints are kept. Loading reads the
safetensors header itself first and refuses anything that is not a safetensors file (a pickle, a
``torch.save`` zip archive, a truncated or foreign file) with ``CheckpointError`` before any tensor is read.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import random
import re
import shutil
import struct
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "lib3d.checkpoint"
VERSION = 1
_STEP_DIR = re.compile(r"^step_(\d{9,})$")
_MAX_HEADER = 100 * 1024 * 1024


class CheckpointError(ValueError):
    """A checkpoint file or directory is missing, truncated, foreign or not safetensors."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        step: the step it was saved at.
        tensors: the model tensors ``{name: tensor}`` (on ``map_location``).
        optimizer_state: an ``optimizer.state_dict()`` ready for ``optimizer.load_state_dict``, or None.
        extra: the JSON ``extra`` dict given when saving (``{}`` if none).
        config: the run config saved with it (a JSON dict), or None.
        rng: the saved RNG states (see ``capture_rng_state``).
        path: the checkpoint directory.
        optimizer_states: the named optimizers' state dicts ``{name: state_dict}`` (``{}`` if none).
    """

    step: int
    tensors: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None
    extra: dict[str, Any]
    config: dict[str, Any] | None
    rng: dict[str, Any]
    path: Path
    optimizer_states: dict[str, Any] = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------------------------- optimizer


def _encode(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj
        return {"__tensor__": prefix}
    if isinstance(obj, Mapping):
        return {"__dict__": [[k, _encode(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"optimizer state: cannot store a value of type {type(obj).__name__} at {prefix!r}")


def _decode(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            key = obj["__tensor__"]
            if key not in tensors:
                raise CheckpointError(f"optimizer state: tensor {key!r} is missing from optimizer.safetensors")
            return tensors[key]
        if "__dict__" in obj:
            return {k: _decode(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        raise CheckpointError(f"optimizer state: unknown JSON node with keys {sorted(obj)}")
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    return obj


def flatten_optimizer_state(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], Any]:
    """Split an ``optimizer.state_dict()`` into flat tensors and a JSON-ready skeleton.

    Args:
        state_dict: any nesting of dicts (int or str keys), lists, tuples, tensors and JSON scalars.

    Returns:
        ``(tensors, meta)``: ``tensors`` maps dotted paths (``"state.0.exp_avg"``) to tensors, ``meta`` is
        the structure with each tensor replaced by ``{"__tensor__": path}``. ``unflatten_optimizer_state``
        inverts it exactly (int keys, tuples and tensor dtypes preserved).

    Raises:
        TypeError: for values that are neither tensors, containers nor JSON scalars.
    """
    tensors: dict[str, torch.Tensor] = {}
    meta = _encode(state_dict, "opt", tensors)
    return tensors, meta


def unflatten_optimizer_state(tensors: Mapping[str, torch.Tensor], meta: Any) -> dict[str, Any]:
    """Rebuild the state dict from ``flatten_optimizer_state``'s ``(tensors, meta)``."""
    return _decode(meta, tensors)


# ------------------------------------------------------------------------------------------------- RNG


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def capture_rng_state(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """The RNG states of torch (CPU and every initialised CUDA device), numpy, python and ``generators``.

    Returns:
        A JSON-ready dict (torch states base64-encoded).
    """
    state: dict[str, Any] = {
        "torch": _b64(torch.get_rng_state()),
        "python": _jsonable_random_state(random.getstate()),
    }
    np_state = np.random.get_state()
    state["numpy"] = [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    state["generators"] = {k: _b64(g.get_state()) for k, g in (generators or {}).items()}
    return state


def _jsonable_random_state(s: Any) -> Any:
    return [s[0], list(s[1]), s[2]]


def restore_rng_state(state: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None) -> None:
    """Restore what ``capture_rng_state`` captured (global torch/numpy/python RNGs and ``generators``).

    Raises:
        CheckpointError: if a generator to restore has no saved state.
    """
    if "torch" in state:
        torch.set_rng_state(_unb64(state["torch"]))
    if "python" in state:
        v, internal, gauss = state["python"]
        random.setstate((v, tuple(internal), gauss))
    if "numpy" in state:
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        saved = state["cuda"]
        for i in range(min(len(saved), torch.cuda.device_count())):
            torch.cuda.set_rng_state(_unb64(saved[i]), i)
    saved_gens = state.get("generators", {})
    for name, g in (generators or {}).items():
        if name not in saved_gens:
            raise CheckpointError(f"restore_rng_state: no saved state for generator {name!r} "
                                  f"(saved: {sorted(saved_gens)})")
        g.set_state(_unb64(saved_gens[name]))


# ------------------------------------------------------------------------------------------ safetensors


def _cpu_tensors(tensors: Mapping[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for k, t in tensors.items():
        if not isinstance(k, str):
            raise TypeError(f"{what}: tensor names must be str, got {type(k).__name__}")
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{what}: {k!r} must be a torch.Tensor, got {type(t).__name__}")
        t = t.detach().to("cpu").contiguous()
        key = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else (id(t), 0)
        if t.numel() and key in seen or t.numel() != t.untyped_storage().nbytes() // max(t.element_size(), 1):
            t = t.clone()  # safetensors refuses shared or partial storages
        seen.add(key)
        out[k] = t
    return out


def save_safetensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                     metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``tensors`` to ``path`` in safetensors format atomically (temporary file, fsync, rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        meta = {**dict(metadata or {}), "lib3d.order": json.dumps(list(tensors))}  # safetensors sorts names
        save_file(_cpu_tensors(tensors, str(path.name)), str(tmp), metadata=meta)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _foreign_kind(head: bytes) -> str:
    if head[:2] == b"PK":
        return "a zip archive (torch.save / pickle)"
    if head[:1] == b"\x80":
        return "a pickle file"
    return "not a safetensors file"


def _check_safetensors_header(path: Path) -> None:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            header = f.read(n) if 0 <= n <= _MAX_HEADER and 8 + n <= size else None
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint file {path}: {e}") from e
    meta = None
    if header is not None:
        try:
            meta = json.loads(header.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            meta = None
    if not isinstance(meta, dict):
        kind = _foreign_kind(head)
        raise CheckpointError(f"{path} is {kind} ({size} bytes): truncated or foreign; only safetensors "
                              "files are read and lib3d never unpickles checkpoints")
    data_len = size - 8 - n
    for name, info in meta.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2):
            raise CheckpointError(f"{path} is not a safetensors file (entry {name!r} has no data_offsets)")
        if offsets[1] > data_len:
            raise CheckpointError(f"{path} is truncated: tensor {name!r} ends at byte {offsets[1]} of the data "
                                  f"section but only {data_len} bytes are present")


def load_safetensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file after checking its header; never unpickles.

    Raises:
        CheckpointError: for a missing, truncated, pickle, zip or otherwise foreign file.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    _check_safetensors_header(path)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            names = list(f.keys())
            try:
                order = json.loads((f.metadata() or {}).get("lib3d.order", "[]"))
            except json.JSONDecodeError:
                order = []
            if sorted(order) == sorted(names):
                names = order
            return {k: f.get_tensor(k) for k in names}
    except (SafetensorError, OSError, RuntimeError) as e:
        raise CheckpointError(f"{path} is not a valid safetensors file: {e}") from e


# ---------------------------------------------------------------------------------------- directories


def checkpoint_dir_name(step: int) -> str:
    """The directory name of checkpoint ``step``: ``step_<step:09d>``."""
    return f"step_{step:09d}"


def checkpoint_step(path: str | os.PathLike | None) -> int:
    """The step of a ``step_<step>`` checkpoint directory (-1 for None).

    Raises:
        CheckpointError: if the name is not ``step_<digits>``.
    """
    if path is None:
        return -1
    m = _STEP_DIR.match(Path(path).name)
    if m is None:
        raise CheckpointError(f"{path} is not a checkpoint directory name (step_<9+ digits>)")
    return int(m.group(1))


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Complete checkpoint directories ``step_*`` under ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir()
             if (m := _STEP_DIR.match(p.name)) and (p / "state.json").is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint directory under ``directory`` or None."""
    found = list_checkpoints(directory)
    return found[-1] if found else None


def save_checkpoint(
    directory: str | os.PathLike,
    step: int,
    tensors: Mapping[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    generators: Mapping[str, torch.Generator] | None = None,
    keep: int | None = None,
    optimizers: Mapping[str, torch.optim.Optimizer | Mapping[str, Any]] | None = None,
) -> Path:
    """Write checkpoint ``<directory>/step_<step>/`` atomically and keep only the newest ``keep``.

    Args:
        directory: the checkpoints folder (created if needed).
        step: training step (int >= 0).
        tensors: model tensors ``{name: tensor}`` (any device; stored on CPU).
        optimizer: an optimizer or its ``state_dict()``; its tensors go to ``optimizer.safetensors``.
        extra: JSON-serialisable dict stored in ``state.json``.
        config: the run config as a JSON dict.
        generators: named ``torch.Generator`` s whose states are saved with the global RNG states.
        keep: keep only this many newest checkpoints (None or <= 0: keep all).
        optimizers: named optimizers (or their ``state_dict()`` s), e.g. ``{"generator": opt_g,
            "discriminator": opt_d}``; their tensors go to ``optimizer.safetensors`` under
            ``optimizers/<name>.``.

    Returns:
        The checkpoint directory.

    Raises:
        TypeError: if ``tensors`` holds non-tensors or ``extra`` is not JSON-serialisable.
        ValueError: if ``step`` is negative.
    """
    if not isinstance(step, int) or step < 0:
        raise ValueError(f"save_checkpoint: step must be an int >= 0, got {step!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / checkpoint_dir_name(step)
    tmp = directory / f".tmp-{final.name}-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        save_safetensors(tmp / "model.safetensors", tensors)
        state: dict[str, Any] = {
            "format": FORMAT, "version": VERSION, "step": step, "config": config,
            "extra": dict(extra or {}), "rng": capture_rng_state(generators), "optimizer": None,
        }
        opt_tensors: dict[str, torch.Tensor] = {}
        if optimizer is not None:
            sd = optimizer.state_dict() if isinstance(optimizer, torch.optim.Optimizer) else optimizer
            state["optimizer"] = _encode(sd, "opt", opt_tensors)
        if optimizers:
            state["optimizers"] = {}
            for name, opt in optimizers.items():
                sd = opt.state_dict() if isinstance(opt, torch.optim.Optimizer) else opt
                state["optimizers"][str(name)] = _encode(sd, f"optimizers/{name}", opt_tensors)
        if optimizer is not None or optimizers:
            save_safetensors(tmp / "optimizer.safetensors", opt_tensors)
        try:
            text = json.dumps(state, indent=1)
        except TypeError as e:
            raise TypeError(f"save_checkpoint: extra/config must be JSON-serialisable: {e}") from e
        with open(tmp / "state.json", "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():
            trash = directory / f".old-{final.name}-{uuid.uuid4().hex}"
            os.replace(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if keep is not None and keep > 0:
        for old in list_checkpoints(directory)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint directory (or the newest one inside a ``checkpoints/`` folder).

    Nothing is unpickled: tensors come from safetensors files whose headers are checked first, the rest
    from JSON. RNG states are returned, not applied (see ``restore_rng_state``).

    Raises:
        CheckpointError: if there is no checkpoint, or a file is truncated, foreign or a pickle.
    """
    path = Path(path)
    if path.is_dir() and not (path / "state.json").exists():
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"no checkpoint (step_*/state.json) under {path}")
        path = latest
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} is not a directory holding state.json and model.safetensors")
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path / 'state.json'} is unreadable or not JSON: {e}") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path / 'state.json'} is not a lib3d checkpoint (format "
                              f"{state.get('format') if isinstance(state, dict) else None!r}, expected {FORMAT!r})")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint version {state.get('version')!r} (expected {VERSION})")
    tensors = load_safetensors(path / "model.safetensors", map_location)
    opt_state, opt_states = None, {}
    if state.get("optimizer") is not None or state.get("optimizers"):
        opt_tensors = load_safetensors(path / "optimizer.safetensors", map_location)
        if state.get("optimizer") is not None:
            opt_state = unflatten_optimizer_state(opt_tensors, state["optimizer"])
        opt_states = {k: unflatten_optimizer_state(opt_tensors, m) for k, m in (state.get("optimizers") or {}).items()}
    return Checkpoint(step=int(state["step"]), tensors=tensors, optimizer_state=opt_state,
                      extra=state.get("extra") or {}, config=state.get("config"), rng=state.get("rng") or {},
                      path=path, optimizer_states=opt_states)
