"""``SMPL``: the ``nn.Module`` face of :func:`lib3d.bodies.smpl.smpl_forward`.

It sits above the model files (:mod:`lib3d.bodies.model_io`) and the embedded body
(:mod:`lib3d.bodies.synthetic`) so that it can build its model from a path or from nothing; the pure
functions of :mod:`lib3d.bodies.smpl` import neither. Dimension names are those of :mod:`lib3d.bodies`.
"""

from __future__ import annotations

import torch
from torch import nn

from lib3d.bodies.model_io import load_smpl_model
from lib3d.bodies.smpl import SMPLModel, SMPLOutput, smpl_forward
from lib3d.bodies.synthetic import synthetic_smpl_model

__all__ = ["SMPL"]


class SMPL(nn.Module):
    """``nn.Module`` wrapper of :func:`smpl_forward`: holds a :class:`SMPLModel`; ``forward`` makes one call.

    ``.to(device/dtype)`` moves the model. Parameters are passed to ``forward`` (like smplx's
    ``SMPLLayer``); the module has no learnable parameters.

    Args:
        model: an :class:`SMPLModel`, a path to a model file (``.pkl``, ``.npz``, ``.safetensors``), or
            None for the embedded synthetic body.
        num_betas: keep only the first ``num_betas`` shape directions (default: all).

    Example:
        >>> smpl = SMPL()                       # the synthetic body
        >>> out = smpl(betas=torch.zeros(1, 10), body_pose=torch.zeros(1, 69))
    """

    def __init__(self, model: SMPLModel | str | None = None, num_betas: int | None = None):
        super().__init__()
        if model is None:
            model = synthetic_smpl_model()
        elif not isinstance(model, SMPLModel):
            model = load_smpl_model(model)
        if num_betas is not None:
            model = model.with_betas(num_betas)
        self.model = model

    def _apply(self, fn, *args, **kwargs):
        self.model = self.model.map_tensors(fn)
        return super()._apply(fn, *args, **kwargs)

    @property
    def faces(self) -> torch.Tensor:
        """(F, 3) long faces."""
        return self.model.faces

    def forward(self, betas=None, body_pose=None, global_orient=None, transl=None, *, return_verts=True,
                return_v_shaped=False) -> SMPLOutput:
        """See :func:`smpl_forward`."""
        return smpl_forward(self.model, betas, body_pose, global_orient, transl, return_verts=return_verts,
                            return_v_shaped=return_v_shaped)
