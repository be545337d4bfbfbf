"""Tiny face folders made from the bundled astronaut face (no /work/shared needed)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def make_face_folder(root: Path, n: int = 6, size: int = 200, with_no_face: bool = True) -> Path:
    """``root`` with ``images/*.png`` (the astronaut face jittered on a grey canvas) and a labels.csv."""
    from affectsr.assets import default_face

    face = default_face(128)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    rng = np.random.default_rng(0)
    splits = ["train", "train", "train", "val", "test", ""]
    labels = ["happy", "sad", "", "angry", "neutral", "surprise"]
    for i in range(n):
        canvas = np.full((size, size, 3), 120 + 10 * (i % 3), np.uint8)
        dx, dy = int(rng.integers(-12, 13)), int(rng.integers(-12, 13))
        x0, y0 = (size - 128) // 2 + dx, (size - 128) // 2 + dy
        img = np.clip(face.astype(np.int16) + int(rng.integers(-20, 21)), 0, 255).astype(np.uint8)
        canvas[y0:y0 + 128, x0:x0 + 128] = img[:, ::-1] if i % 2 else img
        name = f"images/face{i:02d}.png"
        Image.fromarray(canvas).save(root / name)
        rows.append([name, labels[i % len(labels)], splits[i % len(splits)], f"S{i % 3}"])
    if with_no_face:
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
        grad = np.stack([xs / size, ys / size, 1 - xs / (2 * size)], -1)
        Image.fromarray(np.rint(grad * 255).astype(np.uint8)).save(root / "images/gradient.png")
        rows.append(["images/gradient.png", "", "train", ""])
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split", "subject", "extra"])
        for r in rows:
            w.writerow(r + ["x"])
    return root


@pytest.fixture(scope="session")
def face_folder(tmp_path_factory) -> Path:
    return make_face_folder(tmp_path_factory.mktemp("faces"))
