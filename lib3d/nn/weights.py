"""Reading weight files and loading them strictly into lib3d modules (no torchvision, no downloads).

Weight files are read with ``torch.load(..., weights_only=True)``: the restricted unpickler builds tensors,
plain containers and numbers only, so a pickle that names code (``os.system``, a class of some package) is
refused instead of run. ``.safetensors`` files are read with safetensors. Loading into a module is strict:
every missing key, unexpected key and shape mismatch is listed in one :class:`WeightFileError`, and nothing
is copied into the module unless everything matches.

Official layouts: lib3d's backbones use the attribute names of the official definitions (torchvision's
``resnet.py``, ``vgg.py``, ``alexnet.py``, pytorch-fid's ``inception.py``), so the official keys map onto
them unchanged; the ``load_*`` functions only drop the classifier heads (``fc.*``, ``classifier.*``) and,
for the truncated VGG / AlexNet feature extractors, the layers past the last tap (after checking that the
file holds exactly the official key set of the whole network).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "WeightFileError",
    "check_state_dict",
    "load_alexnet",
    "load_inception",
    "load_resnet",
    "load_vgg",
    "read_weight_file",
    "remap_keys",
    "state_dict_from",
    "strict_load",
]

# How many keys of each kind an error message lists before it says "... and N more".
_LIST_AT_MOST = 10


class WeightFileError(ValueError):
    """A weight file could not be read, or its tensors do not fit the module they are loaded into."""


def read_weight_file(path: str | os.PathLike, *, allowed_globals: Sequence[Any] = ()) -> dict:
    """Read a weight file without running code from it.

    ``.safetensors`` files are read with ``safetensors.torch.load_file``; anything else with
    ``torch.load(path, map_location="cpu", weights_only=True)``, inside
    ``torch.serialization.safe_globals(allowed_globals)`` when extra classes must be allowed (a trusted
    checkpoint that stores, say, an ``argparse.Namespace`` of options).

    Args:
        path: the file (a torchvision ``.pth``, pytorch-fid's ``pt_inception-2015-12-05-*.pth``, a
            checkpoint, a ``.safetensors`` file).
        allowed_globals: classes or functions the unpickler may reference besides tensors and builtin
            containers (``weights_only`` refuses all others).

    Returns:
        The loaded dictionary (usually ``name -> Tensor``; a checkpoint may nest its state dict).

    Raises:
        WeightFileError: the file is missing, is not a weights file, references code that is not allowed,
            or does not hold a dictionary. The message is one line naming the file and the reason.
    """
    p = Path(path)
    if not p.is_file():
        raise WeightFileError(f"{p}: no such weight file (lib3d never downloads weights; "
                              "fetch the file yourself and pass its path)")
    if p.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
            return dict(load_file(str(p), device="cpu"))
        except Exception as e:  # any failure here means "not a safetensors file"
            raise WeightFileError(f"{p}: not a readable safetensors file ({_one_line(e)})") from e
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        full = " ".join(str(e).split())
        found = re.search(r"GLOBAL\s+([\w.]+)", full)
        if found or "unsupported global" in full.lower():
            what = f" ({found.group(1)})" if found else ""
            raise WeightFileError(
                f"{p}: refused: the pickle references code{what} that weights_only loading does not run; "
                "if the file is trusted and needs that class, pass it in allowed_globals") from e
        reason = re.search(r"WeightsUnpickler error:\s*(.*?)\s*Check the documentation", full)
        raise WeightFileError(f"{p}: not a weights file ({reason.group(1) if reason else _one_line(e)})") from e
    except Exception as e:  # torch raises many types (KeyError, RuntimeError, ...) on junk
        raise WeightFileError(f"{p}: not a weights file ({type(e).__name__}: {_one_line(e)})") from e
    if not isinstance(obj, Mapping):
        raise WeightFileError(f"{p}: expected a dictionary of tensors, found a {type(obj).__name__}")
    return obj if isinstance(obj, dict) else dict(obj)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def _listed(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:_LIST_AT_MOST])
    more = f", ... and {len(keys) - _LIST_AT_MOST} more" if len(keys) > _LIST_AT_MOST else ""
    return shown + more


def _is_optional(key: str, expected: Mapping[str, Any]) -> bool:
    """``num_batches_tracked`` is optional both ways (old files lack it; frozen batch norms drop it)."""
    if not key.endswith("num_batches_tracked"):
        return False
    prefix = key[: -len("num_batches_tracked")]
    return (prefix + "running_mean") in expected or (prefix + "weight") in expected or key in expected


def check_state_dict(expected: Mapping[str, torch.Tensor], given: Mapping[str, Any], what: str) -> None:
    """Compare a state dict with the one a module expects; raise one error listing every difference.

    Args:
        expected: ``module.state_dict()`` (or any ``name -> Tensor`` reference layout).
        given: the state dict to check.
        what: a short name of what is being loaded, used in the message (``"ResNet-50 (torchvision)"``).

    Raises:
        WeightFileError: listing (the first 10 of, with the counts) missing keys, unexpected keys and
            shape mismatches (``key: file (a, b) vs module (c, d)``), and values that are not tensors.
    """
    missing = [k for k in expected if k not in given and not _is_optional(k, expected)]
    unexpected = [k for k in given if k not in expected and not _is_optional(k, expected)]
    mismatched, not_tensor = [], []
    for k, ref in expected.items():
        if k not in given:
            continue
        v = given[k]
        if not isinstance(v, torch.Tensor):
            not_tensor.append(f"{k} ({type(v).__name__})")
        elif tuple(v.shape) != tuple(ref.shape):
            mismatched.append(f"{k}: file {tuple(v.shape)} vs module {tuple(ref.shape)}")
    if not (missing or unexpected or mismatched or not_tensor):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_listed(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_listed(unexpected)}")
    if mismatched:
        parts.append(f"{len(mismatched)} shape mismatch(es): {_listed(mismatched)}")
    if not_tensor:
        parts.append(f"{len(not_tensor)} non-tensor value(s): {_listed(not_tensor)}")
    raise WeightFileError(f"cannot load {what}: " + "; ".join(parts))


def strict_load(module: nn.Module, state_dict: Mapping[str, Any], what: str) -> None:
    """Load ``state_dict`` into ``module`` only if every key and shape matches.

    ``num_batches_tracked`` counters are optional: a missing one keeps the module's value, an extra one
    for a frozen batch norm is ignored. Values are copied (and cast to the module's dtype and device) by
    ``load_state_dict``; on any failure the module keeps its previous tensors.

    Args:
        module: the module to fill.
        state_dict: ``name -> Tensor`` in the module's own layout (remap official layouts first).
        what: a short name of what is being loaded, used in error messages.

    Raises:
        WeightFileError: listing missing keys, unexpected keys and shape mismatches (see
            :func:`check_state_dict`); nothing is loaded then.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
    expected = module.state_dict()
    check_state_dict(expected, state_dict, what)
    sd = {k: v for k, v in state_dict.items() if k in expected}
    for k, v in expected.items():  # optional counters the file lacks keep the module's value
        if k not in sd:
            sd[k] = v.clone()
    backup = {k: v.detach().clone() for k, v in expected.items()}
    try:
        module.load_state_dict(sd, strict=True)
    except Exception as e:  # restore, then report in our error type
        module.load_state_dict(backup, strict=True)
        raise WeightFileError(f"cannot load {what}: {_one_line(e)}") from e


def remap_keys(state_dict: Mapping[str, Any], rules: Sequence[tuple[str, str | None]]) -> dict:
    """Rename keys with regular-expression rules; the first rule that matches a key's start wins.

    Each rule is ``(pattern, replacement)``: when ``re.match(pattern, key)`` matches, the matched prefix
    is replaced by ``match.expand(replacement)`` (so ``\\1`` back-references work) and the rest of the key
    is kept; a ``None`` replacement drops the key. Keys that no rule matches are kept unchanged.

    Example:
        >>> remap_keys({"backbone.bottom_up.stem.conv1.weight": w},
        ...            [(r"backbone\\.bottom_up\\.stem\\.", "")])
        {'conv1.weight': w}

    Args:
        state_dict: ``name -> value``.
        rules: ``(pattern, replacement)`` pairs, tried in order.

    Returns:
        A new dict with the renamed keys, in the original order.

    Raises:
        WeightFileError: two keys are renamed to the same name.
    """
    compiled = [(re.compile(pat), rep) for pat, rep in rules]
    out: dict = {}
    source: dict = {}
    for key, value in state_dict.items():
        new = key
        for pat, rep in compiled:
            m = pat.match(key)
            if m is not None:
                new = None if rep is None else m.expand(rep) + key[m.end():]
                break
        if new is None:
            continue
        if new in out:
            raise WeightFileError(f"remap_keys: {source[new]!r} and {key!r} are both renamed to {new!r}")
        out[new] = value
        source[new] = key
    return out


def state_dict_from(path_or_state_dict: str | os.PathLike | Mapping[str, Any]) -> dict:
    """A state dict from a path (read with :func:`read_weight_file`) or a mapping (copied shallowly)."""
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        return read_weight_file(path_or_state_dict)
    if isinstance(path_or_state_dict, Mapping):
        return dict(path_or_state_dict)
    raise TypeError("path_or_state_dict must be a path or a mapping of tensors, got "
                    f"{type(path_or_state_dict).__name__}")


def _drop(sd: Mapping[str, Any], prefixes: Sequence[str]) -> dict:
    return {k: v for k, v in sd.items() if not any(k.startswith(p) for p in prefixes)}


def load_resnet(path_or_state_dict: str | os.PathLike | Mapping[str, Any], model: nn.Module) -> None:
    """Load torchvision ResNet weights (``resnet50-*.pth`` ...) into a :class:`lib3d.nn.ResNet`.

    The layout is torchvision's (``conv1.weight``, ``bn1.running_mean``, ``layer1.0.conv1.weight``,
    ``layer1.0.downsample.0.weight``, ...), identical to lib3d's attribute names; the classifier
    (``fc.weight``, ``fc.bias``) is dropped. Batch-norm keys load into ``FrozenBatchNorm2d`` as well.

    Raises:
        WeightFileError: the file cannot be read or its keys/shapes do not match (all listed).
    """
    sd = _drop(state_dict_from(path_or_state_dict), ("fc.",))
    depth = getattr(model, "depth", "?")
    strict_load(model, sd, f"ResNet-{depth} (torchvision layout)")


def _official_subset(sd: dict, official: Mapping[str, tuple], model: nn.Module, what: str) -> dict:
    """Check ``sd`` against the whole official key/shape table, then keep the keys ``model`` has."""
    check_state_dict({k: torch.empty(s, device="meta") for k, s in official.items()},
                     sd, what)
    own = model.state_dict()
    return {k: v for k, v in sd.items() if k in own}


def load_vgg(path_or_state_dict: str | os.PathLike | Mapping[str, Any], model: nn.Module) -> None:
    """Load torchvision VGG16/19 weights (``vgg16-*.pth``, ``vgg19-*.pth``) into a ``VGGFeatures``.

    The file must hold exactly the official keys of the whole network (``features.N.weight`` /
    ``features.N.bias`` for every convolution, ``classifier.{0,3,6}.*``) with the official shapes; the
    classifier and the layers past ``model``'s last tap are then dropped and the rest loaded strictly.

    Raises:
        WeightFileError: the file cannot be read, is the other depth, or keys/shapes do not match.
    """
    from lib3d.nn.vgg import vgg_official_shapes

    depth = getattr(model, "depth", None)
    if depth not in (16, 19):
        raise TypeError(f"model must be a lib3d VGGFeatures, got {type(model).__name__}")
    what = f"VGG{depth} (torchvision layout)"
    sd = _official_subset(state_dict_from(path_or_state_dict), vgg_official_shapes(depth), model, what)
    strict_load(model, sd, what)


def load_alexnet(path_or_state_dict: str | os.PathLike | Mapping[str, Any], model: nn.Module) -> None:
    """Load torchvision AlexNet weights (``alexnet-*.pth``) into an ``AlexNetFeatures``.

    As :func:`load_vgg`: the whole official key set is checked, the classifier and layers past the last
    tap are dropped, the rest is loaded strictly.

    Raises:
        WeightFileError: the file cannot be read or keys/shapes do not match.
    """
    from lib3d.nn.alexnet import alexnet_official_shapes

    what = "AlexNet (torchvision layout)"
    sd = _official_subset(state_dict_from(path_or_state_dict), alexnet_official_shapes(), model, what)
    strict_load(model, sd, what)


def load_inception(path_or_state_dict: str | os.PathLike | Mapping[str, Any], model: nn.Module) -> None:
    """Load pytorch-fid's Inception weights (``pt_inception-2015-12-05-6726825d.pth``) into a
    ``FIDInceptionV3``.

    The layout is torchvision's ``Inception3`` without the auxiliary classifier (``Conv2d_1a_3x3.conv.weight``,
    ``Conv2d_1a_3x3.bn.running_var``, ``Mixed_5b.branch1x1.conv.weight``, ..., ``fc.weight`` of shape
    ``(1008, 2048)``); the ``fc.*`` classifier is dropped, everything else loads strictly.

    Raises:
        WeightFileError: the file cannot be read or keys/shapes do not match.
    """
    sd = _drop(state_dict_from(path_or_state_dict), ("fc.",))
    strict_load(model, sd, "FID InceptionV3 (pytorch-fid layout)")
