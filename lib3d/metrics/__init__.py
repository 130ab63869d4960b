"""Evaluation metrics: image quality (PSNR, SSIM, Perc Sim, LPIPS), distribution distances (FID, KID),
detection AP (COCO), mesh reconstruction (Chamfer, normal consistency, F1@t, Pix3D mesh AP).

Submodules fix their own dimension names in their docstrings:

- ``lib3d.metrics.image``     PSNR, SSIM, MSE over ``(N, H, W, C)`` images.
- ``lib3d.metrics.detection`` COCO box / mask AP (pycocotools' numbers), box and mask IoU.
- ``lib3d.metrics.meshes``    Mesh R-CNN's Chamfer / normal consistency / F1@t and the Pix3D mesh AP.
- ``lib3d.metrics.perceptual`` SynSin's Perc Sim and LPIPS (vgg / alex) over ``(N, 3, H, W)`` images.
- ``lib3d.metrics.fid``       FID / KID over features of any extractor, streaming statistics, ``.npz`` files.
"""

from lib3d.metrics.detection import COCOResult, Detections, GroundTruths, box_iou, coco_evaluate, mask_iou
from lib3d.metrics.fid import (
    FeatureStatistics,
    fid_from_features,
    frechet_distance,
    kernel_inception_distance,
    load_fid_stats,
    save_fid_stats,
    trace_sqrt_product,
)
from lib3d.metrics.image import mse, psnr, ssim
from lib3d.metrics.meshes import (
    MeshMetrics,
    Pix3DAPResult,
    compare_meshes,
    compare_point_clouds,
    mesh_ap,
    pix3d_ap,
    voc_ap,
)
from lib3d.metrics.perceptual import (
    LPIPS,
    PerceptualSimilarity,
    load_lpips_weights,
    lpips_distance,
    lpips_official_shapes,
    perceptual_similarity,
)

__all__ = [
    "LPIPS",
    "COCOResult",
    "Detections",
    "FeatureStatistics",
    "GroundTruths",
    "MeshMetrics",
    "PerceptualSimilarity",
    "Pix3DAPResult",
    "box_iou",
    "coco_evaluate",
    "compare_meshes",
    "compare_point_clouds",
    "fid_from_features",
    "frechet_distance",
    "kernel_inception_distance",
    "load_fid_stats",
    "load_lpips_weights",
    "lpips_distance",
    "lpips_official_shapes",
    "mask_iou",
    "mesh_ap",
    "mse",
    "perceptual_similarity",
    "pix3d_ap",
    "psnr",
    "save_fid_stats",
    "ssim",
    "trace_sqrt_product",
    "voc_ap",
]
