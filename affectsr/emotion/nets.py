"""FER network bodies trained here from scratch: a VGG-style net and a small ResNet.

Both take the normalised grey ``B x 1 x S x S`` in [-1, 1] that
:func:`~affectsr.emotion.classifier.to_model_input` makes and return ``(logits, features)``,
``features`` being the last stage's map before global pooling (the penultimate
representation the emotion loss compares), like :class:`~affectsr.emotion.classifier.MiniXception`.
They are built from a :class:`~affectsr.emotion.classifier.ClassifierConfig` by its ``arch``
field: ``stem`` is the first conv's width (ResNet only), ``widths`` the stage widths,
``depths`` the convs (VGG) or basic blocks (ResNet) per stage, ``dropout`` the rate before the
linear classifier. Which body and which sizes were chosen, and why, is in the model cards
(``affectsr/weights/fer-teacher-*.md``, ``fer-judge-*.md``).
"""
from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn


class NetConfig(Protocol):
    """The fields of :class:`~affectsr.emotion.classifier.ClassifierConfig` the bodies read.

    A protocol rather than an import: the classifier module builds these bodies, so importing
    its config here would make the two modules import each other.
    """

    arch: str
    num_classes: int
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    stem: int
    bn_eps: float
    dropout: float

__all__ = ["BasicBlock", "NetConfig", "ResNet", "VGGNet", "conv_bn_relu"]


def conv_bn_relu(cin: int, cout: int, stride: int = 1, eps: float = 1e-5) -> nn.Sequential:
    """3x3 conv (no bias: BN follows), BatchNorm, ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout, eps=eps), nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016): two 3x3 conv+BN, identity or strided 1x1 conv+BN shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1, eps: float = 1e-5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout, eps=eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=eps)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=eps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class _Head(nn.Module):
    """Global average pooling, dropout, linear: logits for any input size."""

    def __init__(self, width: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(features.mean(dim=(2, 3))))


def _check(config: NetConfig) -> None:
    if not config.depths or len(config.depths) != len(config.widths) or min(config.depths) < 1:
        raise ValueError(f"{config.arch}: depths {config.depths} must give one count >= 1 per width {config.widths}")


class VGGNet(nn.Module):
    """VGG-style: per stage ``depths[i]`` conv-BN-ReLU at ``widths[i]``, 2x2 max pool between stages.

    Plain stacks of 3x3 convs with BN are what the strongest simple FER2013 nets use
    (e.g. Khaireddin & Chen 2021); at 40 px and widths 32-256 the last map is 5 x 5.
    """

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        _check(config)
        self.config = config
        layers: list[nn.Module] = []
        cin = 1
        for i, (width, depth) in enumerate(zip(config.widths, config.depths)):
            if i:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            for _ in range(depth):
                layers.append(conv_bn_relu(cin, width, eps=config.bn_eps))
                cin = width
        self.features = nn.Sequential(*layers)
        self.head = _Head(cin, config.num_classes, config.dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(x)
        return self.head(features), features


class ResNet(nn.Module):
    """Small ResNet: 3x3 stem conv at ``stem`` width, then ``depths[i]`` basic blocks per stage, stride 2 between stages."""

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        _check(config)
        self.config = config
        self.stem = conv_bn_relu(1, config.stem, eps=config.bn_eps)
        blocks: list[nn.Module] = []
        cin = config.stem
        for i, (width, depth) in enumerate(zip(config.widths, config.depths)):
            for j in range(depth):
                blocks.append(BasicBlock(cin, width, stride=2 if (i and not j) else 1, eps=config.bn_eps))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.head = _Head(cin, config.num_classes, config.dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.blocks(self.stem(x))
        return self.head(features), features
