"""Anchors, RPN, box and mask heads: hand-computed anchors, shapes, losses, inference and mask pasting."""

import math

import torch

from lib3d.detect import (
    AnchorGenerator,
    BoxHead,
    BoxPredictor,
    MaskHead,
    RPNHead,
    box_head_inference,
    box_head_losses,
    cell_anchors,
    crop_masks,
    encode_boxes,
    find_top_rpn_proposals,
    grid_anchors,
    paste_masks,
    rpn_losses,
    sample_proposals,
    smooth_l1_loss,
)


def test_cell_anchors_detectron2_values():
    a = cell_anchors([32], [0.5, 1.0, 2.0])
    w = math.sqrt(32 * 32 / 0.5)
    assert torch.allclose(a[0], torch.tensor([-w / 2, -0.25 * w, w / 2, 0.25 * w]))
    assert torch.allclose(a[1], torch.tensor([-16.0, -16, 16, 16]))
    g = grid_anchors(a, (2, 3), 8)
    assert g.shape == (2 * 3 * 3, 4)
    # (y, x, a) order: the 4th location is (y=1, x=0)
    assert torch.allclose(g[9 + 1], a[1] + torch.tensor([0.0, 8, 0, 8]))


def test_smooth_l1():
    x = torch.tensor([0.05, 0.5, -2.0])
    assert torch.allclose(smooth_l1_loss(x, torch.zeros(3), 0.0, "none"), x.abs())
    assert torch.allclose(smooth_l1_loss(x, torch.zeros(3), 0.1, "none"),
                          torch.tensor([0.5 * 0.0025 / 0.1, 0.45, 1.95]))


def test_rpn_losses_and_proposals():
    torch.manual_seed(0)
    feats = [torch.randn(2, 8, 16 // 2 ** i, 16 // 2 ** i) for i in range(3)]
    gen = AnchorGenerator([[16], [32], [64]], [0.5, 1.0, 2.0], [4, 8, 16])
    anchors = gen(feats)
    assert [a.shape[0] for a in anchors] == [16 * 16 * 3, 8 * 8 * 3, 4 * 4 * 3]
    head = RPNHead(8, 3)
    out = head(feats)
    assert out.objectness[0].shape == (2, 768) and out.deltas[1].shape == (2, 192, 4)
    gt = [torch.tensor([[4.0, 4, 30, 40]]), torch.zeros(0, 4)]
    losses = rpn_losses(anchors, out, gt, 64, 0.5, generator=torch.Generator().manual_seed(0))
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc"}
    # zero logits: BCE of log 2 per sampled anchor, 64 sampled per image (normaliser 64 * 2)
    with torch.no_grad():
        for m in (head.objectness_logits,):
            m.weight.zero_()
            m.bias.zero_()
    losses = rpn_losses(anchors, head(feats), gt, 64, 0.5, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(losses["loss_rpn_cls"], torch.tensor(math.log(2.0)), atol=1e-6)
    props = find_top_rpn_proposals(anchors, head(feats), [(64, 60), (64, 64)], 0.7, 50, 30)
    assert len(props) == 2 and props[0][0].shape[0] <= 30
    assert bool((props[0][0][:, 2] <= 60).all())


def test_sample_proposals_and_box_losses():
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40]])
    props = torch.tensor([[1.0, 1, 10, 10], [21, 19, 41, 40], [50, 50, 60, 60], [0, 0, 3, 3]])
    s = sample_proposals(props, gt, torch.tensor([2, 0]), 3, 8, 0.5, (0.5,), (0, 1), True,
                         torch.Generator().manual_seed(0))
    assert s.num_fg == 4  # two proposals + two appended gt boxes
    assert sorted(s.gt_classes[: s.num_fg].tolist()) == [0, 0, 2, 2]
    assert s.gt_classes[s.num_fg:].tolist() == [3, 3]
    r = s.boxes.shape[0]
    scores = torch.zeros(r, 4)
    deltas = torch.zeros(r, 12)
    losses = box_head_losses(scores, deltas, s.boxes, s.gt_classes, gt[s.matched], 0.0)
    assert torch.allclose(losses["loss_cls"], torch.tensor(math.log(4.0)))
    fg = torch.arange(s.num_fg)
    expect = encode_boxes(s.boxes[fg], gt[s.matched[fg]]).abs().sum() / r
    assert torch.allclose(losses["loss_box_reg"], expect)


def test_head_shapes():
    x = torch.randn(5, 16, 7, 7)
    h = BoxHead(16, 7, 2, 32)
    s, d = BoxPredictor(32, 3)(h(x))
    assert s.shape == (5, 4) and d.shape == (5, 12)
    assert MaskHead(16, 3, 8, 4)(torch.randn(5, 16, 14, 14)).shape == (5, 3, 28, 28)
    keys = set(MaskHead(16, 3, 8, 4).state_dict())
    assert {"mask_fcn1.weight", "mask_fcn4.bias", "deconv.weight", "predictor.weight"} <= keys


def test_box_inference_keeps_confident_class():
    props = [torch.tensor([[10.0, 10, 50, 50], [12, 12, 50, 50], [100, 100, 120, 130]])]
    scores = torch.tensor([[5.0, 0, 0, 0], [4.0, 0, 0, 0], [0, 0, 6.0, 0]])
    dets = box_head_inference(scores, torch.zeros(3, 12), props, [(200, 200)], 0.05, 0.5, 10)
    d = dets[0]
    assert d.classes.tolist()[:2] == [2, 0]
    assert torch.allclose(d.boxes[0], props[0][2])
    assert d.boxes.shape[0] == 2  # every other class score is below the threshold


def test_crop_and_paste_masks_roundtrip():
    m = torch.zeros(1, 40, 40, dtype=torch.bool)
    m[0, 10:30, 5:25] = True
    box = torch.tensor([[5.0, 10, 25, 30]])
    crop = crop_masks(m, box, torch.tensor([0]), 28)
    assert crop.shape == (1, 28, 28) and float(crop.min()) == 1.0  # the box is the mask
    pasted = paste_masks(crop, box, (40, 40))
    assert torch.equal(pasted, m)
