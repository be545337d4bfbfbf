"""``affectsr demo``: the bundled face, downscaled and upscaled back, side by side (no arguments needed)."""
from __future__ import annotations

import argparse
import sys
import warnings

from ..demo import run_demo
from ..types import SCALES
from .common import default_models, device_error


def add_parser(subparsers) -> None:
    d = subparsers.add_parser("demo", help="upscale the bundled face and write a side-by-side PNG (no arguments needed)")
    d.add_argument("--out", default="affectsr-demo", help="output folder (default: ./affectsr-demo)")
    d.add_argument("--scale", type=int, choices=SCALES, default=None, help="4 or 8 (default: the model's, else 4)")
    d.add_argument("--model", default=None, help=f"preset name or .safetensors path (default: {default_models()})")
    d.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    d.add_argument("--overwrite", action="store_true", help="replace an existing demo picture")
    d.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if (err := device_error(args.device)) is not None:
        print(err, file=sys.stderr)
        return 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the demo states untrained weights in its own words
        try:
            path, rep = run_demo(args.out, args.scale, args.model, device=args.device, overwrite=args.overwrite)
        except (ValueError, FileNotFoundError, FileExistsError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(f"wrote {path}")
    print(f"model: {rep['model']} ({'trained' if rep['trained'] else 'UNTRAINED: random weights, see `affectsr models`'})")
    print(f"landmarks found on the LR face: {'yes' if rep['landmarks_found'] else 'no'}")
    print(f"RGB PSNR vs original: bicubic {rep['psnr_bicubic']:.2f} dB, {rep['model']} {rep['psnr_affectsr']:.2f} dB")
    print(f"grey copy: RGB PSNR bicubic {rep['grey_psnr_bicubic']:.2f} dB, {rep['model']} {rep['grey_psnr_affectsr']:.2f} dB; "
          f"colour tint of the output {rep['grey_tint']:.2f} levels (0 = grey), "
          f"grid strength {rep['grey_grid']:.2f} (bicubic {rep['grey_grid_bicubic']:.2f}; 1 = no step at the LR pixel grid)")
    return 0
