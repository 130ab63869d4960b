"""AlexNet convolutional features at the LPIPS "alex" taps, torchvision's layout.

Dimension names: N batch, H/W image height/width. ``features`` is indexed exactly as torchvision's
``alexnet().features`` (``conv1`` = ``features.0`` (64, 11x11, stride 4, pad 2), ``relu1`` = ``features.1``,
``pool1`` = ``features.2`` (3x3, stride 2), ``conv2`` = ``features.3`` (192, 5x5, pad 2), ``relu2`` = 4,
``pool2`` = 5, ``conv3`` = 6 (384), ``relu3`` = 7, ``conv4`` = 8 (256), ``relu4`` = 9, ``conv5`` = 10 (256),
``relu5`` = 11, ``pool5`` = 12), so ``alexnet-*.pth`` loads with :func:`lib3d.nn.load_alexnet`. LPIPS's
"alex" network taps ``relu1`` .. ``relu5``.
"""

from __future__ import annotations

from collections.abc import Sequence

from lib3d.nn.vgg import _TapNet

__all__ = ["AlexNetFeatures", "alexnet_layer_names", "alexnet_official_shapes"]

# (name, spec): conv spec = ("conv", cin, cout, kernel, stride, padding); pool spec = ("pool", kernel, stride)
_LAYERS = [
    ("conv1", ("conv", 3, 64, 11, 4, 2)), ("relu1", ("relu",)), ("pool1", ("pool", 3, 2)),
    ("conv2", ("conv", 64, 192, 5, 1, 2)), ("relu2", ("relu",)), ("pool2", ("pool", 3, 2)),
    ("conv3", ("conv", 192, 384, 3, 1, 1)), ("relu3", ("relu",)),
    ("conv4", ("conv", 384, 256, 3, 1, 1)), ("relu4", ("relu",)),
    ("conv5", ("conv", 256, 256, 3, 1, 1)), ("relu5", ("relu",)), ("pool5", ("pool", 3, 2)),
]


def alexnet_layer_names() -> tuple[str, ...]:
    """Names of ``features[0], features[1], ...`` (``"conv1", "relu1", "pool1", ...``)."""
    return tuple(n for n, _ in _LAYERS)


def alexnet_official_shapes() -> dict[str, tuple[int, ...]]:
    """The key -> shape table of torchvision's ``alexnet()`` state dict (1000 classes)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for idx, (_, spec) in enumerate(_LAYERS):
        if spec[0] == "conv":
            shapes[f"features.{idx}.weight"] = (spec[2], spec[1], spec[3], spec[3])
            shapes[f"features.{idx}.bias"] = (spec[2],)
    for idx, (cin, cout) in zip((1, 4, 6), ((256 * 6 * 6, 4096), (4096, 4096), (4096, 1000))):
        shapes[f"classifier.{idx}.weight"] = (cout, cin)
        shapes[f"classifier.{idx}.bias"] = (cout,)
    return shapes


class AlexNetFeatures(_TapNet):
    """Frozen (by default) AlexNet features at named taps.

    Args:
        taps: layer names (see :func:`alexnet_layer_names`), returned in this order.
        normalize_input: apply ImageNet mean/std to ``[0, 1]`` inputs (LPIPS applies its own scaling
            layer instead: pass ``False`` there).
        requires_grad: whether the parameters train.

    Attributes:
        out_channels: ``{tap: channels}`` (relu1..relu5: 64, 192, 384, 256, 256).
    """

    def __init__(self, taps: Sequence[str] = ("relu1", "relu2", "relu3", "relu4", "relu5"),
                 normalize_input: bool = True, requires_grad: bool = False):
        super().__init__()
        self._setup(_LAYERS, taps, normalize_input, requires_grad)
        width, c = {}, 3
        for name, spec in _LAYERS:
            c = spec[2] if spec[0] == "conv" else c
            width[name] = c
        self.out_channels = {t: width[t] for t in self.taps}
