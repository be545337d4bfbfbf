"""Speed: faces/s and latency per preset and baseline on this machine (model forward, landmarks, bicubic).

Each measurement repeats until ``min_time`` seconds have passed (after one warm-up call) and
reports the mean, so short and long models are timed with the same effort. Every row also gets
two ratios measured in the same run: its speed relative to the plain RRDB of the same scale and
size (what the face prior costs) and how many times slower than bicubic it is.

On CUDA the default is bf16 + channels_last; ``compile=True`` adds ``torch.compile``. On the CPU
``float32`` is the default (bf16 is slower than fp32 on CPUs without AMX; measure it with ``--dtype``).
"""
from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .assets import default_face, default_scene
from .export import OnnxSRModel, export_onnx, load_onnx_model
from .faces import crop_padded, feather_mask, paste
from .images import resize
from .landmarks import LandmarkDetector
from .landmarks.predictor import get_landmarks
from .models import PRESETS, count_params, load_model
from .models.presets import create_shipped, default_model
from .pipeline import Upscaler
from .runinfo import machine

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class BenchRow:
    name: str
    stage: str  # "model", "landmarks" or "bicubic"
    device: str  # "cpu", "cuda", "cpu-onnxruntime"
    batch: int
    lr_size: int
    scale: int
    params: int
    latency_ms: float  # per batch
    faces_per_s: float
    dtype: str = "float32"
    options: str = ""  # e.g. "channels_last,compile"
    vs_rrdb: float | None = None  # faces/s relative to the plain RRDB of the same scale and size (same batch)
    slower_than_bicubic: float | None = None  # bicubic faces/s / this row's faces/s


def time_it(fn: Callable[[], object], min_time: float) -> float:
    """Mean seconds per call of ``fn`` over at least ``min_time`` seconds, after one warm-up call."""
    fn()
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / n


def rrdb_reference(name: str) -> str | None:
    """The plain-RRDB preset a model is compared with: same scale; the full RRDB for the full-size
    presets (nf64 nb23), the -lite RRDB for everything at the CPU budget (-lite presets and baselines)."""
    cfg = PRESETS[name][0]
    full = getattr(cfg, "nf", 0) == 64 and getattr(cfg, "nb", 0) == 23
    ref = f"rrdb-x{cfg.scale}" + ("" if full else "-lite")
    return ref if ref in PRESETS else None


def bench_models(names: list[str], batches: list[int], device: str = "cpu", min_time: float = 2.0,
                 dtypes: list[str] | None = None, compile: bool = False) -> list[BenchRow]:
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    dtypes = dtypes or (["bfloat16"] if cuda else ["float32"])
    for d in dtypes:
        if d not in DTYPES:
            raise ValueError(f"unknown dtype {d!r}; choose from {', '.join(DTYPES)}")
    rows = []
    gen = torch.Generator().manual_seed(0)
    for name in names:
        if name not in PRESETS:
            raise ValueError(f"unknown model {name!r}; known: {', '.join(PRESETS)}")
        base = create_shipped(name).to(dev).eval()  # the shipped config; speed does not depend on the weights' values
        cfg = base.config
        for dname in dtypes:
            dtype = DTYPES[dname]
            model = base
            opts = []
            if cuda:
                model = model.to(memory_format=torch.channels_last)
                opts.append("channels_last")
            if compile:
                model = torch.compile(model)
                opts.append("compile")
            for b in batches:
                lr = torch.rand(b, 3, cfg.in_size, cfg.in_size, generator=gen).to(dev)
                lm = torch.rand(b, getattr(base, "num_landmarks", 478), 3, generator=gen).to(dev)
                if cuda:
                    lr = lr.contiguous(memory_format=torch.channels_last)

                def step(model=model, lr=lr, lm=lm, dtype=dtype) -> None:  # bound now; timed at once below
                    # autocast keeps the weights in fp32 and runs matmuls/convs in ``dtype``: what training
                    # and the pipeline do; float32 runs with autocast off
                    with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32):
                        model(lr, lm)
                    if cuda:
                        torch.cuda.synchronize()

                t = time_it(step, min_time)
                rows.append(BenchRow(name, "model", dev.type, b, cfg.in_size, cfg.scale, count_params(base), t * 1e3,
                                     b / t, dname, ",".join(opts)))
    return rows


def bench_onnx(names: list[str] | None = None, batches: list[int] | None = None,
               min_time: float = 2.0) -> list[BenchRow]:
    """faces/s of each preset through ONNX Runtime (random weights: speed does not depend on them).

    Rows have stage "model" and device "cpu-onnxruntime", timed like :func:`bench_models` (same
    inputs, warm-up, ``min_time``). Needs the ``affectsr[onnx]`` extra (ImportError otherwise).
    """
    names = names or list(PRESETS)
    rows = []
    gen = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="affectsr-onnx-bench-") as tmp:
        for name in names:
            net = create_shipped(name).eval()
            report = export_onnx(net, Path(tmp) / f"{name}.onnx", check=False)
            runtime = OnnxSRModel(report.path)
            cfg = net.config
            for b in batches or [1, 8]:
                lr = torch.rand(b, 3, cfg.in_size, cfg.in_size, generator=gen)
                lm = torch.rand(b, getattr(net, "num_landmarks", 478), 3, generator=gen)
                t = time_it(lambda r=runtime, x=lr, y=lm: r(x, y), min_time)
                rows.append(BenchRow(name, "model", "cpu-onnxruntime", b, cfg.in_size, cfg.scale,
                                     count_params(net), t * 1e3, b / t))
    return rows


def bench_landmarks(lr_size: int = 32, min_time: float = 2.0) -> BenchRow:
    crop = resize(default_face(128), (lr_size, lr_size))
    with LandmarkDetector() as det:
        t = time_it(lambda: det.detect_landmarks([crop]), min_time)
    return BenchRow("mediapipe-face-mesh", "landmarks", "cpu", 1, lr_size, 1, 0, t * 1e3, 1 / t)


def bench_bicubic(lr_size: int = 32, scale: int = 4, min_time: float = 1.0) -> BenchRow:
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (lr_size, lr_size, 3), dtype=np.uint8))
    t = time_it(lambda: img.resize((lr_size * scale, lr_size * scale), Image.BICUBIC), min_time)
    return BenchRow("bicubic", "bicubic", "cpu", 1, lr_size, scale, 0, t * 1e3, 1 / t)


def add_ratios(rows: list[BenchRow]) -> list[BenchRow]:
    """Fill ``vs_rrdb`` and ``slower_than_bicubic`` from rows of the same run (in place; returns rows)."""
    bicubic = {(r.lr_size, r.scale): r.faces_per_s for r in rows if r.stage == "bicubic"}
    speed = {(r.name, r.device, r.dtype, r.options, r.batch): r.faces_per_s for r in rows if r.stage == "model"}
    for r in rows:
        if r.stage != "model":
            continue
        ref = rrdb_reference(r.name) if r.name in PRESETS else None
        key = (ref, r.device, r.dtype, r.options, r.batch)
        if ref is not None and key in speed:
            r.vs_rrdb = r.faces_per_s / speed[key]
        if (r.lr_size, r.scale) in bicubic:
            r.slower_than_bicubic = bicubic[(r.lr_size, r.scale)] / r.faces_per_s
    return rows


def run_bench(names: list[str] | None = None, batches: list[int] | None = None, device: str = "cpu",
              min_time: float = 2.0, dtypes: list[str] | None = None, compile: bool = False,
              backends: tuple[str, ...] = ("torch",), landmarks: bool = True) -> list[BenchRow]:
    """Every requested model (and the RRDB each is compared with), then landmarks and bicubic, with ratios."""
    names = list(names or PRESETS)
    for n in list(names):
        if n in PRESETS and (ref := rrdb_reference(n)) is not None and ref not in names:
            names.append(ref)  # the ratio needs its reference timed in the same run
    batches = batches or [1, 8]
    rows: list[BenchRow] = []
    if "torch" in backends:
        rows += bench_models(names, batches, device, min_time, dtypes, compile)
    if "onnxruntime" in backends:
        rows += bench_onnx(names, batches, min_time)
    if landmarks:
        rows.append(bench_landmarks(32, min_time))
    for size, scale in sorted({(r.lr_size, r.scale) for r in rows if r.stage == "model"}):
        rows.append(bench_bicubic(size, scale, min_time / 2))
    return add_ratios(rows)


def to_markdown(rows: list[BenchRow]) -> str:
    lines = [
        f"Machine: {machine()}",
        "",
        "| name | stage | device | dtype | batch | input | params | latency (ms/batch) | faces/s | vs RRDB | x slower than bicubic |",
        "|---|---|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        io = f"{r.lr_size}->{r.lr_size * r.scale}" if r.stage != "landmarks" else f"{r.lr_size} px crop"
        params = f"{r.params / 1e6:.2f}M" if r.params else "-"
        dev = r.device + (f" ({r.options})" if r.options else "")
        vs = f"{r.vs_rrdb:.2f}" if r.vs_rrdb is not None else "-"
        slow = f"{r.slower_than_bicubic:.0f}" if r.slower_than_bicubic is not None else "-"
        lines.append(f"| {r.name} | {r.stage} | {dev} | {r.dtype} | {r.batch} | {io} | {params} | "
                     f"{r.latency_ms:.1f} | {r.faces_per_s:.1f} | {vs} | {slow} |")
    return "\n".join(lines)


def rows_to_dicts(rows: list[BenchRow]) -> list[dict]:
    return [asdict(r) for r in rows]


# --- whole frames: detection + landmarks + SR + paste ---------------------------------------------------------

FRAME_STAGES = ("detect", "landmarks", "background", "sr", "paste")
"""Where a frame's time goes: face detection on the whole frame, the landmark model on each face crop, the
bicubic upscale of the whole frame the faces are pasted into, the SR network per face, the feathered paste."""

SCENE_FACE_SIDE = 104  # px: the astronaut's face (MediaPipe's box) in the 512 px scene of affectsr.assets


@dataclass
class FrameRow:
    model: str
    backend: str  # "torch" or "onnxruntime"
    frame: str  # "1920x1080"
    scale: int
    faces: int  # faces placed in the frame
    detected: int  # faces the detector found
    super_resolved: int  # of those, faces small enough to be super-resolved (the rest stay bicubic)
    with_landmarks: int  # of those, faces the landmark stage found landmarks on
    frames_per_s: float  # the whole pipeline (Upscaler(frame)), timed as users call it
    ms: dict  # stage -> ms per frame (FRAME_STAGES), timed stage by stage in separate passes


def synthetic_frame(num_faces: int, size: tuple[int, int] = (1920, 1080), face_px: tuple[int, int] = (24, 48),
                    seed: int = 0) -> np.ndarray:
    """A W x H uint8 RGB frame with ``num_faces`` copies of the bundled astronaut scene on a noisy grey ground,
    scaled so that the faces are ``face_px[0]``..``face_px[1]`` px wide (evenly spread), one per grid cell."""
    w, h = size
    rng = np.random.default_rng(seed)
    frame = (rng.integers(80, 112, (h, w, 3))).astype(np.uint8)
    if num_faces < 1:
        return frame
    cols = int(np.ceil(np.sqrt(num_faces)))
    rows = int(np.ceil(num_faces / cols))
    cw, ch = w // cols, h // rows
    scene = default_scene()
    sides = np.linspace(face_px[0], face_px[1], num_faces) if num_faces > 1 else [sum(face_px) / 2]
    for k, face in enumerate(sides):
        side = round(scene.shape[0] * face / SCENE_FACE_SIDE)
        if side > min(cw, ch):
            raise ValueError(f"{num_faces} faces of {face_px[1]} px do not fit a {w}x{h} frame")
        r, c = divmod(k, cols)
        y0, x0 = r * ch + (ch - side) // 2, c * cw + (cw - side) // 2
        frame[y0:y0 + side, x0:x0 + side] = resize(scene, (side, side))
    return frame


def frame_stage_times(up: Upscaler, rgb: np.ndarray, min_time: float) -> tuple[dict[str, float], tuple[int, int, int]]:
    """Seconds per frame of each of FRAME_STAGES, doing what ``Upscaler.upscale_loaded`` and ``compose`` do
    for one frame, stage by stage; and (detected, super-resolved, with landmarks) faces."""
    s = up.scale
    h, w = rgb.shape[:2]
    total = dict.fromkeys(FRAME_STAGES, 0.0)
    n, start = 0, time.perf_counter()
    while n < 1 or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        boxes = [fb.square(up.margin) for fb in up.detector.detect_faces(rgb)]
        t1 = time.perf_counter()
        out = resize(rgb, (w * s, h * s))
        t2 = time.perf_counter()
        total["detect"] += t1 - t0
        total["background"] += t2 - t1
        small = [b for b in boxes if b[2] - b[0] <= up.max_face_side]
        found = 0
        for x0, y0, x1, y1 in small:
            t0 = time.perf_counter()
            crop = crop_padded(rgb, (x0, y0, x1, y1))
            lm, _route = get_landmarks(crop, up.landmarks, up.detector, up.predictor)
            t1 = time.perf_counter()
            sr = up.super_resolve(crop, lm)
            t2 = time.perf_counter()
            paste(out, sr, x0 * s, y0 * s, feather_mask((x1 - x0) * s, (x1 - x0) * s))
            t3 = time.perf_counter()
            total["landmarks"] += t1 - t0
            total["sr"] += t2 - t1
            total["paste"] += t3 - t2
            found += lm is not None
        n += 1
    return {k: v / n for k, v in total.items()}, (len(boxes), len(small), found)


def bench_frames(model: str | None = None, faces: list[int] | None = None, backends: tuple[str, ...] = ("torch",),
                 min_time: float = 2.0, size: tuple[int, int] = (1920, 1080),
                 face_px: tuple[int, int] = (24, 48)) -> list[FrameRow]:
    """Frames/s of the whole-image pipeline on :func:`synthetic_frame` frames with each number of ``faces``,
    per backend, and where each frame's time goes (:func:`frame_stage_times`). ``model``: a preset with
    weights (default: the x4 preset ``affectsr upscale`` uses); threads: ``torch.get_num_threads()`` for
    PyTorch and ONNX Runtime alike."""
    name = model or default_model(4)
    rows = []
    with LandmarkDetector() as detector:
        for backend in backends:
            net = load_onnx_model(name) if backend == "onnxruntime" else load_model(name)
            up = Upscaler(model=net, device="cpu", detector=detector)
            for n in faces or [1, 4, 16]:
                rgb = synthetic_frame(n, size, face_px)
                t = time_it(lambda up=up, rgb=rgb: up(rgb), min_time)
                ms, (det, sr, lm) = frame_stage_times(up, rgb, min_time)
                rows.append(FrameRow(name, backend, f"{size[0]}x{size[1]}", up.scale, n, det, sr, lm, 1 / t,
                                     {k: v * 1e3 for k, v in ms.items()}))
    return rows


def frames_markdown(rows: list[FrameRow]) -> str:
    """One row per backend and face count: frames/s, then ms per frame per stage and each stage's share."""
    lines = ["| model | backend | frame | faces (found, SR, landmarks) | frames/s | ms/frame | "
             + " | ".join(FRAME_STAGES) + " |", "|---|---|---|---|---:|---:|" + "---:|" * len(FRAME_STAGES)]
    for r in rows:
        staged = sum(r.ms.values())
        cells = " | ".join(f"{r.ms[k]:.0f} ({r.ms[k] / staged:.0%})" for k in FRAME_STAGES)
        lines.append(f"| {r.model} | {r.backend} | {r.frame} x{r.scale} | {r.faces} ({r.detected}, {r.super_resolved}, "
                     f"{r.with_landmarks}) | {r.frames_per_s:.2f} | {1e3 / r.frames_per_s:.0f} | {cells} |")
    return "\n".join(lines)
