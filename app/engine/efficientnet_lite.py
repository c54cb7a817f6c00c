"""EfficientNet-Lite (Tan & Le 2019; the Lite variants of the TensorFlow TPU repository) in plain PyTorch.

Its module names and tensor shapes are those of timm's ``tf_efficientnet_lite*`` (``conv_stem``, ``bn1``,
``blocks.2.1.conv_dw``, ``conv_head``, ``bn2``, ``classifier``), so the model cards, the published layer maps and
weights remapped for timm all apply unchanged; ``tests/engine/test_efficientnet_lite.py`` checks the outputs match.
Built here rather than through timm because importing timm imports torchvision and with it ``torch._dynamo``,
about 1.3 s of every start-up for a network of thirty layers.

The "tf" in those names is TensorFlow's "same" padding: a stride-2 convolution pads more on the bottom and right
than on the top and left, unlike PyTorch's symmetric padding. The ImageNet weights were trained with it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# (block kind, repeats, kernel, stride, expansion, output channels) of the seven stages at width and depth 1.0.
_STAGES = (
    ("depthwise", 1, 3, 1, 1, 16),
    ("inverted", 2, 3, 2, 6, 24),
    ("inverted", 2, 5, 2, 6, 40),
    ("inverted", 3, 3, 2, 6, 80),
    ("inverted", 3, 5, 1, 6, 112),
    ("inverted", 4, 5, 2, 6, 192),
    ("inverted", 1, 3, 1, 6, 320),
)
# (width multiplier, depth multiplier) per variant; Lite keeps the stem at 32 and the head at 1280 channels.
VARIANTS = {"efficientnet_lite0": (1.0, 1.0), "efficientnet_lite1": (1.0, 1.1), "efficientnet_lite2": (1.1, 1.2)}
_STEM, _HEAD = 32, 1280
_BN_EPS = 1e-3  # TensorFlow's default, which the weights were trained with


def efficientnet_lite(variant: str, num_classes: int = 1000) -> nn.Module:
    """A freshly initialised EfficientNet-Lite0, -Lite1 or -Lite2 (``variant`` as in ``VARIANTS``)."""
    try:
        width, depth = VARIANTS[variant]
    except KeyError:
        raise ValueError(f"unknown EfficientNet-Lite variant '{variant}'; known: {', '.join(VARIANTS)}") from None
    return EfficientNetLite(width, depth, num_classes)


class EfficientNetLite(nn.Module):
    def __init__(self, width: float, depth: float, num_classes: int) -> None:
        super().__init__()
        self.conv_stem = SameConv2d(3, _STEM, 3, stride=2)
        self.bn1 = BatchNormAct(_STEM)
        stages = []
        channels = _STEM
        last = len(_STAGES) - 1
        for index, (kind, repeats, kernel, stride, expansion, out) in enumerate(_STAGES):
            out = _round_channels(out * width)
            # Lite scales the depth of every stage but the first and the last.
            repeats = repeats if index in (0, last) else math.ceil(repeats * depth)
            blocks: list[nn.Module] = []
            for repeat in range(repeats):
                block_stride = stride if repeat == 0 else 1
                if kind == "depthwise":
                    blocks.append(DepthwiseSeparable(channels, out, kernel, block_stride))
                else:
                    blocks.append(InvertedResidual(channels, out, kernel, block_stride, expansion))
                channels = out
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = nn.Conv2d(channels, _HEAD, 1, bias=False)
        self.bn2 = BatchNormAct(_HEAD)
        self.global_pool = GlobalAveragePool()
        self.classifier = nn.Linear(_HEAD, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.bn1(self.conv_stem(x)))
        x = self.bn2(self.conv_head(x))
        return self.classifier(self.global_pool(x))


class GlobalAveragePool(nn.Module):
    """Each channel's mean, as a flat (N, C) vector."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.pool(x))


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "same" padding: ``ceil(size / stride)`` outputs, the extra padding of an
    uneven total on the bottom and right. Padding is worked out from the input, so any input size works."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        symmetric = stride == 1 and kernel % 2 == 1  # TF and PyTorch agree here, so pad inside the convolution
        super().__init__(
            in_channels,
            out_channels,
            kernel,
            stride=stride,
            padding=(kernel - 1) // 2 if symmetric else 0,
            groups=groups,
            bias=False,
        )
        self.symmetric = symmetric

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.symmetric:
            height, width = x.shape[-2:]
            pad_h = _same_padding(height, self.kernel_size[0], self.stride[0])
            pad_w = _same_padding(width, self.kernel_size[1], self.stride[1])
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return super().forward(x)


class BatchNormAct(nn.BatchNorm2d):
    """Batch norm followed by ReLU6 (or nothing): one module, as in timm, so that a layer named ``bn1`` is what
    the network passes on, after the non-linearity."""

    def __init__(self, channels: int, activate: bool = True) -> None:
        super().__init__(channels, eps=_BN_EPS)
        self.act: nn.Module = nn.ReLU6(inplace=True) if activate else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class DepthwiseSeparable(nn.Module):
    """Depthwise convolution, then a 1×1 projection; a shortcut when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = SameConv2d(in_channels, in_channels, kernel, stride=stride, groups=in_channels)
        self.bn1 = BatchNormAct(in_channels)
        self.conv_pw = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn2 = BatchNormAct(out_channels, activate=False)
        self.has_skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))
        return out + x if self.has_skip else out


class InvertedResidual(nn.Module):
    """MBConv: 1×1 expansion, depthwise convolution, linear 1×1 projection; a shortcut when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.conv_pw = nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.bn1 = BatchNormAct(hidden)
        self.conv_dw = SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden)
        self.bn2 = BatchNormAct(hidden)
        self.conv_pwl = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self.bn3 = BatchNormAct(out_channels, activate=False)
        self.has_skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv_pwl(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))))
        return out + x if self.has_skip else out


def _same_padding(size: int, kernel: int, stride: int) -> int:
    return max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)


def _round_channels(channels: float, divisor: int = 8) -> int:
    """Channels scaled by a width multiplier, to a multiple of 8 and never more than 10 % below the scaled value."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded
