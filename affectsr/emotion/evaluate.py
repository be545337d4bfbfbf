"""Classifier accuracy and confusion matrices on the labelled splits, and the face sets the study uses.

This measures the FER classifier itself against human labels (no SR model involved), which is a
different job from :mod:`affectsr.evaluate` (SR outputs against their HR faces); both read faces
through :func:`~affectsr.emotion.faces.classify_crops` and score with :mod:`affectsr.emotion.metrics`.

Two kinds of dataset: *aligned* ones (FER2013, CK+48: 48 px face crops, used as they are) and
*photos* (taiwanese_expr: 256 px head-and-shoulders shots) whose largest face is found with the
MediaPipe detector, cropped with FER framing and resized to ``PHOTO_FACE_SIZE``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from affectsr.images import read_image, resize
from affectsr.landmarks import LandmarkDetector
from affectsr.progress import progress as progress_bar

from .classifier import EMOTIONS, EmotionClassifier
from .data import LabelledFace, load_aligned, read_labels
from .faces import FER_MARGIN, classify_crops, fer_crop, largest_face
from .metrics import accuracy, confusion_matrix

__all__ = ["ALIGNED_DATASETS", "PHOTO_DATASETS", "PHOTO_FACE_SIZE", "DatasetReport", "FaceSet",
           "evaluate_datasets", "evaluate_faces", "format_report", "load_face_set"]

ALIGNED_DATASETS = ("fer2013", "ck_plus_48")
PHOTO_DATASETS = ("taiwanese_expr",)
PHOTO_FACE_SIZE = 128
"""HR side for faces cropped from photos: the output size of the x4 (32 px) and x8 (16 px) SR presets."""


@dataclass
class FaceSet:
    """Face crops (N x S x S x 3 uint8) with their labels; ``skipped`` lists files with no detected face."""

    dataset: str
    split: str
    images: np.ndarray
    labels: np.ndarray  # N class indices into EMOTIONS
    paths: list[str]
    skipped: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return int(self.images.shape[1])


def load_face_set(dataset: str, split: str = "test", root: str | os.PathLike[str] | None = None,
                  detector: LandmarkDetector | None = None, margin: float = FER_MARGIN,
                  photo_size: int = PHOTO_FACE_SIZE, limit: int | None = None, progress: bool = False) -> FaceSet:
    """The labelled faces of one split, ready for the classifier (see the module docstring)."""
    faces: list[LabelledFace] = read_labels(dataset, split, root)
    if limit is not None:
        faces = faces[:limit]
    labels = np.array([f.label_index for f in faces], dtype=np.int64)
    if dataset not in PHOTO_DATASETS:
        return FaceSet(dataset, split, load_aligned(faces), labels, [str(f.path) for f in faces])
    own = detector is None
    det = detector or LandmarkDetector()
    crops, keep, skipped = [], [], []
    try:
        for i, f in enumerate(progress_bar(faces, desc=f"faces {dataset}/{split}", unit="face", enabled=progress)):
            rgb = read_image(f.path).rgb
            face = largest_face(det.detect_faces(rgb))
            if face is None:
                skipped.append(str(f.path))
                continue
            crop, _ = fer_crop(rgb, face, margin)
            crops.append(resize(crop, (photo_size, photo_size)))
            keep.append(i)
    finally:
        if own:
            det.close()
    images = np.stack(crops) if crops else np.zeros((0, photo_size, photo_size, 3), np.uint8)
    return FaceSet(dataset, split, images, labels[keep], [str(faces[i].path) for i in keep], skipped)


@dataclass
class DatasetReport:
    dataset: str
    split: str
    n: int
    accuracy: float
    confusion: np.ndarray  # rows true class, columns predicted, order EMOTIONS
    skipped: int = 0

    def per_class_recall(self) -> dict[str, float | None]:
        rows = self.confusion.sum(1)
        return {c: (float(self.confusion[i, i] / rows[i]) if rows[i] else None) for i, c in enumerate(EMOTIONS)}

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "split": self.split, "n": self.n, "accuracy": self.accuracy,
                "skipped": self.skipped, "labels": list(EMOTIONS), "confusion": self.confusion.tolist()}


def evaluate_faces(classifier: EmotionClassifier, faces: FaceSet) -> tuple[DatasetReport, np.ndarray]:
    """Accuracy and confusion matrix on one face set, plus the probabilities (N x C)."""
    probs = classify_crops(classifier, list(faces.images))
    pred = probs.argmax(1)
    report = DatasetReport(faces.dataset, faces.split, len(faces.labels), accuracy(probs, faces.labels),
                           confusion_matrix(faces.labels, pred, len(EMOTIONS)), len(faces.skipped))
    return report, probs


def evaluate_datasets(classifier: EmotionClassifier, root: str | os.PathLike[str] | None = None,
                      datasets: tuple[str, ...] = ALIGNED_DATASETS, split: str = "test",
                      margin: float = FER_MARGIN) -> list[DatasetReport]:
    return [evaluate_faces(classifier, load_face_set(d, split, root, margin=margin))[0] for d in datasets]


def format_report(reports: list[DatasetReport]) -> str:
    """Markdown: one accuracy table, then each confusion matrix (rows true, columns predicted)."""
    lines = ["| dataset | split | faces | accuracy |", "|---|---|---:|---:|"]
    for r in reports:
        extra = f" ({r.skipped} without a detected face left out)" if r.skipped else ""
        lines.append(f"| {r.dataset} | {r.split} | {r.n}{extra} | {r.accuracy:.2%} |")
    short = [c[:4] for c in EMOTIONS]
    for r in reports:
        lines += ["", f"{r.dataset} {r.split}: confusion matrix (rows true, columns predicted)", "",
                  "| true \\ pred | " + " | ".join(short) + " | recall |", "|---|" + "---:|" * (len(EMOTIONS) + 1)]
        recall = r.per_class_recall()
        for i, c in enumerate(EMOTIONS):
            if r.confusion[i].sum() == 0:
                continue
            rec = recall[c]
            lines.append(f"| {c} | " + " | ".join(str(v) for v in r.confusion[i]) + f" | {rec:.0%} |")
    return "\n".join(lines)
