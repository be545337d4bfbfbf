"""``affectsr bench``: faces/s and latency per preset and baseline on this machine, with ratios."""
from __future__ import annotations

import argparse
import json
import sys

from ..bench import DTYPES, rows_to_dicts, run_bench, to_markdown
from ..models.profile import profile_markdown, profile_presets
from ..runinfo import machine
from .common import device_error


def add_parser(subparsers) -> None:
    b = subparsers.add_parser("bench", help="faces/s and latency per preset and baseline on this machine, with ratios "
                                            "to plain RRDB and to bicubic")
    b.add_argument("--models", default=None, help="comma-separated presets (default: all)")
    b.add_argument("--batch", default="1,8", help="comma-separated batch sizes (default: 1,8)")
    b.add_argument("--device", default="cpu")
    b.add_argument("--dtype", default=None,
                   help="comma-separated float32,bfloat16,float16 (default: float32 on CPU, bfloat16 on CUDA)")
    b.add_argument("--backend", default="torch", help="comma-separated torch,onnxruntime (default: torch)")
    b.add_argument("--compile", action="store_true", help="torch.compile the models (GPU; slow to warm up)")
    b.add_argument("--no-landmarks", action="store_true", help="skip timing the MediaPipe landmark stage")
    b.add_argument("--min-time", type=float, default=2.0, help="seconds of timing per measurement (default 2)")
    b.add_argument("--json", action="store_true")
    b.add_argument("--profile", nargs="?", const="wall", choices=("wall", "cpu"), default=None,
                   help="ms per stage (trunk, GCN, splat, head, MSAF per scale, upsampling) of the affectsr-* presets "
                        "instead; 'cpu' times process CPU time (steadier on a shared machine, use with 1 thread)")
    b.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    names = args.models.split(",") if args.models else None
    try:
        batches = [int(b) for b in args.batch.split(",")]
        if any(b < 1 for b in batches):
            raise ValueError
    except ValueError:
        print(f"error: --batch {args.batch}: expected comma-separated positive integers, e.g. 1,8", file=sys.stderr)
        return 2
    dtypes = args.dtype.split(",") if args.dtype else None
    if dtypes and (bad := [d for d in dtypes if d not in DTYPES]):
        print(f"error: --dtype {','.join(bad)}: choose from {', '.join(DTYPES)}", file=sys.stderr)
        return 2
    backends = tuple(args.backend.split(","))
    if bad := [b for b in backends if b not in ("torch", "onnxruntime")]:
        print(f"error: --backend {','.join(bad)}: choose from torch, onnxruntime", file=sys.stderr)
        return 2
    if (err := device_error(args.device)) is not None:
        print(err, file=sys.stderr)
        return 2
    if args.profile:  # where the time goes inside each AffectSRNet preset (affectsr/models/profile.py)
        try:
            prof = profile_presets(names, batches, args.min_time, args.profile)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(json.dumps(rows_to_dicts(prof), indent=2) if args.json else f"Machine: {machine()}\n\n"
              + profile_markdown(prof))
        return 0
    try:
        rows = run_bench(names, batches, args.device, args.min_time, dtypes, args.compile, backends,
                         landmarks=not args.no_landmarks)
    except ImportError as e:
        print(f"error: {e} (the onnxruntime backend needs `pip install affectsr[onnx]`)", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"machine": machine(), "rows": rows_to_dicts(rows)}, indent=2) if args.json else to_markdown(rows))
    return 0
