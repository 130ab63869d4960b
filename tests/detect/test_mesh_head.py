"""Mesh R-CNN box coordinates against the official four-point homography, voxel targets against a loop
version of ``verts2voxel``, shape heads and losses."""

import numpy as np
import torch

from lib3d.detect import (
    MeshHead,
    VoxelHead,
    ZHead,
    box_to_camera,
    camera_to_box,
    mesh_losses,
    voxelize_in_boxes,
    z_loss,
    z_ranges_from_dz,
)
from lib3d.ops import cubify, ico_sphere


def _homography(src, dst):
    """4-point DLT (the official ProjectiveTransform.estimate without normalisation), numpy float64."""
    a = []
    for (xs, ys), (xd, yd) in zip(src, dst):
        a.append([xs, ys, 1, 0, 0, 0, -xd * xs, -xd * ys, -xd])
        a.append([0, 0, 0, xs, ys, 1, -yd * xs, -yd * ys, -yd])
    _, _, vt = np.linalg.svd(np.array(a))
    return vt[-1].reshape(3, 3) / vt[-1, -1]


def _official_crop(points, box, zr, K):
    """Mesh R-CNN's batch_crop_meshes_within_box for one box, built as the official code does."""
    f, px, py = K
    w, h = 2 * px, 2 * py
    x1, y1, x2, y2 = [w - 1 - box[0] - px, h - 1 - box[1] - py, w - 1 - box[2] - px, h - 1 - box[3] - py]
    cub = np.zeros((5, 2))
    for i in range(2):
        z = zr[i]
        cub[i * 2] = [x2 * z / f, x1 * z / f]
        cub[i * 2 + 1] = [y2 * z / f, y1 * z / f]
    cub[4] = zr
    dst = [[-1, -1], [1, -1], [-1, 1], [1, 1]]
    sxz = [[cub[0, 0], cub[4, 0]], [cub[0, 1], cub[4, 0]], [cub[2, 0], cub[4, 1]], [cub[2, 1], cub[4, 1]]]
    syz = [[cub[1, 0], cub[4, 0]], [cub[1, 1], cub[4, 0]], [cub[3, 0], cub[4, 1]], [cub[3, 1], cub[4, 1]]]
    hxz, hyz = _homography(sxz, dst), _homography(syz, dst)

    def apply(hm, pts):
        p = np.concatenate([pts, np.ones((len(pts), 1))], 1) @ hm.T
        return p[:, :2] / p[:, 2:]

    pxz = apply(hxz, points[:, [0, 2]])
    pyz = apply(hyz, points[:, [1, 2]])
    return np.stack([-pxz[:, 0], -pyz[:, 0], pxz[:, 1]], 1)


def test_box_coordinates_match_official_homography():
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(1, 50, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 1.0, 2.0]) + torch.tensor(
        [-0.5, -0.3, 3.0])
    box = torch.tensor([[40.0, 30, 90, 100]], dtype=torch.float64)
    zr = torch.tensor([[3.0, 5.0]], dtype=torch.float64)
    K = torch.tensor([[120.0, 64, 48]], dtype=torch.float64)
    ours = camera_to_box(pts, box, zr, K)[0].numpy()
    ref = _official_crop(pts[0].numpy(), box[0].numpy(), zr[0].numpy(), K[0].numpy())
    assert np.allclose(ours, ref, atol=1e-8)
    back = box_to_camera(torch.from_numpy(ours)[None], box, zr, K)
    assert torch.allclose(back, pts, atol=1e-10)


def test_box_coordinates_corners():
    # the frustum corners of the box at z0 and z1 go to the cube corners
    K = torch.tensor([[100.0, 50, 40]], dtype=torch.float64)
    box = torch.tensor([[10.0, 20, 60, 70]], dtype=torch.float64)
    zr = torch.tensor([[2.0, 4.0]], dtype=torch.float64)
    cube = torch.tensor([[-1.0, -1, -1], [1, 1, 1], [1, -1, 1]], dtype=torch.float64)[None]
    cam = box_to_camera(cube, box, zr, K)
    assert torch.allclose(cam[0, :, 2], torch.tensor([2.0, 4.0, 4.0], dtype=torch.float64))
    assert torch.allclose(camera_to_box(cam, box, zr, K), cube)


def _verts2voxel_loop(pb, size):
    """The official verts2voxel on un-negated crop coordinates, as loops."""
    vox = np.zeros((size, size, size))
    for x, y, z in pb:
        u, v = -x, -y
        ix, iy, iz = int((u + 1) * (size - 1) / 2), int((v + 1) * (size - 1) / 2), int((z + 1) * (size - 1) / 2)
        if 0 <= ix < size and 0 <= iy < size and 0 <= iz < size:
            vox[iy, ix, iz] = 1
    vox = vox[::-1, ::-1]
    return np.transpose(vox, (2, 0, 1))


def test_voxelize_matches_official_loop():
    g = torch.Generator().manual_seed(1)
    pts = torch.rand(2, 300, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 1.0, 1.0]) + torch.tensor(
        [-0.5, -0.5, 3.0])
    boxes = torch.tensor([[30.0, 20, 100, 90], [40, 30, 80, 70]], dtype=torch.float64)
    K = torch.tensor([[100.0, 64, 64]], dtype=torch.float64).expand(2, 3)
    lengths = torch.tensor([300, 120])
    vox = voxelize_in_boxes(pts, lengths, boxes, K, 12)
    for r in range(2):
        p = pts[r:r + 1, : lengths[r]]
        zr = torch.stack([p[0, :, 2].min(), p[0, :, 2].max()])[None]
        pb = camera_to_box(p, boxes[r:r + 1], zr, K[r:r + 1])[0].numpy()
        assert np.array_equal(vox[r].numpy(), _verts2voxel_loop(pb, 12))


def test_voxel_head_mesh_head_shapes_and_gradients():
    x = torch.randn(3, 16, 6, 6)
    vh = VoxelHead(16, 12, 8, 2)
    logits = vh(x)
    assert logits.shape == (3, 1, 12, 12, 12)
    meshes = cubify(torch.rand(3, 12, 12, 12), 0.7)
    mh = MeshHead(16, 3, 2, 8)
    feats = torch.randn(3, 16, 14, 14, requires_grad=True)
    out = mh(feats, meshes)
    assert len(out) == 3 and out[-1].verts_packed().shape == meshes.verts_packed().shape
    # the offsets start at zero (verts_offset is zero-initialised)
    assert torch.allclose(out[-1].verts_packed(), meshes.verts_packed())
    keys = set(mh.state_dict())
    assert {"stages.0.bottleneck.weight", "stages.2.verts_offset.bias", "stages.1.gconvs.0.w0.weight",
            "stages.1.gconvs.1.w1.bias"} <= keys
    assert mh.state_dict()["stages.1.gconvs.0.w0.weight"].shape == (8, 8 + 8 + 3)
    gt = ico_sphere(2).extend(3)
    losses = mesh_losses(out, gt, 1.0, 0.1, 1.0, 500, 500, 5.0, torch.Generator().manual_seed(0))
    total = losses.chamfer + losses.normals + losses.edge
    total.backward()
    assert feats.grad is None or torch.isfinite(feats.grad).all()
    assert mh.stages[0].verts_offset.weight.grad is not None


def test_z_head_loss_and_ranges():
    zh = ZHead(4, 7, 3, 16)
    zp = zh(torch.randn(2, 4, 7, 7))
    assert zp.shape == (2, 3)
    boxes = torch.tensor([[0.0, 0, 10, 20], [0, 0, 10, 40]])
    dz = torch.tensor([20.0, 40.0])  # log(dz / h) = 0
    assert torch.allclose(z_loss(torch.zeros(2, 3), torch.tensor([0, 2]), dz, boxes), torch.tensor(0.0))
    zr = z_ranges_from_dz(torch.zeros(2, 1), torch.tensor([0, 1]), boxes, torch.tensor(100.0),
                          torch.tensor([5.0, 5.0]))
    assert torch.allclose(zr, torch.tensor([[5 - 5 * 20 / 200, 5 + 5 * 20 / 200], [5 - 1.0, 5 + 1.0]]))
