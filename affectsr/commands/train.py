"""``affectsr train KEY=VALUE ...`` (an SR model) and ``affectsr train-predictor`` (the LR landmark predictor)."""
from __future__ import annotations

import argparse
import json
import os
import sys

from ..train import TrainConfig, load_config, parse_overrides, train, train_predictor
from ..types import SCALES

__all__ = ["add_parser", "run_train", "run_train_predictor"]


def add_parser(subparsers) -> None:
    """Register ``train`` and ``train-predictor``."""
    t = subparsers.add_parser(
        "train", help="train AffectSRNet on prepared caches (KEY=VALUE overrides)",
        description="Train or resume (out/last.pt) a model. Config: affectsr.train.TrainConfig; override any field "
                    "as KEY=VALUE. Multi-GPU: torchrun --nproc_per_node N -m affectsr train KEY=VALUE ...")
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. model=affectsr-x8-lite steps=5000 lambda_emo=0.05 "
                        "data=.data/cache/a,.data/cache/b (see TrainConfig in affectsr/train/config.py)")
    t.add_argument("--config", help="JSON file with TrainConfig fields (overrides apply on top)")
    t.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    t.set_defaults(func=run_train)

    p = subparsers.add_parser("train-predictor", help="train the LR landmark predictor on prepared caches",
                              description="Fit a LandmarkPredictor: bicubic LR faces of the train split -> the "
                                          "landmarks MediaPipe found on their HR crops.")
    p.add_argument("--data", nargs="+", required=True, help="cache folder(s) made by `affectsr prepare`")
    p.add_argument("--scale", type=int, choices=SCALES, required=True)
    p.add_argument("--out", required=True, help="the .safetensors file to write")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.set_defaults(func=run_train_predictor)


def run_train(args: argparse.Namespace) -> int:
    try:
        cfg = parse_overrides(load_config(args.config) if args.config else TrainConfig(), args.overrides)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    rank = int(os.environ.get("RANK", 0))
    s = train(cfg, log=print if rank == 0 else (lambda *_: None))
    if rank == 0:
        print(f"done: {s['step']} steps, {s['seconds']} s; EMA weights {s.get('weights')}")
    return 0


def run_train_predictor(args: argparse.Namespace) -> int:
    print(train_predictor(args.data, args.scale, args.out, args.steps, args.batch, seed=args.seed, threads=args.threads))
    return 0
