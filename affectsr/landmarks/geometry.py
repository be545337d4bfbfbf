"""Expression geometry: how far the landmarks of one face are from another's, per facial region.

A smile, a frown or raised brows are geometry: mouth corners, eyelids and brows move. Whole-face
NME (mean point error over the inter-ocular distance) averages those few points with the 400-odd
points of cheeks, nose and outline that expressions barely move, so a changed expression can hide
in it. ``region_nme`` reports the same error on the mouth, the eyes and the brows separately,
always normalised by the *reference* face's inter-ocular distance (outer eye corners), as the
face-alignment literature does.

Landmarks are MediaPipe's 478 refined face-mesh points, ``N x 478 x 2+`` (x, y in any common unit).
"""
from __future__ import annotations

import numpy as np

from affectsr.models.face_graph import mediapipe_face_graph

__all__ = ["RIGHT_EYE_OUTER", "LEFT_EYE_OUTER", "REGIONS", "inter_ocular", "nme", "region_nme"]

RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263  # outer eye corners in MediaPipe's indexing


def _regions() -> dict[str, np.ndarray]:
    g = mediapipe_face_graph().groups
    return {
        "mouth": g["lips"],  # outer and inner lip contours
        "eyes": np.concatenate([g["left_eye"], g["right_eye"], g["left_iris"], g["right_iris"]]),  # lids + gaze
        "brows": np.concatenate([g["left_eyebrow"], g["right_eyebrow"]]),
    }


REGIONS: dict[str, np.ndarray] = _regions()
"""Landmark indices of the expressive regions (from the face graph's named contours)."""


def inter_ocular(landmarks: np.ndarray) -> np.ndarray:
    """Per-face distance between the outer eye corners of ``N x 478 x 2+`` landmarks."""
    return np.linalg.norm(landmarks[:, LEFT_EYE_OUTER, :2] - landmarks[:, RIGHT_EYE_OUTER, :2], axis=1)


def nme(pred: np.ndarray, target: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
    """Per-face mean 2-D point error over ``points`` (all when None) / inter-ocular distance of ``target``."""
    if pred.shape[:2] != target.shape[:2]:
        raise ValueError(f"pred and target must both be N x 478 x 2+, got {pred.shape} and {target.shape}")
    idx = slice(None) if points is None else points
    err = np.linalg.norm(pred[:, idx, :2] - target[:, idx, :2], axis=2).mean(1)
    return err / np.maximum(inter_ocular(target), 1e-6)


def region_nme(pred: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """Per-face NME on the whole face and on each expressive region: {'face', 'mouth', 'eyes', 'brows'} -> N."""
    out = {"face": nme(pred, target)}
    out.update({name: nme(pred, target, idx) for name, idx in REGIONS.items()})
    return out
