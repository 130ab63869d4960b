"""CUDA paths of the runtime (skipped without a GPU): in-process training on the GPU, one Ray Train GPU
worker (NCCL), checkpoints of CUDA tensors and optimizer state, evaluation with a GPU predictor."""

import dataclasses

import pytest
import torch

from configs.common import RayConfig
from configs.fit_rigid import PRESETS
from lib3d import runtime

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_fit_on_gpu(tmp_path):
    from tests.helpers import train_rigid

    cfg = PRESETS["smoke"][1]
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, output_root=str(tmp_path), name="g"),
                              ray=RayConfig(use_gpu=True))
    gpu = train_rigid(cfg)[1]
    cpu = train_rigid(dataclasses.replace(cfg, ray=RayConfig(), run=dataclasses.replace(cfg.run, name="c")))[1]
    for k in cpu:
        torch.testing.assert_close(gpu[k], cpu[k], rtol=1e-4, atol=1e-5)


def test_fit_ray_train_on_gpu(tmp_path):
    """One Ray Train worker with a GPU (NCCL process group, ``ray.train.torch.get_device()``) on an embedded
    Ray (the address makes a single worker run under Ray Train) matches the in-process CPU run."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.train")
    from tests.helpers import train_rigid

    ctx = ray.init(num_cpus=2, num_gpus=1, include_dashboard=False)
    try:
        cfg = PRESETS["smoke"][1]
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, output_root=str(tmp_path), name="rt"),
                                  ray=RayConfig(num_workers=1, use_gpu=True,
                                                address=ctx.address_info["gcs_address"]))
        res, gpu = train_rigid(cfg)
    finally:
        ray.shutdown()
    cpu = train_rigid(dataclasses.replace(cfg, ray=RayConfig(), run=dataclasses.replace(cfg.run, name="c")))[1]
    assert res.checkpoint is not None and res.metrics["step"] == 30
    for k in cpu:
        torch.testing.assert_close(gpu[k], cpu[k], rtol=1e-4, atol=1e-5)


def test_cuda_checkpoint_round_trip(tmp_path):
    model = torch.nn.Linear(4, 4).cuda()
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(3, 4, device="cuda")).sum().backward()
    opt.step()
    runtime.save_checkpoint(tmp_path, 1, model.state_dict(), opt)
    ck = runtime.load_checkpoint(tmp_path, map_location="cuda")
    assert all(t.is_cuda for t in ck.tensors.values())
    model.load_state_dict(ck.tensors)
    opt.load_state_dict(ck.optimizer_state)
    for k, v in model.state_dict().items():
        assert torch.equal(v, ck.tensors[k])


class _GpuPredictor:
    def __init__(self):
        self.w = torch.full((1,), 2.0, device="cuda")

    def __call__(self, batch):
        return batch.cuda() * self.w


def test_evaluate_gpu_predictor():
    x = torch.arange(10.0)
    out = runtime.evaluate(_GpuPredictor, x, batch_size=3, progress=False)
    assert out.device.type == "cpu" and torch.equal(out, 2 * x)
