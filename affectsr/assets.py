"""The bundled default face, so demos and tests run with no downloads and no user data.

Source: ``skimage.data.astronaut()``, NASA's portrait of astronaut Eileen
Collins from the NASA Great Images database (https://flic.kr/p/r9qvLn). NASA
released it into the public domain (no known copyright restrictions), and
scikit-image ships the 512 x 512 file inside its wheel, so nothing is fetched
at run time.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["DEFAULT_FACE_BOX", "default_face", "default_scene"]

DEFAULT_FACE_BOX: tuple[int, int, int, int] = (145, 44, 305, 204)
"""(x0, y0, x1, y1) of the square face crop in the 512 x 512 scene.

MediaPipe's full-range detector puts the face at about x 174..278, y 68..172;
this 160 px square (about 1.5 x that box) is centred on the visible face, with the
hairline/forehead and the chin both inside and roughly equal margins.
"""


def default_scene() -> np.ndarray:
    """The full 512 x 512 x 3 uint8 RGB astronaut photo (NASA, public domain, bundled with scikit-image)."""
    from skimage import data  # lazy: importing skimage.data costs ~0.3 s

    scene = np.ascontiguousarray(data.astronaut(), dtype=np.uint8)
    if scene.shape != (512, 512, 3):  # guard against a future scikit-image changing the sample
        raise RuntimeError(f"unexpected skimage.data.astronaut() shape {scene.shape}")
    return scene


def default_face(size: int = 128) -> np.ndarray:
    """A centred square face crop of :func:`default_scene`, resized (PIL bicubic) to size x size uint8 RGB.

    Source: NASA astronaut portrait, public domain, via scikit-image.
    """
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    crop = Image.fromarray(default_scene()).crop(DEFAULT_FACE_BOX)
    if crop.size != (size, size):
        crop = crop.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(crop, dtype=np.uint8).copy()
