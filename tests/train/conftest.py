"""A tiny prepared cache (32 px HR crops of the bundled face) for fast training tests."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    from affectsr.assets import default_face
    from affectsr.data.prepare import PrepareConfig, prepare

    src = tmp_path_factory.mktemp("tiny_src")
    (src / "images").mkdir()
    face = default_face(128)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(10):
        canvas = np.full((176, 176, 3), 110 + 7 * i, np.uint8)
        dx, dy = rng.integers(-10, 11, 2)
        img = np.clip(face.astype(np.int16) + int(rng.integers(-25, 26)), 0, 255).astype(np.uint8)
        canvas[24 + dy:152 + dy, 24 + dx:152 + dx] = img[:, ::-1] if i % 2 else img
        Image.fromarray(canvas).save(src / "images" / f"f{i}.png")
        rows.append([f"images/f{i}.png", "happy", "val" if i >= 8 else "train", f"S{i}"])
    with open(src / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "label", "split", "subject"], *rows])
    out = tmp_path_factory.mktemp("tiny_cache")
    prepare(src, out, PrepareConfig(size=32, lr_scales=(4,), workers=1), progress=False, log=lambda *_: None)
    return out
