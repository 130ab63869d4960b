"""Benchmark of lib3d.io (issue 2's bar: binary PLY loads at >= 50 MB/s on a 2-core machine).

    python -m jobs.bench.io [--repeats 5] [--out results/benchmarks/io.json]

Workloads (median of ``repeats`` timed runs after one warm-up; throughput = file bytes / median seconds):

- ``cow_obj``: the book's textured cow (cow_mesh/cow.obj, 5,856 faces, 1024x1024 PNG texture), load_obj with
  textures (skipped when ../shared is absent); ``cow_obj_no_textures`` without them;
- ``ply_binary_1M``: a 1,000 x 1,000 grid mesh (1M vertices, 1,996,002 triangles) written as
  binary_little_endian by save_ply into a temp dir, read by load_ply (the bar);
- ``ply_binary_1M_normals_colors``: the same with float normals and colours, read by load_ply_data;
- ``ply_binary_mixed_500k``: 250k triangles + 250k quads, interleaved (the variable-length fallback);
- ``ply_ascii_100k``: a 100k-vertex ascii PLY;
- ``save_ply_binary_1M``: writing the 1M grid.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

BAR_MB_S = 50.0
ROOT = Path(__file__).resolve().parents[2]
COW = ROOT.parent / "shared" / "data" / "book" / "cow_mesh" / "cow.obj"


def _time(fn, repeats: int) -> list[float]:
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def grid_mesh(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An n x n vertex grid with 2 (n-1)^2 triangles."""
    ys, xs = torch.meshgrid(
        torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32), indexing="ij"
    )
    verts = torch.stack([xs, ys, torch.sin(xs * 0.1) * torch.cos(ys * 0.1)], -1).reshape(-1, 3) / n
    i = torch.arange(n - 1)
    a = (i[:, None] * n + i[None, :]).reshape(-1)
    b, c, d = a + 1, a + n, a + n + 1
    faces = torch.cat([torch.stack([a, b, d], 1), torch.stack([a, d, c], 1)], 0)
    return verts, faces


def _write_mixed(path: Path, n_tri: int, n_quad: int, V: int) -> None:
    rng = np.random.default_rng(0)
    head = (
        f"ply\nformat binary_little_endian 1.0\nelement vertex {V}\nproperty float x\nproperty float y\n"
        f"property float z\nelement face {n_tri + n_quad}\nproperty list uchar int vertex_indices\n"
        "end_header\n"
    ).encode()
    verts = rng.random((V, 3), dtype=np.float32).tobytes()
    tri = np.empty(n_tri, np.dtype([("n", "u1"), ("v", "<i4", (3,))]))
    tri["n"], tri["v"] = 3, rng.integers(0, V, (n_tri, 3))
    quad = np.empty(n_quad, np.dtype([("n", "u1"), ("v", "<i4", (4,))]))
    quad["n"], quad["v"] = 4, rng.integers(0, V, (n_quad, 4))
    tb, qb = tri.tobytes(), quad.tobytes()
    parts = []
    for k in range(min(n_tri, n_quad)):  # interleave rows: tri, quad, tri, quad, ...
        parts.append(tb[13 * k : 13 * (k + 1)])
        parts.append(qb[17 * k : 17 * (k + 1)])
    path.write_bytes(head + verts + b"".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "io.json"))
    args = parser.parse_args()

    from lib3d.io import load_obj, load_ply, load_ply_data, save_ply

    results: dict = {}

    def record(name: str, fn, nbytes: int, note: str = "") -> None:
        ts = _time(fn, args.repeats)
        med = statistics.median(ts)
        results[name] = {
            "median_s": med,
            "times_s": ts,
            "bytes": nbytes,
            "mb_per_s": nbytes / 1e6 / med,
            "note": note,
        }
        print(
            f"{name:34s} {med * 1e3:9.1f} ms  {nbytes / 1e6:8.2f} MB  {nbytes / 1e6 / med:8.1f} MB/s  {note}"
        )

    if COW.exists():
        cow_bytes = COW.stat().st_size + (COW.parent / "cow_texture.png").stat().st_size
        record("cow_obj", lambda: load_obj(COW), cow_bytes, "obj + png bytes; 5,856 faces, 1024x1024 texture")
        record("cow_obj_no_textures", lambda: load_obj(COW, load_textures=False), COW.stat().st_size)
    else:
        print(f"skipping cow_obj: {COW} is absent")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        verts, faces = grid_mesh(1000)
        p = tmp / "grid.ply"
        save_ply(p, verts, faces)
        size = p.stat().st_size
        record("save_ply_binary_1M", lambda: save_ply(p, verts, faces), size)
        record(
            "ply_binary_1M",
            lambda: load_ply(p),
            size,
            f"{verts.shape[0]} verts, {faces.shape[0]} faces (the bar: >= {BAR_MB_S} MB/s)",
        )
        v2, f2 = load_ply(p)
        assert torch.equal(v2, verts) and torch.equal(f2, faces)

        pn = tmp / "grid_nc.ply"
        save_ply(
            pn,
            verts,
            faces,
            verts_normals=torch.nn.functional.normalize(verts, dim=1),
            verts_colors=verts.clamp(0, 1),
        )
        record("ply_binary_1M_normals_colors", lambda: load_ply_data(pn), pn.stat().st_size)

        pm = tmp / "mixed.ply"
        _write_mixed(pm, 250_000, 250_000, 300_000)
        record(
            "ply_binary_mixed_500k",
            lambda: load_ply(pm),
            pm.stat().st_size,
            "interleaved triangles and quads: variable-length fallback",
        )

        va, fa = grid_mesh(317)
        pa = tmp / "grid_ascii.ply"
        save_ply(pa, va, fa, ascii=True)
        record(
            "ply_ascii_100k",
            lambda: load_ply(pa),
            pa.stat().st_size,
            f"{va.shape[0]} verts, {fa.shape[0]} faces",
        )

    report = {
        "benchmark": "lib3d.io",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "torch": torch.__version__,
        "numpy": np.__version__,
        "repeats": args.repeats,
        "bar": {"ply_binary_1M_mb_per_s": BAR_MB_S, "met": results["ply_binary_1M"]["mb_per_s"] >= BAR_MB_S},
        "note": "timings taken while other jobs shared the CPU are noisy; rerun on a quiet machine",
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
