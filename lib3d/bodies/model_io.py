"""Body model files: the official SMPL ``.pkl``, SMPL-style ``.npz`` and lib3d's safetensors format.

The official SMPL and SMPLify files are Python 2 pickles holding chumpy arrays and scipy sparse matrices.
:func:`safe_load_pickle` reads them without chumpy or scipy and without letting the pickle run code: a
restricted ``pickle.Unpickler`` whose ``find_class`` maps the few known classes to inert stand-ins
(chumpy ``Ch`` -> its ``x`` array, scipy ``csc/csr_matrix`` -> a dense array, numpy's array/dtype/scalar
reconstruction) and refuses every other global with :class:`UnsafePickleError`.

Keys of an SMPL model file (official names): ``v_template (V, 3)``, ``shapedirs (V, 3, S)``,
``posedirs (V, 3, 207)``, ``J_regressor (J, V)`` (dense or sparse), ``kintree_table (2, J)``,
``weights (V, J)``, ``f (F, 3)``. lib3d adds optional ``extra_regressor (E, V)``, ``extra_joint_names``,
``joint_names`` and ``description`` (smplx ignores unknown keys).
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from lib3d.bodies.smpl import SMPL_JOINT_NAMES, SMPLModel

__all__ = [
    "SMPL_EXTRA_VERTEX_IDS",
    "UnsafePickleError",
    "load_smpl_model",
    "safe_load_pickle",
    "save_smpl_model",
    "smpl_model_from_arrays",
    "smpl_model_to_arrays",
]

SMPL_EXTRA_VERTEX_IDS: dict[str, int] = {
    "head_top": 411, "nose": 332, "right_eye": 6260, "left_eye": 2800, "right_ear": 4071, "left_ear": 583,
    "left_big_toe": 3216, "left_small_toe": 3226, "left_heel": 3387, "right_big_toe": 6617,
    "right_small_toe": 6624, "right_heel": 6787,
}
"""Vertices of the real SMPL mesh used as extra joints (SMPLify's head top 411; the face and foot
keypoints of smplx's ``vertex_ids['smplh']``). Attached to 6890-vertex files that carry no extra regressor."""


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a class or function outside the small allow-list of :func:`safe_load_pickle`."""


class _Inert:
    """Base of the stand-ins: built with ``__new__`` + ``__setstate__`` only, holding a plain state."""

    def __init__(self, *args, **kwargs):  # pragma: no cover - pickle never calls __init__ for these
        self.state = None

    def __setstate__(self, state):
        self.state = state

    def to_array(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError


class _ChumpyCh(_Inert):
    """Stand-in for ``chumpy.ch.Ch``: the value is the ``x`` entry of its state dict."""

    def to_array(self):
        st = self.state
        if isinstance(st, dict) and "x" in st:
            return _plain(st["x"])
        raise pickle.UnpicklingError("chumpy Ch object without an 'x' array")


class _SparseMatrix(_Inert):
    """Stand-in for ``scipy.sparse.csc_matrix``/``csr_matrix``: rebuilt as a dense numpy array."""

    fmt = "csc"

    def to_array(self):
        st = self.state if isinstance(self.state, dict) else {}
        shape = st.get("_shape", st.get("shape"))
        data, indices, indptr = (np.asarray(_plain(st.get(k))) for k in ("data", "indices", "indptr"))
        if shape is None or data is None:
            raise pickle.UnpicklingError("sparse matrix state without _shape/data/indices/indptr")
        rows, cols = int(shape[0]), int(shape[1])
        out = np.zeros((rows, cols), dtype=data.dtype)
        counts = np.diff(indptr)
        major = np.repeat(np.arange(len(counts)), counts)
        if self.fmt == "csc":  # indptr runs over columns, indices are rows
            np.add.at(out, (indices, major), data)
        else:
            np.add.at(out, (major, indices), data)
        return out


class _CscMatrix(_SparseMatrix):
    fmt = "csc"


class _CsrMatrix(_SparseMatrix):
    fmt = "csr"


def _reconstructor(cls, base, state=None):
    """``copy_reg._reconstructor`` restricted to the stand-in classes."""
    if not (isinstance(cls, type) and issubclass(cls, _Inert)):
        raise UnsafePickleError(f"copy_reg._reconstructor of {cls!r} is not allowed")
    return cls.__new__(cls)


def _np_reconstruct(subtype, shape, dtype):
    """``numpy.core.multiarray._reconstruct`` restricted to plain ndarrays."""
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"numpy _reconstruct of {subtype!r} is not allowed")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _np_dtype(*args, **kwargs):
    return np.dtype(*args, **kwargs)


def _np_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError("numpy scalar of an object dtype is not allowed")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _np_frombuffer(buf, dtype, shape, order):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError("numpy _frombuffer of an object dtype is not allowed")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order).copy()


def _codecs_encode(obj, encoding="utf-8"):
    """``_codecs.encode`` as Python 3 writes bytes in protocol-2 pickles: str -> latin-1 bytes only."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("_codecs.encode is only allowed for latin-1 strings")
    return obj.encode("latin1")


_ALLOWED = {
    ("_codecs", "encode"): _codecs_encode,
    ("chumpy.ch", "Ch"): _ChumpyCh,
    ("chumpy", "Ch"): _ChumpyCh,
    ("scipy.sparse.csc", "csc_matrix"): _CscMatrix,
    ("scipy.sparse._csc", "csc_matrix"): _CscMatrix,
    ("scipy.sparse.csr", "csr_matrix"): _CsrMatrix,
    ("scipy.sparse._csr", "csr_matrix"): _CsrMatrix,
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
    ("__builtin__", "set"): set,
    ("builtins", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("builtins", "frozenset"): frozenset,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _np_dtype,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
    ("numpy.core.numeric", "_frombuffer"): _np_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _np_frombuffer,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: only numpy arrays, chumpy Ch and scipy sparse "
                "matrices are allowed in body-model pickles") from None


def _plain(obj: Any) -> Any:
    """Replace stand-ins by plain numpy arrays, recursively through dicts, lists and tuples."""
    if isinstance(obj, _Inert):
        return obj.to_array()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject:
        return np.array([_plain(v) for v in obj.ravel()], dtype=object).reshape(obj.shape)
    return obj


def safe_load_pickle(source: str | Path | bytes) -> Any:
    """Load a (Python 2 or 3) pickle of arrays without importing chumpy/scipy or running code.

    Args:
        source: a file path or the pickle bytes.

    Returns:
        the unpickled object with chumpy arrays and sparse matrices replaced by numpy arrays; byte
        strings from Python 2 are decoded as latin-1 (smplx's convention).

    Raises:
        UnsafePickleError: the pickle references any other class or function (e.g. ``os.system``).
    """
    data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    return _plain(_RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load())


# --------------------------------------------------------------------------------------- SMPL model files

def smpl_model_to_arrays(model: SMPLModel) -> dict[str, np.ndarray]:
    """The model as official-layout numpy arrays (float64 like the SMPL files; plus lib3d's extras)."""

    def f64(t):
        return t.detach().cpu().double().numpy()

    parents = model.parents.detach().cpu().numpy().astype(np.int64)
    kintree = np.stack([np.where(parents < 0, 4294967295, parents), np.arange(len(parents))]).astype(np.int64)
    out = {
        "v_template": f64(model.v_template),
        "shapedirs": f64(model.shapedirs),
        "posedirs": f64(model.posedirs),
        "J_regressor": f64(model.J_regressor),
        "kintree_table": kintree,
        "weights": f64(model.lbs_weights),
        "f": model.faces.detach().cpu().numpy().astype(np.uint32),
        "joint_names": np.array(model.joint_names),
        "description": np.array(model.description),
    }
    if model.extra_regressor is not None:
        out["extra_regressor"] = f64(model.extra_regressor)
        out["extra_joint_names"] = np.array(model.extra_joint_names)
    return out


def smpl_model_from_arrays(d: dict, *, dtype: torch.dtype = torch.float32,
                           device: torch.device | str | None = None,
                           extra_vertex_ids: dict[str, int] | None = None) -> SMPLModel:
    """Build an :class:`SMPLModel` from official-layout arrays (see the module docstring).

    Args:
        d: mapping of the SMPL keys to arrays (numpy, torch or nested lists).
        dtype, device: of the model tensors.
        extra_vertex_ids: extra joints as ``{name: vertex}`` when the file has no ``extra_regressor``;
            default :data:`SMPL_EXTRA_VERTEX_IDS` for 6890-vertex models, none otherwise.

    Raises:
        ValueError: a required key is missing or an array has the wrong shape.
    """
    missing = [k for k in ("v_template", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights", "f")
               if k not in d]
    if missing:
        raise ValueError(f"SMPL model is missing the keys {missing}; has {sorted(d)}")

    def arr(k, dt=np.float64):
        return np.asarray(d[k], dtype=dt)

    def t(a):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)

    v_template = arr("v_template")
    V = v_template.shape[0]
    posedirs = arr("posedirs")
    kintree = np.asarray(d["kintree_table"]).astype(np.int64)
    parents = kintree[0].copy()
    parents[0] = -1
    parents[parents >= len(parents)] = -1
    J = len(parents)
    names = d.get("joint_names")
    joint_names = tuple(str(x) for x in np.asarray(names).tolist()) if names is not None else (
        SMPL_JOINT_NAMES if J == 24 else tuple(f"joint_{i}" for i in range(J)))
    extra = extra_names = None
    if "extra_regressor" in d:
        extra = t(arr("extra_regressor"))
        extra_names = tuple(str(x) for x in np.asarray(d["extra_joint_names"]).tolist())
    else:
        ids = extra_vertex_ids if extra_vertex_ids is not None else (SMPL_EXTRA_VERTEX_IDS if V == 6890 else {})
        if ids:
            reg = np.zeros((len(ids), V))
            reg[np.arange(len(ids)), list(ids.values())] = 1.0
            extra, extra_names = t(reg), tuple(ids)
    desc = d.get("description")
    return SMPLModel(
        v_template=t(v_template),
        shapedirs=t(arr("shapedirs")),
        posedirs=t(posedirs.reshape(V, 3, -1)),
        J_regressor=t(arr("J_regressor")),
        parents=torch.as_tensor(parents, dtype=torch.long, device=device),
        lbs_weights=t(arr("weights")),
        faces=torch.as_tensor(np.asarray(d["f"]).astype(np.int64), device=device),
        joint_names=joint_names,
        extra_regressor=extra,
        extra_joint_names=extra_names or (),
        description=str(np.asarray(desc).item()) if desc is not None else "",
    )


def load_smpl_model(path: str | Path, *, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> SMPLModel:
    """Load an SMPL-layout model from ``.pkl`` (official, via :func:`safe_load_pickle`), ``.npz`` or
    ``.safetensors`` (lib3d's format, written by :func:`save_smpl_model`).

    Raises:
        FileNotFoundError; ValueError (unknown suffix, or a file that is not a readable model: the message
        names it); UnsafePickleError (a pickle that references code).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"body model file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".pkl", ".npz", ".safetensors"):
        raise ValueError(f"unknown body model format {suffix!r} for {path}; expected .pkl, .npz or .safetensors")
    try:
        if suffix == ".pkl":
            d = safe_load_pickle(path)
            if not isinstance(d, dict):
                raise ValueError(f"{path}: expected a pickled dict of arrays, got {type(d).__name__}")
        elif suffix == ".npz":
            try:
                with np.load(path, allow_pickle=False) as z:
                    d = {k: z[k] for k in z.files}
            except ValueError as e:  # numpy: not an npz archive of plain arrays
                raise ValueError(f"{path}: not a readable .npz body model ({e})") from None
        else:
            d = dict(load_file(str(path)))
            with safe_open(str(path), "np") as f:
                meta = f.metadata() or {}
            for k in ("joint_names", "extra_joint_names"):
                if k in meta:
                    d[k] = json.loads(meta[k])
            if "description" in meta:
                d["description"] = meta["description"]
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, OSError, UnicodeDecodeError, zipfile.BadZipFile,
            SafetensorError) as e:
        raise ValueError(f"{path}: not a readable {suffix} body model ({type(e).__name__}: {e})") from None
    return smpl_model_from_arrays(d, dtype=dtype, device=device)


def save_smpl_model(model: SMPLModel, path: str | Path) -> Path:
    """Write ``model`` as ``.pkl`` (plain numpy arrays, pickle protocol 2: readable by smplx and by
    :func:`load_smpl_model`, no chumpy needed), ``.npz`` or ``.safetensors``, chosen by the suffix."""
    path = Path(path)
    d = smpl_model_to_arrays(model)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if suffix == ".pkl":
        with open(tmp, "wb") as fh:
            pickle.dump(d, fh, protocol=2)
    elif suffix == ".npz":
        with open(tmp, "wb") as fh:
            np.savez(fh, **d)
    elif suffix == ".safetensors":

        meta = {"format": "lib3d.bodies.smpl/1", "joint_names": json.dumps(list(model.joint_names)),
                "description": model.description}
        if model.extra_regressor is not None:
            meta["extra_joint_names"] = json.dumps(list(model.extra_joint_names))
        tensors = {k: np.ascontiguousarray(v) for k, v in d.items() if v.dtype.kind in "fiu"}
        save_file(tensors, str(tmp), metadata=meta)
    else:
        raise ValueError(f"unknown body model format {suffix!r} for {path}; expected .pkl, .npz or .safetensors")
    tmp.replace(path)
    return path
