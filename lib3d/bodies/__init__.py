"""lib3d.bodies: the SMPL body model and SMPLify fitting, batched, differentiable, CPU or GPU.

Dimension names used by every function of this subpackage:

- ``N``  batch (people / parameter sets)
- ``V``  mesh vertices (6,890 for SMPL and the synthetic body)
- ``F``  mesh faces
- ``J``  model joints (24 for SMPL); ``E`` extra joints regressed from the posed vertices (head top, nose,
  eyes, ears, toes, heels)
- ``S``  shape coefficients (betas)
- ``K``  2D keypoints of a detector skeleton (14 LSP, 17 COCO, 25 OpenPose BODY_25)
- ``G``  mixture components of the pose prior (8)

Conventions: SMPL's own. Column-vector rotations ``R @ x``; axis-angle poses (radians), 3 per joint,
body pose of the 23 non-root joints (69 numbers); metres; the model's +Y is up and it faces +Z. For
SMPLify the camera is the pinhole ``u = f X / Z + c_x``, ``v = f Y / Z + c_y`` (OpenCV axes: x right,
y down, z forward; pixel (u, v) = (column, row)); :func:`lib3d.bodies.smplify.opencv_to_pytorch3d`
gives the equivalent lib3d/PyTorch3D camera (R = diag(-1, -1, 1)).

Modules:

- :mod:`~lib3d.bodies.smpl`       ``SMPLModel``, ``smpl_forward`` and ``smpl_joint_jacobian`` (pure functions),
  ``SMPLOutput``
- :mod:`~lib3d.bodies.layer`      ``SMPL``, the ``nn.Module`` (model from a file, or the synthetic body)
- :mod:`~lib3d.bodies.model_io`   official ``.pkl`` (restricted unpickler), ``.npz``, safetensors
- :mod:`~lib3d.bodies.synthetic`  the embedded SYNTHETIC body in the SMPL layout
- :mod:`~lib3d.bodies.skeletons`  LSP-14, COCO-17, BODY_25 keypoint sets mapped to SMPL joints
- :mod:`~lib3d.bodies.priors`     GMM pose prior (``gmm_08.pkl``), angle and shape priors, interpenetration
- :mod:`~lib3d.bodies.smplify`    SMPLify (Bogo et al. 2016), batched
- :mod:`~lib3d.bodies.metrics`    MPJPE, PA-MPJPE, 2D error
- :mod:`~lib3d.bodies.pipeline`   keypoint files (LSP ``est_joints.npz``, JSON), model and prior loading
- :mod:`~lib3d.bodies.visualize`  the fitted body over the image with the keypoints

Example:
    >>> from lib3d.bodies import SMPL, smplify, synthetic_people, synthetic_smpl_model
    >>> model = synthetic_smpl_model()                      # or load_smpl_model("SMPL_NEUTRAL.pkl")
    >>> data = synthetic_people(model, 4, "lsp")
    >>> fit = smplify(model, data.keypoints, "lsp", image_size=(512, 512))
"""

from lib3d.bodies.layer import SMPL
from lib3d.bodies.metrics import mpjpe, pa_mpjpe
from lib3d.bodies.model_io import (
    SMPL_EXTRA_VERTEX_IDS,
    UnsafePickleError,
    load_smpl_model,
    safe_load_pickle,
    save_smpl_model,
)
from lib3d.bodies.priors import GMMPrior, default_gmm_prior, gmm_pose_prior, load_gmm_prior
from lib3d.bodies.skeletons import BODY25, COCO17, LSP14, Skeleton, get_skeleton
from lib3d.bodies.smpl import (
    SMPL_JOINT_NAMES,
    SMPL_PARENTS,
    SMPLModel,
    SMPLOutput,
    batch_rodrigues,
    kinematic_levels,
    smpl_forward,
    smpl_joint_jacobian,
)
from lib3d.bodies.smplify import SMPLifyConfig, SMPLifyResult, smplify, synthetic_people
from lib3d.bodies.synthetic import SYNTHETIC_DESCRIPTION, synthetic_smpl_model

__all__ = [
    "BODY25",
    "COCO17",
    "LSP14",
    "SMPL",
    "SMPL_EXTRA_VERTEX_IDS",
    "SMPL_JOINT_NAMES",
    "SMPL_PARENTS",
    "SYNTHETIC_DESCRIPTION",
    "GMMPrior",
    "SMPLModel",
    "SMPLOutput",
    "SMPLifyConfig",
    "SMPLifyResult",
    "Skeleton",
    "UnsafePickleError",
    "batch_rodrigues",
    "default_gmm_prior",
    "get_skeleton",
    "gmm_pose_prior",
    "kinematic_levels",
    "load_gmm_prior",
    "load_smpl_model",
    "mpjpe",
    "pa_mpjpe",
    "safe_load_pickle",
    "save_smpl_model",
    "smpl_forward",
    "smpl_joint_jacobian",
    "smplify",
    "synthetic_people",
    "synthetic_smpl_model",
]
