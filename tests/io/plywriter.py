"""A tiny, independent, row-by-row PLY writer used as the reference in the io tests (slow on purpose)."""

from __future__ import annotations

import struct

STRUCT = {
    "char": "b",
    "int8": "b",
    "uchar": "B",
    "uint8": "B",
    "short": "h",
    "int16": "h",
    "ushort": "H",
    "uint16": "H",
    "int": "i",
    "int32": "i",
    "uint": "I",
    "uint32": "I",
    "float": "f",
    "float32": "f",
    "double": "d",
    "float64": "d",
}


def write_ply(fmt: str, elements: list, comments=("test",)) -> bytes:
    """elements: [(name, [(prop, type, count_type_or_None), ...], rows)], a row a tuple (lists as lists)."""
    head = ["ply", f"format {fmt} 1.0"] + [f"comment {c}" for c in comments]
    for name, props, rows in elements:
        head.append(f"element {name} {len(rows)}")
        for pname, t, ct in props:
            head.append(f"property list {ct} {t} {pname}" if ct else f"property {t} {pname}")
    head.append("end_header")
    out = ("\n".join(head) + "\n").encode()
    if fmt == "ascii":
        lines = []
        for _, props, rows in elements:
            for row in rows:
                toks = []
                for (pname, t, ct), v in zip(props, row):
                    if ct:
                        toks.append(str(len(v)))
                        toks += [
                            repr(float(x)) if t in ("float", "float32", "double", "float64") else str(int(x))
                            for x in v
                        ]
                    else:
                        toks.append(
                            repr(float(v)) if t in ("float", "float32", "double", "float64") else str(int(v))
                        )
                lines.append(" ".join(toks))
        return out + ("\n".join(lines) + "\n").encode()
    e = "<" if fmt == "binary_little_endian" else ">"
    body = bytearray()
    for _, props, rows in elements:
        for row in rows:
            for (pname, t, ct), v in zip(props, row):
                if ct:
                    body += struct.pack(e + STRUCT[ct], len(v))
                    for x in v:
                        body += struct.pack(e + STRUCT[t], x)
                else:
                    body += struct.pack(e + STRUCT[t], v)
    return out + bytes(body)
