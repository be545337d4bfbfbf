"""Speed: faces/s and latency per preset on this machine (model forward, landmarks, bicubic).

Each measurement repeats until ``min_time`` seconds have passed (after one warm-up call)
and reports the mean, so short and long models are timed with the same effort.
"""
from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from .images import resize
from .models import PRESETS, count_params, create_model


@dataclass
class BenchRow:
    name: str
    stage: str  # "model", "landmarks" or "bicubic"
    device: str
    batch: int
    lr_size: int
    scale: int
    params: int
    latency_ms: float  # per batch
    faces_per_s: float


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


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def bench_models(names: list[str], batches: list[int], device: str = "cpu", min_time: float = 2.0) -> list[BenchRow]:
    rows = []
    gen = torch.Generator().manual_seed(0)
    for name in names:
        model = create_model(name).to(device).eval()  # speed does not depend on the weights' values
        cfg = model.config
        for b in batches:
            lr = torch.rand(b, 3, cfg.in_size, cfg.in_size, generator=gen).to(device)
            lm = torch.rand(b, model.num_landmarks, 3, generator=gen).to(device)

            def step() -> None:
                with torch.inference_mode():
                    model(lr, lm)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()

            t = time_it(step, min_time)
            rows.append(BenchRow(name, "model", device, b, cfg.in_size, cfg.scale, count_params(model), t * 1e3, b / t))
    return rows


def bench_landmarks(lr_size: int = 32, min_time: float = 2.0) -> BenchRow:
    from .assets import default_face
    from .landmarks import LandmarkDetector

    crop = resize(default_face(128), (lr_size, lr_size))
    with LandmarkDetector() as det:
        t = time_it(lambda: det.detect_landmarks([crop]), min_time)
    return BenchRow("mediapipe-face-mesh", "landmarks", "cpu", 1, lr_size, 1, 0, t * 1e3, 1 / t)


def bench_bicubic(lr_size: int = 32, scale: int = 4, min_time: float = 1.0) -> BenchRow:
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (lr_size, lr_size, 3), dtype=np.uint8))
    t = time_it(lambda: img.resize((lr_size * scale, lr_size * scale), Image.BICUBIC), min_time)
    return BenchRow("bicubic", "bicubic", "cpu", 1, lr_size, scale, 0, t * 1e3, 1 / t)


def run_bench(names: list[str] | None = None, batches: list[int] | None = None, device: str = "cpu",
              min_time: float = 2.0) -> list[BenchRow]:
    names = names or list(PRESETS)
    rows = bench_models(names, batches or [1, 8], device, min_time)
    rows.append(bench_landmarks(32, min_time))
    rows.append(bench_bicubic(32, 4, min_time / 2))
    return rows


def to_markdown(rows: list[BenchRow]) -> str:
    lines = [
        f"Machine: {machine()}",
        "",
        "| name | stage | device | batch | input | params | latency (ms/batch) | faces/s |",
        "|---|---|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        io = f"{r.lr_size}->{r.lr_size * r.scale}" if r.stage != "landmarks" else f"{r.lr_size} px crop"
        params = f"{r.params / 1e6:.2f}M" if r.params else "-"
        lines.append(f"| {r.name} | {r.stage} | {r.device} | {r.batch} | {io} | {params} | "
                     f"{r.latency_ms:.1f} | {r.faces_per_s:.1f} |")
    return "\n".join(lines)


def rows_to_dicts(rows: list[BenchRow]) -> list[dict]:
    return [asdict(r) for r in rows]
