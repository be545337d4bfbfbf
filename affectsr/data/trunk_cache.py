"""Frozen-trunk feature cache: run a pretrained RRDB trunk once per face, train what comes after it.

The RRDB trunk (conv_first, the 23 RRDB blocks, trunk_conv and the trunk residual) is about 93% of
an nf64 nb23 RRDBNet's compute at x4. With the trunk frozen, its output for a face never changes,
so it is computed once per face of a prepared cache (:class:`~affectsr.data.dataset.FaceCache`,
same bicubic LR as :func:`~affectsr.data.dataset.make_batch`) and stored here; training then runs
only the upsampling path (and the prior/fusion) on the stored features.

``stop_before=K`` stops K blocks before the end of the trunk, so the last K blocks can be
trained: a face then stores ``fea`` (the input of block ``nb-K``) and ``base`` (conv_first's output,
which the trunk residual adds back). :func:`finish_trunk` completes the trunk from them.

Layout of ``out``: ``meta.json`` (what was cached, from what, with which weights; checked on resume),
``shard-00000.npz`` ... (``index``: the face's position in ``FaceCache(caches, split)``, ``path``,
``fea`` and, when K > 0, ``base``: float16 N x nf x h x w), each written atomically, and
``index.json`` once every shard is there. An interrupted build resumes at the first missing shard.

    affectsr cache-trunk --data .data/cache/utkface_aligned .data/cache/taiwanese_expr \\
        --out runs/trunk-x4 --scale 4 --split train --stop-before 2 --threads 1
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..atomic import atomic_write
from ..models.realesrgan import rrdb_state_dict
from ..models.rrdb import RRDBNet
from .dataset import FaceCache, make_batch

FORMAT = "affectsr-trunk-cache/1"
FP16_MAX = 65504.0


# --- the trunk, split where the cache stops -------------------------------------------------------


def trunk_features(backbone: RRDBNet, lr: torch.Tensor, stop_before: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(fea, base)`` for LR images B x 3 x h x w in [0, 1].

    ``stop_before=0``: ``fea`` is the trunk's output (what the first upsampling stage and AffectSRNet's
    stage-0 fusion take) and ``base`` is None. ``stop_before=K > 0``: ``fea`` is the input of block
    ``nb - K`` and ``base`` is conv_first's output.
    """
    blocks = backbone.RRDB_trunk
    if not 0 <= stop_before <= len(blocks):
        raise ValueError(f"stop_before must be in 0..{len(blocks)}, got {stop_before}")
    base = backbone.conv_first(lr)
    if stop_before == 0:
        return base + backbone.trunk_conv(blocks(base)), None
    return blocks[: len(blocks) - stop_before](base), base


def finish_trunk(backbone: RRDBNet, fea: torch.Tensor, base: torch.Tensor | None, stop_before: int) -> torch.Tensor:
    """The trunk's output from a cache entry: the last ``stop_before`` blocks, trunk_conv and the residual."""
    if stop_before == 0:
        return fea
    blocks = backbone.RRDB_trunk
    return base + backbone.trunk_conv(blocks[len(blocks) - stop_before:](fea))


def weights_digest(backbone: RRDBNet) -> str:
    """sha256 over the trunk's parameter names and values: which weights a cache was made with."""
    h = hashlib.sha256()
    for k, v in backbone.state_dict().items():
        if k.startswith(("conv_first.", "RRDB_trunk.", "trunk_conv.")):
            h.update(k.encode())
            h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def realesrgan_backbone(scale: int = 4) -> RRDBNet:
    """Real-ESRGAN x4plus as an RRDBNet of ``scale`` (the trunk is the same at every scale)."""
    net = RRDBNet(3, 3, 64, 23, 32, scale)
    missing, unexpected = net.load_state_dict(rrdb_state_dict(), strict=False)
    if unexpected or set(missing) - {"upconv3.weight", "upconv3.bias"}:
        raise ValueError(f"Real-ESRGAN does not fit RRDBNet x{scale}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return net.eval()


def sample_indices(n_faces: int, n: int | None, seed: int = 0) -> list[int] | None:
    """``n`` positions drawn without replacement from ``n_faces`` (sorted), or None (every face) for ``n=None``."""
    if n is None or n >= n_faces:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_faces, size=n, replace=False)).tolist()


# --- building ------------------------------------------------------------------------------------


@dataclass
class TrunkCacheConfig:
    caches: list[str]
    scale: int = 4
    split: str | None = "train"  # None: every face
    stop_before: int = 0
    shard_size: int = 256
    batch_size: int = 8
    indices: list[int] | None = None  # positions in FaceCache(caches, split) order; None: all of them
    weights: str = ""  # weights_digest of the trunk; filled in by build_trunk_cache
    format: str = field(default=FORMAT)

    def meta(self) -> dict:
        d = asdict(self)
        idx = d.pop("indices")
        d["indices_sha256"] = None if idx is None else hashlib.sha256(np.asarray(idx, np.int64).tobytes()).hexdigest()
        return d


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a bare temp name
            np.savez(f, **arrays)

    atomic_write(path, write)


def build_trunk_cache(cfg: TrunkCacheConfig, out: str | Path, backbone: RRDBNet | None = None, threads: int = 1,
                      progress: bool = True, faces: FaceCache | None = None) -> dict:
    """Compute and store the trunk features of every selected face; resumes an interrupted build.

    ``backbone`` defaults to Real-ESRGAN x4plus. ``faces`` may pass the already loaded
    ``FaceCache(cfg.caches, cfg.split)``. Returns ``{"faces", "computed", "seconds", "faces_per_s"}``
    for the faces computed in this call.
    """
    out = Path(out)
    torch.set_num_threads(threads)
    backbone = (backbone or realesrgan_backbone(cfg.scale)).eval()
    cfg.weights = weights_digest(backbone)
    meta = cfg.meta()
    meta_path = out / "meta.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if old != meta:
            diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
            raise ValueError(f"{out}: holds a trunk cache made with other settings ({', '.join(diff)}); "
                             f"use another --out or remove it")
    else:
        atomic_write(meta_path, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1)))
    faces = faces if faces is not None else FaceCache(cfg.caches, split=cfg.split)
    order = np.arange(len(faces)) if cfg.indices is None else np.asarray(cfg.indices, np.int64)
    if order.size == 0 or order.min() < 0 or order.max() >= len(faces):
        raise ValueError(f"indices must lie in 0..{len(faces) - 1} (the faces of split {cfg.split!r})")
    n_shards = -(-len(order) // cfg.shard_size)
    names = [f"shard-{i:05d}.npz" for i in range(n_shards)]
    todo = [i for i in range(n_shards) if not (out / names[i]).is_file()]
    done = len(order) - sum(len(order[i * cfg.shard_size:(i + 1) * cfg.shard_size]) for i in todo)
    bar = tqdm(total=len(order), initial=done, desc=f"trunk x{cfg.scale} K={cfg.stop_before}", unit="face",
               disable=not progress or None, file=sys.stderr)
    computed, start = 0, time.perf_counter()
    try:
        for i in todo:
            idx = order[i * cfg.shard_size:(i + 1) * cfg.shard_size]
            feas, bases = [], []
            for j in range(0, len(idx), cfg.batch_size):
                lr = make_batch(faces, idx[j:j + cfg.batch_size], cfg.scale, "bicubic", landmarks="none").lr
                with torch.inference_mode():
                    fea, base = trunk_features(backbone, lr, cfg.stop_before)
                for t in (fea, base):
                    if t is not None and not (torch.isfinite(t).all() and t.abs().max() < FP16_MAX):
                        raise ValueError(f"trunk features out of float16 range for faces {idx[j:j + cfg.batch_size][:4]}")
                feas.append(fea.half().numpy())
                if base is not None:
                    bases.append(base.half().numpy())
                computed += len(lr)
                bar.update(len(lr))
                bar.set_postfix(faces_per_s=f"{computed / (time.perf_counter() - start):.2f}")
            arrays = {"index": idx, "path": faces.path[idx], "fea": np.concatenate(feas)}
            if bases:
                arrays["base"] = np.concatenate(bases)
            _save_npz(out / names[i], arrays)
    finally:
        bar.close()
    index = {"format": FORMAT, "faces": int(len(order)), "shards": names}
    atomic_write(out / "index.json", lambda tmp: Path(tmp).write_text(json.dumps(index, indent=1)))
    seconds = time.perf_counter() - start
    return {"faces": int(len(order)), "computed": computed, "seconds": seconds,
            "faces_per_s": computed / seconds if computed else None}


# --- reading -------------------------------------------------------------------------------------


class TrunkCache:
    """A finished trunk cache in memory: ``index``, ``path``, ``fea`` (and ``base`` when K > 0), float16."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if not (path / "index.json").is_file():
            raise FileNotFoundError(f"{path}: no finished trunk cache (index.json missing; build or resume it)")
        self.meta = json.loads((path / "meta.json").read_text())
        index = json.loads((path / "index.json").read_text())
        parts: dict[str, list[np.ndarray]] = {}
        for name in index["shards"]:
            with np.load(path / name, allow_pickle=False) as z:
                for k in z.files:
                    parts.setdefault(k, []).append(z[k])
        self.arrays = {k: np.concatenate(v) for k, v in parts.items()}
        self.stop_before = int(self.meta["stop_before"])
        self.scale = int(self.meta["scale"])

    def __len__(self) -> int:
        return len(self.arrays["index"])

    def __getattr__(self, name: str):
        arrays = self.__dict__.get("arrays", {})
        if name in arrays:
            return arrays[name]
        raise AttributeError(name)

    def check_faces(self, faces: FaceCache) -> None:
        """Raise unless ``faces`` is the FaceCache this was built from (same faces at the stored positions)."""
        if len(self) and (self.index.max() >= len(faces) or not np.array_equal(faces.path[self.index], self.path)):
            raise ValueError("this trunk cache was built from another face cache or split")

    def batch(self, rows: np.ndarray, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor | None]:
        """(fea, base) float32 tensors of cache rows ``rows``."""
        fea = torch.from_numpy(self.arrays["fea"][rows]).to(device).float()
        base = torch.from_numpy(self.arrays["base"][rows]).to(device).float() if "base" in self.arrays else None
        return fea, base
