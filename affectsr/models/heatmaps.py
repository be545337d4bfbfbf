"""Face-part keypoints, their Gaussian heatmaps and the small hourglass that predicts them.

The FSRNet and DIC baselines estimate their own face prior from the image instead of
reading landmarks: a stack of keypoint heatmaps, supervised by heatmaps drawn from the HR
landmarks. 478 mesh points would make that prior as expensive as the SR itself, so the
keypoints are the named MediaPipe contours (eyes, brows, nose, lips, face oval) walked in
order and subsampled, plus the two iris centres (gaze), grouped into the facial parts DIC
turns into attention maps.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import mediapipe_topology as mpt
from .face_graph import LEFT_IRIS_CENTRE, NUM_LANDMARKS, RIGHT_IRIS_CENTRE

# part -> contours as (edge list, stride, start nodes): the connected pieces of the contour
# that hold a start node (eye and mouth corners, brow ends, the nose bridge, the forehead) are
# walked from it and every ``stride``-th node kept. The outer lip keeps both corners and the
# inner lip its corners and mid points (mouth opening); the eyes also get their iris centre.
_PART_CONTOURS: dict[str, tuple[tuple[tuple[int, ...], int, tuple[int, ...]], ...]] = {
    "right_eye": ((mpt.RIGHT_EYE, 2, (33,)),),
    "left_eye": ((mpt.LEFT_EYE, 2, (263,)),),
    "brows": ((mpt.RIGHT_EYEBROW, 2, (46, 70)), (mpt.LEFT_EYEBROW, 2, (276, 300))),
    "nose": ((mpt.NOSE, 3, (168,)),),
    "mouth": ((mpt.LIPS, 2, (61,)), (mpt.LIPS, 5, (78,))),
    "contour": ((mpt.FACE_OVAL, 3, (10,)),),
}
_PART_EXTRA = {"right_eye": (RIGHT_IRIS_CENTRE,), "left_eye": (LEFT_IRIS_CENTRE,)}


def _walk(flat_edges: tuple[int, ...], starts: tuple[int, ...]) -> list[list[int]]:
    """Depth-first order of the pieces of a contour that hold a start node, from that node.

    A loop comes out in loop order; neighbours are visited in index order (deterministic).
    """
    edges = np.asarray(flat_edges, dtype=np.int64).reshape(-1, 2)
    nbrs: dict[int, set[int]] = {}
    for a, b in edges.tolist():
        nbrs.setdefault(a, set()).add(b)
        nbrs.setdefault(b, set()).add(a)
    seen: set[int] = set()
    pieces = []
    for start in starts:
        if start not in nbrs or start in seen:
            raise ValueError(f"start node {start} is not on the contour, or shares a piece with another start")
        order, stack = [], [start]
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            order.append(n)
            stack.extend(sorted(nbrs[n] - seen, reverse=True))  # smallest neighbour first
        pieces.append(order)
    return pieces


def _build_keypoints() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    keypoints: list[int] = []
    parts: dict[str, np.ndarray] = {}
    for name, contours in _PART_CONTOURS.items():
        chosen = [n for edges, stride, starts in contours for piece in _walk(edges, starts) for n in piece[::stride]]
        chosen += list(_PART_EXTRA.get(name, ()))
        parts[name] = np.arange(len(keypoints), len(keypoints) + len(chosen))
        keypoints += chosen
    return np.asarray(keypoints, dtype=np.int64), parts


KEYPOINTS, PARTS = _build_keypoints()  # indices into the 478 landmarks; part -> indices into KEYPOINTS
PART_SLICES = {name: slice(int(idx[0]), int(idx[-1]) + 1) for name, idx in PARTS.items()}  # parts are contiguous
NUM_KEYPOINTS = len(KEYPOINTS)
NUM_PARTS = len(PARTS)


def landmarks_to_heatmaps(landmarks: torch.Tensor, size: int | tuple[int, int],
                          sigma: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian heatmaps of the KEYPOINTS: (B x K x H x W in [0, 1], valid B bool).

    ``landmarks`` is B x 478 x 3 with x, y in [0, 1] of the image (pixel i covers
    [i/W, (i+1)/W), so a landmark at (i + 0.5)/W peaks at pixel i with value 1); ``sigma`` is
    in heatmap pixels. A face whose row holds NaN (no landmarks) gets all-zero maps and
    valid=False. The Gaussian is separable: one B x K x H by B x K x W outer product.
    """
    if landmarks.ndim != 3 or landmarks.shape[1:] != (NUM_LANDMARKS, 3):
        raise ValueError(f"landmarks must be B x {NUM_LANDMARKS} x 3, got {tuple(landmarks.shape)}")
    h, w = (size, size) if isinstance(size, int) else size
    lm = landmarks.float()
    valid = torch.isfinite(lm[..., :2]).flatten(1).all(1)
    xy = lm[:, torch.as_tensor(KEYPOINTS, device=lm.device), :2]
    xy = torch.where(valid[:, None, None], xy, torch.zeros_like(xy))
    ys = torch.arange(h, device=lm.device, dtype=lm.dtype)
    xs = torch.arange(w, device=lm.device, dtype=lm.dtype)
    gy = torch.exp(-((ys - (xy[..., 1:2] * h - 0.5)) ** 2) / (2 * sigma**2))  # B x K x H
    gx = torch.exp(-((xs - (xy[..., 0:1] * w - 0.5)) ** 2) / (2 * sigma**2))  # B x K x W
    maps = gy.unsqueeze(-1) * gx.unsqueeze(-2) * valid.to(lm.dtype)[:, None, None, None]
    return maps, valid


def heatmap_loss(pred: torch.Tensor, lm_hr: torch.Tensor | None, sigma: float) -> torch.Tensor:
    """Squared error of predicted heatmaps to the HR landmarks' heatmaps, on faces that have them.

    Targets are drawn at the prediction's size. The sum of squared errors is divided by the
    energy of K Gaussians (K pi sigma^2) rather than averaged over pixels, so predicting all
    zeros costs about 1 whatever the grid size, sigma or K, and one weight fits every preset.
    Faces without HR landmarks (NaN rows, or ``lm_hr=None``) contribute nothing; with none at
    all the result is a zero that still has a grad_fn.
    """
    if lm_hr is None:
        return pred.sum() * 0
    target, valid = landmarks_to_heatmaps(lm_hr, pred.shape[-2:], sigma)
    if not bool(valid.any()):
        return pred.sum() * 0
    err = (pred[valid].float() - target[valid]).pow(2).flatten(1).sum(1)
    return err.mean() / (pred.shape[1] * math.pi * sigma**2)


def group_parts(heatmaps: torch.Tensor) -> torch.Tensor:
    """B x K x H x W keypoint heatmaps -> B x P x H x W part maps in [0, 1] (PARTS order).

    Each map is divided by its own peak (at least 0.05, so a flat near-zero map stays near
    zero) because predicted heatmaps have no fixed scale; a part is the max over its keypoints.
    """
    peak = heatmaps.flatten(2).amax(2).clamp_min(0.05)[..., None, None]
    norm = (heatmaps / peak).clamp(0, 1)
    return torch.stack([norm[:, sl].amax(1) for sl in PART_SLICES.values()], 1)


# --------------------------------------------------------------------------- estimator
class ResBlock(nn.Module):
    """conv-LeakyReLU-conv plus identity: the residual unit of the baselines and their hourglass."""

    def __init__(self, channels: int, groups: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, groups=groups)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, groups=groups)
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class Hourglass(nn.Module):
    """Newell et al.'s hourglass: a skip branch plus a max-pool / recurse / upsample branch.

    ``depth`` halvings; pooling uses ceil_mode and the upsampling goes back to the skip's
    exact size, so any input size works (not only multiples of 2**depth).
    """

    def __init__(self, channels: int, depth: int):
        super().__init__()
        self.skip = ResBlock(channels)
        self.down = ResBlock(channels)
        self.inner = Hourglass(channels, depth - 1) if depth > 1 else ResBlock(channels)
        self.up = ResBlock(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.up(self.inner(self.down(F.max_pool2d(x, 2, ceil_mode=True))))
        return self.skip(x) + F.interpolate(low, size=x.shape[-2:], mode="nearest")


class HeatmapEstimator(nn.Module):
    """Image (at HR) -> keypoint heatmaps at HR/4, and the features they came from.

    Two stride-2 convs bring the image to HR/4, one hourglass finds the keypoints. With
    ``feedback`` the previous call's features are added back in (DIC's recurrent landmark
    branch); FSRNet's prior network calls it once without.
    """

    def __init__(self, channels: int = 32, depth: int = 2, in_channels: int = 3, feedback: bool = False):
        super().__init__()
        act = nn.LeakyReLU(0.2, inplace=True)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, 2, 1), act,
                                  nn.Conv2d(channels, channels, 3, 2, 1), act)
        self.feedback = nn.Conv2d(channels, channels, 1) if feedback else None
        self.hourglass = Hourglass(channels, depth)
        self.head = nn.Conv2d(channels, NUM_KEYPOINTS, 1)

    def forward(self, image: torch.Tensor, hidden: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(image)
        if self.feedback is not None and hidden is not None:
            x = x + self.feedback(hidden)
        feats = self.hourglass(x)
        return self.head(feats), feats
