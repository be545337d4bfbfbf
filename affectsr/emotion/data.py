"""Labelled expression datasets as laid out in ``shared/data`` (``<dataset>/labels.csv``: path,label,split,subject).

Nothing is copied or downloaded: images are read from the data root in place. The root is,
in order: an explicit argument, ``$AFFECTSR_DATA_ROOT``, or ``../shared/data`` next to the
repository checkout when that folder exists.
"""
from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from affectsr.images import read_image, resize

from .classifier import EMOTIONS

__all__ = [
    "DATA_ENV",
    "DatasetNotFoundError",
    "LabelledFace",
    "default_data_root",
    "resolve_data_root",
    "read_labels",
    "load_aligned",
    "class_counts",
]

DATA_ENV = "AFFECTSR_DATA_ROOT"
REPO_ROOT = Path(__file__).resolve().parents[2]


class DatasetNotFoundError(FileNotFoundError):
    """The data root or a dataset folder is missing (tests skip on this)."""


@dataclass(frozen=True)
class LabelledFace:
    path: Path  # absolute
    label: str  # one of EMOTIONS
    split: str
    subject: str

    @property
    def label_index(self) -> int:
        return EMOTIONS.index(self.label)


def default_data_root() -> Path | None:
    """``$AFFECTSR_DATA_ROOT`` if set, else ``<repo>/../shared/data`` if it exists, else None."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    candidate = REPO_ROOT.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


def resolve_data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The data root to use, or a :class:`DatasetNotFoundError` that says how to point at one."""
    path = Path(root) if root is not None else default_data_root()
    if path is None:
        raise DatasetNotFoundError(f"no data root: pass --data DIR or set {DATA_ENV} (expected ../shared/data next to the repo)")
    if not path.is_dir():
        raise DatasetNotFoundError(f"data root {path} is not a folder")
    return path


def read_labels(dataset: str, split: str | None = "test", root: str | os.PathLike[str] | None = None,
                labels: tuple[str, ...] = EMOTIONS) -> list[LabelledFace]:
    """Rows of ``<root>/<dataset>/labels.csv`` for ``split`` (None: all) whose label is in ``labels``.

    Labels outside the classifier's 7 classes (CK+'s ``contempt``) and unlabelled rows are dropped,
    because no prediction could ever match them.
    """
    folder = resolve_data_root(root) / dataset
    table = folder / "labels.csv"
    if not table.is_file():
        raise DatasetNotFoundError(f"{table} not found (is {dataset!r} under the data root?)")
    out = []
    with open(table, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"path", "label", "split"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{table}: missing columns {sorted(missing)}")
        for row in reader:
            if (split is not None and row["split"] != split) or row["label"] not in labels:
                continue
            out.append(LabelledFace(folder / row["path"], row["label"], row["split"], row.get("subject") or ""))
    return out


def load_aligned(faces: list[LabelledFace], size: int | None = None) -> np.ndarray:
    """Already aligned face crops (FER2013, CK+48) as ``N x S x S x 3`` uint8 RGB, optionally bicubic-resized to ``size``."""
    arrays = []
    for face in faces:
        rgb = read_image(face.path).rgb
        if rgb.shape[0] != rgb.shape[1]:
            raise ValueError(f"{face.path}: aligned faces must be square, got {rgb.shape[1]} x {rgb.shape[0]}")
        if size is not None:
            rgb = resize(rgb, (size, size))
        arrays.append(rgb)
    if not arrays:
        return np.zeros((0, size or 0, size or 0, 3), np.uint8)
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"faces have different sizes {sorted(shapes)}; pass size=")
    return np.stack(arrays)


def class_counts(faces: list[LabelledFace]) -> dict[str, int]:
    c = Counter(f.label for f in faces)
    return {name: c.get(name, 0) for name in EMOTIONS}
