"""The detection benchmark (``affectsr bench-detect``): how many faces the detector finds, by face size, in colour and grey.

Scenes are built from the project's own data, reproducibly (one seed): faces of known sizes are
cut from the test splits of ``utkface_aligned`` and ``taiwanese_expr`` (with a margin of their
surroundings) and pasted, feathered, into face-free photos that ship with scikit-image (resized
to 1280 x 720 and 1920 x 1080); whole ``taiwanese_expr`` photos are shrunk so the face is N px and
pasted the same way. A face's ground-truth box is the detector's box on the source image at full
resolution (where it is large and found reliably), mapped into the scene, and its size is that
box's side. Every scene is detected twice: as built (colour) and converted to greyscale.

Reported: recall per size bin (colour and grey), false positives per face-free photo (the
backgrounds alone, colour and grey), unmatched detections per face scene, tight face crops found
with :meth:`~affectsr.landmarks.LandmarkDetector.detect_faces` alone and with the padded retry,
and the time to scan a 1920 x 1080 frame (median over frames, with the load average beside it:
on a shared machine wall time depends on the other jobs; the process CPU time does less).

The picture (``scene.png``) is built from the public-domain astronaut only (no dataset faces),
so it may be shipped; the dataset scenes are never written out.
"""
from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..assets import default_scene
from ..faces import crop_padded
from ..images import grey_copy, read_image, resize
from ..runinfo import machine, today
from .detector import DEFAULT_MIN_FACE, TILE, FaceBox, LandmarkDetector, fine_pixels

__all__ = ["BenchConfig", "FaceSource", "Scene", "BACKGROUNDS", "DEFAULT_BINS", "load_sources", "astronaut_sources",
           "backgrounds", "build_scene", "to_grey", "match", "recall_by_size", "run_detect_bench", "to_markdown",
           "draw_scene", "picture"]

Box = tuple[float, float, float, float]

DEFAULT_DATASETS = ("utkface_aligned", "taiwanese_expr")
DEFAULT_BINS: tuple[tuple[float, float], ...] = ((12, 16), (16, 24), (24, 32), (32, 48), (48, 64), (64, 128))
# scikit-image's sample photos without a human face (looked at one by one: ``coins`` holds profile heads and
# ``camera``/``astronaut`` hold people, so they are left out; ``chelsea`` is a cat, a fair hard negative).
BACKGROUNDS = ("coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "brick",
               "grass", "gravel", "moon", "clock", "page", "text")
FRAME_SIZES = ((1280, 720), (1920, 1080))


@dataclass(frozen=True)
class BenchConfig:
    data_root: str = "../shared/data"
    datasets: tuple[str, ...] = DEFAULT_DATASETS
    split: str = "test"
    scenes: int = 60  # face scenes (half 1280 x 720, half 1920 x 1080), each detected in colour and grey
    faces_per_scene: int = 6
    bins: tuple[tuple[float, float], ...] = DEFAULT_BINS
    seed: int = 0
    iou: float = 0.4  # a detection matches a face when their boxes overlap at least this much
    min_face: float = DEFAULT_MIN_FACE
    threads: int = 2
    timing_frames: int = 7  # frames of the largest size (1920 x 1080) timed (median)
    limit: int | None = None  # at most this many source images per dataset
    frame_sizes: tuple[tuple[int, int], ...] = FRAME_SIZES  # scenes alternate between these (width, height)
    backgrounds: tuple[str, ...] = BACKGROUNDS
    timing_only: bool = False  # build the scenes, time the 1080p frames, skip recall, false positives and crops


@dataclass(frozen=True)
class FaceSource:
    """A face to paste: its image, its box there (the detector's, at full resolution) and how to cut it."""

    rgb: np.ndarray
    box: Box
    name: str  # dataset/file
    kind: str  # "crop": the face and a margin of its surroundings; "photo": the whole image


@dataclass
class Scene:
    rgb: np.ndarray
    boxes: list[Box]  # ground truth, scene pixels
    sources: list[str] = field(default_factory=list)
    name: str = ""

    @property
    def sizes(self) -> list[float]:
        return [max(b[2] - b[0], b[3] - b[1]) for b in self.boxes]


# --- sources and backgrounds ---------------------------------------------------------------------------


def _largest(boxes: list[FaceBox]) -> FaceBox | None:
    return max(boxes, key=lambda b: b.width * b.height, default=None)


def _source_box(detector: LandmarkDetector, rgb: np.ndarray) -> Box | None:
    face = _largest(detector.detect_faces(rgb)) or _largest(detector.detect_padded(rgb))
    return None if face is None else (face.x0, face.y0, face.x1, face.y1)


def load_sources(data_root: str | Path, datasets: Sequence[str], split: str, detector: LandmarkDetector,
                 limit: int | None = None) -> tuple[list[FaceSource], dict[str, int]]:
    """The split's images of each dataset as face sources, and per dataset how many had no face at full size.

    ``taiwanese_expr`` photos (head and shoulders on a studio backdrop) are used both as crops and as
    whole photos. Raises FileNotFoundError, saying what is missing, when the data is not there.
    """
    root = Path(data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} not found: bench-detect builds its scenes from the test splits of "
                                f"{', '.join(datasets)} (pass --data-root)")
    sources: list[FaceSource] = []
    skipped: dict[str, int] = {}
    for name in datasets:
        labels = root / name / "labels.csv"
        if not labels.is_file():
            raise FileNotFoundError(f"{labels} not found: bench-detect needs the {name} dataset (pass --data-root)")
        with open(labels, newline="") as f:
            rows = sorted((r for r in csv.DictReader(f) if r.get("split") == split), key=lambda r: r["path"])
        if not rows:
            raise FileNotFoundError(f"{labels}: no images in split {split!r}")
        skipped[name] = 0
        for r in rows[:limit]:
            rgb = read_image(root / name / r["path"]).rgb
            box = _source_box(detector, rgb)
            if box is None:
                skipped[name] += 1
                continue
            kinds = ("crop", "photo") if name == "taiwanese_expr" else ("crop",)
            sources += [FaceSource(rgb, box, f"{name}/{r['path']}", k) for k in kinds]
    return sources, skipped


def astronaut_sources(detector: LandmarkDetector) -> list[FaceSource]:
    """The public-domain astronaut (scikit-image) as a crop source and a photo source: for tests and the picture."""
    rgb = default_scene()
    box = _source_box(detector, rgb)
    if box is None:
        raise RuntimeError("no face found on the astronaut photo")
    return [FaceSource(rgb, box, "skimage/astronaut", "crop"), FaceSource(rgb, box, "skimage/astronaut", "photo")]


def backgrounds(names: Sequence[str] = BACKGROUNDS) -> list[tuple[str, np.ndarray]]:
    """scikit-image's face-free sample photos as RGB uint8 (grey ones repeated over 3 channels)."""
    from skimage import data

    out = []
    for name in names:
        a = np.asarray(getattr(data, name)())
        if a.dtype != np.uint8:
            a = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
        out.append((name, np.repeat(a[..., None], 3, 2) if a.ndim == 2 else np.ascontiguousarray(a[..., :3])))
    return out


def fill_frame(rng: np.random.Generator, photo: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``photo`` scaled to cover ``size`` (width, height), by up to 1.5x more at random, a random part cut, maybe mirrored."""
    w, h = size
    ph, pw = photo.shape[:2]
    scale = max(w / pw, h / ph) * rng.uniform(1.0, 1.5)
    big = resize(photo, (max(w, round(pw * scale)), max(h, round(ph * scale))))
    y = int(rng.integers(0, big.shape[0] - h + 1))
    x = int(rng.integers(0, big.shape[1] - w + 1))
    out = big[y:y + h, x:x + w]
    return np.ascontiguousarray(out[:, ::-1] if rng.random() < 0.5 else out)


def to_grey(rgb: np.ndarray) -> np.ndarray:
    """H x W uint8 luma (PIL's ITU-R 601 conversion), as a user's greyscale photo would be."""
    return np.asarray(Image.fromarray(rgb).convert("L"))


# --- scenes ------------------------------------------------------------------------------------------


def _feather(h: int, w: int, ramp: int) -> np.ndarray:
    """H x W alpha: 1 inside, a linear ramp to 0 over ``ramp`` pixels at each border (no hard patch edges)."""
    def axis(n: int) -> np.ndarray:
        d = np.minimum(np.arange(n), np.arange(n)[::-1]) + 0.5
        return np.clip(d / max(ramp, 1), 0.0, 1.0)
    return np.outer(axis(h), axis(w)).astype(np.float32)


def _patch(source: FaceSource, size: float) -> tuple[np.ndarray, Box]:
    """The source cut (a crop with a margin, or the whole photo) and scaled so its face is ``size`` px;
    returns the patch and the face's box in it."""
    x0, y0, x1, y1 = source.box
    side = max(x1 - x0, y1 - y0)
    h, w = source.rgb.shape[:2]
    if source.kind == "photo":
        cx0, cy0, cx1, cy1 = 0, 0, w, h
    else:  # the face and about one face of surroundings, within the image
        cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, side
        cx0, cy0 = max(0, math.floor(cx - half)), max(0, math.floor(cy - half))
        cx1, cy1 = min(w, math.ceil(cx + half)), min(h, math.ceil(cy + half))
    k = size / side
    pw, ph = max(1, round((cx1 - cx0) * k)), max(1, round((cy1 - cy0) * k))
    patch = resize(np.ascontiguousarray(source.rgb[cy0:cy1, cx0:cx1]), (pw, ph))
    kx, ky = pw / (cx1 - cx0), ph / (cy1 - cy0)
    return patch, ((x0 - cx0) * kx, (y0 - cy0) * ky, (x1 - cx0) * kx, (y1 - cy0) * ky)


def build_scene(rng: np.random.Generator, background: np.ndarray, sources: Sequence[FaceSource],
                sizes: Sequence[float], name: str = "") -> Scene:
    """Paste one face per size (a random source each, the largest first) at random places that do not overlap;
    returns the scene and its ground-truth boxes. Faces that find no free place (after 200 tries) are left out."""
    canvas = background.astype(np.float32)
    height, width = canvas.shape[:2]
    taken: list[tuple[int, int, int, int]] = []
    boxes, names = [], []
    for size in sorted(sizes, reverse=True):  # the largest patches first, while there is room
        source = sources[int(rng.integers(len(sources)))]
        patch, (fx0, fy0, fx1, fy1) = _patch(source, size)
        ph, pw = patch.shape[:2]
        if pw > width or ph > height:
            continue
        for _ in range(200):
            x, y = int(rng.integers(0, width - pw + 1)), int(rng.integers(0, height - ph + 1))
            gap = max(4, round(size / 4))
            if all(x + pw + gap <= a or a2 + gap <= x or y + ph + gap <= b or b2 + gap <= y for a, b, a2, b2 in taken):
                break
        else:
            continue
        alpha = _feather(ph, pw, max(2, round(min(pw, ph) * 0.08)))[..., None]
        region = canvas[y:y + ph, x:x + pw]
        canvas[y:y + ph, x:x + pw] = alpha * patch + (1 - alpha) * region
        taken.append((x, y, x + pw, y + ph))
        boxes.append((x + fx0, y + fy0, x + fx1, y + fy1))
        names.append(source.name)
    return Scene(np.clip(canvas + 0.5, 0, 255).astype(np.uint8), boxes, names, name)


def scene_sizes(rng: np.random.Generator, bins: Sequence[tuple[float, float]], n: int, start: int) -> list[float]:
    """``n`` face sizes, bins taken in turn from ``start`` (so every bin gets as many faces), log-uniform in a bin."""
    out = []
    for i in range(n):
        lo, hi = bins[(start + i) % len(bins)]
        out.append(float(math.exp(rng.uniform(math.log(lo), math.log(hi)))))
    return out


# --- metrics -----------------------------------------------------------------------------------------


def iou(a: Box, b: Box) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def match(detections: Sequence[Box], truths: Sequence[Box], threshold: float = 0.4) -> tuple[list[bool], int]:
    """Greedy one-to-one matching by IoU (best pairs first): (found flag per true face, unmatched detections)."""
    pairs = sorted(((iou(d, t), i, j) for i, d in enumerate(detections) for j, t in enumerate(truths)), reverse=True)
    used_d: set[int] = set()
    found = [False] * len(truths)
    for value, i, j in pairs:
        if value < threshold:
            break
        if i in used_d or found[j]:
            continue
        used_d.add(i)
        found[j] = True
    return found, len(detections) - len(used_d)


def recall_by_size(sizes: Sequence[float], found: Sequence[bool], bins: Sequence[tuple[float, float]]) -> list[dict]:
    """Per bin [lo, hi): faces, found, recall (None for an empty bin)."""
    out = []
    for lo, hi in bins:
        hits = [f for s, f in zip(sizes, found) if lo <= s < hi]
        out.append({"bin": f"{lo:g}-{hi:g}", "faces": len(hits), "found": int(sum(hits)),
                    "recall": round(sum(hits) / len(hits), 4) if hits else None})
    return out


# --- the run -----------------------------------------------------------------------------------------


def _boxes(faces: list[FaceBox]) -> list[Box]:
    return [(f.x0, f.y0, f.x1, f.y1) for f in faces]


TIGHT_CROPS = (0.8, 1.0, 1.2)  # crop side / the face box's side: from inside the face to just around it


def _tight_crops(sources: Sequence[FaceSource], detector: LandmarkDetector, side: int = 128,
                 max_crops: int = 200) -> list[dict]:
    """Sources cut tightly around the face (square, ``TIGHT_CROPS`` x the box side) at ``side`` px: found by
    detect_faces, and with the padded retry (what ``upscale`` does without ``--aligned`` on a face crop)."""
    crops = [s for s in sources if s.kind == "crop"]
    crops = crops[::max(1, math.ceil(len(crops) / max_crops))]  # an even sample, in source order
    out = []
    for factor in TIGHT_CROPS:
        plain = rescued = 0
        for s in crops:
            x0, y0, x1, y1 = s.box
            half = max(x1 - x0, y1 - y0) * factor / 2
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            box = (round(cx - half), round(cy - half), round(cx + half), round(cy + half))
            crop = resize(crop_padded(s.rgb, box), (side, side))
            if detector.detect_faces(crop):
                plain += 1
            elif detector.detect_padded(crop):
                rescued += 1
        n = len(crops)
        out.append({"crop_over_box": factor, "crops": n, "side": side, "found": plain,
                    "found_with_padding": plain + rescued, "recall": round(plain / n, 4) if n else None,
                    "recall_with_padding": round((plain + rescued) / n, 4) if n else None})
    return out


def _short_box_calibration(sources: Sequence[FaceSource], detector: LandmarkDetector, face: int = 40) -> dict:
    """How the short-range model's box sits on a face (at ``face`` px, in one tile) relative to the full-range box of
    the same face at full resolution: median centre shift (x, y) and size ratio, in units of the short box's side."""
    shifts: list[tuple[float, float, float]] = []
    for s in sources:
        if s.kind != "photo" and s.name.startswith("taiwanese"):
            continue
        x0, y0, x1, y1 = s.box
        k = face / max(x1 - x0, y1 - y0)
        small = resize(s.rgb, (max(1, round(s.rgb.shape[1] * k)), max(1, round(s.rgb.shape[0] * k))))
        tile = np.full((TILE, TILE, 3), 127, np.uint8)
        h, w = min(TILE, small.shape[0]), min(TILE, small.shape[1])
        tile[:h, :w] = small[:h, :w]
        best = max(detector.short_range_boxes(tile), key=lambda b: b.score, default=None)
        if best is None:
            continue
        sx0, sy0, sw, sh = best.x0, best.y0, best.width, best.height
        side = max(sw, sh)
        gx0, gy0, gx1, gy1 = x0 * k, y0 * k, x1 * k, y1 * k
        shifts.append((((gx0 + gx1) / 2 - (sx0 + sw / 2)) / side, ((gy0 + gy1) / 2 - (sy0 + sh / 2)) / side,
                       max(gx1 - gx0, gy1 - gy0) / side))
    if not shifts:
        return {"faces": 0}
    a = np.array(shifts)
    dx, dy, scale = np.median(a, axis=0)
    return {"faces": len(shifts), "face_px": face, "dx": round(float(dx), 4), "dy": round(float(dy), 4),
            "scale": round(float(scale), 4)}


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def time_frames(detector: LandmarkDetector, frames: Sequence[np.ndarray], min_face: float) -> dict:
    """Median wall and process-CPU seconds of ``detect_faces`` per frame (after one untimed warm-up frame)."""
    detector.detect_faces(frames[0], min_face=min_face)
    wall, cpu = [], []
    for frame in frames:
        t, c = time.perf_counter(), time.process_time()
        detector.detect_faces(frame, min_face=min_face)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    h, w = frames[0].shape[:2]
    return {"frames": len(frames), "size": f"{w}x{h}", "min_face": min_face,
            "fine_mpx": round(fine_pixels(w, h, min_face) / 1e6, 2),
            "threads": detector.threads, "median_s": round(float(np.median(wall)), 4),
            "median_cpu_s": round(float(np.median(cpu)), 4), "load_before_after": None}


def run_detect_bench(cfg: BenchConfig, sources: Sequence[FaceSource] | None = None,
                     detector: LandmarkDetector | None = None, log: Callable[[str], None] = print,
                     timing_min_faces: Sequence[float] = ()) -> dict:
    """The whole benchmark as a dict (``to_markdown`` renders it). ``sources``: face sources (default: the
    datasets under ``cfg.data_root``; tests pass :func:`astronaut_sources`)."""
    own = detector is None
    det = detector or LandmarkDetector(min_face=cfg.min_face, threads=cfg.threads)
    try:
        skipped: dict[str, int] = {}
        if sources is None:
            sources, skipped = load_sources(cfg.data_root, cfg.datasets, cfg.split, det, cfg.limit)
            log(f"{len(sources)} face sources ({', '.join(f'{k}: {v} without a face' for k, v in skipped.items())})")
        if not sources:
            raise ValueError("no face sources")
        rng = np.random.default_rng(cfg.seed)
        photos = backgrounds(cfg.backgrounds)
        timed_size = max(cfg.frame_sizes, key=lambda wh: wh[0] * wh[1])
        sizes_all, found = {"colour": [], "grey": []}, {"colour": [], "grey": []}
        scene_fp = {"colour": 0, "grey": 0}
        timed: list[np.ndarray] = []
        for i in range(cfg.scenes):
            size = cfg.frame_sizes[i % len(cfg.frame_sizes)]
            name, photo = photos[int(rng.integers(len(photos)))]
            bg = fill_frame(rng, photo, size)
            scene = build_scene(rng, bg, sources, scene_sizes(rng, cfg.bins, cfg.faces_per_scene, i), name)
            if size == timed_size and len(timed) < cfg.timing_frames:
                timed.append(scene.rgb)
            if cfg.timing_only:  # the same frames as a full run: detecting draws nothing from rng
                if len(timed) == cfg.timing_frames:
                    break
                continue
            for variant, image in (("colour", scene.rgb), ("grey", to_grey(scene.rgb))):
                hits, fp = match(_boxes(det.detect_faces(image, min_face=cfg.min_face)), scene.boxes, cfg.iou)
                sizes_all[variant] += scene.sizes
                found[variant] += hits
                scene_fp[variant] += fp
            if (i + 1) % 10 == 0:
                log(f"scene {i + 1}/{cfg.scenes}: recall so far colour "
                    f"{np.mean(found['colour']):.3f}, grey {np.mean(found['grey']):.3f}")
        # false positives: every background photo alone, at its own size and as 1280x720 / 1920x1080 frames
        empty = []
        for name, photo in photos:
            empty.append(photo)
            empty += [fill_frame(rng, photo, size) for size in cfg.frame_sizes]
        fp = {"colour": 0, "grey": 0}
        for image in [] if cfg.timing_only else empty:
            fp["colour"] += len(det.detect_faces(image, min_face=cfg.min_face))
            fp["grey"] += len(det.detect_faces(to_grey(image), min_face=cfg.min_face))
        log("false positives counted; timing")
        load_before = _load()
        timing = [time_frames(det, timed, mf) for mf in dict.fromkeys([cfg.min_face, *timing_min_faces])] if timed else []
        load_after = _load()
        for t in timing:
            t["load_before_after"] = [load_before, load_after]
        log("timed")
        tight = [] if cfg.timing_only else _tight_crops(sources, det)
        calibration = {} if cfg.timing_only else _short_box_calibration(sources, det)
    finally:
        if own:
            det.close()
    n_faces = len(sizes_all["colour"])
    if cfg.timing_only:
        return {"config": asdict(cfg), "machine": f"{machine()}, {os.cpu_count()} CPUs", "date": today(),
                "sources": {"total": len(sources), "without_face_at_full_size": skipped}, "timing": timing}
    return {
        "config": {k: v for k, v in asdict(cfg).items()},
        "machine": f"{machine()}, {os.cpu_count()} CPUs",
        "date": today(),
        "sources": {"total": len(sources), "without_face_at_full_size": skipped},
        "faces": n_faces,
        "recall": {v: recall_by_size(sizes_all[v], found[v], cfg.bins) for v in ("colour", "grey")},
        "recall_overall": {v: round(float(np.mean(found[v])), 4) if found[v] else None for v in ("colour", "grey")},
        "false_positives": {"face_free_images": len(empty), **{f"per_image_{v}": round(fp[v] / len(empty), 4)
                                                               for v in ("colour", "grey")},
                            **{f"unmatched_per_scene_{v}": round(scene_fp[v] / max(cfg.scenes, 1), 4)
                               for v in ("colour", "grey")}},
        "timing": timing,
        "tight_crops": tight,
        "short_box_calibration": calibration,
    }


def to_markdown(report: dict) -> str:
    cfg = report["config"]
    command = [f"Command: `{report['command']}`", ""] if report.get("command") else []
    if "recall" not in report:  # timing_only
        lines = [f"Detection timing (frames of the scenes of seed {cfg['seed']}; {report['date']}, {report['machine']})",
                 "", *command]
        return "\n".join(lines + _timing_table(report)) + "\n"
    lines = [f"Detection benchmark ({report['faces']} faces in {cfg['scenes']} scenes, seed {cfg['seed']}, "
             f"min_face {cfg['min_face']:g}, IoU >= {cfg['iou']}; {report['date']}, {report['machine']})", "",
             *command, "| face size (px) | faces | recall colour | recall grey |", "|---|---:|---:|---:|"]
    for c, g in zip(report["recall"]["colour"], report["recall"]["grey"]):
        def pct(r: dict) -> str:
            return "-" if r["recall"] is None else f"{100 * r['recall']:.1f}%"
        lines.append(f"| {c['bin']} | {c['faces']} | {pct(c)} | {pct(g)} |")
    fp = report["false_positives"]
    lines += ["", f"False positives per face-free photo ({fp['face_free_images']} photos): colour "
                  f"{fp['per_image_colour']:.3f}, grey {fp['per_image_grey']:.3f}; unmatched detections per face "
                  f"scene: colour {fp['unmatched_per_scene_colour']:.3f}, grey {fp['unmatched_per_scene_grey']:.3f}."]
    tight = [t for t in report["tight_crops"] if t["crops"]]
    if tight:
        lines += ["", f"| tight face crop ({tight[0]['crops']} crops, {tight[0]['side']} px), side / box side "
                      f"| found by detect_faces | found with the padded retry |", "|---|---:|---:|"]
        lines += [f"| {t['crop_over_box']:g} | {100 * t['recall']:.1f}% | {100 * t['recall_with_padding']:.1f}% |"
                  for t in tight]
    return "\n".join(lines + [""] + _timing_table(report)) + "\n"


def _timing_table(report: dict) -> list[str]:
    lines = ["| frame | min_face | fine-pass Mpx | threads | median s | median CPU s | load (1/5/15 min) before, after |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in report["timing"]:
        lb, la = r["load_before_after"]
        lines.append(f"| {r['size']} ({r['frames']} frames) | {r['min_face']:g} | {r['fine_mpx']} | {r['threads']} | "
                     f"{r['median_s']:.3f} | {r['median_cpu_s']:.3f} | {lb}, {la} |")
    return lines


# --- the picture -------------------------------------------------------------------------------------


def draw_scene(scene: Scene, detections: Sequence[Box], threshold: float = 0.4) -> Image.Image:
    """The scene with found faces (green), missed ones (red) and unmatched detections (yellow) boxed."""
    found, _ = match(detections, scene.boxes, threshold)
    im = Image.fromarray(scene.rgb).convert("RGB")
    draw = ImageDraw.Draw(im)
    for box, hit in zip(scene.boxes, found):
        draw.rectangle([round(v) for v in box], outline=(0, 220, 0) if hit else (255, 40, 40), width=2)
    matched = {i for i, d in enumerate(detections) if any(iou(d, t) >= threshold for t in scene.boxes)}
    for i, d in enumerate(detections):
        if i not in matched:
            draw.rectangle([round(v) for v in d], outline=(255, 220, 0), width=2)
    return im


def picture(detector: LandmarkDetector, seed: int = 0, min_face: float = DEFAULT_MIN_FACE) -> tuple[Image.Image, dict]:
    """A 1280x720 scene of astronaut faces (public domain) from 12 to 128 px, its left half grey, boxes drawn."""
    rng = np.random.default_rng(seed)
    sources = astronaut_sources(detector)
    bg = fill_frame(rng, dict(backgrounds(("coffee",)))["coffee"], (1280, 720))
    sizes = [12, 14, 16, 18, 20, 24, 28, 32, 40, 48, 64, 96, 128]
    scene = build_scene(rng, bg, sources, sizes, "astronaut on coffee")
    grey = grey_copy(scene.rgb)
    scene.rgb[:, :640] = grey[:, :640]  # one image: the left half grey, the right half colour
    boxes = _boxes(detector.detect_faces(scene.rgb, min_face=min_face))
    found, fp = match(boxes, scene.boxes)
    return draw_scene(scene, boxes), {"sizes": [round(s, 1) for s in scene.sizes], "found": found, "unmatched": fp}
