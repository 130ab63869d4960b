"""RoIAlign against torchvision's kernel as Python loops, float64 gradcheck, hand-computed values."""

import pytest
import torch

from lib3d.detect import assign_boxes_to_levels, multilevel_roi_align, roi_align, roi_align_reference


def _rois(n_img, k, h, w, seed, dtype, spread=1.5):
    g = torch.Generator().manual_seed(seed)
    b = torch.randint(0, n_img, (k, 1), generator=g).to(dtype)
    xy = (torch.rand(k, 2, generator=g, dtype=dtype) * spread - 0.25) * torch.tensor([w, h], dtype=dtype) * 2
    wh = torch.rand(k, 2, generator=g, dtype=dtype) * torch.tensor([w, h], dtype=dtype)
    return torch.cat([b, xy, xy + wh], 1)


@pytest.mark.parametrize("sampling_ratio", [0, 1, 2])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference_forward_backward(sampling_ratio, aligned, dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 9, 11, generator=g, dtype=dtype, requires_grad=True)
    rois = _rois(2, 7, 9, 11, 2, dtype)
    out = roi_align(x, rois, (3, 4), 0.5, sampling_ratio, aligned)
    ref = roi_align_reference(x, rois, (3, 4), 0.5, sampling_ratio, aligned)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert out.shape == (7, 3, 3, 4)
    assert torch.allclose(out, ref, atol=tol, rtol=0)
    w = torch.randn(out.shape, generator=g, dtype=dtype)
    (ga,) = torch.autograd.grad((out * w).sum(), x)
    (gb,) = torch.autograd.grad((ref * w).sum(), x)
    assert torch.allclose(ga, gb, atol=tol * 10, rtol=0)


def test_gradcheck_float64():
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0.0, 1.3, 0.7, 9.1, 8.2], [0, -2.0, -1.0, 4.0, 5.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: roi_align(t, rois, 3, 0.7, 2, True), (x,))
    assert torch.autograd.gradcheck(lambda t: roi_align(t, rois, 2, 0.7, 0, True), (x,))


def test_hand_computed_linear_map():
    # f(y, x) = x: bilinear sampling is exact, a bin's value is the mean x of its samples.
    x = torch.arange(16, dtype=torch.float64).expand(1, 1, 16, 16).clone()
    # box [4, 12] in pixels, aligned: continuous [3.5, 11.5]; 2 bins of width 4 with 2 samples each at
    # 3.5 + 1, 3.5 + 3 and 7.5 + 1, 7.5 + 3 -> means 5.5 and 9.5
    out = roi_align(x, torch.tensor([[0.0, 4, 4, 12, 12]], dtype=torch.float64), 2, 1.0, 2, True)
    assert torch.allclose(out[0, 0, 0], torch.tensor([5.5, 9.5], dtype=torch.float64))
    # a box far outside the map reads zeros
    far = roi_align(x, torch.tensor([[0.0, 100, 100, 120, 120]], dtype=torch.float64), 2, 1.0, 2, True)
    assert float(far.abs().max()) == 0.0


def test_empty_and_errors():
    x = torch.randn(1, 2, 5, 5)
    assert roi_align(x, torch.zeros(0, 5), 3).shape == (0, 2, 3, 3)
    with pytest.raises(ValueError, match="image indices"):
        roi_align(x, torch.tensor([[1.0, 0, 0, 2, 2]]), 3)
    with pytest.raises(ValueError, match="rois"):
        roi_align(x, torch.zeros(2, 4), 3)


def test_boxes_list_input():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    b0 = torch.tensor([[0.0, 0, 5, 5]], dtype=torch.float64)
    b1 = torch.tensor([[1.0, 1, 7, 6], [2, 2, 3, 3]], dtype=torch.float64)
    out = roi_align(x, [b0, b1], 2, 1.0, 2)
    ref = roi_align_reference(x, torch.cat([torch.tensor([[0.0], [1], [1]], dtype=torch.float64),
                                            torch.cat([b0, b1])], 1), 2, 1.0, 2)
    assert torch.allclose(out, ref)


def test_level_assignment_and_multilevel():
    boxes = torch.tensor([[0.0, 0, 224, 224], [0, 0, 112, 112], [0, 0, 448, 448], [0, 0, 10, 10],
                          [0, 0, 2000, 2000]])
    # canonical 224 -> level 4; half -> 3; double -> 5; tiny -> clamped 2; huge -> clamped 5
    assert (assign_boxes_to_levels(boxes, 2, 5) + 2).tolist() == [4, 3, 5, 2, 5]
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(1, 2, 64 // 2 ** i, 64 // 2 ** i, generator=g, dtype=torch.float64) for i in range(4)]
    rois = torch.cat([torch.zeros(5, 1), boxes / 10], 1).double()
    out = multilevel_roi_align(feats, rois, 3, [1 / 4, 1 / 8, 1 / 16, 1 / 32], 2)
    lv = assign_boxes_to_levels(rois, 2, 5)
    for i in range(5):
        ref = roi_align_reference(feats[lv[i]], rois[i:i + 1], 3, 1 / 2 ** (lv[i].item() + 2), 2)
        assert torch.allclose(out[i:i + 1], ref)


def _chunked(monkeypatch, budget):
    import importlib

    module = importlib.import_module("lib3d.detect.roi_align")
    monkeypatch.setattr(module, "_CROP_BUDGET", budget)
    return module


@pytest.mark.parametrize("budget", [1 << 24, 200, 1])
def test_chunked_windows_match_reference(monkeypatch, budget):
    # Mixed elongated, tiny, huge and off-map RoIs over 4 levels: with a small budget the RoIs are bucketed by
    # window size and split into chunks (budget 1: one RoI per chunk); the result must not change.
    module = _chunked(monkeypatch, budget)
    g = torch.Generator().manual_seed(3)
    feats = [torch.randn(2, 3, 40 // 2 ** i, 48 // 2 ** i, generator=g, dtype=torch.float64, requires_grad=True)
             for i in range(4)]
    boxes = torch.tensor([[0.0, 0, 3, 190, 9], [1, 2, 3, 8, 160], [0, 50, 40, 52, 41], [1, -30, -30, 10, 10],
                          [0, 0, 0, 192, 160], [1, 150, 100, 400, 300], [0, 20, 30, 90, 70],
                          [1, 100, 10, 101, 150]], dtype=torch.float64)
    scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    out = module.multilevel_roi_align(feats, boxes, (3, 5), scales, 2)
    lv = assign_boxes_to_levels(boxes, 2, 5)
    ref = torch.cat([roi_align_reference(feats[lv[i]], boxes[i:i + 1], (3, 5), scales[lv[i]], 2)
                     for i in range(boxes.shape[0])])
    assert torch.allclose(out, ref, atol=1e-12, rtol=0)
    wts = torch.randn(out.shape, generator=g, dtype=torch.float64)
    ga = torch.autograd.grad((out * wts).sum(), feats, allow_unused=True, materialize_grads=True)
    gb = torch.autograd.grad((ref * wts).sum(), feats, allow_unused=True, materialize_grads=True)
    for a, b in zip(ga, gb):
        assert torch.allclose(a, b, atol=1e-12, rtol=0)
    if budget == 1:
        assert torch.autograd.gradcheck(
            lambda *f: module.multilevel_roi_align(f, boxes[:4], 2, scales, 0),
            tuple(f.detach().requires_grad_() for f in feats), fast_mode=True)


def test_chunk_buckets_bound_padding():
    import importlib

    module = importlib.import_module("lib3d.detect.roi_align")
    sy = torch.tensor([2, 30, 3, 28, 2, 31])
    sx = torch.tensor([30, 2, 29, 3, 2, 31])
    assert module._chunks(sy[:1], sx[:1], 4) is None  # one RoI: nothing to pad
    chunks = module._chunks(sy, sx, 4)  # wide, tall, small and big windows together waste > 2x: bucketed
    assert sorted(torch.cat(chunks).tolist()) == list(range(6))
    for ch in chunks:
        pad = ch.numel() * int(sy[ch].max()) * int(sx[ch].max())
        assert pad <= 4 * int((sy[ch] * sx[ch]).sum())


def test_non_finite_rois_raise():
    with pytest.raises(ValueError, match="rois must be finite"):
        roi_align(torch.randn(1, 2, 5, 5), torch.tensor([[0.0, 0, float("nan"), 2, 2]]), 3)


def test_half_precision_maps_sample_at_float32_coordinates():
    # bfloat16 maps of a large image: the sample positions must not be rounded to bfloat16 (8 bits of mantissa
    # put 700 px on a 4 px grid); only the products run in bfloat16.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 200, 200, generator=g)
    rois = torch.tensor([[0.0, 701.3, 603.7, 745.9, 650.2], [0, 10.2, 20.6, 60.4, 90.9]])
    ref = roi_align(x, rois, 7, 0.25, 2)
    out = roi_align(x.to(torch.bfloat16), rois, 7, 0.25, 2)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), ref, atol=0.05, rtol=0.02)
