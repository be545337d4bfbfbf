"""``affectsr prepare`` and ``affectsr train`` sub-commands.

cli.py registers them with one line in its parser set-up::

    from .data.commands import add_parsers; add_parsers(sub)

Each sub-parser sets ``func`` to a function that takes the argparse Namespace and returns an
exit code.
"""
from __future__ import annotations

import argparse
import sys

__all__ = ["add_parsers", "cmd_prepare", "cmd_train"]


def cmd_prepare(args: argparse.Namespace) -> int:
    from .prepare import PrepareConfig, prepare

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


def cmd_train(args: argparse.Namespace) -> int:
    from affectsr.train import cmd_train as run

    return run(args)


def add_parsers(subparsers) -> None:
    """Register ``prepare`` and ``train`` on an argparse sub-parsers object."""
    from affectsr.train import add_train_arguments

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
    p.set_defaults(func=cmd_prepare)

    t = subparsers.add_parser(
        "train", help="train AffectSRNet on prepared caches (KEY=VALUE overrides)",
        description="Train or resume (out/last.pt) a model. Config: affectsr.train.TrainConfig; override any field "
                    "as KEY=VALUE. Multi-GPU: torchrun --nproc_per_node N -m affectsr.train train KEY=VALUE ...")
    add_train_arguments(t)
    t.set_defaults(func=cmd_train)


def main(argv: list[str] | None = None) -> int:
    """``python -m affectsr.data.commands prepare|train ...`` (the same as ``affectsr prepare|train``)."""
    p = argparse.ArgumentParser(prog="python -m affectsr.data.commands")
    add_parsers(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
