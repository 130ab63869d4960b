"""The embedded default body: a procedurally generated, clearly SYNTHETIC model in the SMPL layout.

The real SMPL files are licensed and cannot ship with lib3d, so lib3d carries a stand-in built from
nothing but code, deterministic (no randomness), with SMPL's layout and sizes:

- 6,890 vertices and 24 joints with SMPL's kinematic tree and joint names, T-pose rest, +Y up, facing +Z;
- a closed template mesh: eight closed tubes (torso, head, two arms with hands, two legs, two feet) swept
  along the skeleton with elliptical cross-sections and rounded caps (each tube is a closed genus-0
  surface; together 13,748 faces);
- smooth skinning weights (C1 smoothstep blends between neighbouring bones around every joint);
- 10 shape directions in units of one standard deviation: 0 stature, 1 girth, 2 leg length, 3 arm length,
  4 shoulder width, 5 hip width, 6 torso length, 7 belly, 8 limb girth, 9 head size;
- pose blend shapes (207 columns): a bulge around each bending joint proportional to ``3 - trace(R)``;
- a joint regressor that averages the cross-section rings centred on each joint (exact on every shape);
- extra joints as vertices: head top, nose, eyes, ears, big/small toes and heels (for LSP, COCO, BODY_25).

It is not a statistical model of people: use it for tests, benchmarks and demos, and load the real SMPL
files (:func:`lib3d.bodies.load_smpl_model`) for science.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from lib3d.bodies.smpl import SMPL_JOINT_NAMES, SMPL_PARENTS, SMPLModel

__all__ = ["SYNTHETIC_DESCRIPTION", "SYNTHETIC_SHAPE_NAMES", "synthetic_smpl_model"]

SYNTHETIC_DESCRIPTION = ("SYNTHETIC procedural body in the SMPL layout (lib3d.bodies.synthetic); not the SMPL "
                         "model and not a statistical model of human shape")
SYNTHETIC_SHAPE_NAMES = ("stature", "girth", "leg_length", "arm_length", "shoulder_width", "hip_width",
                         "torso_length", "belly", "limb_girth", "head_size")
_NUM_VERTS = 6890
_GROUND = -1.15  # y of the soles: puts the pelvis near y = -0.2 as in SMPL's template
_J = {n: i for i, n in enumerate(SMPL_JOINT_NAMES)}

# Rest skeleton (metres, standing height ~1.73 with the soles at y = 0, before the shift by _GROUND).
_BASE_POINTS = {
    "pelvis": (0, 0.95, 0), "left_hip": (0.085, 0.88, 0), "spine1": (0, 1.06, -0.01),
    "left_knee": (0.10, 0.50, 0.01), "spine2": (0, 1.19, 0), "left_ankle": (0.11, 0.085, -0.03),
    "spine3": (0, 1.29, 0), "left_foot": (0.12, 0.025, 0.10), "neck": (0, 1.50, -0.01),
    "left_collar": (0.075, 1.42, 0), "head": (0, 1.58, 0.03), "left_shoulder": (0.18, 1.44, -0.01),
    "left_elbow": (0.44, 1.44, -0.02), "left_wrist": (0.69, 1.44, -0.01), "left_hand": (0.77, 1.44, -0.01),
    # virtual points (not joints)
    "crown": (0, 1.665, 0.02), "left_fingertip": (0.87, 1.44, 0.0), "left_toe": (0.125, 0.03, 0.17),
    "left_heel": (0.11, 0.035, -0.07),
}

# Tubes: (path of points, segment owners (joint skinning each segment), start owner, radii (r_u, r_w)
# per point, sides, cap rings, reference vector for the cross-section frame).
_TUBES = [
    ("torso", ["pelvis", "spine1", "spine2", "spine3", "neck"], ["pelvis", "spine1", "spine2", "spine3"],
     "pelvis", [(0.165, 0.11), (0.15, 0.10), (0.155, 0.105), (0.175, 0.10), (0.07, 0.065)], 32, 5, (1, 0, 0)),
    ("head", ["neck", "head", "crown"], ["neck", "head"], "spine3",
     [(0.055, 0.055), (0.085, 0.095), (0.075, 0.085)], 24, 5, (1, 0, 0)),
    ("left_arm", ["left_collar", "left_shoulder", "left_elbow", "left_wrist", "left_hand", "left_fingertip"],
     ["left_collar", "left_shoulder", "left_elbow", "left_wrist", "left_hand"], "spine3",
     [(0.05, 0.05), (0.055, 0.055), (0.04, 0.042), (0.028, 0.035), (0.016, 0.045), (0.01, 0.03)], 16, 3,
     (0, 1, 0)),
    ("left_leg", ["left_hip", "left_knee", "left_ankle"], ["left_hip", "left_knee"], "pelvis",
     [(0.08, 0.08), (0.052, 0.055), (0.038, 0.04)], 20, 4, (0, 0, 1)),
    ("left_sole", ["left_heel", "left_foot", "left_toe"], ["left_ankle", "left_foot"], "left_ankle",
     [(0.03, 0.04), (0.025, 0.045), (0.012, 0.03)], 13, 3, (0, 1, 0)),
]


def _mirror(name: str) -> str:
    return name.replace("left_", "right_") if name.startswith("left_") else name


def _all_tubes():
    out = []
    for t in _TUBES:
        out.append(t)
        if t[0].startswith("left_"):
            name, path, owners, start, radii, sides, caps, ref = t
            out.append((_mirror(name), [_mirror(p) for p in path], [_mirror(o) for o in owners], _mirror(start),
                        radii, sides, caps, ref))
    # order: torso, head, left arm, right arm, left leg, right leg, left sole, right sole
    return out


def _base_points() -> dict[str, np.ndarray]:
    pts = {}
    for n, p in _BASE_POINTS.items():
        pts[n] = np.array(p, dtype=np.float64)
        if n.startswith("left_"):
            q = np.array(p, dtype=np.float64)
            q[0] = -q[0]
            pts[_mirror(n)] = q
    return pts


def _shaped_params(beta: np.ndarray):
    """Points and per-tube radius scales for shape coefficients ``beta`` (10,)."""
    b = np.zeros(10)
    b[: len(beta)] = beta
    pts = _base_points()
    scale = {t[0]: np.ones(2) for t in _all_tubes()}
    arm = ["collar", "shoulder", "elbow", "wrist", "hand", "fingertip"]
    leg = ["knee", "ankle", "foot", "toe", "heel"]
    y_hip = pts["left_hip"][1]
    y_pel = pts["pelvis"][1]
    for side, sx in (("left_", 1.0), ("right_", -1.0)):
        # 2 leg length: everything below the hips stretches down
        for n in leg:
            pts[side + n] = pts[side + n] + np.array([0, (pts[side + n][1] - y_hip) * 0.07 * b[2], 0])
        # 3 arm length: out from the shoulder
        sh = pts[side + "shoulder"].copy()
        for n in arm[2:]:
            pts[side + n] = pts[side + n] + np.array([(pts[side + n][0] - sh[0]) * 0.08 * b[3], 0, 0])
        # 4 shoulder width, 5 hip width
        for n in arm:
            pts[side + n] = pts[side + n] + np.array([sx * (0.02 if n != "collar" else 0.01) * b[4], 0, 0])
        for n in ["hip"] + leg:
            pts[side + n] = pts[side + n] + np.array([sx * 0.015 * b[5], 0, 0])
    # 6 torso length: everything above the pelvis moves up in proportion to its height above it
    for n in list(pts):
        if pts[n][1] > y_pel + 0.05 and not any(n.endswith(k) for k in leg + ["hip"]):
            pts[n] = pts[n] + np.array([0, (min(pts[n][1], 1.50) - y_pel) * 0.08 * b[6], 0])
    # 9 head size: the head grows about the neck
    for n in ("head", "crown"):
        pts[n] = pts["neck"] + (pts[n] - pts["neck"]) * (1 + 0.08 * b[9])
    # 0 stature: uniform scale about the ground point
    for n in pts:
        pts[n] = pts[n] * (1 + 0.06 * b[0])
    radius = {}
    for name, path, owners, start, radii, sides, caps, ref in _all_tubes():
        r = np.array(radii, dtype=np.float64) * (1 + 0.06 * b[0])
        limb = "arm" in name or "leg" in name
        r = r * (1 + 0.12 * b[1])  # 1 girth
        if limb:
            r = r * (1 + 0.12 * b[8])  # 8 limb girth
        if name == "torso":
            r[0, 0] += 0.02 * b[5]  # hip width
            r[3, 0] += 0.015 * b[4]  # shoulder width
            r[:3, 1] += np.array([0.02, 0.03, 0.025]) * b[7]  # 7 belly
        if name == "head":
            r = r * (1 + 0.08 * b[9])
        radius[name] = r
    for n in pts:
        pts[n] = pts[n] + np.array([0, _GROUND, 0])
    return pts, radius


@functools.lru_cache(maxsize=1)
def _ring_plan():
    """Rings per segment of each tube, solved so that the mesh has exactly 6,890 vertices."""
    pts, _ = _shaped_params(np.zeros(10))
    tubes = _all_tubes()
    seg_len = [[float(np.linalg.norm(pts[p[i + 1]] - pts[p[i]])) for i in range(len(p) - 1)] for _, p, *_ in tubes]
    density = 62.0  # rings per metre before the exact solve
    body = [max(len(L) + 1, int(round(sum(L) * density)) + 1) for L in seg_len]
    sides = [t[5] for t in tubes]
    caps = [t[6] for t in tubes]
    poles = 2 * len(tubes)
    # tubes by kind: 0 torso, 1 head, 2/3 arms, 4/5 legs, 6/7 soles
    rings = [b + 2 * c for b, c in zip(body, caps)]
    best = None
    for d_f in range(-6, 7):
        for d_h in range(-8, 9):
            r = list(rings)
            r[6] += d_f
            r[7] += d_f
            r[1] += d_h
            rest = _NUM_VERTS - poles - sum(ri * si for i, (ri, si) in enumerate(zip(r, sides)) if i != 0)
            if rest % sides[0] == 0:
                r[0] = rest // sides[0]
                cost = abs(r[0] - rings[0]) + abs(d_h) + 2 * abs(d_f)
                if best is None or cost < best[0]:
                    best = (cost, r)
    r = best[1]
    plan = []
    for i, (L, c) in enumerate(zip(seg_len, caps)):
        nb = r[i] - 2 * c - 1  # body rings excluding the final one
        w = np.array(L) / sum(L) * nb
        n = np.maximum(1, np.floor(w).astype(int))
        while n.sum() < nb:
            n[np.argmax(w - n)] += 1
        while n.sum() > nb:
            n[np.argmax(n - w)] -= 1
        plan.append(tuple(int(x) for x in n))
    return tuple(plan)


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _build(beta: np.ndarray):
    """Vertices (V, 3) plus (on the template) faces, weights, ring ids, bulge fields and extra points."""
    pts, radius = _shaped_params(beta)
    plan = _ring_plan()
    verts, faces, weights, bulge, normals = [], [], [], [], []
    rings_at_joint: dict[int, list[np.ndarray]] = {}
    offset = 0
    J = len(SMPL_JOINT_NAMES)
    for (name, path, owners, start, radii, sides, ncap, ref), nseg in zip(_all_tubes(), plan):
        P = np.stack([pts[p] for p in path])
        R = radius[name]
        seglen = np.linalg.norm(np.diff(P, axis=0), axis=1)
        s_ctrl = np.concatenate([[0.0], np.cumsum(seglen)])
        dirs = np.diff(P, axis=0) / seglen[:, None]
        ctrl_tan = np.concatenate([dirs[:1], dirs[:-1] + dirs[1:], dirs[-1:]], 0)
        ctrl_tan /= np.linalg.norm(ctrl_tan, axis=1, keepdims=True)
        # ring list: (centre, tangent, r_u, r_w, arc s, control index or -1)
        ring_c, ring_t, ring_r, ring_s, ring_ctrl = [], [], [], [], []
        for i, n in enumerate(nseg):
            for k in range(n):
                a = k / n
                ring_c.append(P[i] * (1 - a) + P[i + 1] * a)
                t = ctrl_tan[i] if k == 0 else dirs[i]
                ring_t.append(t)
                ring_r.append(R[i] * (1 - a) + R[i + 1] * a)
                ring_s.append(s_ctrl[i] + a * seglen[i])
                ring_ctrl.append(i if k == 0 else -1)
        ring_c.append(P[-1])
        ring_t.append(ctrl_tan[-1])
        ring_r.append(R[-1])
        ring_s.append(s_ctrl[-1])
        ring_ctrl.append(len(P) - 1)
        # caps: rings on a quarter ellipse beyond each end
        depth0, depth1 = R[0].mean(), R[-1].mean()
        cap0, cap1 = [], []
        for k in range(1, ncap + 1):
            al = k * (np.pi / 2) / (ncap + 1)
            cap0.append((P[0] - depth0 * np.sin(al) * ctrl_tan[0], ctrl_tan[0], R[0] * np.cos(al),
                         -depth0 * np.sin(al)))
            cap1.append((P[-1] + depth1 * np.sin(al) * ctrl_tan[-1], ctrl_tan[-1], R[-1] * np.cos(al),
                         s_ctrl[-1] + depth1 * np.sin(al)))
        all_rings = ([(c, t, r, s, -1) for c, t, r, s in reversed(cap0)]
                     + list(zip(ring_c, ring_t, ring_r, ring_s, ring_ctrl))
                     + [(c, t, r, s, -1) for c, t, r, s in cap1])
        nr = len(all_rings)
        phi = 2 * np.pi * np.arange(sides) / sides
        refv = np.array(ref, dtype=np.float64)
        tube_v, tube_s, tube_n = [], [], []
        for ri, (c, t, r, s, ci) in enumerate(all_rings):
            u = refv - (refv @ t) * t
            u /= np.linalg.norm(u)
            w = np.cross(t, u)
            radial = np.cos(phi)[:, None] * u + np.sin(phi)[:, None] * w
            tube_v.append(c + (r[0] * np.cos(phi))[:, None] * u + (r[1] * np.sin(phi))[:, None] * w)
            tube_s.append(np.full(sides, s))
            tube_n.append(radial)
            if ci >= 0 and path[ci] in _J:
                rings_at_joint.setdefault(_J[path[ci]], []).append(offset + ri * sides + np.arange(sides))
        pole0 = P[0] - depth0 * ctrl_tan[0]
        pole1 = P[-1] + depth1 * ctrl_tan[-1]
        V_t = np.concatenate([np.concatenate(tube_v), pole0[None], pole1[None]])
        s_t = np.concatenate([np.concatenate(tube_s), [-depth0, s_ctrl[-1] + depth1]])
        n_t = np.concatenate([np.concatenate(tube_n), -ctrl_tan[:1], ctrl_tan[-1:]])
        # faces
        idx = np.arange(nr * sides).reshape(nr, sides)
        a = idx[:-1]
        b = np.roll(idx[:-1], -1, axis=1)
        c = idx[1:]
        d = np.roll(idx[1:], -1, axis=1)
        quads = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([b, d, c], -1).reshape(-1, 3)])
        p0, p1 = nr * sides, nr * sides + 1
        first, last = idx[0], idx[-1]
        fan0 = np.stack([np.full(sides, p0), np.roll(first, -1), first], -1)
        fan1 = np.stack([last, np.roll(last, -1), np.full(sides, p1)], -1)
        faces.append(np.concatenate([quads, fan0, fan1]) + offset)
        # skinning: smoothstep blends between the owners on both sides of every control point
        left = [start] + owners
        right = owners + [owners[-1]]
        Wt = np.zeros((len(V_t), J))
        Bt = np.zeros((len(V_t), J))
        seg_of = np.clip(np.searchsorted(s_ctrl, s_t, side="right") - 1, 0, len(owners) - 1)
        for vi_owner in range(len(owners)):
            Wt[seg_of == vi_owner, _J[owners[vi_owner]]] = 1.0
        Wt[s_t < 0] = 0
        Wt[s_t < 0, _J[owners[0]]] = 1.0
        for k in range(len(P)):
            lo, hi = _J[left[k]], _J[right[k]]
            if lo == hi:
                continue
            r_k = R[k].mean()
            nb = [seglen[k - 1] if k > 0 else np.inf, seglen[k] if k < len(seglen) else np.inf]
            delta = min(0.8 * r_k, 0.45 * min(nb))
            x = (s_t - s_ctrl[k] + delta) / (2 * delta)
            near = (x > 0) & (x < 1)
            h = _smoothstep(x[near])
            Wt[near] = 0
            Wt[near, lo] = 1 - h
            Wt[near, hi] = h
            Bt[near, hi] = 4 * h * (1 - h)
        verts.append(V_t)
        weights.append(Wt)
        bulge.append(Bt)
        normals.append(n_t)
        offset += len(V_t)
    V = np.concatenate(verts)
    return (V, np.concatenate(faces), np.concatenate(weights), np.concatenate(bulge), np.concatenate(normals),
            rings_at_joint, pts)


def _extra_points(pts):
    h, n = pts["head"], pts["neck"]
    out = {"head_top": pts["crown"] + np.array([0, 0.09, 0]), "nose": h + np.array([0, 0.02, 0.11])}
    for side, sx in (("left_", 1.0), ("right_", -1.0)):
        out[side + "eye"] = h + np.array([sx * 0.035, 0.05, 0.09])
        out[side + "ear"] = h + np.array([sx * 0.09, 0.03, 0.0])
    for side, sx in (("left_", 1.0), ("right_", -1.0)):
        out[side + "big_toe"] = pts[side + "toe"] + np.array([-sx * 0.01, 0, 0.02])
        out[side + "small_toe"] = pts[side + "toe"] + np.array([sx * 0.035, 0, -0.02])
        out[side + "heel"] = pts[side + "heel"] + np.array([0, -0.01, -0.03])
    del n
    return out


@functools.lru_cache(maxsize=2)
def _synthetic_arrays(num_betas: int):
    V0, faces, W, B, normals, rings, pts = _build(np.zeros(10))
    if V0.shape[0] != _NUM_VERTS:  # pragma: no cover - guarded by the ring plan
        raise RuntimeError(f"synthetic body has {V0.shape[0]} vertices, expected {_NUM_VERTS}")
    shapedirs = np.stack([_build(np.eye(10)[k])[0] - V0 for k in range(num_betas)], -1)
    J = len(SMPL_JOINT_NAMES)
    Jreg = np.zeros((J, V0.shape[0]))
    for j in range(J):
        ids = np.concatenate(rings[j])
        Jreg[j, ids] = 1.0 / len(ids)
    # pose blend shapes: bulge along the radial direction by c * (3 - trace R_j) around joint j
    posedirs = np.zeros((V0.shape[0], 3, 9 * (J - 1)))
    c = 0.006
    for j in range(1, J):
        disp = -c * B[:, j : j + 1] * normals
        for m in (0, 4, 8):
            posedirs[:, :, 9 * (j - 1) + m] = disp
    extra = _extra_points(pts)
    ereg = np.zeros((len(extra), V0.shape[0]))
    for i, p in enumerate(extra.values()):
        ereg[i, int(np.argmin(((V0 - p) ** 2).sum(1)))] = 1.0
    return V0, shapedirs, posedirs, Jreg, W, faces, ereg, tuple(extra)


def synthetic_smpl_model(num_betas: int = 10, *, dtype: torch.dtype = torch.float32,
                         device: torch.device | str | None = None) -> SMPLModel:
    """The embedded SYNTHETIC body (see the module docstring): 6,890 vertices, 24 SMPL joints.

    Args:
        num_betas: shape directions to keep, 1..10.
        dtype, device: of the tensors.

    Returns:
        an :class:`SMPLModel` whose ``description`` says it is synthetic.
    """
    if not 1 <= num_betas <= 10:
        raise ValueError(f"num_betas must be in [1, 10] for the synthetic body, got {num_betas}")
    V0, shapedirs, posedirs, Jreg, W, faces, ereg, enames = _synthetic_arrays(10)

    def t(a):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)

    return SMPLModel(
        v_template=t(V0), shapedirs=t(shapedirs[..., :num_betas]), posedirs=t(posedirs), J_regressor=t(Jreg),
        parents=torch.as_tensor(SMPL_PARENTS, dtype=torch.long, device=device), lbs_weights=t(W),
        faces=torch.as_tensor(faces, dtype=torch.long, device=device), joint_names=SMPL_JOINT_NAMES,
        extra_regressor=t(ereg), extra_joint_names=enames, description=SYNTHETIC_DESCRIPTION,
    )
