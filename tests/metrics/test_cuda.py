"""The metrics on CUDA give the CPU numbers (skipped without a GPU)."""

import pytest
import torch

from lib3d.metrics import (
    LPIPS,
    FeatureStatistics,
    PerceptualSimilarity,
    coco_evaluate,
    compare_meshes,
    compare_point_clouds,
    fid_from_features,
    frechet_distance,
    kernel_inception_distance,
    mesh_ap,
)
from lib3d.ops import ico_sphere

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


def test_fid_kid_cuda():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(700, 64, generator=g)
    b = torch.randn(500, 64, generator=g) * 1.2 + 0.1
    assert fid_from_features(a.to(CUDA), b.to(CUDA)) == pytest.approx(fid_from_features(a, b), rel=1e-9)
    s = FeatureStatistics()
    for chunk in a.to(CUDA).split(99):
        s.update(chunk)
    assert s.mu.device.type == "cuda"
    ref = FeatureStatistics().update(a)
    assert frechet_distance(s.mu, s.sigma, ref.mu, ref.sigma) == pytest.approx(0.0, abs=1e-9)
    mean, _ = kernel_inception_distance(a.to(CUDA), b.to(CUDA), num_subsets=3, subset_size=200,
                                        generator=torch.Generator(CUDA).manual_seed(0))
    assert mean > 0


def test_coco_cuda_equals_cpu():
    from tests.metrics.test_detection import _random_scene

    for iou_type, masks in (("bbox", False), ("segm", True)):
        dets, gts, _ = _random_scene(11, with_masks=masks)
        cpu = coco_evaluate(dets, gts, iou_type=iou_type)

        def move(x):
            return type(x)(*[None if t is None else t.to(CUDA) for t in x])

        gpu = coco_evaluate([move(d) for d in dets], [move(g) for g in gts], iou_type=iou_type)
        assert gpu.precision.device.type == "cuda"
        torch.testing.assert_close(gpu.precision.cpu(), cpu.precision)
        assert gpu.ap == pytest.approx(cpu.ap, abs=1e-12)


def test_meshes_cuda_equals_cpu():
    g = torch.Generator().manual_seed(1)
    p, q = torch.rand(2, 300, 3, generator=g), torch.rand(2, 400, 3, generator=g)
    cpu = compare_point_clouds(p, q)
    gpu = compare_point_clouds(p.to(CUDA), q.to(CUDA))
    torch.testing.assert_close(gpu.chamfer_l2.cpu(), cpu.chamfer_l2)
    torch.testing.assert_close(gpu.f1.cpu(), cpu.f1)
    m = ico_sphere(2, CUDA)
    r = compare_meshes(m, m.scale_verts(1.1), num_samples=2000, generator=torch.Generator(CUDA).manual_seed(0))
    assert r.chamfer_l2.device.type == "cuda" and float(r.chamfer_l2) > 0
    res = mesh_ap(torch.tensor([0, 1], device=CUDA), torch.tensor([0.9, 0.5], device=CUDA),
                  torch.tensor([1, 1], device=CUDA), torch.tensor([1, 1], device=CUDA),
                  torch.tensor([0.9, 0.9], device=CUDA), torch.tensor([0.9, 0.9], device=CUDA))
    assert res.ap == pytest.approx(1.0)


def test_perceptual_cuda_equals_cpu():
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    for m in (LPIPS("alex"), LPIPS("vgg"), PerceptualSimilarity()):
        cpu = m(a, b)
        gpu = m.to(CUDA)(a.to(CUDA), b.to(CUDA))
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=2e-3, atol=1e-5)
