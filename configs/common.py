"""``RunConfig`` and ``RayConfig``, the two configs every job embeds (fields ``run`` and ``ray``). They live in
``lib3d.runtime.config``; this module re-exports them for the job configs."""

from lib3d.runtime.config import RayConfig, RunConfig

__all__ = ["RayConfig", "RunConfig"]
