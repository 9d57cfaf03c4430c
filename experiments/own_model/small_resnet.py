"""A small residual CNN of one's own: the model of README, "Use your own model".

It is written the way models in the wild are, including the ways that defeat module hooks:
functional ReLUs (``F.relu`` in place, ``torch.relu``) and a residual block that calls one
``nn.ReLU`` module twice per forward. Its children are declared in another order than the
forward calls them (``head`` first), so a layer order read from the declarations is wrong.

    [model]
    factory = "small_resnet:small_resnet"   # this file, found beside the spec
    args = { width = 8 }
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and an identity shortcut; ``relu`` is called twice."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class SmallResNet(nn.Module):
    """Stem, residual block, strided convolution, residual block, global average, linear head."""

    def __init__(self, width: int = 8, num_classes: int = 2):
        super().__init__()
        self.head = nn.Linear(2 * width, num_classes)
        self.stem = nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False)
        self.stem_norm = nn.BatchNorm2d(width)
        self.block1 = ResidualBlock(width)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.block2 = ResidualBlock(2 * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_norm(self.stem(x)), inplace=True)
        x = self.block1(x)
        x = torch.relu(self.down(x))
        x = self.block2(x)
        return self.head(x.mean(dim=(2, 3)))


def small_resnet(width: int = 8, num_classes: int = 2) -> SmallResNet:
    """The factory a spec or ``--model small_resnet:small_resnet`` names."""
    return SmallResNet(width=width, num_classes=num_classes)
