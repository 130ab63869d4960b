"""Shared fixtures of the bodies tests: the synthetic model (built once) and a tiny random model."""

import pytest
import torch

from lib3d.bodies import SMPL_PARENTS, SMPLModel, synthetic_smpl_model


@pytest.fixture(scope="session")
def synth():
    return synthetic_smpl_model()


def tiny_model(V: int = 12, S: int = 3, dtype=torch.float64, seed: int = 0) -> SMPLModel:
    """A random SMPL-layout model with 24 joints and V vertices (for gradcheck and reference tests)."""
    g = torch.Generator().manual_seed(seed)
    J = 24
    W = torch.rand(V, J, generator=g, dtype=dtype) ** 4
    W = W / W.sum(1, keepdim=True)
    Jreg = torch.rand(J, V, generator=g, dtype=dtype)
    Jreg = Jreg / Jreg.sum(1, keepdim=True)
    return SMPLModel(
        v_template=torch.randn(V, 3, generator=g, dtype=dtype),
        shapedirs=0.1 * torch.randn(V, 3, S, generator=g, dtype=dtype),
        posedirs=0.05 * torch.randn(V, 3, 207, generator=g, dtype=dtype),
        J_regressor=Jreg, parents=torch.tensor(SMPL_PARENTS), lbs_weights=W,
        faces=torch.tensor([[0, 1, 2], [2, 3, 0]]),
        extra_regressor=torch.eye(V, dtype=dtype)[:2], extra_joint_names=("a", "b"),
    )
