"""Fuzzing: seeded mutations of PLY (ascii, binary LE/BE) and OBJ(+MTL) files.

Each mutated file must load or raise ``FormatError`` -- never another exception -- in under a second; and
files that declare huge counts must not allocate memory by those counts.
"""

from __future__ import annotations

import io
import random
import re
import time
import tracemalloc
import warnings

import numpy as np
import pytest

from lib3d.io import FormatError, load_obj, load_ply_data
from tests.io.plywriter import write_ply

N_PER_SEED_FILE = 500  # x 8 seed files = 4,000 mutated files (>= 2,000 asked)
TIME_LIMIT_S = 1.0
XYZ = [("x", "float", None), ("y", "float", None), ("z", "float", None)]


def _ply_seed(fmt: str, mixed: bool = False) -> bytes:
    pts = [(float(i % 3), float(i // 3), float(i) * 0.5) for i in range(9)]
    vprops = XYZ + [
        ("nx", "float", None),
        ("ny", "float", None),
        ("nz", "float", None),
        ("red", "uchar", None),
        ("green", "uchar", None),
        ("blue", "uchar", None),
    ]
    vrows = [p + (0.0, 0.0, 1.0, 10 * i, 20, 255) for i, p in enumerate(pts)]
    polys = [[0, 1, 4], [1, 2, 5, 4], [3, 4, 7, 6, 3]] if mixed else [[0, 1, 4], [1, 5, 4], [3, 4, 7]]
    return write_ply(
        fmt,
        [
            ("vertex", vprops, vrows),
            ("face", [("vertex_indices", "int", "uchar")], [(q,) for q in polys]),
            ("meta", [("tags", "short", "uchar"), ("w", "double", None)], [([1, 2], 0.5), ([3], 1.5)]),
        ],
    )


_OBJ_SEED = """# seed
mtllib m.mtl
o thing
v 0 0 0
v 1 0 0
v 1 1 0
v 0 1 0
v 0 0 1
vt 0 0
vt 1 0
vt 1 1
vt 0 1
vn 0 0 1
vn 0 1 0
g a
usemtl red
s 1
f 1/1/1 2/2/1 3/3/1 4/4/1
f -1/-1/-1 -2/-2/-2 -3/-3/-2
usemtl blue
f 1//2 3//2 5//1
f 2 3 4
f 1/2 3/4 5/1
"""
_MTL = "newmtl red\nKa 0.1 0.1 0.1\nKd 1 0 0\nKs 0 0 0\nNs 10\nd 1\nillum 2\nnewmtl blue\nKd 0 0 1\n"

SEEDS = [
    ("ply", _ply_seed("ascii")),
    ("ply", _ply_seed("ascii", mixed=True)),
    ("ply", _ply_seed("binary_little_endian")),
    ("ply", _ply_seed("binary_big_endian")),
    ("ply", _ply_seed("binary_little_endian", mixed=True)),
    ("ply", _ply_seed("binary_big_endian", mixed=True)),
    ("obj", _OBJ_SEED.encode()),
    ("obj", _OBJ_SEED.replace("\n", "\r\n").encode()),
]

_NUM = re.compile(rb"-?\d+")


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One or two random mutations: byte flips, truncation, garbage, huge counts, bad indices, line edits."""
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 2))):
        kind = rng.randrange(8)
        if kind == 0 and b:  # flip bytes
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif kind == 1 and b:  # truncate
            b = b[: rng.randrange(len(b))]
        elif kind == 2:  # insert garbage
            pos = rng.randrange(len(b) + 1)
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        elif kind in (3, 4):  # replace a number by a huge / negative / zero / off-by-one one
            nums = list(_NUM.finditer(bytes(b)))
            if nums:
                m = rng.choice(nums)
                new = rng.choice(
                    [
                        b"4294967295",
                        b"99999999999999999999999",
                        b"-1",
                        b"0",
                        b"-7",
                        b"1000000",
                        b"2147483648",
                        str(int(m.group()) + 1).encode(),
                    ]
                )
                b[m.start() : m.end()] = new
        elif kind == 5:  # delete or duplicate a line
            lines = bytes(b).split(b"\n")
            i = rng.randrange(len(lines))
            if rng.random() < 0.5:
                del lines[i]
            else:
                lines.insert(i, lines[i])
            b = bytearray(b"\n".join(lines))
        elif kind == 6:  # swap the PLY format / an OBJ keyword
            s = bytes(b)
            swaps = [
                (b"ascii", b"binary_little_endian"),
                (b"binary_little_endian", b"binary_big_endian"),
                (b"binary_big_endian", b"ascii"),
                (b"uchar", b"int"),
                (b"float", b"double"),
                (b"\nf ", b"\nv "),
                (b"\nvt ", b"\nvn "),
                (b"/", b"//"),
            ]
            a, c = rng.choice(swaps)
            b = bytearray(s.replace(a, c, 1))
        elif kind == 7 and b:  # write a large value in binary at a random place
            pos = rng.randrange(len(b))
            b[pos : pos + 4] = rng.choice([b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\xff\xff\xff\xff"])
    return bytes(b)


def _run_one(kind: str, path, data: bytes):
    # An in-memory file named like a real one beside m.mtl (so mtllib is resolved there): creating thousands
    # of files costs more than parsing them on some file systems.
    f = io.BytesIO(data)
    f.name = str(path)
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "ply":
                load_ply_data(f)
            else:
                load_obj(f)
        outcome = "ok"
    except FormatError as e:
        # A FormatError chained from another exception comes from the loaders' last-resort safety net: the
        # input reached code that did not check it. Count it as a failure so that the test can catch it.
        outcome = "format_error" if e.__cause__ is None else f"safety_net: {e}"
    return outcome, time.perf_counter() - t0


def test_fuzz_mutated_files_load_or_raise_format_error(tmp_path):
    (tmp_path / "m.mtl").write_text(_MTL)
    rng = random.Random(1234)
    outcomes = {"ok": 0, "format_error": 0}
    slowest = 0.0
    n = 0
    for si, (kind, seed) in enumerate(SEEDS):
        path = tmp_path / f"f{si}.{kind}"
        path.write_bytes(seed)
        # the unmutated seed loads (the OBJ with its materials: mtllib is resolved beside it)
        assert _run_one(kind, path, seed)[0] == "ok"
        if kind == "obj":
            f = io.BytesIO(seed)
            f.name = str(path)
            assert set(load_obj(f)[2].material_colors) == {"red", "blue"}
        for k in range(N_PER_SEED_FILE):
            data = mutate(seed, rng)
            try:
                outcome, dt = _run_one(kind, path, data)
            except Exception as e:
                raise AssertionError(
                    f"seed file {si} mutation {k}: {type(e).__name__}: {e}\n{data[:400]!r}"
                ) from e
            assert dt < TIME_LIMIT_S, f"seed file {si} mutation {k} took {dt:.2f}s"
            assert not outcome.startswith("safety_net"), (
                f"seed file {si} mutation {k}: {outcome}\n{data[:400]!r}"
            )
            slowest = max(slowest, dt)
            outcomes[outcome] += 1
            n += 1
    assert n >= 2000, n
    # the mutations must exercise both outcomes substantially
    assert outcomes["ok"] > 100 and outcomes["format_error"] > 500, outcomes


@pytest.mark.parametrize(
    "text",
    [
        (
            "ply\nformat binary_little_endian 1.0\nelement vertex 4000000000\nproperty float x\nproperty float y\n"
            "property float z\nend_header\n"
        ),
        (
            "ply\nformat binary_big_endian 1.0\nelement vertex 0\nproperty float x\nproperty float y\nproperty float z\n"
            "element face 4000000000\nproperty list uchar int vertex_indices\nend_header\n"
        ),
        (
            "ply\nformat ascii 1.0\nelement vertex 4000000000\nproperty float x\nproperty float y\nproperty float z\n"
            "end_header\n0 0 0\n"
        ),
        (
            "ply\nformat binary_little_endian 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
            "property float z\nelement face 1\nproperty list uint int vertex_indices\nend_header\n\xff\xff\xff\x7f"
        ),
    ],
)
def test_huge_counts_do_not_allocate(tmp_path, text):
    p = tmp_path / "huge.ply"
    p.write_bytes(text.encode("latin-1") + b"\x00" * 64)
    tracemalloc.start()
    try:
        with pytest.raises(FormatError) as info:
            load_ply_data(p)
        _, peak = tracemalloc.get_traced_memory()
        assert info.value.__cause__ is None, info.value  # a specific check, not the safety net
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, f"peak {peak} bytes"


def test_huge_token_does_not_allocate(tmp_path):
    p = tmp_path / "tok.ply"
    head = (
        b"ply\nformat ascii 1.0\nelement vertex 2000\nproperty float x\nproperty float y\nproperty float z\n"
    )
    body = b"0 0 0\n" * 1999 + b"1" * 1_000_000 + b" 0 0\n"
    p.write_bytes(head + b"end_header\n" + body)
    tracemalloc.start()
    try:
        load_ply_data(p)  # a valid (if silly) number
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40_000_000, f"peak {peak} bytes"
    o = tmp_path / "tok.obj"
    o.write_bytes(b"v 0 0 0\n" * 2000 + b"v " + b"2" * 1_000_000 + b" 0 0\n")
    tracemalloc.start()
    try:
        load_obj(o)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40_000_000, f"peak {peak} bytes"


def test_fuzz_mtl(tmp_path):
    from lib3d.io import load_mtl

    rng = random.Random(99)
    seed = (_MTL + "map_Kd missing.png\n").encode()
    for k in range(300):
        data = mutate(seed, rng)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                load_mtl(io.BytesIO(data), ["red", "blue"])
        except FormatError as e:
            assert e.__cause__ is None, e


def _timed(fn, *args):
    t0 = time.perf_counter()
    try:
        fn(*args)
        out = "ok"
    except FormatError as e:
        assert e.__cause__ is None, e
        out = str(e)
    return out, time.perf_counter() - t0


def test_pathological_but_valid_files_stay_linear(tmp_path):
    """Structures that are cheap to write but were quadratic or per-item Python in naive readers."""

    # 50k distinct materials (a list lookup per usemtl would be quadratic)
    obj_text = b"v 0 0 0\n" * 3 + b"".join(b"usemtl m%d\nf 1 2 3\n" % i for i in range(50_000))
    out, dt = _timed(load_obj, io.BytesIO(obj_text))
    assert out == "ok" and dt < 5.0, dt
    # one polygon with 300k corners, ascii and binary PLY
    head = (
        "ply\nformat {}\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
        "element face 1\nproperty list uint int vertex_indices\nend_header\n"
    )
    n = 300_000
    ascii_body = b"0 0 0\n" * 3 + str(n).encode() + b" 0 1 2" * (n // 3) + b"\n"
    corner3 = np.array([0, 1, 2], "<i4").tobytes()
    binary_body = b"\x00" * 36 + n.to_bytes(4, "little") + corner3 * (n // 3)
    for fmt, body in [("ascii 1.0", ascii_body), ("binary_little_endian 1.0", binary_body)]:
        out, dt = _timed(load_ply_data, io.BytesIO(head.format(fmt).encode() + body))
        assert out == "ok" and dt < 5.0, (fmt, out, dt)


def test_header_limits():

    head = (
        b"ply\nformat ascii 1.0\n" + b"".join(b"element e%d 0\n" % i for i in range(1001)) + b"end_header\n"
    )
    with pytest.raises(FormatError, match="more than 1000 elements"):
        load_ply_data(io.BytesIO(head))
    head = b"ply\nformat ascii 1.0\nelement e 0\n" + b"".join(
        b"property float p%d\n" % i for i in range(1001)
    )
    with pytest.raises(FormatError, match="more than 1000 properties"):
        load_ply_data(io.BytesIO(head + b"end_header\n"))
