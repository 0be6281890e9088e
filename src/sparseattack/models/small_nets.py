"""The small convolutional nets of Carlini & Wagner (2017, Table 1), as used by SAPF and StrAttack.

- `CWMnistNet`: 1x28x28 -> conv32-conv32-pool-conv64-conv64-pool-fc200-fc200-fc10 (3x3 convs,
  ReLU, 2x2 max-pool, dropout 0.5 in training only).
- `CWMnistWideNet`: the CIFAR architecture's widths (conv64-conv64-pool-conv128-conv128-pool-fc256-
  fc256-fc10) adapted to 1x28x28: the second, independently trained Fashion-MNIST net of the
  transfer analysis (StrAttack Table 3).
- `CWCifarNet`: 3x32x32 -> conv64-conv64-pool-conv128-conv128-pool-fc256-fc256-fc10, the SAPF
  paper's "four convolution layers, three fully connected layers and two max-pooling layers".
Both return logits and take *normalized* inputs; wrap them with `Normalized` for [0, 1] images.
"""
from __future__ import annotations

from torch import nn


def _cw_net(in_channels: int, side: int, widths: tuple[int, int], hidden: int, num_classes: int) -> nn.Sequential:
    c1, c2 = widths
    side_out = ((side - 4) // 2 - 4) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, c1, 3), nn.ReLU(),
        nn.Conv2d(c1, c1, 3), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3), nn.ReLU(),
        nn.Conv2d(c2, c2, 3), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * side_out * side_out, hidden), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def CWMnistNet(num_classes: int = 10) -> nn.Sequential:  # noqa: N802 (architecture name)
    """C&W MNIST architecture for 1x28x28 inputs."""
    return _cw_net(1, 28, (32, 64), 200, num_classes)


def CWMnistWideNet(num_classes: int = 10) -> nn.Sequential:  # noqa: N802
    """C&W CIFAR widths (64, 128; fc 256) for 1x28x28 inputs."""
    return _cw_net(1, 28, (64, 128), 256, num_classes)


def CWCifarNet(num_classes: int = 10) -> nn.Sequential:  # noqa: N802
    """C&W CIFAR architecture for 3x32x32 inputs."""
    return _cw_net(3, 32, (64, 128), 256, num_classes)
