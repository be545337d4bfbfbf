"""Faces in arbitrary images -> FER-framed crops -> expression probabilities.

The classifier reads faces framed like FER2013's. On FER2013 and CK+48 training faces
(edge-padded so the detector sees some context) MediaPipe's box is about 0.86 of the image side,
which would suggest a margin of about 0.16; but a sweep on 1,082 taiwanese_expr *train + val*
photos (never test) found tight crops best for both shipped classifiers, falling steadily with
the margin (margin 0: 54.8 % / 53.5 %, 0.1: 53.8 % / 51.6 %, 0.2: 52.1 % / 50.5 %, 0.4: 47.9 % / 41.2 %
for the converted / fine-tuned model). So ``FER_MARGIN`` = 0: the square of the detector box's
longer side. See docs/EMOTION.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from affectsr.images import read_image, resize, to_rgb_uint8
from affectsr.landmarks import FaceBox, LandmarkDetector
from affectsr.faces import crop_padded

from .classifier import EmotionClassifier, load_emotion_classifier

__all__ = ["FER_MARGIN", "FaceEmotion", "classify_crops", "detect_emotions", "fer_crop", "largest_face"]

FER_MARGIN = 0.0
"""Square crop side = detector box side x (1 + FER_MARGIN); 0 was best on labelled photos (module docstring)."""


@dataclass
class FaceEmotion:
    """One face's expression: the square crop it was read from and the class probabilities."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the square crop in image pixels (may extend past the image)
    detection: FaceBox | None  # None when the whole image was taken as the face
    probabilities: np.ndarray  # C, sums to 1
    labels: tuple[str, ...]

    @property
    def label(self) -> str:
        return self.labels[int(np.argmax(self.probabilities))]

    @property
    def confidence(self) -> float:
        return float(np.max(self.probabilities))

    def to_dict(self) -> dict:
        return {
            "box": list(self.box),
            "detection_score": None if self.detection is None else round(self.detection.score, 4),
            "label": self.label,
            "probabilities": {name: round(float(p), 4) for name, p in zip(self.labels, self.probabilities)},
        }


def fer_crop(rgb: np.ndarray, face: FaceBox, margin: float = FER_MARGIN) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The FER-framed square crop around a detection (edges replicated where it leaves the image) and its box."""
    box = face.square(margin)
    return crop_padded(rgb, box), box


def largest_face(faces: list[FaceBox]) -> FaceBox | None:
    return max(faces, key=lambda f: f.width * f.height) if faces else None


@torch.no_grad()
def classify_crops(classifier: EmotionClassifier, crops: list[np.ndarray], work_size: int = 128) -> np.ndarray:
    """``N x C`` probabilities for uint8 RGB crops of any sizes.

    Crops larger than ``work_size`` are first shrunk with PIL (bicubic) so a batch shares
    one size; the classifier's own resize then takes them to its input size.
    """
    if not crops:
        return np.zeros((0, len(classifier.labels)), np.float32)
    ready = [c if max(c.shape[:2]) <= work_size else resize(c, (work_size, work_size)) for c in crops]
    out = np.zeros((len(ready), len(classifier.labels)), np.float32)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, c in enumerate(ready):
        by_shape.setdefault(c.shape, []).append(i)
    device = next(classifier.parameters()).device
    for idx in by_shape.values():
        x = torch.from_numpy(np.stack([ready[i] for i in idx])).permute(0, 3, 1, 2).float().div_(255.0)
        out[idx] = classifier.predict_proba(x.to(device)).numpy()
    return out


def detect_emotions(
    image: str | Path | np.ndarray,
    classifier: EmotionClassifier | None = None,
    detector: LandmarkDetector | None = None,
    margin: float = FER_MARGIN,
    aligned: bool = False,
) -> list[FaceEmotion]:
    """Every detected face's expression, left to right; ``aligned=True`` reads the whole image as one face.

    No face found gives ``[]``. The classifier and detector are created (and the detector closed)
    here when not passed in; pass them when processing many images.
    """
    rgb = read_image(image).rgb if isinstance(image, (str, Path)) else to_rgb_uint8(image).rgb
    classifier = classifier or load_emotion_classifier()
    if aligned:
        probs = classify_crops(classifier, [rgb])
        h, w = rgb.shape[:2]
        return [FaceEmotion((0, 0, w, h), None, probs[0], classifier.labels)]
    own = detector is None
    det = detector or LandmarkDetector()
    try:
        boxes = det.detect_faces(rgb)
    finally:
        if own:
            det.close()
    crops, squares = [], []
    for face in boxes:
        crop, square = fer_crop(rgb, face, margin)
        crops.append(crop)
        squares.append(square)
    probs = classify_crops(classifier, crops)
    return [FaceEmotion(sq, face, p, classifier.labels) for sq, face, p in zip(squares, boxes, probs)]
