"""The prepared cache in memory, and stateless (hence exactly resumable) batch sampling.

Batches are a pure function of (seed, step): step k of a run with global batch B uses epoch
``e = k // steps_per_epoch`` and the ``B`` indices at position ``k % steps_per_epoch`` of the
permutation drawn from ``seed`` and ``e``; blind degradations are seeded from (seed, e, index).
So "the data-loader position" of a checkpoint is its step, and a resumed run (or a DDP rank,
which takes ``rank::world_size`` of the global batch) sees exactly the same data.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..metrics import to_tensor
from ..types import LANDMARK_SOURCES, check_landmark_mode
from .degrade import degrade_batch

__all__ = ["FaceCache", "Batch", "batch_indices", "make_batch", "LANDMARK_SOURCES"]


class FaceCache:
    """All shards of one or more caches (optionally one split) as numpy arrays.

    ``hr`` N x S x S x 3 uint8; ``lm_hr`` and ``lm_lr[s]`` N x 478 x 3 float32 (NaN = not found);
    ``soft`` N x 7 float32 (NaN when no classifier shipped at prepare time); ``label`` N int (-1 =
    none); ``path``, ``subject``, ``split`` N str.
    """

    def __init__(self, caches: str | Path | list[str | Path], split: str | None = None, limit: int | None = None):
        if isinstance(caches, (str, Path)):
            caches = [caches]
        parts: dict[str, list[np.ndarray]] = {}
        self.sources: list[str] = []
        for cache in caches:
            cache = Path(cache)
            index = json.loads((cache / "index.json").read_text()) if (cache / "index.json").is_file() else None
            files = [cache / s["file"] for s in index["shards"]] if index else sorted(cache.glob("shard-*.npz"))
            if not files:
                raise FileNotFoundError(f"{cache}: no shards (run `affectsr prepare SRC --out {cache}`)")
            self.sources.append(str(cache))
            for f in files:
                with np.load(f, allow_pickle=False) as z:
                    keep = np.ones(z["split"].shape[0], bool) if split is None else (z["split"] == split)
                    for k in z.files:
                        if k == "meta":
                            continue
                        a = z[k][keep]
                        if k == "path":
                            a = np.array([f"{cache.name}/{p}" for p in a], dtype="U300")
                        parts.setdefault(k, []).append(a)
        self.arrays = {k: np.concatenate(v) for k, v in parts.items()}
        if limit is not None:
            self.arrays = {k: v[:limit] for k, v in self.arrays.items()}
        for k in list(self.arrays):
            if k.startswith(("lm_", "soft")):
                self.arrays[k] = self.arrays[k].astype(np.float32)
        self.predicted: dict[int, np.ndarray] = {}  # scale -> N x 478 x 3 from a LandmarkPredictor

    def __len__(self) -> int:
        return int(self.arrays["hr"].shape[0])

    def __getattr__(self, name: str):
        arrays = self.__dict__.get("arrays", {})
        if name in arrays:
            return arrays[name]
        raise AttributeError(name)

    @property
    def size(self) -> int:
        return int(self.arrays["hr"].shape[1])

    def lr_landmarks(self, scale: int) -> np.ndarray:
        key = f"lm_lr{scale}"
        if key not in self.arrays:
            raise KeyError(f"the cache has no landmarks for x{scale} LR (prepared with other --lr-scales)")
        return self.arrays[key]

    def landmarks(self, idx: np.ndarray, scale: int, source: str) -> np.ndarray | None:
        """B x 478 x 3 landmarks normalised to the LR crop, by source (see ``LANDMARK_SOURCES``); None for 'none'."""
        check_landmark_mode(source, LANDMARK_SOURCES)
        if source == "none":
            return None
        if source == "hr":
            return self.arrays["lm_hr"][idx]
        if source == "detect":
            return self.lr_landmarks(scale)[idx]
        if scale not in self.predicted:
            raise RuntimeError(f"landmarks={source!r} needs predicted landmarks (set cache.predicted[{scale}])")
        pred = self.predicted[scale][idx]
        if source == "predict":
            return pred
        det = self.lr_landmarks(scale)[idx]
        ok = np.isfinite(det).all(axis=(1, 2))
        return np.where(ok[:, None, None], det, pred)


def batch_indices(n: int, batch_size: int, step: int, seed: int, rank: int = 0, world_size: int = 1) -> tuple[np.ndarray, int]:
    """(indices of this rank's share of global batch ``step``, epoch). Drops the last partial batch."""
    if batch_size % world_size:
        raise ValueError(f"global batch {batch_size} is not divisible by {world_size} processes")
    per_epoch = n // batch_size
    if per_epoch < 1:
        raise ValueError(f"{n} training images are fewer than one batch of {batch_size}")
    epoch, pos = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g).numpy()
    glob = perm[pos * batch_size:(pos + 1) * batch_size]
    return glob[rank::world_size], epoch


@dataclass
class Batch:
    lr: torch.Tensor  # B x 3 x h x w in [0, 1]
    hr: torch.Tensor  # B x 3 x H x W in [0, 1]
    landmarks: torch.Tensor | None  # B x 478 x 3 (NaN rows = none)
    lm_hr: torch.Tensor  # B x 478 x 3
    soft: torch.Tensor  # B x 7 (NaN if unknown)
    label: torch.Tensor  # B (-1 = none)
    index: np.ndarray

    def to(self, device) -> Batch:
        mv = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(mv(self.lr), mv(self.hr), mv(self.landmarks), mv(self.lm_hr), mv(self.soft), mv(self.label), self.index)


def make_batch(cache: FaceCache, idx: np.ndarray, scale: int, degradation: str = "bicubic", seed: int = 0,
               epoch: int = 0, landmarks: str = "detect") -> Batch:
    """Batch of cache rows ``idx``: HR, its LR (:func:`~affectsr.data.degrade.degrade_batch`) and the landmarks."""
    hr = cache.hr[idx]
    lm = cache.landmarks(idx, scale, landmarks)
    return Batch(
        lr=to_tensor(degrade_batch(hr, idx, scale, degradation, seed, epoch)), hr=to_tensor(hr),
        landmarks=None if lm is None else torch.from_numpy(np.ascontiguousarray(lm)).float(),
        lm_hr=torch.from_numpy(cache.lm_hr[idx]).float(),
        soft=torch.from_numpy(cache.soft[idx]).float(),
        label=torch.from_numpy(cache.label[idx].astype(np.int64)),
        index=idx,
    )
