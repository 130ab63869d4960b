"""The one shared input-check helper of lib3d.

Every public function checks its tensors at the boundary with these helpers so that bad input raises a
``ValueError`` or ``TypeError`` naming the argument, the expected and the actual shape (never an
``assert``, which vanishes under ``python -O``). Data-dependent checks (NaN, index ranges) are skipped
while ``torch.compile`` or ``torch.jit`` traces, since they would force a graph break.

Shape specs are tuples whose entries are

- an ``int``: that exact size;
- a ``str``: a named dimension; every occurrence of the same name within one ``check_shapes`` call
  must have the same size (``"N"``, ``"V"``, ...);
- ``None``: any size;
- ``...`` (only first): any number of leading dimensions.

Example:
    >>> sizes = check_shapes(verts=(verts, ("N", "V", 3)), faces=(faces, ("N", "F", 3)))
    >>> sizes["N"]
"""

from __future__ import annotations

from typing import Any

import torch

Spec = tuple


def is_tracing() -> bool:
    """True while ``torch.compile``/dynamo, FX or TorchScript traces (data-dependent checks are skipped)."""
    try:
        if torch.compiler.is_compiling():
            return True
    except AttributeError:  # pragma: no cover - older torch
        pass
    return bool(torch.jit.is_tracing() or torch.jit.is_scripting())


def _fmt(spec: Spec) -> str:
    parts = []
    for s in spec:
        parts.append("..." if s is Ellipsis else ("*" if s is None else str(s)))
    return "(" + ", ".join(parts) + ")"


def check_tensor(name: str, x: Any, *, dtype: str | torch.dtype | None = None) -> torch.Tensor:
    """Raise ``TypeError`` unless ``x`` is a tensor of the right kind.

    Args:
        name: argument name used in the message.
        x: the value to check.
        dtype: ``"float"`` (any floating dtype), ``"int"`` (any integer dtype), ``"bool"``, a concrete
            ``torch.dtype``, or ``None`` for any.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if dtype is None:
        return x
    ok = {
        "float": x.is_floating_point(),
        "int": (not x.is_floating_point()) and (not x.is_complex()) and x.dtype != torch.bool,
        "bool": x.dtype == torch.bool,
    }.get(dtype) if isinstance(dtype, str) else x.dtype == dtype
    if not ok:
        raise TypeError(f"{name} must have a {dtype} dtype, got {x.dtype}")
    return x


def check_shape(name: str, x: torch.Tensor, spec: Spec, sizes: dict | None = None,
                dtype: str | torch.dtype | None = None) -> dict:
    """Check one tensor against a shape spec; returns (and fills) the dict of named sizes."""
    check_tensor(name, x, dtype=dtype)
    sizes = {} if sizes is None else sizes
    spec = tuple(spec)
    shape = tuple(x.shape)
    if spec and spec[0] is Ellipsis:
        tail = spec[1:]
        if len(shape) < len(tail):
            raise ValueError(f"{name} must have shape {_fmt(spec)}, got {tuple(shape)}")
        shape = shape[len(shape) - len(tail):]
        spec = tail
    elif len(shape) != len(spec):
        raise ValueError(f"{name} must have shape {_fmt(spec)}, got {tuple(x.shape)}")
    for s, actual in zip(spec, shape):
        if s is None:
            continue
        if isinstance(s, int):
            if actual != s:
                raise ValueError(f"{name} must have shape {_fmt(spec)}, got {tuple(x.shape)}")
        elif isinstance(s, str):
            if s in sizes and sizes[s] != actual:
                raise ValueError(
                    f"{name} must have shape {_fmt(spec)} with {s}={sizes[s]} (from the other arguments), "
                    f"got {tuple(x.shape)}")
            sizes[s] = actual
        else:  # pragma: no cover - programming error
            raise TypeError(f"bad shape spec entry {s!r}")
    return sizes


def check_shapes(dtype: str | torch.dtype | None = None, **named: tuple) -> dict:
    """Check several tensors with shared named dimensions: ``check_shapes(a=(a, ("N", 3)), ...)``.

    ``None`` tensors are skipped (optional arguments). Returns the dict of named sizes.
    """
    sizes: dict = {}
    for name, (x, spec) in named.items():
        if x is None:
            continue
        check_shape(name, x, spec, sizes, dtype=dtype)
    return sizes


def check_finite(name: str, x: torch.Tensor) -> torch.Tensor:
    """Raise ``ValueError`` if ``x`` holds NaN or infinity (skipped while tracing)."""
    if is_tracing() or not x.is_floating_point():
        return x
    if not bool(torch.isfinite(x).all()):
        n_nan = int(torch.isnan(x).sum())
        raise ValueError(f"{name} must be finite, got {n_nan} NaN and "
                         f"{int((~torch.isfinite(x)).sum()) - n_nan} infinite values")
    return x


def check_index(name: str, idx: torch.Tensor, size: int, *, allow_negative_one: bool = False) -> torch.Tensor:
    """Raise ``ValueError`` unless integer ``idx`` lies in ``[0, size)`` (or is -1 when allowed)."""
    check_tensor(name, idx, dtype="int")
    if is_tracing() or idx.numel() == 0:
        return idx
    lo = -1 if allow_negative_one else 0
    mn, mx = int(idx.min()), int(idx.max())
    if mn < lo or mx >= size:
        raise ValueError(f"{name} must index into [{lo}, {size}), got values in [{mn}, {mx}]")
    return idx


def check_choice(name: str, value: Any, choices) -> Any:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


class TypeValueError(TypeError, ValueError):
    """An argument of the wrong type where PyTorch3D raises ``ValueError``: catchable as either, so that code
    written against PyTorch3D (``except ValueError``) and lib3d's convention (``TypeError``) both hold."""


class TypeIndexError(TypeError, IndexError):
    """An index of the wrong type where PyTorch3D raises ``IndexError`` (``Meshes[...]``, ...): catchable as
    either ``TypeError`` or ``IndexError``."""
