"""Synthetic occluders painted on face crops: an eye bar, a surgical-mask-like polygon, sunglasses.

Placed from the MediaPipe landmarks of the face when they were found, else at fixed fractions of an
aligned crop; deterministic, so every model sees exactly the same occluded faces.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..models import mediapipe_topology as topo

__all__ = ["OCCLUSIONS", "check_occlusion", "occlude", "occluder_mask"]

OCCLUSIONS = ("none", "eyes_bar", "mouth_mask", "sunglasses")

_RIGHT_EYE = sorted(set(topo.RIGHT_EYE))  # the subject's right eye: image left
_LEFT_EYE = sorted(set(topo.LEFT_EYE))
_OVAL = sorted(set(topo.FACE_OVAL))
_MASK_TOP = 195  # nose bridge, about a third of the way from the eyes to the nose tip
_NEEDED = sorted(set(_RIGHT_EYE) | set(_LEFT_EYE) | set(_OVAL) | {_MASK_TOP})

# Fallback anchors (fractions of the crop side) for faces without landmarks: medians over 246
# train-split crops of utkface_aligned and taiwanese_expr (the mask top: over 83 of them), cropped as
# `prepare` crops them.
_FALLBACK_EYE_R = (0.365, 0.395)
_FALLBACK_EYE_L = (0.635, 0.395)
_FALLBACK_MASK_TOP = (0.50, 0.47)
_FALLBACK_OVAL = ((0.497, 0.507), (0.30, 0.315))  # ellipse centre, semi-axes

_COLOURS = {"eyes_bar": (0, 0, 0), "mouth_mask": (200, 222, 235), "sunglasses": (22, 22, 28)}


@dataclass(frozen=True)
class _Anchors:
    """Occluder geometry in pixels; ``u`` runs from the image-left eye to the image-right eye."""

    eye_r: np.ndarray
    eye_l: np.ndarray
    mask_top: np.ndarray
    oval: np.ndarray  # K x 2

    @property
    def iod(self) -> float:
        return float(np.linalg.norm(self.eye_l - self.eye_r))

    @property
    def u(self) -> np.ndarray:
        return (self.eye_l - self.eye_r) / max(self.iod, 1e-6)

    @property
    def v(self) -> np.ndarray:  # perpendicular, pointing down the face
        u = self.u
        return np.array([-u[1], u[0]])


def _anchors(h: int, w: int, landmarks: np.ndarray | None) -> _Anchors:
    scale = np.array([w, h], np.float64)
    if landmarks is not None:
        lm = np.asarray(landmarks, np.float64)
        if lm.shape[0] > max(_NEEDED) and np.isfinite(lm[_NEEDED, :2]).all():
            xy = lm[:, :2] * scale
            return _Anchors(xy[_RIGHT_EYE].mean(0), xy[_LEFT_EYE].mean(0), xy[_MASK_TOP], xy[_OVAL])
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    (cx, cy), (ax, ay) = _FALLBACK_OVAL
    oval = np.stack([cx + ax * np.cos(t), cy + ay * np.sin(t)], 1) * scale
    return _Anchors(np.array(_FALLBACK_EYE_R) * scale, np.array(_FALLBACK_EYE_L) * scale,
                    np.array(_FALLBACK_MASK_TOP) * scale, oval)


def _rect(centre: np.ndarray, u: np.ndarray, v: np.ndarray, half_u: float, half_v: float) -> np.ndarray:
    return np.array([centre - half_u * u - half_v * v, centre + half_u * u - half_v * v,
                     centre + half_u * u + half_v * v, centre - half_u * u + half_v * v])


def _ellipse(centre: np.ndarray, u: np.ndarray, v: np.ndarray, a: float, b: float, k: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, k, endpoint=False)
    return centre + np.outer(a * np.cos(t), u) + np.outer(b * np.sin(t), v)


def _polygons(kind: str, an: _Anchors) -> list[np.ndarray]:
    """The occluder as polygons (pixel x, y); sizes are multiples of the inter-ocular distance."""
    from scipy.spatial import ConvexHull  # lazy: scipy.spatial costs ~0.3 s to import, and only the mask needs it

    iod, u, v = an.iod, an.u, an.v
    mid = (an.eye_r + an.eye_l) / 2
    if kind == "eyes_bar":  # eye corners lie about 0.78 IOD from the midpoint; the bar reaches 1.0
        return [_rect(mid, u, v, 1.0 * iod, 0.25 * iod)]
    if kind == "sunglasses":
        lenses = [_ellipse(c, u, v, 0.45 * iod, 0.33 * iod) for c in (an.eye_r, an.eye_l)]
        return lenses + [_rect(mid - 0.1 * iod * v, u, v, 0.15 * iod, 0.04 * iod)]
    if kind == "mouth_mask":  # the face outline below a line through the nose bridge, across the eye axis
        d = (an.oval - an.mask_top) @ v
        pts = an.oval - np.minimum(d, 0)[:, None] * v  # outline points above the line are moved onto it
        return [pts[ConvexHull(pts).vertices]]
    raise AssertionError(kind)


def check_occlusion(kind: str) -> None:
    if kind not in OCCLUSIONS:
        raise ValueError(f"occlusion {kind!r}: not one of {', '.join(OCCLUSIONS)}")


def occluder_mask(shape: tuple[int, ...], kind: str, landmarks: np.ndarray | None = None) -> np.ndarray:
    """H x W bool: the pixels ``occlude`` paints for ``kind`` on a face of ``shape`` (all False for 'none').

    ``landmarks``: 478 x 3 MediaPipe landmarks normalised to the face, NaN rows when not found;
    without usable landmarks the occluder sits at fixed fractions of an aligned crop.
    """
    check_occlusion(kind)
    h, w = int(shape[0]), int(shape[1])
    if kind == "none":
        return np.zeros((h, w), bool)
    polys = _polygons(kind, _anchors(h, w, landmarks))
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    for p in polys:
        draw.polygon([(float(x), float(y)) for x, y in p], fill=255)
    return np.asarray(img) > 0


def occlude(face: np.ndarray, kind: str, landmarks: np.ndarray | None = None) -> np.ndarray:
    """A copy of ``face`` (H x W x 3 uint8) with a synthetic occluder painted on; deterministic.

    Kinds: 'none', 'eyes_bar' (black bar over both eyes), 'mouth_mask' (light surgical-mask-like
    polygon over nose and mouth), 'sunglasses' (dark ellipses over both eyes and a bridge).
    """
    check_occlusion(kind)
    face = np.asarray(face)
    if face.ndim != 3 or face.shape[2] != 3 or face.dtype != np.uint8:
        raise ValueError(f"face must be an H x W x 3 uint8 array, got {face.shape} {face.dtype}")
    out = face.copy()
    if kind != "none":
        out[occluder_mask(face.shape, kind, landmarks)] = _COLOURS[kind]
    return out
