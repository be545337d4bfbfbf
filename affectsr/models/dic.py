"""DIC-style baseline (Ma et al., CVPR 2020): SR and landmark estimation that take turns.

    LR ─head─► x ──► [recurrent SR block] ─► hidden_t ─tail─(+ bicubic)─► SR_t ─► landmark branch ─► heatmaps_t
                         ▲  ▲                                                                           │
                         │  └──────────── hidden_{t-1} (feedback)                                         │
                         └── part attention ◄── group into face parts (eyes, brows, nose, mouth, contour) ┘

One SR block and one landmark branch, each with shared weights, run ``steps`` times. From
the second step on, the previous step's heatmaps are grouped into :data:`.heatmaps.PARTS`
and become a softmax attention over per-part feature branches (DIC's attentive fusion), so
better landmarks steer the next recovery and the sharper image gives better landmarks.
Every step's SR and heatmaps are supervised. Like DIC, the network estimates its own
landmarks: ``landmarks`` is accepted for the common interface and ignored.

Made small for a 2-core CPU: the SR block is a few residual blocks (SRFBN's up/down
projection feedback block is left out) working at HR/4, where the heatmaps live, so the
attention needs no resampling (LR for x4; x8 starts with a x2 pixel shuffle, as DIC does).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .bicubic import bicubic_upsample
from .face_graph import NUM_LANDMARKS
from .heatmaps import (
    NUM_KEYPOINTS,
    NUM_PARTS,
    HeatmapEstimator,
    ResBlock,
    group_parts,
    heatmap_loss,
)


@dataclass(frozen=True)
class DICConfig:
    """Everything needed to rebuild a DIC; stored inside every weights file."""

    arch: ClassVar[str] = "dic"
    scale: int = 4
    in_size: int = 32  # the LR face side the preset is trained for (any size runs)
    nf: int = 48  # SR feature width (at HR/4)
    blocks: int = 4  # residual blocks in the recurrent SR block
    steps: int = 3  # SR <-> landmark iterations
    part_nf: int = 16  # channels of each face part's branch in the attentive fusion
    hg_nf: int = 32  # width of the landmark branch (hourglass at HR/4)
    hourglass_depth: int = 2
    hr_nf: int = 16  # channels of the last conv at full HR size
    attention_temperature: float = 4.0  # softmax sharpness over parts (part maps are in [0, 1])
    detach_attention: bool = False  # True: the SR loss does not reach the landmark branch via the attention
    heatmap_sigma: float = 1.0  # Gaussian sigma of the keypoint heatmaps, in heatmap (HR/4) pixels
    heatmap_weight: float = 0.05  # weight of the normalised heatmap loss (about 1 for a zero prediction)

    def __post_init__(self) -> None:
        if self.scale not in (4, 8):
            raise ValueError(f"scale must be 4 or 8, got {self.scale}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")

    def to_dict(self) -> dict:
        return asdict(self)


class PartAttentionFusion(nn.Module):
    """DIC's attentive fusion: one feature branch per face part, mixed by a softmax over parts.

    The branches are a grouped conv (one group per part) on a 1x1 expansion; where a part's
    map is high its branch dominates. Residual with a zero-initialised projection, so adding
    attention at step 2 starts as a no-op and is learned as a correction.
    """

    def __init__(self, nf: int, part_nf: int, temperature: float):
        super().__init__()
        self.temperature = temperature
        self.expand = nn.Sequential(nn.Conv2d(nf, NUM_PARTS * part_nf, 1), nn.LeakyReLU(0.2, inplace=True))
        self.branches = ResBlock(NUM_PARTS * part_nf, groups=NUM_PARTS)
        self.proj = nn.Conv2d(part_nf, nf, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        feats = self.branches(self.expand(x)).view(b, NUM_PARTS, -1, h, w)
        attn = (self.temperature * parts).softmax(1).unsqueeze(2)  # B x P x 1 x h x w
        return x + self.proj((feats * attn).sum(1))


class RecurrentSRBlock(nn.Module):
    """(input features, previous hidden state, part maps or None) -> new hidden state."""

    def __init__(self, c: DICConfig):
        super().__init__()
        self.compress = nn.Sequential(nn.Conv2d(2 * c.nf, c.nf, 1), nn.LeakyReLU(0.2, inplace=True))
        self.fusion = PartAttentionFusion(c.nf, c.part_nf, c.attention_temperature)
        self.body = nn.Sequential(*[ResBlock(c.nf) for _ in range(c.blocks)])

    def forward(self, x: torch.Tensor, hidden: torch.Tensor, parts: torch.Tensor | None) -> torch.Tensor:
        f = self.compress(torch.cat([x, hidden], 1))
        if parts is not None:
            f = self.fusion(f, parts)
        return self.body(f)


class DIC(nn.Module):
    uses_landmarks = False  # DIC estimates its landmarks from its own SR output
    num_landmarks = NUM_LANDMARKS

    def __init__(self, config: DICConfig | None = None):
        super().__init__()
        self.config = c = config or DICConfig()
        act = nn.LeakyReLU(0.2, inplace=True)
        if c.scale == 8:  # LR -> HR/4 = 2 x LR
            self.head = nn.Sequential(nn.Conv2d(3, 4 * c.nf, 3, 1, 1), nn.PixelShuffle(2), act)
        else:
            self.head = nn.Sequential(nn.Conv2d(3, c.nf, 3, 1, 1), act)
        self.block = RecurrentSRBlock(c)
        tail_last = nn.Conv2d(c.hr_nf, 3, 3, 1, 1)
        nn.init.zeros_(tail_last.weight)  # SR_t starts at bicubic
        nn.init.zeros_(tail_last.bias)
        self.tail = nn.Sequential(  # HR/4 -> HR/2 -> HR, pixel shuffles
            nn.Conv2d(c.nf, 4 * c.nf, 3, 1, 1), nn.PixelShuffle(2), act,
            nn.Conv2d(c.nf, 4 * c.hr_nf, 3, 1, 1), nn.PixelShuffle(2), act, tail_last)
        self.landmarks = HeatmapEstimator(c.hg_nf, c.hourglass_depth, feedback=True)
        self.num_keypoints = NUM_KEYPOINTS

    @property
    def scale(self) -> int:
        return self.config.scale

    def forward(self, lr: torch.Tensor, landmarks: torch.Tensor | None = None, return_aux: bool = False):
        """lr: B x 3 x h x w in [0, 1] -> the last step's SR, B x 3 x (h*scale) x (w*scale), unclamped.

        With ``return_aux``: ``(sr, {"sr": steps x B x 3 x H x W, "heatmaps": steps x B x K x H/4 x W/4})``.
        """
        if lr.ndim != 4 or lr.shape[1] != 3:
            raise ValueError(f"lr must be B x 3 x h x w, got {tuple(lr.shape)}")
        c = self.config
        up = bicubic_upsample(lr, self.scale)  # an exported graph gets the exact conv form, not a slow cubic Resize
        x = self.head(lr)
        hidden, heat, lm_hidden = x, None, None
        srs, heats = [], []
        for t in range(c.steps):
            hidden = self.block(x, hidden, None if heat is None else self._part_maps(heat))
            sr = up + self.tail(hidden)
            srs.append(sr)
            if return_aux or t < c.steps - 1:  # inference skips the last step's landmarks
                heat, lm_hidden = self.landmarks(sr, lm_hidden)
                heats.append(heat)
        sr = srs[-1]
        return (sr, {"sr": torch.stack(srs), "heatmaps": torch.stack(heats)}) if return_aux else sr

    def _part_maps(self, heat: torch.Tensor) -> torch.Tensor:
        """Previous step's heatmaps -> part maps; both are at HR/4, the SR feature size, for any input."""
        return group_parts(heat.detach() if self.config.detach_attention else heat)

    def aux_loss(self, aux: dict[str, torch.Tensor], hr: torch.Tensor, lm_hr: torch.Tensor | None) -> torch.Tensor:
        """Supervision on every step: mean over t of L1(SR_t, hr) + heatmap_weight x heatmap loss."""
        c = self.config
        steps = aux["sr"].shape[0]
        l1 = sum(F.l1_loss(aux["sr"][t].float(), hr) for t in range(steps)) / steps
        hm = sum(heatmap_loss(aux["heatmaps"][t], lm_hr, c.heatmap_sigma) for t in range(steps)) / steps
        return l1 + c.heatmap_weight * hm
