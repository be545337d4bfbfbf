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

from .assets import default_face
from .export import OnnxSRModel, export_onnx
from .images import resize
from .landmarks import LandmarkDetector
from .models import PRESETS, count_params, create_model
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
        base = create_model(name).to(dev).eval()  # speed does not depend on the weights' values
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
            net = create_model(name).eval()
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
