"""The assembled Mesh R-CNN: training losses and gradients on a tiny model, inference outputs, the ablation
switches, and the official checkpoint layout (every key and shape of meshrcnn_R50.pth, written here from
detectron2's naming scheme)."""

import pytest
import torch

from lib3d.data.primitives import cube
from lib3d.detect import (
    InstanceTargets,
    MeshRCNN,
    MeshRCNNConfig,
    load_official_meshrcnn,
    predictions_to_camera,
)
from lib3d.nn import WeightFileError

TINY = dict(num_classes=3, depth=18, norm="bn", freeze_at=0, stride_in_1x1=False, fpn_channels=16, box_fc_dim=32,
            head_conv_dim=16, head_num_conv=2, mesh_hidden_dim=8, mesh_num_samples=200, voxel_size=8,
            rpn_pre_nms_topk_train=100, rpn_post_nms_topk_train=50, rpn_pre_nms_topk_test=100,
            rpn_post_nms_topk_test=50, detections_per_image=5, input_format="RGB1", pixel_mean=(0.5, 0.5, 0.5),
            pixel_std=(0.25, 0.25, 0.25), ico_sphere_level=1)


def _targets():
    v, f = cube(1.0)
    boxes = torch.tensor([[10.0, 20, 40, 60], [30, 5, 60, 40]])
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 20:60, 10:40] = True
    masks[1, 5:40, 30:60] = True
    Ks = torch.tensor([[80.0, 32, 32]]).expand(2, 3)
    centres = torch.tensor([[0.3, 0.0, 4.0], [-0.5, 0.4, 5.0]])
    meshes = [(v + centres[0], f), (v * 0.8 + centres[1], f)]
    pts = torch.rand(2, 40, 3, generator=torch.Generator().manual_seed(0)) - 0.5 + centres[:, None]
    return InstanceTargets(boxes, torch.tensor([0, 2]), masks, Ks, meshes, pts, torch.tensor([40, 25]),
                           torch.tensor([20.0, 15.0]))


@pytest.mark.parametrize("variant", ["meshrcnn", "sphere", "voxel"])
def test_training_losses_and_gradients(variant):
    torch.manual_seed(0)
    cfg = MeshRCNNConfig(**TINY, voxel_on=variant != "sphere", mesh_on=variant != "voxel")
    model = MeshRCNN(cfg)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    losses = model(images, [_targets(), _targets()], generator=torch.Generator().manual_seed(2))
    expected = {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask", "loss_z_reg"}
    expected |= {"loss_voxel"} if variant != "sphere" else set()
    expected |= {"loss_chamfer", "loss_normals", "loss_edge"} if variant != "voxel" else set()
    assert set(losses) == expected
    assert all(bool(torch.isfinite(v)) for v in losses.values())
    sum(losses.values()).backward()
    assert model.box_predictor.cls_score.weight.grad.abs().sum() > 0
    assert model.backbone.bottom_up.conv1.weight.grad.abs().sum() > 0
    if variant != "voxel":
        assert model.mesh_head.stages[0].verts_offset.weight.grad.abs().sum() > 0
    if variant != "sphere":
        assert model.voxel_head.predictor.weight.grad.abs().sum() > 0


def test_same_generator_same_losses():
    torch.manual_seed(0)
    model = MeshRCNN(MeshRCNNConfig(**TINY))
    images = torch.rand(1, 3, 64, 64)
    a = model(images, [_targets()], generator=torch.Generator().manual_seed(5))
    b = model(images, [_targets()], generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_inference_outputs():
    torch.manual_seed(0)
    model = MeshRCNN(MeshRCNNConfig(**TINY, score_thresh_test=0.0)).eval()
    preds = model(torch.rand(2, 3, 64, 48))
    assert len(preds) == 2
    p = preds[0]
    r = p.boxes.shape[0]
    assert 0 < r <= 5 and p.masks.shape == (r, 28, 28) and p.voxels.shape == (r, 8, 8, 8)
    assert len(p.meshes) == r and p.z.shape == (r,)
    assert bool((p.boxes[:, 2] <= 48).all())
    cam = predictions_to_camera(p, torch.tensor([60.0, 24, 32]))
    assert len(cam) == r and bool((cam[0][0][:, 2] > 0).all())


def test_bad_inputs():
    model = MeshRCNN(MeshRCNNConfig(**TINY))
    with pytest.raises(ValueError, match="images"):
        model(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="targets"):
        model(torch.rand(2, 3, 32, 32), [_targets()])


def _official_keys(num_classes=9, voxel=24, hidden=128, stages=3, gconvs=3):
    """Every tensor of meshrcnn_R50.pth (detectron2 R50-FPN Mesh R-CNN with the z head), by name and shape."""
    k = {}

    def conv(name, cout, cin, ks, norm=True, bias=False):
        k[name + ".weight"] = (cout, cin, ks, ks)
        if bias:
            k[name + ".bias"] = (cout,)
        if norm:
            for n in ("weight", "bias", "running_mean", "running_var"):
                k[f"{name}.norm.{n}"] = (cout,)

    conv("backbone.bottom_up.stem.conv1", 64, 3, 7)
    cin = 64
    for s, (n, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
        for b in range(n):
            p = f"backbone.bottom_up.res{s + 2}.{b}"
            if b == 0:
                conv(p + ".shortcut", width * 4, cin, 1)
            conv(p + ".conv1", width, cin if b == 0 else width * 4, 1)
            conv(p + ".conv2", width, width, 3)
            conv(p + ".conv3", width * 4, width, 1)
        cin = width * 4
    for lvl, c in zip((2, 3, 4, 5), (256, 512, 1024, 2048)):
        conv(f"backbone.fpn_lateral{lvl}", 256, c, 1, norm=False, bias=True)
        conv(f"backbone.fpn_output{lvl}", 256, 256, 3, norm=False, bias=True)
    conv("proposal_generator.rpn_head.conv", 256, 256, 3, norm=False, bias=True)
    conv("proposal_generator.rpn_head.objectness_logits", 3, 256, 1, norm=False, bias=True)
    conv("proposal_generator.rpn_head.anchor_deltas", 12, 256, 1, norm=False, bias=True)

    def fc(name, cout, cin):
        k[name + ".weight"] = (cout, cin)
        k[name + ".bias"] = (cout,)

    fc("roi_heads.box_head.fc1", 1024, 256 * 49)
    fc("roi_heads.box_head.fc2", 1024, 1024)
    fc("roi_heads.box_predictor.cls_score", num_classes + 1, 1024)
    fc("roi_heads.box_predictor.bbox_pred", num_classes * 4, 1024)
    for head, fcn, out in (("mask_head", "mask_fcn", num_classes), ("voxel_head", "voxel_fcn", voxel)):
        for i in range(1, 5):
            conv(f"roi_heads.{head}.{fcn}{i}", 256, 256, 3, norm=False, bias=True)
        k[f"roi_heads.{head}.deconv.weight"] = (256, 256, 2, 2)
        k[f"roi_heads.{head}.deconv.bias"] = (256,)
        conv(f"roi_heads.{head}.predictor", out, 256, 1, norm=False, bias=True)
    for s in range(stages):
        p = f"roi_heads.mesh_head.stages.{s}"
        fc(p + ".bottleneck", hidden, 256)
        fc(p + ".verts_offset", 3, hidden + 3)
        for g in range(gconvs):
            cin = (hidden + (0 if s == 0 else hidden) + 3) if g == 0 else hidden + 3
            fc(f"{p}.gconvs.{g}.w0", hidden, cin)
            fc(f"{p}.gconvs.{g}.w1", hidden, cin)
    fc("roi_heads.z_head.z_fc1", 1024, 256 * 49)
    fc("roi_heads.z_head.z_fc2", 1024, 1024)
    fc("roi_heads.z_head.z_pred", num_classes, 1024)
    return k


@pytest.fixture(scope="module")
def official_model():
    return MeshRCNN(MeshRCNNConfig())


def test_official_checkpoint_layout(official_model):
    keys = _official_keys()
    g = torch.Generator().manual_seed(0)
    sd = {name: torch.randn(shape, generator=g) for name, shape in keys.items()}
    sd["pixel_mean"] = torch.zeros(3, 1, 1)  # saved by some detectron2 versions; not a weight
    load_official_meshrcnn({"model": sd, "iteration": 11000}, official_model)
    m = official_model
    assert torch.equal(m.backbone.bottom_up.layer1[0].conv1.weight, sd["backbone.bottom_up.res2.0.conv1.weight"])
    assert torch.equal(m.backbone.bottom_up.layer4[2].bn3.running_var,
                       sd["backbone.bottom_up.res5.2.conv3.norm.running_var"])
    assert torch.equal(m.backbone.fpn.fpn_output3.bias, sd["backbone.fpn_output3.bias"])
    assert torch.equal(m.rpn_head.anchor_deltas.weight, sd["proposal_generator.rpn_head.anchor_deltas.weight"])
    assert torch.equal(m.mesh_head.stages[2].gconvs[1].w1.weight, sd["roi_heads.mesh_head.stages.2.gconvs.1.w1.weight"])
    assert torch.equal(m.z_head.z_pred.bias, sd["roi_heads.z_head.z_pred.bias"])
    # the MSRA layout: stride in the first 1x1 of a bottleneck
    assert m.backbone.bottom_up.layer2[0].conv1.stride == (2, 2)
    # a checkpoint of another architecture: keys and shapes named, nothing loaded
    before = m.box_predictor.cls_score.weight.clone()
    bad = dict(sd)
    bad["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(81, 1024)
    del bad["roi_heads.z_head.z_fc1.weight"]
    bad["roi_heads.keypoint_head.x"] = torch.zeros(1)
    with pytest.raises(WeightFileError) as e:
        load_official_meshrcnn(bad, m)
    msg = str(e.value)
    assert "z_head.z_fc1.weight" in msg and "keypoint_head" in msg and "(81, 1024)" in msg
    assert torch.equal(m.box_predictor.cls_score.weight, before)


def test_official_checkpoint_file(official_model, tmp_path):
    keys = _official_keys()
    sd = {name: torch.zeros(shape) for name, shape in keys.items()}
    path = tmp_path / "meshrcnn_R50.pth"
    torch.save({"model": sd}, path)
    load_official_meshrcnn(path, official_model)
    assert float(official_model.rpn_head.conv.weight.detach().abs().sum()) == 0.0
