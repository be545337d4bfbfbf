"""``affectsr prepare SRC --out CACHE``: a folder of faces -> a sharded, resumable training cache.

Layouts understood (see docs/TRAINING.md):

* ``SRC/labels.csv`` with columns ``path,label,split,subject`` (extra columns ignored, ``path``
  relative to SRC), as in ``shared/data``;
* CelebA: ``SRC/list_eval_partition.txt`` (0 train, 1 val, 2 test) with the images in
  ``SRC/img_align_celeba/`` (or SRC itself), identities from ``SRC/identity_CelebA.txt`` if present;
* any other folder (FFHQ, Helen, your own photos): every image under SRC, recursively. A path
  component named train/trainset/training, val/valid/validation or test/testset gives the
  split; a component that is an emotion name (happy, sad, ...) gives the label.

Rows without a split get ``sha1(subject or path) mod 10``: 0-7 train, 8 val, 9 test (so, where
subjects are known, no subject lands in two splits).

For each image: the largest face found by MediaPipe's detector (retrying on the image padded
with grey, because the full-range detector misses faces that fill the frame), the square crop
``FaceBox.square(margin)`` used by :class:`affectsr.pipeline.Upscaler` (edge-replicated where it
leaves the image), resized to ``size`` (PIL bicubic); 478 landmarks detected on the HR crop and on
its bicubic LR versions (x4, x8: the landmarks a model sees at inference); the FER classifier's
soft labels when a classifier ships. Images with no face are skipped and listed with the reason.

Output: ``CACHE/shard-00000.npz`` ... (``shard_size`` images each, uncompressed), ``CACHE/index.json``
(settings, counts, per-shard info) and ``CACHE/skipped.csv``. A re-run with the same settings
skips finished shards (and fills in soft labels that were missing when a shard was written).
"""
from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing as mp
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from affectsr.atomic import atomic_write
from affectsr.emotion import load_emotion_classifier
from affectsr.faces import crop_padded
from affectsr.images import ImageReadError, bicubic_down, iter_image_files, read_image, resize
from affectsr.landmarks import FaceBox, shared_detector
from affectsr.progress import progress as progress_bar

__all__ = ["EMOTION_LABELS", "Record", "PrepareConfig", "discover", "hash_split", "process_image", "prepare",
           "load_index"]

EMOTION_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""The label ids stored in the shards: part of the cache format, so spelled out here (FER2013's order, as EMOTIONS)."""
FORMAT_VERSION = 1
_SPLIT_WORDS = {"train": "train", "trainset": "train", "training": "train", "val": "val", "valid": "val",
                "validation": "val", "test": "test", "testset": "test", "testing": "test"}
_LABEL_WORDS = {**{e: e for e in EMOTION_LABELS}, "anger": "angry", "sadness": "sad", "happiness": "happy",
                "disgusted": "disgust", "fearful": "fear", "surprised": "surprise", "contempt": "contempt"}


@dataclass(frozen=True)
class Record:
    path: str  # absolute
    rel: str  # relative to SRC (the id stored in the cache)
    label: str = ""
    split: str = ""
    subject: str = ""


@dataclass(frozen=True)
class PrepareConfig:
    size: int = 128
    margin: float = 0.6
    lr_scales: tuple[int, ...] = (4, 8)
    shard_size: int = 1024
    workers: int = 2
    no_face: str = "skip"  # 'skip' (list and leave out) or 'center' (use the centre square, listed too)
    detect_pad: float = 0.25  # grey padding (fraction of the side) for the second detection try

    def key(self) -> dict:
        d = asdict(self)
        d.pop("workers")
        d["lr_scales"] = list(self.lr_scales)
        return d


def hash_split(key: str) -> str:
    v = int(hashlib.sha1(key.encode()).hexdigest(), 16) % 10
    return "train" if v < 8 else ("val" if v == 8 else "test")


def _norm_split(s: str) -> str:
    return _SPLIT_WORDS.get(s.strip().lower(), "")


def _from_labels_csv(src: Path) -> list[Record]:
    out = []
    with open(src / "labels.csv", newline="") as f:
        reader = csv.DictReader(f)
        if "path" not in (reader.fieldnames or ()):
            raise ValueError(f"{src / 'labels.csv'}: needs a 'path' column")
        for row in reader:
            rel = row["path"]
            out.append(Record(str((src / rel).resolve()), rel, (row.get("label") or "").strip().lower(),
                              _norm_split(row.get("split") or ""), (row.get("subject") or "").strip()))
    return out


def _from_celeba(src: Path) -> list[Record]:
    img_dir = src / "img_align_celeba" if (src / "img_align_celeba").is_dir() else src
    ids = {}
    if (src / "identity_CelebA.txt").is_file():
        for line in (src / "identity_CelebA.txt").read_text().split("\n"):
            parts = line.split()
            if len(parts) == 2:
                ids[parts[0]] = parts[1]
    out = []
    for line in (src / "list_eval_partition.txt").read_text().split("\n"):
        parts = line.split()
        if len(parts) != 2:
            continue
        name, part = parts
        split = {"0": "train", "1": "val", "2": "test"}.get(part, "")
        path = img_dir / name
        out.append(Record(str(path.resolve()), str(path.relative_to(src)), "", split, ids.get(name, "")))
    return out


def _from_folder(src: Path) -> list[Record]:
    out = []
    for f in iter_image_files([src]):
        rel = f.relative_to(src)
        split = label = ""
        for part in rel.parts[:-1]:
            split = split or _norm_split(part)
            label = label or _LABEL_WORDS.get(part.lower(), "")
        out.append(Record(str(f.resolve()), rel.as_posix(), label, split, ""))
    return out


def discover(src: str | Path) -> tuple[list[Record], str]:
    """Every image of SRC as a Record (sorted by relative path), and the layout name that was used."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: not a folder")
    if (src / "labels.csv").is_file():
        recs, layout = _from_labels_csv(src), "labels.csv"
    elif (src / "list_eval_partition.txt").is_file():
        recs, layout = _from_celeba(src), "celeba"
    else:
        recs, layout = _from_folder(src), "folder"
    fixed = [r if r.split else Record(r.path, r.rel, r.label, hash_split(r.subject or r.rel), r.subject) for r in recs]
    fixed.sort(key=lambda r: r.rel)
    return fixed, layout


# --- per-image work (runs in worker processes) ------------------------------------------------


def _find_face(rgb: np.ndarray, pad_frac: float) -> FaceBox | None:
    det = shared_detector()  # one per worker process
    boxes = det.detect_faces(rgb)
    if boxes:
        return max(boxes, key=lambda b: b.width * b.height * b.score)
    h, w = rgb.shape[:2]
    p = int(round(max(h, w) * pad_frac))
    if p <= 0:
        return None
    padded = np.pad(rgb, ((p, p), (p, p), (0, 0)), mode="constant", constant_values=127)
    boxes = det.detect_faces(padded)
    if not boxes:
        return None
    b = max(boxes, key=lambda b: b.width * b.height * b.score)
    return FaceBox(b.x0 - p, b.y0 - p, b.x1 - p, b.y1 - p, b.score)


def process_image(rec: Record, cfg: PrepareConfig) -> dict:
    """One image -> {'hr', 'lm_hr', 'lm_lr{s}', 'box', 'src_side'} or {'skip': reason}."""
    try:
        rgb = read_image(rec.path).rgb
    except (ImageReadError, OSError) as e:
        return {"skip": f"unreadable: {' '.join(str(e).split())[:200]}"}
    note = ""
    face = _find_face(rgb, cfg.detect_pad)
    h, w = rgb.shape[:2]
    if face is None:
        if cfg.no_face != "center":
            return {"skip": "no face detected"}
        side = min(h, w)
        x0, y0 = (w - side) // 2, (h - side) // 2
        box = (x0, y0, x0 + side, y0 + side)
        note = "no face detected: centre square used"
    else:
        box = face.square(cfg.margin)
    side = box[2] - box[0]
    hr = resize(crop_padded(rgb, box), (cfg.size, cfg.size))
    det = shared_detector()
    crops = [hr] + [bicubic_down(hr, s) for s in cfg.lr_scales]
    lms, found = det.detect_landmarks(crops)
    out = {"hr": hr, "lm_hr": lms[0], "box": np.array(box, np.int32), "src_side": side, "note": note}
    for i, s in enumerate(cfg.lr_scales):
        out[f"lm_lr{s}"] = lms[i + 1]
    return out


def _work(args):
    idx, rec, cfg = args
    try:
        return idx, process_image(rec, cfg)
    except Exception as e:  # noqa: BLE001 - one bad file must not stop a long run; it is listed
        return idx, {"skip": f"error: {type(e).__name__}: {' '.join(str(e).split())[:200]}"}


# --- shards ---------------------------------------------------------------------------------------


def _soft_labels(hr: np.ndarray) -> tuple[np.ndarray, str]:
    """N x 7 float16 FER probabilities of the HR crops, or NaN (and '') when no classifier ships."""
    n = hr.shape[0]
    try:
        clf = load_emotion_classifier()
    except (FileNotFoundError, ValueError):  # no classifier weights (a stripped install)
        return np.full((n, 7), np.nan, np.float16), ""
    x = torch.from_numpy(hr).permute(0, 3, 1, 2).float() / 255.0
    p = clf.predict_proba(x).numpy()
    return p.astype(np.float16), str(getattr(clf, "name", "fer"))


def _atomic_savez(path: Path, arrays: dict) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
            np.savez(f, **arrays)

    atomic_write(path, write)


def _atomic_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _shard_matches(path: Path, recs: list[Record], key: dict) -> bool:
    if not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
    except Exception:  # noqa: BLE001 - a broken shard is simply redone
        return False
    return meta.get("config") == key and meta.get("inputs") == [r.rel for r in recs]


def load_index(cache: str | Path) -> dict:
    p = Path(cache) / "index.json"
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: run `affectsr prepare SRC --out {cache}` first")
    return json.loads(p.read_text())


def _fill_soft(path: Path) -> bool:
    """Add soft labels to a shard written before a classifier shipped; True if it changed."""
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    if data["hr"].shape[0] == 0 or not np.isnan(data["soft"].astype(np.float32)).all():
        return False
    soft, name = _soft_labels(data["hr"])
    if not name:
        return False
    meta = json.loads(str(data["meta"]))
    meta["soft_source"] = name
    data["soft"], data["meta"] = soft, np.array(json.dumps(meta))
    _atomic_savez(path, data)
    return True


def prepare(src: str | Path, out: str | Path, cfg: PrepareConfig = PrepareConfig(), limit: int | None = None,
            progress: bool = True, log=print) -> dict:
    """Build (or resume) the cache; returns the summary that is also written to ``index.json``."""
    t0 = time.time()
    src, out = Path(src), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recs, layout = discover(src)
    if limit is not None:
        recs = recs[:limit]
    if not recs:
        raise ValueError(f"{src}: no images found")
    key = cfg.key()
    chunks = [recs[i:i + cfg.shard_size] for i in range(0, len(recs), cfg.shard_size)]
    todo = []
    for i, chunk in enumerate(chunks):
        path = out / f"shard-{i:05d}.npz"
        if _shard_matches(path, chunk, key):
            _fill_soft(path)
        else:
            todo.append(i)
    for stale in out.glob("shard-*.npz"):  # shards of an older, longer input list
        if int(stale.stem.split("-")[1]) >= len(chunks):
            stale.unlink()
    if todo and len(todo) < len(chunks):
        log(f"resuming: {len(chunks) - len(todo)} of {len(chunks)} shards already done")
    pool = None
    if cfg.workers > 1 and todo:
        pool = mp.get_context("spawn").Pool(cfg.workers)
    bar = progress_bar(total=sum(len(chunks[i]) for i in todo), unit="img", enabled=progress, desc="prepare")
    try:
        for i in todo:
            chunk = chunks[i]
            jobs = [(j, r, cfg) for j, r in enumerate(chunk)]
            results: list[dict | None] = [None] * len(chunk)
            it = pool.imap_unordered(_work, jobs, chunksize=4) if pool else map(_work, jobs)
            for j, res in it:
                results[j] = res
                bar.update(1)
            _write_shard(out / f"shard-{i:05d}.npz", chunk, results, cfg, key)
    finally:
        bar.close()
        if pool:
            pool.close()
            pool.join()
    summary = _summarise(out, src, layout, chunks, cfg, time.time() - t0)
    log(_summary_text(summary, out))
    return summary


def _write_shard(path: Path, chunk: list[Record], results: list[dict], cfg: PrepareConfig, key: dict) -> None:
    keep = [(r, res) for r, res in zip(chunk, results) if "skip" not in res]
    skipped = [[r.rel, res["skip"]] for r, res in zip(chunk, results) if "skip" in res]
    notes = [[r.rel, res["note"]] for r, res in keep if res.get("note")]
    n, s = len(keep), cfg.size
    hr = np.stack([res["hr"] for _, res in keep]) if n else np.zeros((0, s, s, 3), np.uint8)
    arrays = {
        "hr": hr,
        "lm_hr": np.stack([res["lm_hr"] for _, res in keep]).astype(np.float16) if n else np.zeros((0, 478, 3), np.float16),
        "box": np.stack([res["box"] for _, res in keep]) if n else np.zeros((0, 4), np.int32),
        "src_side": np.array([res["src_side"] for _, res in keep], np.int32),
        "label": np.array([EMOTION_LABELS.index(r.label) if r.label in EMOTION_LABELS else -1 for r, _ in keep], np.int8),
        "label_name": np.array([r.label for r, _ in keep], dtype="U16"),
        "split": np.array([r.split for r, _ in keep], dtype="U8"),
        "path": np.array([r.rel for r, _ in keep], dtype="U256"),
        "subject": np.array([r.subject for r, _ in keep], dtype="U64"),
    }
    for sc in cfg.lr_scales:
        arrays[f"lm_lr{sc}"] = (np.stack([res[f"lm_lr{sc}"] for _, res in keep]).astype(np.float16) if n
                                else np.zeros((0, 478, 3), np.float16))
    soft, name = _soft_labels(hr) if n else (np.zeros((0, 7), np.float16), "")
    arrays["soft"] = soft
    meta = {"version": FORMAT_VERSION, "config": key, "inputs": [r.rel for r in chunk], "skipped": skipped,
            "notes": notes, "soft_source": name}
    arrays["meta"] = np.array(json.dumps(meta))
    _atomic_savez(path, arrays)


def _summarise(out: Path, src: Path, layout: str, chunks, cfg: PrepareConfig, seconds: float) -> dict:
    counts: Counter = Counter()
    labels: Counter = Counter()
    found: Counter = Counter()
    skipped, notes, shards, soft_sources = [], [], [], set()
    for i in range(len(chunks)):
        path = out / f"shard-{i:05d}.npz"
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            split = z["split"]
            for sp in split:
                counts[str(sp)] += 1
            for lab in z["label_name"]:
                labels[str(lab) or "(none)"] += 1
            found["hr"] += int(np.isfinite(z["lm_hr"][:, 0, 0].astype(np.float32)).sum())
            for sc in cfg.lr_scales:
                found[f"lr{sc}"] += int(np.isfinite(z[f"lm_lr{sc}"][:, 0, 0].astype(np.float32)).sum())
            shards.append({"file": path.name, "count": int(split.shape[0])})
        skipped += meta["skipped"]
        notes += meta["notes"]
        if meta.get("soft_source"):
            soft_sources.add(meta["soft_source"])
    total = sum(counts.values())
    summary = {
        "format": "affectsr-cache", "version": FORMAT_VERSION, "source": str(src.resolve()), "layout": layout,
        "config": cfg.key(), "images": total, "inputs": sum(len(c) for c in chunks), "skipped": len(skipped),
        "splits": dict(sorted(counts.items())), "labels": dict(sorted(labels.items())),
        "landmarks_found": dict(found), "soft_labels": sorted(soft_sources), "shards": shards,
        "seconds_last_run": round(seconds, 1),
    }
    _atomic_text(out / "index.json", json.dumps(summary, indent=2))
    lines = ["path,reason"] + [f'"{p}","{r}"' for p, r in skipped] + [f'"{p}","{r}"' for p, r in notes]
    _atomic_text(out / "skipped.csv", "\n".join(lines) + "\n")
    return summary


def _summary_text(s: dict, out: Path) -> str:
    lf = ", ".join(f"{k} {v}/{s['images']}" for k, v in s["landmarks_found"].items())
    return (f"cache {out}: {s['images']} faces from {s['inputs']} images ({s['layout']} layout), "
            f"{s['skipped']} skipped (see {out / 'skipped.csv'})\n"
            f"  splits: {s['splits']}\n  landmarks found: {lf}\n"
            f"  soft labels: {', '.join(s['soft_labels']) or 'none (no FER classifier shipped yet; re-run prepare later)'}\n"
            f"  {len(s['shards'])} shards, {s['seconds_last_run']} s")
