"""Landmark priors: encode the face graph with a GCN and turn it into feature maps.

Two variants (``ModelConfig.prior``):

* ``pooled`` - the AffectSRNet prototype: GCN, global mean pool over nodes, the code
  reshaped to a small map (``map_channels`` x ``map_size`` x ``map_size``), then resized and
  projected to each fusion scale. Node positions survive only through the code.
* ``spatial`` - ours: each node's GCN feature is splatted as a Gaussian at its (x, y) on
  every fusion scale's grid (plus a density channel), so expression geometry stays where
  it is in the image.

Landmarks are B x N x 3 (x, y in [0, 1] of the LR input, z as MediaPipe gives it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .gcn import GCN
from .msaf import conv1x1_channels_last


# exp(-80) = 2e-35, far below anything a float32 sum of features can register; flooring the exponent
# there keeps exp off the slow path that results under float32's normal range (x < -87) take on x86
# CPUs: most of a small Gaussian's grid is that far out, and the floor makes the splat ~4x faster
EXP_FLOOR = -80.0


def pixel_centres(n: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """The n pixel centres (i + 0.5) / n of a unit side."""
    return (torch.arange(n, device=device, dtype=dtype) + 0.5) / n


def gaussian_1d(coord: torch.Tensor, n: int, sigma: float, grid: torch.Tensor | None = None) -> torch.Tensor:
    """exp(-(t_i - coord)^2 / (2 sigma^2)) at the n pixel centres t_i = (i + 0.5) / n: B x N -> B x N x n.
    ``grid``: :func:`pixel_centres` (n, coord's dtype and device), when the caller keeps it."""
    if grid is None:
        grid = pixel_centres(n, coord.dtype, coord.device)
    d = grid - coord.unsqueeze(-1)
    return torch.exp((d * d).mul(-0.5 / sigma**2).clamp(min=EXP_FLOOR))


def gaussian_splat(nodes: torch.Tensor, xy: torch.Tensor, size: tuple[int, int], sigma: float,
                   density: bool = True, grid: torch.Tensor | None = None) -> torch.Tensor:
    """Place node features on an H x W grid: map[c,h,w] = sum_n f[n,c] g_n(h, w).

    g_n is an isotropic Gaussian at the node's position; ``sigma`` is a fraction of the
    grid side. The Gaussian is separable, so we contract over nodes with one batched matmul
    of (H x N) by (N x W*C) and never build the N x H x W tensor (31M floats at 256 px).
    With ``density``, a last channel carries the density sum_n g_n (where the face is); without, ``nodes``
    already holds it (a feature of 1 on every node, as :class:`SpatialPrior` makes it). ``grid``: the pixel centres
    of a square grid (:func:`pixel_centres`), when the caller keeps them.
    """
    feats = torch.cat([nodes, torch.ones_like(nodes[..., :1])], -1) if density else nodes
    n, c = feats.shape[1:]
    h, w = size
    if h == w and not torch.jit.is_tracing():  # both axes in one chain of elementwise ops: the same numbers in half
        # the ops (they are tiny); not in a traced graph, which would keep the branch for inputs of every shape
        g = gaussian_1d(xy[..., :2], h, sigma, grid)  # B x N x 2 x H
        gx, gy = g[..., 0, :], g[..., 1, :]
    else:
        gy = gaussian_1d(xy[..., 1], h, sigma)  # B x N x H
        gx = gaussian_1d(xy[..., 0], w, sigma)  # B x N x W
    if torch.jit.is_tracing():  # ONNX Runtime's convs want NCHW: CH x N by N x W (the batch as -1: it may be 0)
        n, c = int(n), int(c)  # constants of the graph (only the batch and the grid follow the input)
        left = (feats.unsqueeze(-1) * gy.unsqueeze(2)).reshape(-1, n, c * h)  # B x N x CH
        return torch.bmm(left.transpose(1, 2), gx).view(-1, c, h, w)
    # H x N by N x WC: the map comes out channels-last (B x H x W x C), returned as its NCHW view, which
    # PyTorch's convs take as it is (2x faster than an NCHW map at 128 px)
    right = (gx.unsqueeze(-1) * feats.unsqueeze(2)).reshape(-1, n, w * c)  # B x N x WC
    return torch.bmm(gy.transpose(1, 2), right).view(-1, h, w, c).permute(0, 3, 1, 2)


class GaussianSplat(nn.Module):
    """:func:`gaussian_splat` as a module (no parameters), so profilers and hooks see each call."""

    def __init__(self, sigma: float):
        super().__init__()
        self.sigma = sigma

    def forward(self, nodes: torch.Tensor, xy: torch.Tensor, size: tuple[int, int],
                density: bool = True) -> torch.Tensor:
        grid = None
        if size[0] == size[1] and not torch.jit.is_tracing():  # (a traced graph computes its own constant)
            key = (size[0], xy.dtype, xy.device)
            grids = self.__dict__.setdefault("_grids", {})  # pixel centres per grid side: 3 tiny ops less per call
            grid = grids.get(key)
            if grid is None:
                grid = grids[key] = pixel_centres(*key)
        return gaussian_splat(nodes, xy, size, self.sigma, density, grid)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


class PriorHead(nn.Sequential):
    """conv (``head_kernel`` x ``head_kernel``, splatted channels -> nf) + LeakyReLU, as an ``nn.Sequential`` (so the
    weights keep their names). A 1x1 head on a channels-last map at inference runs as one matmul over the channels
    (:func:`~affectsr.models.msaf.conv1x1_channels_last`) and an in-place LeakyReLU: ~50 us less per call on a
    2-core CPU (measured right after a forward, 16 px, 2026-11-30)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, act = self[0], self[1]
        if (conv.kernel_size == (1, 1) and x.is_contiguous(memory_format=torch.channels_last) and x.dim() == 4
                and not torch.is_grad_enabled() and not torch.jit.is_tracing()):
            return F.leaky_relu_(conv1x1_channels_last(x, conv), act.negative_slope)
        return act(conv(x))


class SpatialPrior(nn.Module):
    """GCN node features splatted at the landmark positions, one map per fusion scale.

    Each scale first projects the node features to ``splat_channels`` (a per-scale linear
    map): splatting costs O(channels x H x W x N), so splatting 16 channels instead of the
    GCN's 128 makes the prior ~7x cheaper at 128 px with no loss of expressiveness (the
    projection is linear, so it commutes with splatting). ``head_kernel`` is the side of the
    conv that turns each splatted map into ``nf`` channels (3 as trained first; 1 is 9x cheaper:
    the Gaussians already spread each node over its neighbourhood). ``splat_once``: one
    projection, splatted at the largest scale only, and each smaller scale's map is the next
    one average-pooled 2x2 (scales are successive x2), which saves a splat per extra scale.
    """

    def __init__(self, adjacency: torch.Tensor, gcn_dims: tuple[int, ...], nf: int, num_scales: int,
                 sigma: float = 0.02, splat_channels: int = 16, head_kernel: int = 3, splat_once: bool = False):
        super().__init__()
        self.gcn = GCN((3, *gcn_dims), adjacency)
        self.sigma = sigma
        self.splat_once = splat_once
        self.splat = GaussianSplat(sigma)
        num_proj = 1 if splat_once else num_scales
        self.to_splat = nn.ModuleList(nn.Linear(gcn_dims[-1], splat_channels) for _ in range(num_proj))
        self.heads = nn.ModuleList(
            PriorHead(nn.Conv2d(splat_channels + 1, nf, head_kernel, 1, head_kernel // 2), nn.LeakyReLU(0.2, inplace=True))
            for _ in range(num_scales)
        )

    def splat_map(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The projections and the density as one linear map of the GCN's output (a zero row with bias 1 gives the
        density's 1): (weight, bias) of (splat_channels + 1) x projections rows."""
        weights, biases = [], []
        for proj in self.to_splat:
            weights += [proj.weight, proj.weight.new_zeros(1, proj.in_features)]
            biases += [proj.bias, proj.bias.new_ones(1)]
        return torch.cat(weights), torch.cat(biases)

    def _folded_last_layer(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`splat_map` folded into the GCN's last layer; kept between calls at inference (no grad, not traced),
        where the same ~8 tiny ops would rebuild the same tensors every face. Keyed by the parameters' storage and
        version counters, so a weight change (load_state_dict, an optimizer step, ``.to()``) rebuilds it."""
        if torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling():
            return self.gcn.fold(self.splat_map())
        params = [*self.to_splat.parameters(), *self.gcn.layers[-1].parameters()]
        try:
            key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        except RuntimeError:  # parameters made under inference_mode have no version counter: no cache
            return self.gcn.fold(self.splat_map())
        cached = self.__dict__.get("_fold_cache")
        if cached is None or cached[0] != key:
            cached = self.__dict__["_fold_cache"] = (key, self.gcn.fold(self.splat_map()))
        return cached[1]

    def splat_features(self, landmarks: torch.Tensor) -> list[torch.Tensor]:
        """Each projection's B x N x (splat_channels + 1) node features, the last one the density's 1.

        The projections and the density follow the GCN's last layer, which is linear, so they are folded into it
        as one map (:meth:`splat_map`, :meth:`GCN.fold`): the GCN propagates (splat_channels + 1) x projections
        channels instead of its last width, in one op instead of one per scale.
        """
        feats = self.gcn(landmarks, folded=self._folded_last_layer())
        return list(feats.split(self.to_splat[0].out_features + 1, -1))

    def forward(self, landmarks: torch.Tensor, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        feats = self.splat_features(landmarks)
        xy = landmarks[..., :2]
        if not self.splat_once:
            return [head(self.splat(f, xy, s, density=False)) for f, head, s in zip(feats, self.heads, sizes)]
        maps = [self.splat(feats[0], xy, sizes[-1], density=False)]
        for _ in sizes[:-1]:
            maps.insert(0, F.avg_pool2d(maps[0], 2))
        return [head(m) for head, m in zip(self.heads, maps)]


class PooledPrior(nn.Module):
    """The prototype's prior: GCN -> mean pool -> reshape to a map -> resize + 1x1 conv per scale."""

    def __init__(self, adjacency: torch.Tensor, gcn_dims: tuple[int, ...], nf: int, num_scales: int,
                 map_channels: int = 8, map_size: int = 16):
        super().__init__()
        self.map_shape = (map_channels, map_size, map_size)
        self.gcn = GCN((3, *gcn_dims, map_channels * map_size * map_size), adjacency)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Conv2d(map_channels, nf, 1), nn.LeakyReLU(0.2, inplace=True)) for _ in range(num_scales)
        )

    def forward(self, landmarks: torch.Tensor, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        code = self.gcn(landmarks).mean(1).view(-1, *self.map_shape)
        return [
            head(F.interpolate(code, size=s, mode="bilinear", align_corners=False))
            for head, s in zip(self.heads, sizes)
        ]
