"""Multimodal Split Attention Fusion (Su et al., 2020), adapted to image + landmark-prior maps.

Each modality's C channels are split into ``groups`` blocks; the blocks of both modalities
are summed and pooled into one channel descriptor; a shared bottleneck followed by one
head per modality gives per-channel logits; a softmax over the modalities turns them into
attention weights that reweight each modality's channels before they are summed.

:class:`FusionBlock` wraps MSAF residually, ``x + proj(MSAF(x, prior))`` with ``proj``
zero-initialised, so at step 0 the network is exactly its image-only backbone (a trained
RRDB keeps its output) and the prior is learned as a correction. Faces without landmarks never
reach it (AffectSRNet passes the others alone).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MSAF(nn.Module):
    """Split attention over M modalities with equal channel counts; returns the fused C-channel map."""

    def __init__(self, channels: int, num_modalities: int = 2, groups: int = 4, reduction: int = 4):
        super().__init__()
        if channels % groups:
            raise ValueError(f"channels ({channels}) must be divisible by groups ({groups})")
        self.m, self.groups = num_modalities, groups
        block = channels // groups
        hidden = max(block // reduction, 8)
        self.squeeze = nn.Sequential(nn.Linear(block, hidden), nn.ReLU(inplace=True))
        # one excitation head per modality and group: logits for every channel of that block
        self.excite = nn.Linear(hidden, num_modalities * channels)

    def attention(self, *feats: torch.Tensor) -> torch.Tensor:
        """B x M x C weights of each modality's channels (a softmax over the modalities)."""
        if len(feats) != self.m:
            raise ValueError(f"MSAF expects {self.m} modalities, got {len(feats)}")
        c = feats[0].shape[1]  # the batch is -1 in the views below: it may be 0 in an exported graph
        # sum over modalities and channel groups, pool over space -> B x (C/g); pooling first (it is
        # linear) reads each map once instead of stacking them into a B x M x C x H x W copy
        pooled = torch.stack([f.mean((-2, -1)) for f in feats], 1)  # B x M x C
        joint = pooled.view(-1, self.m * self.groups, c // self.groups).sum(1)
        return self.excite(self.squeeze(joint)).view(-1, self.m, c).softmax(1)

    def forward(self, *feats: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing() and self.m == 2:
            return self.pair(*feats)
        attn = self.attention(*feats)[..., None, None]
        out = feats[0] * attn[:, 0]
        for k in range(1, self.m):
            out = torch.addcmul(out, feats[k], attn[:, k])
        return out

    def pair(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` of two modalities as an exported graph runs it fastest, the same numbers to float rounding:
        one GlobalAveragePool per map (ONNX Runtime runs ReduceMean outside its blocked layout), the sum over channel
        groups folded into ``squeeze``'s weight (tiled per group), and the two-way softmax as ``a = sigmoid(l0 - l1)``
        with the logit difference as one Gemm, so ``a x + (1 - a) prior = prior + a (x - prior)``. Every size is a
        constant but the batch (-1: it may be 0 faces), so the graph computes no shapes: ~11 nodes instead of ~27."""
        pooled = (F.adaptive_avg_pool2d(x, 1) + F.adaptive_avg_pool2d(prior, 1)).flatten(1)  # B x C
        lin = self.squeeze[0]
        hidden = F.relu(F.linear(pooled, torch.cat([lin.weight] * self.groups, 1), lin.bias))
        w = self.excite.weight.view(2, -1, self.excite.in_features)  # modality x C x hidden
        b = self.excite.bias.view(2, -1)
        a = torch.sigmoid(F.linear(hidden, w[0] - w[1], b[0] - b[1]))[..., None, None]  # B x C x 1 x 1
        return prior + a * (x - prior)


def conv1x1_channels_last(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 1x1 ``conv`` of a channels-last map as one matmul over its channels (``F.linear`` on the B x H x W x C view),
    returned as the NCHW view of a channels-last result: the same numbers without the convolution's set-up, which
    is most of its cost on the small maps of the prior and the -lite fusions (~50 us a call on a 2-core CPU)."""
    y = F.linear(x.permute(0, 2, 3, 1), conv.weight.view(conv.out_channels, -1), conv.bias)
    return y.permute(0, 3, 1, 2)


# Below this many pixels a fusion at inference runs MSAF's two-modality form (:meth:`MSAF.pair`: a sigmoid instead of
# the softmax, ~11 ops) and the 1x1 conv, above it the attention folded into the conv (:meth:`FusionBlock._folded`,
# which writes one map where the plain form writes four). Measured (2 threads, each call right after a forward, as in
# a model: README speed tables' machine, 2026-11-30): 16x16x32 pair 273 us, folded 413; 32x32 even; 64x128 px folded
# 2.2-3.4x faster.
SMALL_MAP = 32 * 32


class FusionBlock(nn.Module):
    """Residual fusion of an image feature map with a prior map of the same size."""

    def __init__(self, channels: int, mode: str = "msaf", groups: int = 4):
        super().__init__()
        self.mode = mode
        if mode == "msaf":
            self.fuse = MSAF(channels, 2, groups)
            fused = channels
        elif mode == "concat":  # ablation: plain concatenation, no attention
            self.fuse = None
            fused = 2 * channels
        else:
            raise ValueError(f"unknown fusion {mode!r}: use 'msaf' or 'concat'")
        self.proj = nn.Conv2d(fused, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        if self.fuse is None:
            return x + self.proj(torch.cat([x, prior], 1))
        # the folded form is for inference: training keeps the form it was trained in, autocast would mix dtypes in
        # its in-place matmul, and ONNX Runtime runs both forms as fast (a paired A/B): export the plain one
        if torch.is_grad_enabled() or torch.is_autocast_enabled(x.device.type) or torch.jit.is_tracing():
            return x + self.proj(self.fuse(x, prior))
        if x.shape[-2] * x.shape[-1] < SMALL_MAP and self.fuse.m == 2:
            mixed = self.fuse.pair(x, prior)
            if mixed.is_contiguous(memory_format=torch.channels_last):
                return x + conv1x1_channels_last(mixed, self.proj)
            return x + self.proj(mixed)
        return self._folded(x, prior)

    def _folded(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """``x + proj(a0 x + a1 prior)`` as ``(I + W diag a0) x + (W diag a1) prior + b``: the attention folded into
        the 1x1 conv's weights, two batched matmuls that write one map where the plain form writes four."""
        a = self.fuse.attention(x, prior)  # B x 2 x C
        b, c, h, w = x.shape
        weight = self.proj.weight.view(c, c)  # out x in
        w0 = weight * a[:, :1] + torch.eye(c, dtype=x.dtype, device=x.device)  # B x out x in
        w1 = weight * a[:, 1:]
        if x.is_contiguous(memory_format=torch.channels_last):  # the output keeps x's layout, as x + proj(..) does
            xf, pf = (t.permute(0, 2, 3, 1).reshape(b, h * w, c) for t in (x, prior))  # B x HW x C (views if CL)
            out = torch.baddbmm(self.proj.bias, xf, w0.transpose(1, 2))
            return out.baddbmm_(pf, w1.transpose(1, 2)).view(b, h, w, c).permute(0, 3, 1, 2)
        out = torch.baddbmm(self.proj.bias[:, None], w0, x.reshape(b, c, h * w))
        return out.baddbmm_(w1, prior.reshape(b, c, h * w)).view(b, c, h, w)
