"""SRCNN (Dong et al., ECCV 2014 / TPAMI 2016): the first CNN super-resolver, as a baseline.

Three convolutions on the bicubic-upsampled image: 9x9 patch extraction (n1 = 64), 1x1 (the paper's
9-1-5 setting) non-linear mapping (n2 = 32), 5x5 reconstruction. Padding keeps the size (the paper's
valid convolutions shrink the output by 12 px, which a face upscaler cannot afford).

One deliberate change: the network predicts the residual over the bicubic input (as VDSR later
did), so that under our short CPU training budgets it starts from bicubic instead of from a grey
image; with the paper's 10^8 back-propagations that would not matter. It takes no face prior.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn

from .bicubic import bicubic_upsample


@dataclass(frozen=True)
class SRCNNConfig:
    arch: ClassVar[str] = "srcnn"
    scale: int = 4
    n1: int = 64
    n2: int = 32
    f1: int = 9
    f2: int = 1
    f3: int = 5
    in_size: int = 32

    def __post_init__(self) -> None:
        if self.scale not in (2, 4, 8):
            raise ValueError(f"scale must be 2, 4 or 8, got {self.scale}")

    def to_dict(self) -> dict:
        return asdict(self)


class SRCNN(nn.Module):
    uses_landmarks = False
    num_landmarks = 478  # accepted and ignored, so every model has the same call signature

    def __init__(self, config: SRCNNConfig | None = None):
        super().__init__()
        self.config = c = config or SRCNNConfig()
        self.body = nn.Sequential(
            nn.Conv2d(3, c.n1, c.f1, padding=c.f1 // 2), nn.ReLU(inplace=True),
            nn.Conv2d(c.n1, c.n2, c.f2, padding=c.f2 // 2), nn.ReLU(inplace=True),
            nn.Conv2d(c.n2, 3, c.f3, padding=c.f3 // 2),
        )

    @property
    def scale(self) -> int:
        return self.config.scale

    def forward(self, lr: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        # torch's bicubic (a = -0.75) differs slightly from PIL's; the residual absorbs it
        up = bicubic_upsample(lr, self.scale)  # an exported graph gets the exact conv form, not a slow cubic Resize
        return up + self.body(up)
