"""``FormatError`` and the small file helpers shared by the PLY and OBJ readers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

PathOrFile = str | os.PathLike | IO[bytes]


class FormatError(ValueError):
    """A malformed, truncated or hostile mesh file.

    The message names the file and where the problem is: the line (OBJ, MTL, PLY header, ascii PLY
    body) or the element (binary PLY body).

    Attributes:
        path: the file name (or ``"<stream>"`` for a file object without a name).
        where: ``"line 12"``, ``"element 'face'"``, ... or ``None``.
        reason: the bare reason, without the location.
    """

    def __init__(self, path: str, where: str | None, reason: str):
        self.path = str(path)
        self.where = where
        self.reason = reason
        loc = f"{self.path}, {where}" if where else self.path
        super().__init__(f"{loc}: {reason}")


def file_name(f: PathOrFile) -> str:
    """A printable name of a path or file object (used in error messages)."""
    if isinstance(f, (str, os.PathLike)):
        return os.fspath(f)
    return str(getattr(f, "name", "<stream>"))


def read_bytes(f: PathOrFile) -> bytes:
    """The whole content of a path or a (binary or text) file object, as bytes."""
    if isinstance(f, (str, os.PathLike)):
        return Path(f).read_bytes()
    data = f.read()
    if isinstance(data, str):
        data = data.encode("utf-8")
    return bytes(data)


def data_dir_of(f: PathOrFile) -> Path:
    """Directory that relative paths inside the file (``mtllib``, ``map_Kd``) are resolved against."""
    if isinstance(f, (str, os.PathLike)):
        return Path(f).resolve().parent
    name = getattr(f, "name", None)
    if isinstance(name, str) and os.path.exists(name):
        return Path(name).resolve().parent
    return Path.cwd()
