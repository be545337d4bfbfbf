"""``affectsr fairness``: does expression fidelity hold across groups of people and under occlusion?

ECM and FER agreement per demographic group and under synthetic occlusions (:mod:`affectsr.fairness`).
"""
from __future__ import annotations

import argparse
import sys

from ..emotion.classifier import JUDGE_CLASSIFIER, TEACHER_CLASSIFIER
from ..fairness import DEFAULT_DATASETS, DEFAULT_GROUPS, OCCLUSIONS, run_report, summary_lines
from ..fairness.report import default_models as fairness_models
from ..types import LANDMARK_MODES, SCALES
from .common import device_error, recorded_command

__all__ = ["add_parser", "run"]


def _split_list(s: str | None) -> list[str]:
    return [x.strip() for x in (s or "").split(",") if x.strip()]


def add_parser(subparsers) -> None:
    f = subparsers.add_parser("fairness", help="ECM and FER agreement per demographic group and under synthetic "
                              "occlusions, per model", description=__doc__.split("\n")[0])
    f.add_argument("--data-root", default="../shared/data", help="folder holding the datasets (default ../shared/data)")
    f.add_argument("--datasets", default=",".join(DEFAULT_DATASETS),
                   help=f"comma-separated sub-folders of --data-root (default {','.join(DEFAULT_DATASETS)})")
    f.add_argument("--models", default=None, help="comma-separated: bicubic, presets, .safetensors paths or "
                   f"name=path.safetensors (default {','.join(fairness_models(4))} at x4; {','.join(fairness_models(8))} at x8)")
    f.add_argument("--scale", type=int, choices=SCALES, default=4)
    f.add_argument("--occlusions", default=",".join(OCCLUSIONS), help=f"comma-separated, from {','.join(OCCLUSIONS)}")
    f.add_argument("--groups", default=",".join(DEFAULT_GROUPS),
                   help="labels.csv columns to break down by, where present ('age' is binned; 'label' = emotion)")
    f.add_argument("--split", default="test", help="split to use (default test)")
    f.add_argument("--limit", type=int, default=None, help="at most this many images per dataset (the first N of the split by path)")
    f.add_argument("--landmarks", choices=(*LANDMARK_MODES, "none"), default="auto",
                   help="LR landmarks for the models' prior (as in evaluate)")
    f.add_argument("--judge", "--classifier", dest="judge", default=None,
                   help=f"FER classifier that scores; no training loss may use it (default {JUDGE_CLASSIFIER})")
    f.add_argument("--teacher", default=None,
                   help=f"FER classifier the emotion loss trains against, a second column; 'none' to skip (default {TEACHER_CLASSIFIER})")
    f.add_argument("--device", default="cpu")
    f.add_argument("--out", required=True, help="output folder (must be empty or new unless --overwrite)")
    f.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    f.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if (err := device_error(args.device)) is not None:
        print(err, file=sys.stderr)
        return 2
    try:
        report = run_report(args.data_root, args.out, _split_list(args.models) or None, args.scale, args.limit,
                            _split_list(args.occlusions), _split_list(args.datasets), _split_list(args.groups),
                            args.split, args.landmarks, args.device, judge=args.judge, teacher=args.teacher,
                            progress=not args.quiet,
                            overwrite=args.overwrite, command=recorded_command(args))
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    for line in summary_lines(report):
        print(line)
    for name, why in report["skipped_models"].items():
        print(f"skipped {name}: {why}")
    print(f"wrote {args.out}/fairness.json, fairness.md, fairness.png, occlusions.png, per_image.csv")
    return 0
