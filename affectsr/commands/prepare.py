"""``affectsr prepare SRC --out CACHE``: a folder of faces -> a sharded training cache; ``affectsr cache-trunk``:
a prepared cache -> the frozen Real-ESRGAN trunk's features of its faces (for frozen-trunk training);
``affectsr cache-teacher``: a prepared cache -> a trained model's SR of its faces (for distillation)."""
from __future__ import annotations

import argparse
import json
import sys

from ..data.dataset import FaceCache
from ..data.prepare import PrepareConfig, prepare
from ..data.trunk_cache import TrunkCacheConfig, build_trunk_cache, sample_indices
from ..train.teacher import build_teacher_outputs
from ..weights import WeightsError
from .common import fail

__all__ = ["add_parser", "run", "run_cache_teacher", "run_cache_trunk"]


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

    t = subparsers.add_parser(
        "cache-trunk", help="cache the frozen Real-ESRGAN trunk's features of prepared faces",
        description="Run Real-ESRGAN x4plus's RRDB trunk once per face of prepared cache(s) (same bicubic LR as "
                    "training), --stop-before blocks short of its end, into float16 shards (affectsr.data.trunk_cache). "
                    "`affectsr train-frozen-trunk` trains the rest on them. An interrupted run resumes.")
    t.add_argument("--data", nargs="+", required=True, help="cache folder(s) made by `affectsr prepare`, pooled")
    t.add_argument("--out", required=True, help="output folder (keep it out of git)")
    t.add_argument("--scale", type=int, choices=(4, 8), default=4)
    t.add_argument("--split", default="train", help="train/val/test, or all")
    t.add_argument("--sample", type=int, default=None, help="a random subset of this many faces of the split")
    t.add_argument("--seed", type=int, default=0, help="seed of --sample")
    t.add_argument("--stop-before", type=int, default=0, help="stop this many RRDB blocks before the end")
    t.add_argument("--shard-size", type=int, default=256)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("-q", "--quiet", action="store_true")
    t.set_defaults(func=run_cache_trunk)

    d = subparsers.add_parser(
        "cache-teacher", help="store a trained model's SR of prepared faces (teacher outputs for distillation)",
        description="Run a teacher (e.g. affectsr-x4) once per face of prepared cache(s), on the same bicubic LR and "
                    "detected LR landmarks as training, and store its SR as uint8 in one .npz (affectsr.train.teacher). "
                    "`affectsr train teacher=FILE lambda_kd=...` distils from it. With --trunk-cache (the teacher's "
                    "frozen trunk, from `affectsr cache-trunk`) only what follows the cached trunk runs.")
    d.add_argument("--teacher", required=True, help="preset name or SR .safetensors")
    d.add_argument("--data", nargs="+", required=True, help="cache folder(s) made by `affectsr prepare`, pooled")
    d.add_argument("--out", required=True, help="the .npz to write (keep it out of git)")
    d.add_argument("--split", default="train", help="train/val/test, or all")
    d.add_argument("--trunk-cache", default="", help="the faces of this trunk cache, from its features")
    d.add_argument("--sample", type=int, default=None, help="without --trunk-cache: a random subset of this many faces")
    d.add_argument("--seed", type=int, default=0, help="seed of --sample")
    d.add_argument("--batch-size", type=int, default=8)
    d.add_argument("--threads", type=int, default=1)
    d.add_argument("-q", "--quiet", action="store_true")
    d.set_defaults(func=run_cache_teacher)


def run_cache_trunk(args: argparse.Namespace) -> int:
    split = None if args.split == "all" else args.split
    data = [str(c) for c in args.data]
    try:
        faces = FaceCache(data, split=split)
        cfg = TrunkCacheConfig(data, args.scale, split, args.stop_before, args.shard_size, args.batch_size,
                               indices=sample_indices(len(faces), args.sample, args.seed))
        stats = build_trunk_cache(cfg, args.out, threads=args.threads, progress=not args.quiet, faces=faces)
    except (ValueError, FileNotFoundError, KeyError) as e:
        return fail(str(e))
    print(json.dumps(stats))
    return 0


def run_cache_teacher(args: argparse.Namespace) -> int:
    split = None if args.split == "all" else args.split
    data = [str(c) for c in args.data]
    try:
        indices = None
        if args.sample is not None:
            if args.trunk_cache:
                return fail("--sample picks faces without a trunk cache; --trunk-cache brings its own")
            indices = sample_indices(len(FaceCache(data, split=split)), args.sample, args.seed)
        stats = build_teacher_outputs(args.teacher, data, args.out, split, indices, args.trunk_cache, args.batch_size,
                                      args.threads, progress=not args.quiet)
    except (ValueError, FileNotFoundError, KeyError, WeightsError) as e:
        return fail(str(e))
    print(json.dumps(stats))
    return 0
