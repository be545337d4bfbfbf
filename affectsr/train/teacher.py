"""Teacher outputs for distillation: a trained model's SR of chosen training faces, computed once.

With the bicubic degradation a training face's LR input is fixed, so the teacher's output for it never
changes: it is computed once (``affectsr cache-teacher``) and stored, and ``affectsr train teacher=FILE
lambda_kd=...`` adds ``lambda_kd x L1(student, teacher)`` on the rows of each batch that have one.

A full preset costs ~1-2 s per face on one CPU thread, so only a subset of the train split gets a teacher
output. With a frozen-trunk feature cache of those faces (``affectsr cache-trunk``) only what follows the
cached trunk runs (:func:`~affectsr.train.frozen_trunk.forward_from_trunk`), which is much cheaper; the cached
features must be those of the teacher's own (frozen) trunk, which is checked against a full forward.

The file is one ``.npz``: ``index`` (positions in ``FaceCache(caches, split)``), ``path`` (to check them),
``sr`` (N x S x S x 3 uint8, rounded like a cache image) and ``meta`` (JSON: format, teacher, scale, split,
caches, landmarks, trunk cache). LR landmarks are MediaPipe's on the LR crop (``detect``), as training uses.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..atomic import atomic_write
from ..data.dataset import FaceCache, make_batch
from ..data.trunk_cache import TrunkCache
from ..metrics import psnr_y, quantize, to_tensor
from ..models.presets import load_model
from .frozen_trunk import forward_from_trunk

__all__ = ["FORMAT", "TeacherOutputs", "build_teacher_outputs"]

FORMAT = "affectsr-teacher-outputs/1"
TRUNK_CHECK_DB = 45.0  # a face's SR from cached features vs a full forward: float16 features leave ~50-60 dB


def _check_trunk_fits(model: torch.nn.Module, faces: FaceCache, tc: TrunkCache, scale: int) -> float:
    """PSNR between the teacher's full forward and its forward from the cached features, on two faces.

    Raises when they differ more than float16 storage explains: the cache holds another trunk's features.
    """
    rows = np.arange(min(2, len(tc)))
    b = make_batch(faces, tc.index[rows], scale, "bicubic", landmarks="detect")
    fea, base = tc.batch(rows)
    with torch.inference_mode():
        full = model(b.lr, b.landmarks).clamp(0, 1)
        cached = forward_from_trunk(model, fea, base, b.lr, b.landmarks, tc.stop_before).clamp(0, 1)
    mse = float((full - cached).pow(2).mean())
    db = 10 * np.log10(1 / max(mse, 1e-20))
    if db < TRUNK_CHECK_DB:
        raise ValueError(f"the trunk cache's features do not fit the teacher's trunk (its SR from them is "
                         f"{db:.1f} dB from a full forward; expected >= {TRUNK_CHECK_DB})")
    return db


def build_teacher_outputs(teacher: str, caches: list[str], out: str | Path, split: str | None = "train",
                          indices: list[int] | np.ndarray | None = None, trunk_cache: str = "", batch_size: int = 8,
                          threads: int = 1, progress: bool = True) -> dict:
    """Write the teacher's SR of the chosen faces to ``out`` (.npz, atomically); returns facts for the log.

    ``teacher``: a preset name or SR ``.safetensors``. Faces: ``indices`` (positions in ``FaceCache(caches,
    split)``), those of ``trunk_cache`` (built from the same caches and split), or every face of the split.
    """
    torch.set_num_threads(threads)
    model = load_model(teacher).eval()
    scale = model.scale
    faces = FaceCache(caches, split=split)
    tc = None
    if trunk_cache:
        tc = TrunkCache(trunk_cache)
        tc.check_faces(faces)
        if tc.scale != scale:
            raise ValueError(f"{trunk_cache} is a x{tc.scale} trunk cache; the teacher is x{scale}")
        if indices is not None:
            raise ValueError("give the faces either by indices or by a trunk cache, not both")
        order = tc.index.astype(np.int64)
    else:
        order = np.arange(len(faces)) if indices is None else np.asarray(indices, np.int64)
    if order.size == 0 or order.min() < 0 or order.max() >= len(faces):
        raise ValueError(f"face positions must lie in 0..{len(faces) - 1} (the faces of split {split!r})")
    check_db = _check_trunk_fits(model, faces, tc, scale) if tc is not None else None
    srs, psnrs = [], []
    start = time.perf_counter()
    with tqdm(total=len(order), desc=f"teacher x{scale}", unit="face", disable=not progress or None,
              file=sys.stderr) as bar, torch.inference_mode():
        for j in range(0, len(order), batch_size):
            rows = np.arange(j, min(j + batch_size, len(order)))
            b = make_batch(faces, order[rows], scale, "bicubic", landmarks="detect")
            if tc is not None:
                fea, base = tc.batch(rows)
                sr = forward_from_trunk(model, fea, base, b.lr, b.landmarks, tc.stop_before)
            else:
                sr = model(b.lr, b.landmarks)
            sr = quantize(sr.clamp(0, 1))
            psnrs.append(psnr_y(sr, b.hr, scale))
            srs.append((sr * 255).round().byte().permute(0, 2, 3, 1).numpy())
            bar.update(len(rows))
    seconds = time.perf_counter() - start
    meta = {"format": FORMAT, "teacher": str(teacher), "scale": scale, "split": split,
            "caches": [str(c) for c in caches], "landmarks": "detect", "trunk_cache": str(trunk_cache)}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a bare temp name
            np.savez(f, index=order, path=faces.path[order], sr=np.concatenate(srs), meta=np.array(json.dumps(meta)))

    atomic_write(out, write)
    return {"faces": int(len(order)), "seconds": round(seconds, 1), "faces_per_s": round(len(order) / seconds, 3),
            "teacher_psnr_y": round(float(torch.cat(psnrs).mean()), 3), "trunk_check_db": check_db}


class TeacherOutputs:
    """A teacher-outputs file in memory: ``index``, ``path``, ``sr`` (uint8) and ``meta``."""

    def __init__(self, path: str | Path):
        try:
            with np.load(path, allow_pickle=False) as z:
                self.meta = json.loads(str(z["meta"]))
                self.index, self.path, self.sr = z["index"], z["path"], z["sr"]
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{path}: not a teacher-outputs file ({' '.join(str(e).split())[:120]}); "
                             f"make one with `affectsr cache-teacher`") from e
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"{path}: format {self.meta.get('format')!r}, expected {FORMAT!r}")

    def __len__(self) -> int:
        return len(self.index)

    def rows_for(self, faces: FaceCache, scale: int) -> np.ndarray:
        """For each face of ``faces``, its row here (-1: none). Raises unless these outputs were made from
        the same faces (same paths at the stored positions) at ``scale`` and the HR size."""
        if self.meta["scale"] != scale:
            raise ValueError(f"the teacher outputs are x{self.meta['scale']}; the model is x{scale}")
        if len(self) and (self.index.max() >= len(faces) or not np.array_equal(faces.path[self.index], self.path)):
            raise ValueError("the teacher outputs were made from another face cache or split")
        if len(self) and self.sr.shape[1] != faces.size:
            raise ValueError(f"the teacher outputs are {self.sr.shape[1]} px; the faces are {faces.size} px")
        rows = np.full(len(faces), -1, np.int64)
        rows[self.index] = np.arange(len(self))
        return rows

    def target(self, rows: np.ndarray) -> torch.Tensor:
        """B x 3 x S x S float tensor in [0, 1] of teacher rows ``rows``."""
        return to_tensor(self.sr[rows])
