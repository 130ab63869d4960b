"""Official GIRAFFE checkpoints (``autonomousvision/giraffe`` ``model.pt`` files) mapped onto lib3d's modules.

An official checkpoint is ``torch.save({"model": GIRAFFE.state_dict(), "optimizer": ..., "optimizer_d": ...,
"it": ..., "epoch_it": ..., "loss_val_best": ...})`` whose model state dict holds three prefixes:
``generator.`` (trained generator), ``generator_test.`` (its EMA copy, used for rendering) and
``discriminator.``. Inside a generator:

=====================================  =====================================================
official key                           lib3d (``GiraffeGenerator``)
=====================================  =====================================================
``decoder.<layer>.*``                  ``object_field.<layer>.*`` (same layer names)
``background_generator.<layer>.*``     ``background_field.<layer>.*``
``neural_renderer.conv_layers/...``    ``neural_renderer.*`` (same names)
``neural_renderer.upsample_rgb.1.f``   dropped after checking it is the [1, 2, 1] blur kernel
=====================================  =====================================================

The discriminator's keys (``blocks.i.weight``, ``conv_out.weight``) load unchanged into
``lib3d.nn.DCGANDiscriminator``. Files are read with ``weights_only`` loading (numpy scalars, which the
official training script stores in ``loss_val_best``, are the only extra globals allowed).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from lib3d.nn.weights import WeightFileError, read_weight_file, remap_keys, strict_load

__all__ = ["GENERATOR_RULES", "load_official_giraffe", "official_generator_state_dict", "split_official_checkpoint"]

# official generator key prefix -> lib3d GiraffeGenerator prefix (None drops the key)
GENERATOR_RULES = (
    (r"decoder\.", "object_field."),
    (r"background_generator\.", "background_field."),
    (r"neural_renderer\.upsample_rgb\.1\.f$", None),
    (r"neural_renderer\.upsample_2\.1\.f$", None),
    (r"neural_renderer\.", "neural_renderer."),
)


def _numpy_globals() -> list:
    """Globals a trusted official checkpoint needs besides tensors: numpy scalars and dtypes."""
    import numpy as np

    out: list = [np.dtype]
    try:
        from numpy.core.multiarray import scalar  # numpy < 2 name
    except ImportError:  # pragma: no cover
        scalar = None
    try:
        from numpy._core.multiarray import scalar as scalar2  # numpy >= 2
        out.append(scalar2)
    except ImportError:  # pragma: no cover
        pass
    if scalar is not None:
        out.append(scalar)
    out += [getattr(np.dtypes, n) for n in ("Float64DType", "Float32DType", "Int64DType") if hasattr(np, "dtypes")]
    return out


def split_official_checkpoint(checkpoint: Mapping[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    """The ``generator``, ``generator_test`` and ``discriminator`` state dicts of an official checkpoint.

    Args:
        checkpoint: the loaded file (``{"model": state_dict, ...}``) or the model state dict itself.

    Returns:
        ``{"generator": ..., "generator_test": ..., "discriminator": ...}`` (only the parts present).

    Raises:
        WeightFileError: no ``generator.`` / ``generator_test.`` keys (not a GIRAFFE checkpoint).
    """
    sd = checkpoint.get("model", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(sd, Mapping):
        raise WeightFileError("not a GIRAFFE checkpoint: expected a dict with a 'model' state dict")
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        head, _, rest = str(key).partition(".")
        if head in ("generator", "generator_test", "discriminator") and rest:
            parts.setdefault(head, {})[rest] = value
    if "generator" not in parts and "generator_test" not in parts:
        raise WeightFileError("not a GIRAFFE checkpoint: no 'generator.' or 'generator_test.' keys (found "
                              f"{sorted({str(k).partition('.')[0] for k in sd})[:8]})")
    return parts


def official_generator_state_dict(official: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an official generator state dict (keys relative to ``generator.``) to ``GiraffeGenerator``'s.

    Raises:
        WeightFileError: the neural renderer's blur buffer is not the [1, 2, 1] kernel.
    """
    for key in ("neural_renderer.upsample_rgb.1.f", "neural_renderer.upsample_2.1.f"):
        if key in official:
            f = official[key]
            if not isinstance(f, torch.Tensor) or f.shape != (3,) or not torch.allclose(
                    f.float().cpu(), torch.tensor([1.0, 2.0, 1.0])):
                raise WeightFileError(f"{key} must be the blur kernel [1, 2, 1], got {f!r}")
    return remap_keys(official, GENERATOR_RULES)


def load_official_giraffe(path_or_checkpoint: str | os.PathLike | Mapping[str, Any], generator: torch.nn.Module | None,
                          generator_ema: torch.nn.Module | None = None,
                          discriminator: torch.nn.Module | None = None) -> dict[str, Any]:
    """Load an official GIRAFFE checkpoint into lib3d modules, strictly (every key and shape must match).

    ``generator_ema`` receives ``generator_test`` (the EMA generator the official renders use); when the
    file has no ``generator_test`` it receives the trained generator. Nothing is loaded into a module
    unless all of its keys and shapes match (the error names the missing, unexpected and mismatched keys:
    a checkpoint of another preset, e.g. a 256-px file into the 64-px model, stops there).

    Args:
        path_or_checkpoint: a ``model.pt`` path or an already loaded dict.
        generator: ``GiraffeGenerator`` for ``generator.*`` (None: skip).
        generator_ema: ``GiraffeGenerator`` for ``generator_test.*`` (None: skip).
        discriminator: ``lib3d.nn.DCGANDiscriminator`` for ``discriminator.*`` (None: skip).

    Returns:
        the checkpoint's non-tensor entries (``it``, ``epoch_it``, ``loss_val_best`` when present).

    Raises:
        WeightFileError: unreadable file, not a GIRAFFE checkpoint, or keys/shapes that do not match.
    """
    if isinstance(path_or_checkpoint, (str, os.PathLike)):
        ck = read_weight_file(path_or_checkpoint, allowed_globals=_numpy_globals())
        where = os.fspath(path_or_checkpoint)
    else:
        ck, where = dict(path_or_checkpoint), "checkpoint"
    parts = split_official_checkpoint(ck)
    if generator is not None:
        if "generator" not in parts:
            raise WeightFileError(f"{where}: no 'generator.' keys")
        strict_load(generator, official_generator_state_dict(parts["generator"]), f"GIRAFFE generator ({where})")
    if generator_ema is not None:
        src = parts.get("generator_test", parts.get("generator"))
        strict_load(generator_ema, official_generator_state_dict(src), f"GIRAFFE EMA generator ({where})")
    if discriminator is not None:
        if "discriminator" not in parts:
            raise WeightFileError(f"{where}: no 'discriminator.' keys")
        strict_load(discriminator, parts["discriminator"], f"GIRAFFE discriminator ({where})")
    return {k: v for k, v in ck.items() if k in ("it", "epoch_it", "loss_val_best")}
