"""AffectSRNet: RRDB backbone + face-graph GCN prior + MSAF fusion at every scale (or the first ``fusion_stages``).

    LR ──conv_first──RRDB trunk──trunk_conv──(+)──[fuse 0]──up x2──[fuse 1]──up x2──[fuse 2]──HRconv──conv_last── SR
                                                      ▲                 ▲                 ▲
    landmarks (B x 478 x 3) ── GCN over the face graph ── prior map at each scale (spatial or pooled)

Fusion blocks are zero-initialised residuals, so a fresh AffectSRNet (or one whose backbone
was loaded from a trained RRDB) outputs exactly what its RRDB outputs. Faces without
landmarks (NaN rows, or ``landmarks=None``) go through the image path alone.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn

from .bicubic import bicubic_upsample
from .face_graph import NUM_LANDMARKS, mediapipe_face_graph
from .msaf import FusionBlock
from .prior import PooledPrior, SpatialPrior
from .rrdb import RRDBNet

PRIORS = ("spatial", "pooled", "none")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; stored inside every weights file."""

    arch: ClassVar[str] = "affectsrnet"
    scale: int = 4
    nf: int = 64  # backbone width
    nb: int = 23  # number of RRDB blocks
    gc: int = 32  # dense-block growth channels
    prior: str = "spatial"  # 'spatial' (ours), 'pooled' (prototype) or 'none' (plain RRDB)
    fusion: str = "msaf"  # 'msaf' or 'concat' (ablation)
    gcn_dims: tuple[int, ...] = (64, 128, 128)
    graph: bool = True  # False: the GCN sees no edges (identity adjacency = an MLP per landmark); the 'no GCN' ablation
    msaf_groups: int = 4
    splat_sigma: float = 0.02  # Gaussian width of the spatial prior, as a fraction of the side
    splat_channels: int = 16  # spatial prior: channels splatted per scale
    pooled_map: tuple[int, int] = (8, 16)  # pooled prior: channels, side of the reshaped code
    in_size: int = 32  # the LR face side the preset is trained for (any size runs)
    residual: bool = False  # add the bicubic-upsampled input to the output (as SRCNN/FSRNet/DIC do); conv_last starts at 0
    # speed (issue 17, README speed tables); the defaults are the network the first weights were trained as, so files
    # written before these fields existed load and run unchanged
    fusion_stages: int = 0  # fuse after the trunk and the first k-1 x2 upsamplings only; 0 = after every one
    prior_kernel: int = 3  # side of the spatial prior's head conv (1: a 1x1 conv, 9x cheaper)
    splat_once: bool = False  # spatial prior: splat at the largest fused scale only, average-pool it for the others

    def __post_init__(self) -> None:
        if self.scale not in (2, 4, 8):
            raise ValueError(f"scale must be 2, 4 or 8, got {self.scale}")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {self.prior!r}")
        if not 0 <= self.fusion_stages <= self.num_stages:
            raise ValueError(f"fusion_stages must be 0..{self.num_stages} at x{self.scale}, got {self.fusion_stages}")
        if self.prior_kernel not in (1, 3):
            raise ValueError(f"prior_kernel must be 1 or 3, got {self.prior_kernel}")
        object.__setattr__(self, "gcn_dims", tuple(self.gcn_dims))
        object.__setattr__(self, "pooled_map", tuple(self.pooled_map))

    @property
    def num_stages(self) -> int:
        """Stages where the prior can be fused: after the trunk and after each x2 upsampling."""
        return int(math.log2(self.scale)) + 1

    @property
    def fused_stages(self) -> int:
        return self.fusion_stages or self.num_stages

    def to_dict(self) -> dict:
        return asdict(self)


def has_landmarks(landmarks: torch.Tensor) -> torch.Tensor:
    """B bools: the faces whose 478 x 3 landmark rows are all finite (a NaN row means "no landmarks").

    A traced graph tests the same in 4 ONNX nodes instead of 11: ``x - x`` is exactly 0 where x is finite and NaN
    where it is NaN or infinite, so a face's sum of them is 0 exactly when every value is finite."""
    if torch.jit.is_tracing():
        return (landmarks - landmarks).flatten(1).sum(1) == 0
    return torch.isfinite(landmarks).flatten(1).all(1)


class AffectSRNet(nn.Module):
    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config = config or ModelConfig()
        c = config
        self.backbone = RRDBNet(3, 3, c.nf, c.nb, c.gc, c.scale)
        if c.residual:  # start exactly at bicubic: the network learns the detail bicubic misses
            nn.init.zeros_(self.backbone.conv_last.weight)
            nn.init.zeros_(self.backbone.conv_last.bias)
        self.num_landmarks = NUM_LANDMARKS
        num_scales = c.fused_stages
        if c.prior == "none":
            self.prior, self.fusions = None, None
            return
        adj = mediapipe_face_graph().normalized_adjacency() if c.graph else torch.eye(NUM_LANDMARKS)
        if c.prior == "spatial":
            self.prior = SpatialPrior(adj, c.gcn_dims, c.nf, num_scales, c.splat_sigma, c.splat_channels,
                                      c.prior_kernel, c.splat_once)
        else:
            self.prior = PooledPrior(adj, c.gcn_dims, c.nf, num_scales, *c.pooled_map)
        self.fusions = nn.ModuleList(FusionBlock(c.nf, c.fusion, c.msaf_groups) for _ in range(num_scales))

    @property
    def scale(self) -> int:
        return self.config.scale

    @property
    def uses_landmarks(self) -> bool:
        return self.prior is not None

    def load_backbone(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Initialise the RRDB from an ESRGAN-named state dict (see ``rrdb.esrgan_state_dict``).

        x4 loads with ``strict=True``; for x8 the extra ``upconv3`` (absent from ESRGAN x4
        checkpoints) keeps its fresh initialisation, and nothing else may be missing.
        """
        own = self.backbone.state_dict()
        wrong = [k for k, v in state_dict.items() if k in own and own[k].shape != v.shape]
        if wrong:
            raise ValueError(f"checkpoint does not match this RRDB (nf={self.config.nf}, nb={self.config.nb}, "
                             f"gc={self.config.gc}): shape mismatch at {wrong[:3]}")
        missing, unexpected = self.backbone.load_state_dict(state_dict, strict=False)
        allowed = {"upconv3.weight", "upconv3.bias"} if self.scale == 8 else set()
        if unexpected or set(missing) - allowed:
            raise ValueError(f"checkpoint does not match this RRDB (nf={self.config.nf}, nb={self.config.nb}, "
                             f"gc={self.config.gc}): missing {sorted(set(missing) - allowed)[:5]}, "
                             f"unexpected {sorted(unexpected)[:5]}")

    def forward(self, lr: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        """lr: B x 3 x h x w RGB in [0, 1]; landmarks: B x 478 x 3 (x, y in [0, 1] of lr), NaN rows = none."""
        out = self._forward(lr, landmarks)
        if self.config.residual:
            out = out + bicubic_upsample(lr, self.scale)  # (an exported graph gets the fast exact form)
        return out

    def _forward(self, lr: torch.Tensor, landmarks: torch.Tensor | None) -> torch.Tensor:
        if self.prior is None or landmarks is None:
            return self.backbone(lr)
        if landmarks.shape[1:] != (self.num_landmarks, 3) or landmarks.shape[0] != lr.shape[0]:
            raise ValueError(f"landmarks must be {lr.shape[0]} x {self.num_landmarks} x 3, got {tuple(landmarks.shape)}")
        # a traced or compiled graph cannot branch on the data: it always gathers, and runs the prior on 0 faces for
        # a batch without landmarks
        branches = not (torch.jit.is_tracing() or torch.compiler.is_compiling())
        if branches and len(landmarks) and bool(torch.isfinite(landmarks).all()):
            idx = None  # every face has landmarks (the common case, tested in 2 ops): no gather/scatter
        else:
            idx = has_landmarks(landmarks).nonzero()[:, 0]  # only the faces with landmarks: prior and fusions
            if branches and len(idx) == 0:
                return self.backbone(lr)
        h, w = lr.shape[-2:]
        sizes = [(h * 2**k, w * 2**k) for k in range(len(self.fusions))]
        priors = self.prior((landmarks if idx is None else landmarks.index_select(0, idx)).to(lr.dtype), sizes)

        def fuse(i: int, fea: torch.Tensor) -> torch.Tensor:
            if i >= len(priors):
                return fea
            if idx is None:
                return self.fusions[i](fea, priors[i])
            return torch.index_put(fea, (idx,), self.fusions[i](fea.index_select(0, idx), priors[i]))

        return self.backbone(lr, fuse)
