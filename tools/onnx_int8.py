"""Is int8 worth it for the -lite path? ONNX Runtime static quantization (QDQ, per-channel, calibrated on 64 test
faces) of an exported preset: CPU time per face against the fp32 file (one thread, alternating calls, process
time, so the load does not count) and PSNR-Y on the whole test split (issue 17, item 5: shipped only if PSNR stays
within 0.1 dB). ``--keep-float`` names the convolutions left in float (by substring of the node name).

    python tools/onnx_int8.py affectsr-x4-lite --data .data/cache/utkface_aligned .data/cache/taiwanese_expr
    python tools/onnx_int8.py affectsr-x4-lite --keep-float ""      # every Conv in int8

Measured 2026-11-29 (2-core AMD EPYC Zen3, AVX2 without VNNI, ORT 1.32.0, affectsr-x4-lite as shipped, 581 faces,
machine shared with trainings, CPU-time ratios): every Conv in int8 1.20x faster at -4.20 dB; the prior, fusions,
conv_first and conv_last kept in float 1.24x at -0.11 dB (quantizing every op type, not only Conv: 1.43x at
-4.4 dB). Neither is worth shipping on this CPU, so the product has no int8 path.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

# this checkout's package, not an installed one (a tool run from another worktree measures that worktree's code)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from affectsr.data.dataset import FaceCache, make_batch  # noqa: E402
from affectsr.export import OnnxSRModel, export_onnx  # noqa: E402
from affectsr.metrics import psnr_y, quantize  # noqa: E402
from affectsr.models.presets import PRESETS  # noqa: E402
from affectsr.models.profile import interleaved_medians  # noqa: E402


class Faces(CalibrationDataReader):
    """Calibration inputs: one face (LR + its detected landmarks) per call."""

    def __init__(self, cache: FaceCache, rows: np.ndarray, scale: int):
        b = make_batch(cache, rows, scale)
        self.items = iter([{"lr": b.lr[i:i + 1].numpy(), "landmarks": b.landmarks[i:i + 1].numpy()} for i in range(len(rows))])

    def get_next(self):
        return next(self.items, None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("preset")
    ap.add_argument("--data", nargs="+", default=[".data/cache/utkface_aligned", ".data/cache/taiwanese_expr"])
    ap.add_argument("--keep-float", default="prior,fusions,conv_first,conv_last",
                    help="comma-separated substrings of Conv node names left in float ('' = none)")
    ap.add_argument("--min-time", type=float, default=4.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    scale = PRESETS[args.preset][0].scale
    cache = FaceCache(args.data, split="test")
    rows = np.arange(len(cache.hr))
    with tempfile.TemporaryDirectory(prefix="int8-") as tmp:
        fp32, pre, int8 = (Path(tmp) / f"{args.preset}{s}.onnx" for s in ("", ".pre", ".int8"))
        export_onnx(args.preset, fp32, check=False)
        keep = [k for k in args.keep_float.split(",") if k]
        exclude = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv" and any(k in n.name for k in keep)]
        calib = np.random.default_rng(0).choice(rows, 64, replace=False)
        with contextlib.chdir(tmp):  # the quantizer leaves scratch files in the working folder
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
            quantize_static(str(pre), str(int8), Faces(cache, calib, scale), quant_format=QuantFormat.QDQ,
                            per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"],
                            nodes_to_exclude=exclude)
        nets = {"fp32": OnnxSRModel(fp32, threads=1), "int8": OnnxSRModel(int8, threads=1)}
        one = make_batch(cache, rows[:1], scale)
        t = interleaved_medians([lambda n=n: n(one.lr, one.landmarks) for n in nets.values()], args.min_time, time.process_time)
        psnr = {k: [] for k in nets}
        for s in range(0, len(rows), 32):
            b = make_batch(cache, rows[s:s + 32], scale)
            for k, net in nets.items():
                psnr[k].append(psnr_y(quantize(net(b.lr, b.landmarks).clamp(0, 1)), b.hr, border=scale))
    p = {k: float(torch.cat(v).mean()) for k, v in psnr.items()}
    print(f"{args.preset}: {len(exclude)} Conv kept in float ({args.keep_float or 'none'}); CPU ms per face fp32 "
          f"{1e3 * t[0]:.1f}, int8 {1e3 * t[1]:.1f} ({t[0] / t[1]:.2f}x); PSNR-Y on {len(rows)} test faces fp32 "
          f"{p['fp32']:.3f}, int8 {p['int8']:.3f} ({p['int8'] - p['fp32']:+.3f} dB)")


if __name__ == "__main__":
    main()
