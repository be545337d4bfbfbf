"""PyTorch vs ONNX Runtime on this machine: speed, CPU cost, ORT session options and output parity.

    python tools/onnx_compare.py --parts speed,options --threads 2          # the tables of docs/ONNX.md
    python tools/onnx_compare.py --parts parity --data ../shared/data/taiwanese_expr --limit 50

Experiments behind docs/ONNX.md (they chose the backend's defaults); the library keeps only the
export, the ONNX Runtime backend and its rows in `affectsr bench --backend onnxruntime`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from affectsr.assets import default_face  # noqa: E402
from affectsr.atomic import atomic_write  # noqa: E402
from affectsr.bench import bench_models, bench_onnx, time_it, to_markdown  # noqa: E402
from affectsr.evaluate import Face, load_faces  # noqa: E402
from affectsr.export import OnnxSRModel, export_onnx, onnx_for, random_landmarks  # noqa: E402
from affectsr.images import bicubic_down  # noqa: E402
from affectsr.landmarks import LandmarkDetector  # noqa: E402
from affectsr.landmarks.predictor import default_predictor_path, get_landmarks, load_predictor  # noqa: E402
from affectsr.metrics import psnr_y, to_tensor  # noqa: E402
from affectsr.models import PRESETS, create_model, load_model  # noqa: E402
from affectsr.models.presets import weights_path  # noqa: E402
from affectsr.pipeline import Upscaler  # noqa: E402
from affectsr.runinfo import machine  # noqa: E402


def parity(names: list[str], faces: list, progress: bool = True) -> list[dict]:
    """PyTorch vs ONNX Runtime on real faces through ``Upscaler.super_resolve`` (the path users get).

    ``faces``: :class:`affectsr.evaluate.Face` (HR crops; LR = bicubic /scale). Landmarks: the face's
    MediaPipe LR landmarks where it has them, else the pipeline's 'auto' route (MediaPipe, else the
    learned predictor). Per model: mean PSNR-Y vs HR for each backend, the lowest PSNR-Y of ORT vs
    PyTorch (148 dB = identical uint8 images) and the largest uint8 difference.
    """
    out = []
    with LandmarkDetector() as det:
        for name in names:
            torch_net = load_model(name)
            ort_net = OnnxSRModel(onnx_for(name, detector=det))
            s = torch_net.scale
            pred_path = default_predictor_path(s)
            predictor = load_predictor(pred_path) if pred_path is not None else None
            ups = [Upscaler(s, m, "cpu", detector=det, landmarks="detect") for m in (torch_net, ort_net)]
            srs: list[list[np.ndarray]] = [[], []]
            routes: dict[str, int] = {}
            for f in tqdm(faces, desc=f"parity {name}", unit="face", disable=not progress or None, file=sys.stderr):
                lr = np.array(bicubic_down(f.hr, s))
                if f.lm_lr is not None and np.isfinite(f.lm_lr).all():
                    lm, route = f.lm_lr, "detect"
                else:
                    lm, route = get_landmarks(lr, "auto", det, predictor)
                routes[route] = routes.get(route, 0) + 1
                for k, up in enumerate(ups):
                    srs[k].append(up.super_resolve(lr, lm))
            hr = to_tensor(np.stack([f.hr for f in faces]))
            a, b = (to_tensor(np.stack(x)) for x in srs)
            out.append({
                "model": name, "faces": len(faces), "scale": s, "landmark_routes": routes,
                "psnr_torch": float(psnr_y(a, hr, s).mean()), "psnr_ort": float(psnr_y(b, hr, s).mean()),
                "psnr_ort_vs_torch_min": float(psnr_y(b, a, s).min()),
                "max_uint8_diff": int(np.abs(np.stack(srs[0]).astype(int) - np.stack(srs[1]).astype(int)).max()),
            })
    return out


def cpu_cost(names: list[str], batches: list[int] | None = None, min_cpu_time: float = 2.0) -> list[dict]:
    """Faces per CPU-second of each preset, PyTorch vs ONNX Runtime, one thread each.

    Process CPU time does not advance while other jobs hold the cores, so unlike wall-clock
    faces/s this stays meaningful on a shared machine (it is the single-core speed of an idle core,
    up to cache effects). Best of two rounds per row.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = []
    try:
        with tempfile.TemporaryDirectory(prefix="affectsr-onnx-cpu-") as tmp:
            for name in names:
                net = create_model(name).eval()
                ort_net = OnnxSRModel(export_onnx(net, Path(tmp) / f"{name}.onnx", check=False).path, threads=1)
                s, n = net.config.in_size, getattr(net, "num_landmarks", 478)
                gen = torch.Generator().manual_seed(0)
                for b in batches or [1, 8]:
                    lr, lm = torch.rand(b, 3, s, s, generator=gen), random_landmarks(b, n, gen)
                    for backend, m in (("torch", net), ("onnxruntime", ort_net)):
                        best = 0.0
                        for _ in range(2):
                            with torch.inference_mode():
                                m(lr, lm)  # warm-up
                                calls, t0 = 0, time.process_time()
                                while (used := time.process_time() - t0) < min_cpu_time:
                                    m(lr, lm)
                                    calls += 1
                            best = max(best, b * calls / used)
                        out.append({"model": name, "backend": backend, "batch": b, "faces_per_cpu_s": best})
    finally:
        torch.set_num_threads(before)
    return out


def bench_ort_options(name: str = "affectsr-x4-lite", batches: list[int] | None = None, min_time: float = 2.0,
                      rounds: int = 2) -> list[dict]:
    """faces/s of one trained preset under each ONNX Runtime setting (best of ``rounds`` interleaved rounds,
    so a load change hits every variant), and PSNR-Y vs HR on the bundled face for each graph."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # the [onnx] extra

    fp32 = onnx_for(name)
    with tempfile.TemporaryDirectory(prefix="affectsr-int8-") as tmp:
        int8 = Path(tmp) / "int8.onnx"
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
        variants = {
            "fp32, ORT_ENABLE_ALL, no spinning (default)": OnnxSRModel(fp32),
            "fp32, ORT_ENABLE_ALL, spinning": OnnxSRModel(fp32, spin=True),
            "fp32, ORT_ENABLE_EXTENDED": OnnxSRModel(fp32, optimization="extended"),
            "fp32, ORT_ENABLE_BASIC": OnnxSRModel(fp32, optimization="basic"),
            "int8 dynamic quantisation, ORT_ENABLE_ALL": OnnxSRModel(int8),
        }
        s = variants[next(iter(variants))].scale
        hr = default_face(128)
        lr_np = bicubic_down(hr, s)
        with LandmarkDetector() as det:
            lm_np, _ = det.detect_landmarks([lr_np])
        face, face_lm = to_tensor(lr_np), torch.from_numpy(lm_np)
        psnr = {k: float(psnr_y(m(face, face_lm).clamp(0, 1), to_tensor(hr), s)[0]) for k, m in variants.items()}
        in_size = variants[next(iter(variants))].in_size
        gen = torch.Generator().manual_seed(0)
        best: dict[tuple[str, int], float] = {}
        for _ in range(rounds):
            for b in batches or [1, 8]:
                lr, lm = torch.rand(b, 3, in_size, in_size, generator=gen), random_landmarks(b, 478, gen)
                for k, m in variants.items():
                    t = time_it(lambda f=m, x=lr, y=lm: f(x, y), min_time)
                    best[k, b] = max(best.get((k, b), 0.0), b / t)
    return [{"variant": k, "batch": b, "faces_per_s": v, "psnr_y_bundled_face": psnr[k]} for (k, b), v in best.items()]


PARTS = ("speed", "cpu", "options", "parity")


def main(argv: list[str] | None = None) -> int:
    """The numbers of docs/ONNX.md.

    Parts: ``speed`` (wall-clock faces/s, PyTorch then ORT per model, same run), ``cpu`` (faces per
    CPU-second at one thread), ``options`` (ORT settings on affectsr-x4-lite), ``parity`` (PSNR of
    both backends on real faces).
    """
    import onnxruntime  # the [onnx] extra

    p = argparse.ArgumentParser(prog="python tools/onnx_compare.py",
                                description="PyTorch vs ONNX Runtime: speed, CPU cost, ORT settings, parity")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    p.add_argument("--models", default="affectsr-x4-lite,affectsr-x8-lite,rrdb-x4",
                   help="presets to time (default: the lite presets, and rrdb-x4 for the speed ratio)")
    p.add_argument("--batch", default="1,8")
    p.add_argument("--min-time", type=float, default=3.0, help="seconds (CPU seconds for cpu) per measurement")
    p.add_argument("--data", default=None, help="face folder for parity (default: the bundled face only)")
    p.add_argument("--limit", type=int, default=50, help="parity: at most this many faces of --data")
    p.add_argument("--threads", type=int, default=None, help="speed and options: threads (default: torch's)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    parts = [x for x in args.parts.split(",") if x]
    if unknown := set(parts) - set(PARTS):
        p.error(f"--parts: unknown {sorted(unknown)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in args.models.split(",") if n]
    batches = [int(b) for b in args.batch.split(",")]
    load = os.getloadavg()[0]
    print(f"{machine()}; onnxruntime {onnxruntime.__version__}, {platform.machine()}; "
          f"1-min load average at the start: {load:.2f}\n", flush=True)
    blob: dict[str, Any] = {"machine": machine(), "onnxruntime": onnxruntime.__version__, "load_before": load,
                            "threads": torch.get_num_threads()}

    if "speed" in parts:
        rows = []
        for name in names:  # PyTorch and ORT of one model back to back, so both see the same machine load
            rows += bench_models([name], batches, "cpu", args.min_time)
            rows += bench_onnx([name], batches, args.min_time)
        print(to_markdown(rows))
        ref = {(r.device, r.batch): r.faces_per_s for r in rows if r.name == "rrdb-x4"}
        for r in rows:
            if r.name != "rrdb-x4" and r.scale == 4 and (r.device, r.batch) in ref:
                print(f"speed ratio {r.name} / rrdb-x4, {r.device}, batch {r.batch}: "
                      f"{r.faces_per_s / ref[r.device, r.batch]:.1f}x")
        print(flush=True)
        blob["speed"] = [dataclasses.asdict(r) for r in rows]

    if "cpu" in parts:
        cpu = cpu_cost(names, batches, args.min_time)
        print("faces per CPU-second, 1 thread (process CPU time: time other jobs held the cores does not count):\n"
              "| model | backend | batch | faces per CPU-second |\n|---|---|---:|---:|")
        for c in cpu:
            print(f"| {c['model']} | {c['backend']} | {c['batch']} | {c['faces_per_cpu_s']:.1f} |")
        ref = {(c["backend"], c["batch"]): c["faces_per_cpu_s"] for c in cpu if c["model"] == "rrdb-x4"}
        for c in cpu:
            if c["model"] != "rrdb-x4" and PRESETS[c["model"]][0].scale == 4 and (c["backend"], c["batch"]) in ref:
                print(f"CPU-cost ratio {c['model']} / rrdb-x4, {c['backend']}, batch {c['batch']}: "
                      f"{c['faces_per_cpu_s'] / ref[c['backend'], c['batch']]:.1f}x")
        print(flush=True)
        blob["cpu_time"] = cpu

    if "options" in parts:
        options = bench_ort_options("affectsr-x4-lite", batches, args.min_time)
        print(f"onnxruntime settings, affectsr-x4-lite, {torch.get_num_threads()} thread(s), best of 2 rounds:\n"
              "| setting | batch | faces/s | PSNR-Y bundled face (dB) |\n|---|---:|---:|---:|")
        for o in options:
            print(f"| {o['variant']} | {o['batch']} | {o['faces_per_s']:.1f} | {o['psnr_y_bundled_face']:.2f} |")
        print(flush=True)
        blob["ort_options"] = options

    if "parity" in parts:
        par = []
        for name in (n for n in names if weights_path(n) is not None):  # parity needs trained weights
            faces = [Face("bundled-astronaut", default_face(128))]
            if args.data:
                faces += load_faces(args.data, PRESETS[name][0].scale, "auto", args.limit)[0]
            par += parity([name], faces)
        print("| model | faces | LR landmark routes | PSNR-Y torch | PSNR-Y onnxruntime | min PSNR-Y ORT vs torch | "
              "max uint8 diff |\n|---|---:|---|---:|---:|---:|---:|")
        for r in par:
            print(f"| {r['model']} | {r['faces']} | {r['landmark_routes']} | {r['psnr_torch']:.3f} | "
                  f"{r['psnr_ort']:.3f} | {r['psnr_ort_vs_torch_min']:.1f} | {r['max_uint8_diff']} |")
        blob["parity"] = par

    blob["load_after"] = os.getloadavg()[0]
    print(f"\n1-min load average at the end: {blob['load_after']:.2f}")
    if args.json:
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(blob, indent=2)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
