"""Box ops and NMS: hand-computed cases and the brute-force greedy reference."""

import pytest
import torch

from lib3d.detect import (
    batched_nms,
    box_iou,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    match_boxes,
    nms,
    nms_reference,
    subsample_labels,
)


def _random_boxes(n, seed, scale=100.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * scale
    wh = torch.rand(n, 2, generator=g, dtype=dtype) * scale * 0.3 + 1
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g, dtype=dtype)


def test_iou_hand_computed():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[5.0, 5, 15, 15], [20, 20, 30, 30], [0, 0, 10, 10], [0, 0, 5, 10]])
    # overlap 25 / union 175; disjoint; identical; half
    assert torch.allclose(box_iou(a, b), torch.tensor([[25 / 175, 0.0, 1.0, 0.5]]))
    assert box_iou(torch.zeros(0, 4), b).shape == (0, 4)
    with pytest.raises(ValueError, match="boxes1"):
        box_iou(torch.zeros(3, 3), b)


def test_deltas_hand_computed_and_roundtrip():
    src = torch.tensor([[0.0, 0, 10, 20]])  # centre (5, 10), size (10, 20)
    tgt = torch.tensor([[2.0, 4, 12, 44]])  # centre (7, 24), size (10, 40)
    d = encode_boxes(src, tgt, (10.0, 10.0, 5.0, 5.0))
    expected = torch.tensor([[10 * 2 / 10, 10 * 14 / 20, 0.0, 5 * torch.log(torch.tensor(2.0))]])
    assert torch.allclose(d, expected)
    assert torch.allclose(decode_boxes(d, src), tgt, atol=1e-5)
    b, _ = _random_boxes(50, 0, dtype=torch.float64)
    t, _ = _random_boxes(50, 1, dtype=torch.float64)
    assert torch.allclose(decode_boxes(encode_boxes(b, t), b), t)
    # several boxes per source (class-specific deltas)
    dd = torch.cat([encode_boxes(b, t), encode_boxes(b, b)], 1)
    out = decode_boxes(dd, b)
    assert torch.allclose(out[:, :4], t) and torch.allclose(out[:, 4:], b)


def test_decode_clamps_scale():
    src = torch.tensor([[0.0, 0, 16, 16]])
    out = decode_boxes(torch.tensor([[0.0, 0, 100.0, 100.0]]), src, (1, 1, 1, 1))
    assert torch.allclose(out[0, 2] - out[0, 0], torch.tensor(1000.0))


def test_clip():
    b = torch.tensor([[-5.0, -2, 50, 70]])
    assert torch.equal(clip_boxes(b, (60, 40)), torch.tensor([[0.0, 0, 40, 60]]))


@pytest.mark.parametrize("thresh", [0.0, 0.3, 0.5, 0.7, 0.95])
@pytest.mark.parametrize("seed", [0, 1])
def test_nms_matches_greedy_reference(thresh, seed):
    boxes, scores = _random_boxes(150, seed, scale=60.0)
    assert torch.equal(nms(boxes, scores, thresh), nms_reference(boxes, scores, thresh))


def test_nms_ties_chains_and_empty():
    # a chain: 0 suppresses 1, so 2 (overlapping only 1) survives
    boxes = torch.tensor([[0.0, 0, 10, 10], [6, 0, 16, 10], [12, 0, 22, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.2).tolist() == [0, 2]
    assert nms_reference(boxes, scores, 0.2).tolist() == [0, 2]
    tied = torch.tensor([0.5, 0.5, 0.5])
    assert torch.equal(nms(boxes, tied, 0.2), nms_reference(boxes, tied, 0.2))
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0


def test_nms_long_chain_exact():
    # 60 boxes each overlapping the next (IoU 0.6): greedy keeps every other one
    x = torch.arange(60, dtype=torch.float32) * 2.5
    boxes = torch.stack([x, torch.zeros(60), x + 10, torch.full((60,), 10.0)], 1)
    scores = torch.linspace(1, 0.1, 60)
    assert torch.equal(nms(boxes, scores, 0.5), nms_reference(boxes, scores, 0.5))


def test_batched_nms_per_class():
    boxes, scores = _random_boxes(120, 3)
    idxs = torch.randint(0, 4, (120,), generator=torch.Generator().manual_seed(0))
    keep = batched_nms(boxes, scores, idxs, 0.5)
    ref = torch.cat([torch.nonzero(idxs == c)[:, 0][nms_reference(boxes[idxs == c], scores[idxs == c], 0.5)]
                     for c in range(4)])
    ref = ref[torch.sort(scores[ref], descending=True, stable=True).indices]
    assert torch.equal(keep, ref)


def test_match_boxes():
    iou = torch.tensor([[0.1, 0.5, 0.8, 0.25], [0.2, 0.6, 0.1, 0.05]])
    matches, labels = match_boxes(iou, [0.3, 0.7], [0, -1, 1])
    assert matches.tolist() == [1, 1, 0, 0]
    assert labels.tolist() == [0, -1, 1, 0]
    _, labels = match_boxes(iou, [0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)
    assert labels.tolist() == [0, 1, 1, 0]  # column 1 is gt 1's best
    m, lab = match_boxes(torch.zeros(0, 3), [0.5], [0, 1])
    assert lab.tolist() == [0, 0, 0] and m.tolist() == [0, 0, 0]


def test_subsample_labels():
    labels = torch.tensor([1] * 10 + [0] * 100 + [-1] * 5)
    pos, neg = subsample_labels(labels, 20, 0.25, 0, torch.Generator().manual_seed(0))
    assert pos.numel() == 5 and neg.numel() == 15
    assert bool((labels[pos] == 1).all()) and bool((labels[neg] == 0).all())
    assert len(set(pos.tolist())) == 5


@pytest.mark.parametrize("seed,thresh", [(1, 0.3), (2, 0.7), (3, 0.9)])
def test_batched_nms_sparse_categories_and_wide_boxes(seed, thresh):
    # Non-contiguous (and negative) category ids, dense overlapping boxes and one very wide box per category:
    # the per-category sweep windows must still find every suppressing pair.
    g = torch.Generator().manual_seed(seed)
    boxes, scores = _random_boxes(300, seed)
    boxes[:5, 2] = boxes[:5, 0] + 500.0
    ids = torch.tensor([-3, 7, 100, 4])[torch.randint(0, 4, (300,), generator=g)]
    keep = batched_nms(boxes, scores, ids, thresh)
    ref = torch.cat([torch.nonzero(ids == c)[:, 0][nms_reference(boxes[ids == c], scores[ids == c], thresh)]
                     for c in (-3, 7, 100, 4)])
    ref = ref[torch.sort(scores[ref], descending=True, stable=True).indices]
    assert torch.equal(keep, ref)
