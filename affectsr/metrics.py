"""Image-quality metrics on the Y channel, BasicSR/MATLAB convention (pure functions, torch tensors).

Inputs are ``B x 3 x H x W`` RGB in [0, 1]; they are rounded to uint8 levels first (the images a
user would save), converted to ITU-R BT.601 luma in [16, 235], and ``border`` pixels are cropped
from every edge (BasicSR crops ``scale`` pixels). SSIM uses an 11 x 11 Gaussian window, sigma 1.5,
over the valid region; this equals ``skimage.metrics.structural_similarity(gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=255)`` on the same Y images.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["LUMA", "gauss_window", "luma", "psnr_y", "quantize", "rgb_to_y", "ssim_y", "to_tensor"]

LUMA = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights, as OpenCV's RGB2GRAY and PIL's 'L' (what FER2013's pipeline and the `fer` package
use); :func:`rgb_to_y` is the same weights scaled to the [16, 235] range."""


def luma(x: torch.Tensor) -> torch.Tensor:
    """B x 3 x H x W RGB -> B x 1 x H x W BT.601 luma, in the range of ``x``."""
    return (x * x.new_tensor(LUMA).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """B x 3 x H x W RGB in [0, 1] -> B x 1 x H x W luma in [16, 235] (ITU-R BT.601, as BasicSR/MATLAB)."""
    w = x.new_tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True) + 16.0


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round to the 256 levels of the uint8 image a user would save (metrics are computed on those)."""
    return (x.clamp(0, 1) * 255.0).round() / 255.0


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 RGB ``H x W x 3`` or ``B x H x W x 3`` -> float ``B x 3 x H x W`` in [0, 1]."""
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[None]
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 255.0


def psnr_y(sr: torch.Tensor, hr: torch.Tensor, border: int) -> torch.Tensor:
    """Per-image PSNR (dB) on the Y channel with ``border`` pixels cropped, on uint8-rounded images."""
    a, b = rgb_to_y(quantize(sr)), rgb_to_y(quantize(hr))
    if border:
        a, b = a[..., border:-border, border:-border], b[..., border:-border, border:-border]
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return 10.0 * torch.log10(255.0**2 / mse)


def gauss_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size, dtype=torch.float64) - size // 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).float()


def ssim_y(sr: torch.Tensor, hr: torch.Tensor, border: int) -> torch.Tensor:
    """Per-image SSIM on Y (0..255), 11x11 Gaussian window sigma 1.5, valid region (BasicSR's calculate_ssim)."""
    a, b = rgb_to_y(quantize(sr)).double(), rgb_to_y(quantize(hr)).double()
    if border:
        a, b = a[..., border:-border, border:-border], b[..., border:-border, border:-border]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    w = gauss_window().double()[None, None].to(a.device)
    mu1, mu2 = F.conv2d(a, w), F.conv2d(b, w)
    s11 = F.conv2d(a * a, w) - mu1**2
    s22 = F.conv2d(b * b, w) - mu2**2
    s12 = F.conv2d(a * b, w) - mu1 * mu2
    m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s11 + s22 + c2))
    return m.flatten(1).mean(1).float()
