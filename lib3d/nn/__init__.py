"""lib3d.nn: the networks shared by lib3d's systems, GAN parts, and strict loading of official weights.

Dimension names: N batch, C channels, H/W image height/width, S square image size, Z noise dimension.
Images are ``(N, C, H, W)`` float tensors; feature extractors return ``dict[str, Tensor]`` keyed by
level or tap name.

- ``resnet``     ResNet-18/34/50/101 (``c2..c5``), ``FrozenBatchNorm2d``; torchvision's layout.
- ``fpn``        FPN (``p2..p6``, detectron2's layout) and ``ResNetFPN``.
- ``vgg``        VGG16/19 features at named taps (``relu1_2`` ...); torchvision's layout.
- ``alexnet``    AlexNet features (LPIPS "alex" taps); torchvision's layout.
- ``inception``  pytorch-fid's FID InceptionV3 (2048-d pool features).
- ``unet``       UNet with L levels (SynSin's depth network).
- ``blocks``     spectral norm, SynSin's noise batch norm, BigGAN-style residual blocks.
- ``gan``        DCGAN (GIRAFFE) and multiscale PatchGAN (pix2pixHD/SPADE) discriminators, losses, R1, EMA.
- ``weights``    ``read_weight_file`` (``weights_only``), ``strict_load``, ``remap_keys``, ``load_*``.

Nothing downloads weights: pass the path of a file you fetched (see ``lib3d.nn.weights``).
"""

from lib3d.nn.alexnet import AlexNetFeatures, alexnet_layer_names, alexnet_official_shapes
from lib3d.nn.blocks import NoiseBatchNorm2d, ResBlock, noise_batch_norm, spectral_norm, spectral_norm_rules
from lib3d.nn.fpn import FPN, ResNetFPN, detectron2_resnet_fpn_rules
from lib3d.nn.gan import (
    EMA,
    DCGANDiscriminator,
    MultiscaleDiscriminator,
    NLayerDiscriminator,
    ema_copy,
    ema_update,
    feature_matching_loss,
    hinge_d_loss,
    hinge_g_loss,
    nonsaturating_d_loss,
    nonsaturating_g_loss,
    r1_penalty,
)
from lib3d.nn.inception import FIDInceptionV3
from lib3d.nn.resnet import (
    BasicBlock,
    Bottleneck,
    FrozenBatchNorm2d,
    ResNet,
    convert_frozen_batchnorm,
    detectron2_resnet_rules,
    frozen_batch_norm,
    resnet,
)
from lib3d.nn.unet import UNet, synsin_unet_rules
from lib3d.nn.vgg import IMAGENET_MEAN, IMAGENET_STD, VGGFeatures, vgg_layer_names, vgg_official_shapes
from lib3d.nn.weights import (
    WeightFileError,
    check_state_dict,
    load_alexnet,
    load_inception,
    load_resnet,
    load_vgg,
    read_weight_file,
    remap_keys,
    state_dict_from,
    strict_load,
)

__all__ = [
    "EMA",
    "FPN",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AlexNetFeatures",
    "BasicBlock",
    "Bottleneck",
    "DCGANDiscriminator",
    "FIDInceptionV3",
    "FrozenBatchNorm2d",
    "MultiscaleDiscriminator",
    "NLayerDiscriminator",
    "NoiseBatchNorm2d",
    "ResBlock",
    "ResNet",
    "ResNetFPN",
    "UNet",
    "VGGFeatures",
    "WeightFileError",
    "alexnet_layer_names",
    "alexnet_official_shapes",
    "check_state_dict",
    "convert_frozen_batchnorm",
    "detectron2_resnet_fpn_rules",
    "detectron2_resnet_rules",
    "ema_copy",
    "ema_update",
    "feature_matching_loss",
    "frozen_batch_norm",
    "hinge_d_loss",
    "hinge_g_loss",
    "load_alexnet",
    "load_inception",
    "load_resnet",
    "load_vgg",
    "noise_batch_norm",
    "nonsaturating_d_loss",
    "nonsaturating_g_loss",
    "r1_penalty",
    "read_weight_file",
    "remap_keys",
    "resnet",
    "spectral_norm",
    "spectral_norm_rules",
    "state_dict_from",
    "strict_load",
    "synsin_unet_rules",
    "vgg_layer_names",
    "vgg_official_shapes",
]
