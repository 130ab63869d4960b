"""Object detection and single-image 3D shape prediction: box ops, NMS, RoIAlign, RPN, (Mask) R-CNN heads
and Mesh R-CNN (the book's chapter 10), in pure PyTorch.

Dimension names: N images; H/W image or feature-map size; C channels; R boxes / RoIs / detections; G
ground-truth objects; K foreground classes; A anchors per location; P pooled size; M mask size; D voxel
size; V/F mesh vertices/faces; S sampled points.

Conventions (detectron2's): boxes are XYXY in pixels; RoIAlign ``aligned=True``; Fast R-CNN box deltas
with weights ``(10, 10, 5, 5)``; smooth-L1 with detectron2's ``beta`` (0: L1). Meshes are predicted in
box coordinates and mapped to camera space (+X left, +Y up, +Z forward) with the Pix3D convention
(:mod:`lib3d.detect.mesh_head`).

Modules: ``boxes`` (IoU, deltas, clipping, NMS, matching, sampling), ``roi_align`` (RoIAlign, FPN pooler),
``rpn`` (anchors, RPN head, losses, proposals), ``roi_heads`` (box and mask heads, losses, inference,
mask pasting), ``mesh_head`` (voxel, mesh refinement and z heads, losses, box coordinates), ``meshrcnn``
(the model, its config and the official checkpoint mapping), ``voxmesh`` (the ShapeNet models and their
official keys), ``evaluation`` (COCO box / mask AP and the mesh AP and metrics).
"""

from lib3d.detect.boxes import (
    DEFAULT_BOX_WEIGHTS,
    batched_nms,
    box_area,
    box_iou,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    match_boxes,
    nms,
    nms_reference,
    nonempty_boxes,
    subsample_labels,
)
from lib3d.detect.mesh_head import (
    MeshHead,
    MeshRefinementStage,
    VoxelHead,
    ZHead,
    box_to_camera,
    camera_to_box,
    mesh_losses,
    voxel_loss,
    voxelize_in_boxes,
    z_loss,
    z_ranges_from_dz,
)
from lib3d.detect.meshrcnn import (
    InstanceTargets,
    MeshRCNN,
    MeshRCNNConfig,
    Prediction,
    load_official_meshrcnn,
    meshes_to_camera,
    official_rules,
    official_state_dict_to_lib3d,
    predictions_to_camera,
)
from lib3d.detect.roi_align import (
    ROIPooler,
    assign_boxes_to_levels,
    boxes_to_rois,
    multilevel_roi_align,
    roi_align,
    roi_align_reference,
)
from lib3d.detect.roi_heads import (
    BoxHead,
    BoxPredictor,
    Detections,
    MaskHead,
    box_head_inference,
    box_head_losses,
    crop_masks,
    mask_loss,
    paste_masks,
    sample_proposals,
)
from lib3d.detect.voxmesh import VoxMesh, load_official_voxmesh, official_voxmesh_rules
from lib3d.detect.rpn import (
    AnchorGenerator,
    RPNHead,
    cell_anchors,
    find_top_rpn_proposals,
    grid_anchors,
    rpn_losses,
    smooth_l1_loss,
)

__all__ = [
    "DEFAULT_BOX_WEIGHTS", "AnchorGenerator", "BoxHead", "BoxPredictor", "Detections", "InstanceTargets",
    "MaskHead", "MeshHead", "MeshRCNN", "MeshRCNNConfig", "MeshRefinementStage", "Prediction", "ROIPooler",
    "RPNHead", "VoxelHead", "ZHead", "assign_boxes_to_levels", "batched_nms", "box_area", "box_head_inference",
    "box_head_losses", "box_iou", "box_to_camera", "boxes_to_rois", "camera_to_box", "cell_anchors", "clip_boxes",
    "crop_masks", "decode_boxes", "encode_boxes", "find_top_rpn_proposals", "grid_anchors", "load_official_meshrcnn",
    "mask_loss", "match_boxes", "mesh_losses", "meshes_to_camera", "multilevel_roi_align", "nms", "nms_reference",
    "nonempty_boxes", "official_rules", "official_state_dict_to_lib3d", "paste_masks", "predictions_to_camera",
    "roi_align", "roi_align_reference", "rpn_losses", "sample_proposals", "smooth_l1_loss", "subsample_labels",
    "voxel_loss", "voxelize_in_boxes", "z_loss", "z_ranges_from_dz", "VoxMesh", "load_official_voxmesh",
    "official_voxmesh_rules",
]
