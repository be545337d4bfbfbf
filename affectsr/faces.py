"""Face crops and paste-back: square crops that may leave the image, feathered blending back into it.

Used wherever a face is cut out of a larger image and put back: the pipeline, video, the
training cache, the FER crops and the web demo.
"""
from __future__ import annotations

import numpy as np

__all__ = ["crop_padded", "feather_mask", "paste"]


def crop_padded(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Crop a box that may extend past the image, replicating edge pixels outside it."""
    x0, y0, x1, y1 = box
    h, w = rgb.shape[:2]
    ys = np.clip(np.arange(y0, y1), 0, h - 1)
    xs = np.clip(np.arange(x0, x1), 0, w - 1)
    return rgb[ys[:, None], xs[None, :]]


def feather_mask(h: int, w: int, frac: float = 0.12) -> np.ndarray:
    """H x W weights: 1 inside, a cosine ramp to 0 over ``frac`` of the side at each border."""

    def ramp(n: int) -> np.ndarray:
        r = max(1, int(round(n * frac)))
        t = np.ones(n, np.float32)
        edge = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, r + 2, dtype=np.float32)[1:-1])
        t[:r], t[n - r:] = edge[: min(r, n)], edge[::-1][: min(r, n)]
        return t

    return np.outer(ramp(h), ramp(w))


def paste(background: np.ndarray, patch: np.ndarray, x0: int, y0: int, mask: np.ndarray) -> None:
    """Blend ``patch`` into ``background`` at (x0, y0) in place; parts outside are dropped."""
    h, w = background.shape[:2]
    ph, pw = patch.shape[:2]
    bx0, by0, bx1, by1 = max(x0, 0), max(y0, 0), min(x0 + pw, w), min(y0 + ph, h)
    if bx0 >= bx1 or by0 >= by1:
        return
    p = patch[by0 - y0: by1 - y0, bx0 - x0: bx1 - x0].astype(np.float32)
    m = mask[by0 - y0: by1 - y0, bx0 - x0: bx1 - x0, None]
    region = background[by0:by1, bx0:bx1].astype(np.float32)
    background[by0:by1, bx0:bx1] = np.clip(m * p + (1 - m) * region + 0.5, 0, 255).astype(np.uint8)
