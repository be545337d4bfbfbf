"""``affectsr prepare SRC --out CACHE``: a folder of faces -> a sharded training cache."""
from __future__ import annotations

import argparse
import sys

from ..data.prepare import PrepareConfig, prepare

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    cfg = PrepareConfig(size=args.size, margin=args.margin, lr_scales=tuple(args.lr_scales), shard_size=args.shard_size,
                        workers=args.workers, no_face=args.no_face)
    if any(args.size % s for s in cfg.lr_scales):
        print(f"error: --size {args.size} is not divisible by every --lr-scales {cfg.lr_scales}", file=sys.stderr)
        return 2
    try:
        prepare(args.src, args.out, cfg, limit=args.limit, progress=not args.quiet)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "prepare", help="build a sharded training cache from a folder of face images",
        description="Face crops at the HR size, landmarks on the HR and LR crops, FER soft labels, labels and "
                    "splits, in a few .npz shards. SRC: a folder with labels.csv (path,label,split,subject), "
                    "a CelebA folder (list_eval_partition.txt), or any folder of images (FFHQ, Helen, ...). "
                    "A re-run resumes. See docs/TRAINING.md.")
    p.add_argument("src", help="folder of face images")
    p.add_argument("--out", required=True, help="cache folder (keep it out of git, e.g. .data/cache/NAME)")
    p.add_argument("--size", type=int, default=128, help="HR crop side (default 128)")
    p.add_argument("--margin", type=float, default=0.6, help="square-crop margin around the detected face (as the pipeline)")
    p.add_argument("--lr-scales", type=int, nargs="*", default=[4, 8], help="LR scales to detect landmarks at (default 4 8)")
    p.add_argument("--shard-size", type=int, default=1024, help="images per shard file")
    p.add_argument("--workers", type=int, default=2, help="parallel worker processes")
    p.add_argument("--no-face", choices=("skip", "center"), default="skip",
                   help="images where no face is found: skip them (default) or use the centre square; both are listed")
    p.add_argument("--limit", type=int, help="only the first N images (by path)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
