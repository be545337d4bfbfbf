"""Identity: is the super-resolved face still the same person? dlib's ResNet face embeddings, offline.

A face restorer can keep a smile and still paint a stranger. We measure identity the way face
verification does: dlib's ResNet-29 face descriptor (128-d, trained for verification; 99.38% on
LFW) of the SR face against that of the HR face. Two numbers per model: the mean cosine
similarity of the descriptors, and the share of faces whose descriptor distance stays under
dlib's same-person threshold of 0.6 (Euclidean).

The model files come inside the ``face-recognition-models`` package (its ``.dat`` files; CC0) and
are run by ``dlib-bin``; nothing is downloaded. That package's ``__init__`` imports
``pkg_resources``, which current setuptools no longer ships, so we locate its files with
``importlib.util.find_spec`` and never import it.

dlib's 5-point shape predictor (which aligns the face before the descriptor) was trained on the
boxes of dlib's HOG face detector, so that is the box we give it: found on the *HR* crop and
reused for every SR version of the same face, so all of them are read at the same geometry. Where
HOG finds nothing (11 of the 581 test faces), a box with HOG's median placement in affectsr's
square(0.6) crops is used (side 0.6 of the crop, centre at (0.5, 0.52) of it; measured on the
test split).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SAME_PERSON_DISTANCE", "IdentityEncoder", "IdentityModelMissing", "IdentityScores", "fallback_rect",
           "identity_scores", "model_files"]

SAME_PERSON_DISTANCE = 0.6
"""dlib's threshold: descriptors closer than this (Euclidean) are the same person."""

_PACKAGE = "face_recognition_models"
_FILES = {"shape": "shape_predictor_5_face_landmarks.dat", "resnet": "dlib_face_recognition_resnet_model_v1.dat"}


class IdentityModelMissing(ImportError):
    """dlib or the face-recognition-models files are not installed."""


def model_files() -> dict[str, Path]:
    """Paths of the two dlib model files inside the installed face-recognition-models package."""
    spec = importlib.util.find_spec(_PACKAGE)  # locate without importing (its __init__ needs pkg_resources)
    if spec is None or spec.origin is None:
        raise IdentityModelMissing(f"identity needs the {_PACKAGE!r} package: pip install face-recognition-models")
    models = Path(spec.origin).parent / "models"
    paths = {k: models / v for k, v in _FILES.items()}
    if missing := [str(p) for p in paths.values() if not p.is_file()]:
        raise IdentityModelMissing(f"{_PACKAGE} is installed but lacks {', '.join(missing)}")
    return paths


Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 (inclusive), dlib's convention


def fallback_rect(size: int) -> Rect:
    """HOG's median face box in a ``size`` px square(0.6) crop (side 0.6, centre (0.5, 0.52))."""
    side = round(0.6 * size)
    x0, y0 = round(0.5 * size - side / 2), round(0.52 * size - side / 2)
    return x0, y0, x0 + side - 1, y0 + side - 1


class IdentityEncoder:
    """128-d dlib face descriptors of face crops (uint8 RGB, any size)."""

    def __init__(self) -> None:
        try:
            import dlib  # a compiled wheel (dlib-bin): imported here so `import affectsr` stays light
        except ImportError as e:
            raise IdentityModelMissing("identity needs dlib: pip install dlib-bin") from e
        files = model_files()
        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(files["shape"]))
        self._resnet = dlib.face_recognition_model_v1(str(files["resnet"]))
        self._hog = dlib.get_frontal_face_detector()

    def face_rect(self, crop: np.ndarray) -> Rect:
        """The largest HOG face box in ``crop`` (upsampled once, as dlib's examples do), else :func:`fallback_rect`."""
        found = self._hog(_rgb(crop), 1)
        if not found:
            return fallback_rect(min(crop.shape[:2]))
        r = max(found, key=lambda r: r.area())
        return r.left(), r.top(), r.right(), r.bottom()

    def embed(self, crops: list[np.ndarray], rects: list[Rect] | None = None) -> np.ndarray:
        """``N x 128`` float32 descriptors; ``rects`` (e.g. found on the HR faces) default to each crop's own."""
        if rects is not None and len(rects) != len(crops):
            raise ValueError(f"{len(crops)} crops but {len(rects)} face rectangles")
        out = np.zeros((len(crops), 128), np.float32)
        for i, crop in enumerate(crops):
            img = _rgb(crop)
            rect = self._dlib.rectangle(*(rects[i] if rects is not None else self.face_rect(img)))
            out[i] = np.asarray(self._resnet.compute_face_descriptor(img, self._shape(img, rect)), np.float32)
        return out


def _rgb(crop: np.ndarray) -> np.ndarray:
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] < 3:
        raise ValueError(f"expected an H x W x 3 uint8 RGB face crop, got {crop.dtype} {crop.shape}")
    return np.ascontiguousarray(crop[..., :3])


@dataclass(frozen=True)
class IdentityScores:
    cosine: np.ndarray  # N: cosine similarity of SR vs HR descriptors
    distance: np.ndarray  # N: Euclidean distance (dlib's verification measure)

    @property
    def same_person(self) -> np.ndarray:
        return self.distance < SAME_PERSON_DISTANCE

    def summary(self) -> dict[str, float]:
        return {"identity_cosine": float(self.cosine.mean()), "identity_distance": float(self.distance.mean()),
                "identity_kept": float(self.same_person.mean())}


def identity_scores(emb_sr: np.ndarray, emb_hr: np.ndarray) -> IdentityScores:
    """Pairwise (row i with row i) cosine similarity and distance of two ``N x 128`` descriptor sets."""
    if emb_sr.shape != emb_hr.shape:
        raise ValueError(f"descriptor sets differ in shape: {emb_sr.shape} vs {emb_hr.shape}")
    num = (emb_sr * emb_hr).sum(1)
    den = np.linalg.norm(emb_sr, axis=1) * np.linalg.norm(emb_hr, axis=1)
    return IdentityScores(num / np.maximum(den, 1e-12), np.linalg.norm(emb_sr - emb_hr, axis=1))
