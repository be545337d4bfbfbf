"""``affectsr export --model NAME -o FILE.onnx``: a model as ONNX, checked against PyTorch."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..atomic import write_error
from ..export import DEFAULT_OPSET, MIN_OPSET, ExportError, export_onnx, require, weights_file
from ..models import WeightsNotFoundError
from .common import fail

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    e = subparsers.add_parser("export", help="export a model to ONNX (checked against PyTorch)",
                              description="Export a model to ONNX: dynamic batch and size, checked with "
                                          "onnx.checker and against PyTorch to 1e-3.")
    e.add_argument("--model", required=True, help="preset with shipped weights, or a .safetensors file")
    e.add_argument("--format", choices=("onnx",), default="onnx", help="only onnx for now")
    e.add_argument("-o", "--output", required=True, metavar="FILE", help="the .onnx file to write")
    e.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset {MIN_OPSET}..{DEFAULT_OPSET} (default {DEFAULT_OPSET})")
    e.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    e.add_argument("--no-check", action="store_true", help="skip onnx.checker and the comparison with PyTorch")
    e.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    try:
        require("onnx")
        require("onnxruntime")
    except ImportError as e:
        return fail(str(e))
    if out.suffix.lower() != ".onnx":
        return fail(f"-o {out}: give a file name ending in .onnx")
    if out.is_dir():
        return fail(f"-o {out}: is a folder; give the .onnx file to write")
    if out.exists() and not args.overwrite:
        return fail(f"-o {out}: exists (use --overwrite to replace it)")
    if not MIN_OPSET <= args.opset <= DEFAULT_OPSET:
        return fail(f"--opset {args.opset}: must be {MIN_OPSET}..{DEFAULT_OPSET}")
    try:
        weights_file(args.model)
    except WeightsNotFoundError as e:
        return fail(f"--model {e}")
    if (why := write_error(out.parent)) is not None:  # fail before tracing; the folder is made by the write
        return fail(f"-o {out}: cannot write there ({why})")
    try:
        rep = export_onnx(args.model, out, opset=args.opset, check=not args.no_check, overwrite=args.overwrite)
    except (ValueError, OSError) as e:
        return fail(str(e))
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    inputs = "lr, landmarks (NaN row = none)" if rep.uses_landmarks else "lr"
    print(f"wrote {rep.path} ({rep.size_bytes / 1e6:.1f} MB, opset {rep.opset}, x{rep.scale}, inputs: {inputs}; "
          f"batch, height and width dynamic)")
    if rep.max_abs_diff is not None:
        print(f"checked: onnx.checker ok; max |onnxruntime - pytorch| = {rep.max_abs_diff:.2e} over "
              f"{len(rep.checks)} cases ({', '.join(rep.checks)})")
    return 0
