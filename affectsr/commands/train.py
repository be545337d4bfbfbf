"""``affectsr train KEY=VALUE ...`` (an SR model), ``affectsr train-frozen-trunk KEY=VALUE ...`` (a full preset from
Real-ESRGAN's frozen trunk) and ``affectsr train-predictor`` (the LR landmark predictor)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from ..overrides import parse_overrides as parse_fields
from ..train import TrainConfig, check_init, load_config, parse_overrides, train, train_predictor
from ..train.frozen_trunk import FrozenTrunkConfig, train_frozen_trunk
from ..types import SCALES
from .common import fail

__all__ = ["add_parser", "run_train", "run_train_frozen_trunk", "run_train_predictor"]

# FrozenTrunkConfig's fields with their defaults (out and trunk_cache have none: they are required)
_FROZEN_FIELDS = {f.name: (f.default if f.default is not dataclasses.MISSING else
                           f.default_factory() if f.default_factory is not dataclasses.MISSING else "")
                  for f in dataclasses.fields(FrozenTrunkConfig)}


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

    f = subparsers.add_parser(
        "train-frozen-trunk", help="train a full preset from Real-ESRGAN's frozen trunk on cached features",
        description="Train (or resume, out/last.pt) an nf64 nb23 AffectSRNet preset initialised from Real-ESRGAN "
                    "x4plus on trunk features made by `affectsr cache-trunk`: the last blocks, the prior, the fusions "
                    "and the upsampling path. Config: FrozenTrunkConfig in affectsr/train/frozen_trunk.py.")
    f.add_argument("overrides", nargs="+", metavar="KEY=VALUE",
                   help="e.g. out=runs/x4 trunk_cache=runs/trunk-x4 data=.data/cache/a,.data/cache/b model=affectsr-x4 "
                        "minutes=75 lambda_emo=0.01 classifier=fer-teacher.safetensors")
    f.set_defaults(func=run_train_frozen_trunk)

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
    check_init(cfg)  # a damaged init= file fails here (WeightsError: exit 2), before the data is opened
    rank = int(os.environ.get("RANK", 0))
    try:
        s = train(cfg, log=print if rank == 0 else (lambda *_: None))
    except (FileNotFoundError, ValueError) as e:  # no prepared cache where data= points; settings that do not fit
        print(f"error: {e}", file=sys.stderr)
        return 2
    if rank == 0:
        print(f"done: {s['step']} steps, {s['seconds']} s; EMA weights {s.get('weights')}")
    return 0


def run_train_predictor(args: argparse.Namespace) -> int:
    print(train_predictor(args.data, args.scale, args.out, args.steps, args.batch, seed=args.seed, threads=args.threads))
    return 0


def run_train_frozen_trunk(args: argparse.Namespace) -> int:
    try:
        values = parse_fields(_FROZEN_FIELDS | {"data": ()}, args.overrides)
        values["data"] = list(values.get("data", ()))
        cfg = FrozenTrunkConfig(**values)
    except TypeError as e:
        return fail(f"{e} (out=... and trunk_cache=... are required)")
    except ValueError as e:
        return fail(str(e))
    try:
        rec = train_frozen_trunk(cfg)
    except (ValueError, FileNotFoundError) as e:
        return fail(str(e))
    print(f"done: {rec['step']} steps, {rec['wall_s']} s; weights {cfg.out}/model.safetensors")
    return 0
