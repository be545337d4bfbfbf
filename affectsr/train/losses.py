"""Training losses beyond L1: the relativistic GAN term with its patch discriminator, and the temporal
consistency term on jittered pairs of still faces.

The emotion consistency loss lives with the classifier it reads (:mod:`affectsr.emotion.loss`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..data.dataset import Batch
from ..data.degrade import degrade_batch
from ..metrics import to_tensor
from ..warp import warp_affine

__all__ = ["PatchDiscriminator", "affine_jitter_pair", "discriminator_loss", "generator_gan_loss", "move_landmarks",
           "temporal_consistency_loss", "temporal_pair"]


# --- GAN ---------------------------------------------------------------------------------------------


class PatchDiscriminator(nn.Module):
    """A small patch discriminator (VGG-style strided convs) for the optional GAN term."""

    def __init__(self, nf: int = 32):
        super().__init__()
        layers, c = [], 3
        for i, o in enumerate((nf, nf * 2, nf * 4, nf * 4)):
            layers += [nn.Conv2d(c, o, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            c = o
        layers.append(nn.Conv2d(c, 1, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def generator_gan_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Relativistic average GAN loss for the generator (ESRGAN): fakes should look more real than the reals."""
    return (F.binary_cross_entropy_with_logits(real - fake.mean(), torch.zeros_like(real))
            + F.binary_cross_entropy_with_logits(fake - real.mean(), torch.ones_like(fake))) / 2


def discriminator_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Relativistic average GAN loss for the discriminator (``fake`` from detached SR outputs)."""
    return (F.binary_cross_entropy_with_logits(real - fake.mean(), torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake - real.mean(), torch.zeros_like(fake))) / 2


# --- temporal consistency ----------------------------------------------------------------------------


def affine_jitter_pair(hr: torch.Tensor, max_shift_px: float = 2.0, max_rot_deg: float = 2.0, max_scale: float = 0.02,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two views of each still face, like consecutive video frames: (hr_a, hr_b, theta), B x 2 x 3.

    ``hr_a`` is ``hr``; ``hr_b = warp(hr_a, theta)`` with a random shift (up to ``max_shift_px``
    pixels of ``hr``), rotation (degrees) and scale (1 +- ``max_scale``) about the centre,
    resampled bicubically with border replication (so ``hr_b`` looks like a real frame; the loss
    masks the replicated border). Degrade both to LR, super-resolve both, and feed the outputs
    and ``theta`` to :func:`temporal_consistency_loss`.
    """
    if hr.ndim != 4:
        raise ValueError(f"hr must be B x C x H x W, got shape {tuple(hr.shape)}")
    b, _, h, w = hr.shape

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(b, generator=generator, dtype=torch.float64) * 2 - 1) * limit

    ang = uniform(math.radians(max_rot_deg))
    s = 1 + uniform(max_scale)
    tx, ty = uniform(max_shift_px) * 2 / w, uniform(max_shift_px) * 2 / h  # pixels -> normalised units
    cos, sin = torch.cos(ang) * s, torch.sin(ang) * s
    # a rotation in pixel space is anisotropic in normalised coordinates when w != h
    theta = torch.stack([torch.stack([cos, -sin * h / w, tx], -1), torch.stack([sin * w / h, cos, ty], -1)], 1)
    theta = theta.to(hr.device, torch.float32)
    hr_b, _ = warp_affine(hr, theta, mode="bicubic", padding_mode="border")
    return hr, hr_b.clamp(0, 1), theta


def move_landmarks(landmarks: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Landmarks (B x N x 3, x and y normalised to [0, 1] of view a) as they sit in view b = warp(a, theta).

    So the second view of :func:`affine_jitter_pair` gets its landmark prior without running a
    detector; z is kept. NaN rows stay NaN.
    """
    u = landmarks[..., :2] * 2 - 1  # [0, 1] -> affine_grid's [-1, 1] (align_corners=False)
    a, t = theta[:, :, :2].to(u.dtype), theta[:, :, 2].to(u.dtype)
    # a point p_b of view b samples view a at a @ p_b + t, so p_b = a^-1 (p_a - t)
    moved = torch.linalg.solve(a, (u - t[:, None, :]).transpose(1, 2)).transpose(1, 2)
    return torch.cat([(moved + 1) / 2, landmarks[..., 2:]], -1)


def temporal_consistency_loss(sr_a: torch.Tensor, sr_b: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Mean L1 between ``warp(sr_a, theta)`` and ``sr_b`` over pixels whose source lies inside ``sr_a``.

    Zero when the two outputs follow the motion exactly; a network that hallucinates different
    detail for the two views pays for it. Differentiable in both outputs.
    """
    if sr_a.shape != sr_b.shape:
        raise ValueError(f"sr_a {tuple(sr_a.shape)} and sr_b {tuple(sr_b.shape)} differ in shape")
    moved, valid = warp_affine(sr_a, theta)
    per_pixel = (moved - sr_b).abs() * valid
    return per_pixel.sum() / (valid.sum() * sr_a.shape[1]).clamp_min(1.0)


def temporal_pair(b: Batch, scale: int, degradation: str, seed: int, epoch: int, step: int
                  ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """The 'next frame' of each still face in ``b``: (LR, landmarks, theta), on the batch's device.

    The HR face is moved by a small random affine (:func:`affine_jitter_pair`, a pure function of
    (seed, step), so resumed runs see the same pairs), rounded to uint8 like a cache image, and
    degraded exactly as the first view was (:func:`~affectsr.data.degrade.degrade_batch`: same
    degradation kind, blind included, same (seed, epoch, index) draws), so the two views differ by the
    motion alone. Its landmarks are the first view's moved by the same affine.
    """
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    _, hr_b, theta = affine_jitter_pair(b.hr.cpu(), generator=gen)
    hr_b = (hr_b * 255.0).round().byte().permute(0, 2, 3, 1).numpy()
    lr_b = to_tensor(degrade_batch(hr_b, b.index, scale, degradation, seed, epoch)).to(b.lr.device)
    theta = theta.to(b.lr.device)
    lm_b = None if b.landmarks is None else move_landmarks(b.landmarks, theta)
    return lr_b, lm_b, theta
