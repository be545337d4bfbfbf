"""FSRNet-style baseline (Chen et al., CVPR 2018), small enough to train on a CPU.

    LR ─bicubic─► up ─coarse SR net─► coarse ─┬─ fine SR encoder ─────────────┐
                   │                          └─ prior estimation (hourglass) ─┴ concat ─ fine SR decoder ─(+ up)─► SR
                   │                                  └─► keypoint heatmaps (supervised)

As in FSRNet everything works at the HR size (the LR face is bicubic-upsampled first) and
the face prior is *estimated from the coarse SR image*, not given: ``landmarks`` is accepted
for the common interface and ignored. To fit a 2-core CPU budget the coarse net, the fine
encoder and the decoder run at HR/2 (a stride-2 conv in, a pixel shuffle out) and the prior
hourglass at HR/4; FSRNet's parsing maps are left out (we have no face parsing labels), its
landmark heatmaps are :mod:`.heatmaps`' face-part keypoints. Both image outputs are residuals
to the bicubic upsampling with zero-initialised last layers, so training starts at bicubic.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .bicubic import bicubic_upsample
from .face_graph import NUM_LANDMARKS
from .heatmaps import NUM_KEYPOINTS, HeatmapEstimator, ResBlock, heatmap_loss


@dataclass(frozen=True)
class FSRNetConfig:
    """Everything needed to rebuild an FSRNet; stored inside every weights file."""

    arch: ClassVar[str] = "fsrnet"
    scale: int = 4
    in_size: int = 32  # the LR face side the preset is trained for (any size runs)
    nf: int = 32  # width of the coarse net, fine encoder and decoder (all at HR/2)
    coarse_blocks: int = 3
    encoder_blocks: int = 5
    decoder_blocks: int = 3
    prior_nf: int = 48  # width of the prior estimation hourglass (at HR/4)
    hourglass_depth: int = 2
    hr_nf: int = 16  # channels of the last conv at full HR size
    heatmap_sigma: float = 1.0  # Gaussian sigma of the keypoint heatmaps, in heatmap (HR/4) pixels
    heatmap_weight: float = 0.05  # weight of the normalised heatmap loss (about 1 for a zero prediction)
    coarse_weight: float = 1.0  # weight of the coarse SR's L1 (FSRNet weights coarse and fine alike)

    def __post_init__(self) -> None:
        if self.scale not in (4, 8):
            raise ValueError(f"scale must be 4 or 8, got {self.scale}")

    def to_dict(self) -> dict:
        return asdict(self)


def _to_hr(nf: int, out_nf: int) -> nn.Sequential:
    """HR/2 features -> HR features via a pixel shuffle (4x fewer HR convs than FSRNet's deconv)."""
    return nn.Sequential(nn.Conv2d(nf, 4 * out_nf, 3, 1, 1), nn.PixelShuffle(2), nn.LeakyReLU(0.2, inplace=True))


def _zero_init(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class FSRNet(nn.Module):
    uses_landmarks = False  # FSRNet estimates its prior from the image
    num_landmarks = NUM_LANDMARKS

    def __init__(self, config: FSRNetConfig | None = None):
        super().__init__()
        self.config = c = config or FSRNetConfig()
        act = nn.LeakyReLU(0.2, inplace=True)
        self.coarse = nn.Sequential(
            nn.Conv2d(3, c.nf, 3, 2, 1), act, *[ResBlock(c.nf) for _ in range(c.coarse_blocks)],
            _to_hr(c.nf, c.hr_nf), _zero_init(nn.Conv2d(c.hr_nf, 3, 3, 1, 1)))
        self.encoder = nn.Sequential(
            nn.Conv2d(3, c.nf, 3, 2, 1), act, *[ResBlock(c.nf) for _ in range(c.encoder_blocks)])
        self.prior = HeatmapEstimator(c.prior_nf, c.hourglass_depth)
        self.decoder = nn.Sequential(
            nn.Conv2d(c.nf + c.prior_nf, c.nf, 3, 1, 1), act, *[ResBlock(c.nf) for _ in range(c.decoder_blocks)],
            _to_hr(c.nf, c.hr_nf), _zero_init(nn.Conv2d(c.hr_nf, 3, 3, 1, 1)))
        self.num_keypoints = NUM_KEYPOINTS

    @property
    def scale(self) -> int:
        return self.config.scale

    def forward(self, lr: torch.Tensor, landmarks: torch.Tensor | None = None, return_aux: bool = False):
        """lr: B x 3 x h x w in [0, 1] -> SR B x 3 x (h*scale) x (w*scale), unclamped.

        With ``return_aux``: ``(sr, {"coarse": coarse SR, "heatmaps": B x K x H/4 x W/4})``.
        """
        if lr.ndim != 4 or lr.shape[1] != 3:
            raise ValueError(f"lr must be B x 3 x h x w, got {tuple(lr.shape)}")
        up = bicubic_upsample(lr, self.scale)  # an exported graph gets the exact conv form, not a slow cubic Resize
        coarse = up + self.coarse(up)
        enc = self.encoder(coarse)
        heatmaps, prior = self.prior(coarse)
        prior = F.interpolate(prior, size=enc.shape[-2:], mode="bilinear", align_corners=False)
        sr = up + self.decoder(torch.cat([enc, prior], 1))
        return (sr, {"coarse": coarse, "heatmaps": heatmaps}) if return_aux else sr

    def aux_loss(self, aux: dict[str, torch.Tensor], hr: torch.Tensor, lm_hr: torch.Tensor | None) -> torch.Tensor:
        """The prior-estimation supervision the training loop adds to L1(sr, hr):
        coarse_weight x L1(coarse, hr) + heatmap_weight x heatmap loss (faces with HR landmarks)."""
        c = self.config
        return (c.coarse_weight * F.l1_loss(aux["coarse"].float(), hr)
                + c.heatmap_weight * heatmap_loss(aux["heatmaps"], lm_hr, c.heatmap_sigma))
