"""Moving images and points by an affine or a flow field (pure functions, shared by video and training).

Affine conventions. *Pixel affines* (2 x 3, used by the video metrics) map pixel coordinates of
the earlier frame to the later one, with pixel centres at integers. *Thetas* (B x 2 x 3, used by
training) are PyTorch ``affine_grid`` matrices in normalised coordinates (``align_corners=False``):
``warp(x, theta)(p) = x(theta @ [p, 1])``; being normalised they hold at every resolution, so one
theta serves the HR, LR and SR versions of a pair.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["apply_affine", "pixel_affine_to_theta", "warp_affine", "warp_image"]


def _pixel_to_norm(w: int, h: int) -> np.ndarray:
    """3 x 3 map from pixel coordinates (centres at integers) to align_corners=False normalised ones."""
    return np.array([[2.0 / w, 0, 1.0 / w - 1], [0, 2.0 / h, 1.0 / h - 1], [0, 0, 1]])


def _h(a: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(a, np.float64).reshape(2, 3), [0, 0, 1]])


def pixel_affine_to_theta(affine: np.ndarray, src_size: tuple[int, int], dst_size: tuple[int, int] | None = None
                          ) -> np.ndarray:
    """The ``affine_grid`` theta (2 x 3) that warps a ``src_size`` (w, h) image by a pixel affine (src -> dst)."""
    dst_size = dst_size or src_size
    m = _pixel_to_norm(*src_size) @ np.linalg.inv(_h(affine)) @ np.linalg.inv(_pixel_to_norm(*dst_size))
    return m[:2]


def warp_affine(x: torch.Tensor, theta: torch.Tensor, mode: str = "bilinear", padding_mode: str = "zeros",
                size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (B x C x H x W) sampled at ``theta`` @ p: (warped, valid B x 1 x H x W, 1 where p maps inside x).

    ``size`` = (H, W) of the output (default: the input's). Differentiable in ``x``.
    """
    b, c = x.shape[:2]
    h, w = size or x.shape[-2:]
    grid = F.affine_grid(theta.to(x.dtype), [b, c, h, w], align_corners=False)
    y = F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=False)
    # a pixel is valid when its sample point lies inside the image (half a pixel of tolerance at the edge)
    gx, gy = grid[..., 0], grid[..., 1]
    tol_x, tol_y = 1.0 / x.shape[-1], 1.0 / x.shape[-2]
    valid = (gx.abs() <= 1 - tol_x + 1e-6) & (gy.abs() <= 1 - tol_y + 1e-6)
    return y, valid[:, None].to(x.dtype)


def warp_image(image: np.ndarray, warp: np.ndarray | None, out_size: tuple[int, int] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Move an H x W (x C) image by ``warp`` into the next frame: (warped float32, valid bool mask).

    ``warp``: None (identity), a 2 x 3 pixel affine (this frame -> next), or an H' x W' x 2 flow
    giving, for each pixel (x, y) of the next frame, the displacement (dx, dy) to where it was in
    this one. ``out_size`` (w, h) defaults to the image's (a flow sets it).
    """
    img = np.asarray(image, np.float32)
    img3 = img[..., None] if img.ndim == 2 else img
    h, w = img3.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(img3)).permute(2, 0, 1)[None]
    if warp is None:
        return img.copy(), np.ones((h, w), bool)
    warp = np.asarray(warp, np.float64)
    if warp.shape == (2, 3):
        ow, oh = out_size or (w, h)
        theta = torch.from_numpy(pixel_affine_to_theta(warp, (w, h), (ow, oh))).float()[None]
        y, valid = warp_affine(x, theta, size=(oh, ow))
    elif warp.ndim == 3 and warp.shape[2] == 2:
        oh, ow = warp.shape[:2]
        ys, xs = np.mgrid[0:oh, 0:ow].astype(np.float64)
        sx, sy = xs + warp[..., 0], ys + warp[..., 1]
        grid = np.stack([(2 * sx + 1) / w - 1, (2 * sy + 1) / h - 1], -1)
        g = torch.from_numpy(grid).float()[None]
        y = F.grid_sample(x, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        valid = torch.from_numpy((sx >= -0.5) & (sx <= w - 0.5) & (sy >= -0.5) & (sy <= h - 0.5))[None, None]
    else:
        raise ValueError(f"warp must be None, a 2 x 3 affine or an H x W x 2 flow, got shape {warp.shape}")
    out = y[0].permute(1, 2, 0).numpy()
    return (out[..., 0] if img.ndim == 2 else out), valid[0, 0].numpy().astype(bool)


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Move N x 2+ points (x, y first) by a 2 x 3 pixel affine; extra columns (z) are kept."""
    pts = np.array(points, np.float64)
    a = np.asarray(affine, np.float64)
    pts[:, :2] = pts[:, :2] @ a[:, :2].T + a[:, 2]
    return pts
