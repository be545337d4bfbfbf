"""HR -> LR degradations: bicubic downscaling (the paper's protocol, the default) and blind ones.

Everything works on uint8 ``H x W x 3`` RGB numpy arrays and is reproducible: blind degradations
draw their parameters from a ``numpy.random.Generator`` that the caller seeds (the training
loader seeds one per sample from (seed, epoch, index), so a resumed run sees the same LR images).

Blind pipeline (a light version of Real-ESRGAN's first-order model, for real-world inputs):
Gaussian blur (random sigma) -> bicubic/bilinear/area downscale -> Gaussian or Poisson-like noise
-> JPEG re-encoding at a random quality. Each stage is applied with its own probability.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from affectsr.images import bicubic_down

__all__ = ["DEGRADATIONS", "BlindConfig", "bicubic_down", "blind_down", "degrade", "degrade_batch", "sample_rng"]

DEGRADATIONS = ("bicubic", "blind")


@dataclass(frozen=True)
class BlindConfig:
    blur_prob: float = 0.7
    blur_sigma: tuple[float, float] = (0.2, 2.0)  # in HR pixels
    noise_prob: float = 0.6
    noise_sigma: tuple[float, float] = (1.0, 12.0)  # in 0..255 units
    gray_noise_prob: float = 0.3
    jpeg_prob: float = 0.7
    jpeg_quality: tuple[int, int] = (40, 95)
    resize_modes: tuple[str, ...] = ("bicubic", "bilinear", "area")


_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
             "area": Image.Resampling.BOX}


def blind_down(hr: np.ndarray, scale: int, rng: np.random.Generator, cfg: BlindConfig = BlindConfig()) -> np.ndarray:
    """Blur, downscale, noise and JPEG, each drawn from ``rng`` (same rng state -> same output)."""
    h, w = hr.shape[:2]
    # Draw every random number up front, in a fixed order, so the output depends only on rng.
    u = rng.random(4)
    sigma = rng.uniform(*cfg.blur_sigma)
    mode = cfg.resize_modes[int(rng.integers(len(cfg.resize_modes)))]
    nsig = rng.uniform(*cfg.noise_sigma)
    quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    img = Image.fromarray(hr)
    if u[0] < cfg.blur_prob:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(sigma)))
    img = img.resize((w // scale, h // scale), _RESAMPLE[mode])
    out = np.asarray(img).astype(np.float32)
    if u[1] < cfg.noise_prob:
        if u[2] < cfg.gray_noise_prob:
            noise = rng.normal(0.0, nsig, out.shape[:2])[..., None]
        else:
            noise = rng.normal(0.0, nsig, out.shape)
        out = out + noise
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if u[3] < cfg.jpeg_prob:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=quality)
        out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return np.ascontiguousarray(out)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for one sample's degradation: a pure function of (seed, epoch, index)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(index)]))


def degrade(hr: np.ndarray, scale: int, kind: str = "bicubic", rng: np.random.Generator | None = None) -> np.ndarray:
    """LR for ``hr``: ``kind`` 'bicubic' (deterministic) or 'blind' (needs ``rng``)."""
    if kind == "bicubic":
        return bicubic_down(hr, scale)
    if kind == "blind":
        if rng is None:
            raise ValueError("blind degradation needs a seeded numpy Generator (see sample_rng)")
        return blind_down(hr, scale, rng)
    raise ValueError(f"unknown degradation {kind!r}; choose from {DEGRADATIONS}")


def degrade_batch(hr: np.ndarray, index: np.ndarray, scale: int, kind: str = "bicubic", seed: int = 0,
                  epoch: int = 0) -> np.ndarray:
    """N x h x w x 3 LR images of the N HR crops ``hr`` (cache rows ``index``), by :func:`degrade`.

    Blind degradations draw from :func:`sample_rng` ``(seed, epoch, index)``, so a given cache row gets the
    same degradation however it is batched, and a warped copy of it (the temporal pair) gets the same one.
    """
    return np.stack([degrade(h, scale, kind, sample_rng(seed, epoch, int(i)) if kind != "bicubic" else None)
                     for h, i in zip(hr, index)])
