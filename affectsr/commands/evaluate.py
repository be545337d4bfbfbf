"""``affectsr evaluate``: SR models vs HR on a folder of faces, the numbers a paper table needs.

Also ``affectsr evaluate-cache`` (one model on a prepared cache split, as training validates: the
numbers of the model cards) and ``affectsr evaluate-predictor`` (the LR landmark predictor's NME).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ..evaluate import (
    LPIPS_NOTE,
    evaluate_cache,
    format_cache_eval,
    format_table,
    load_faces,
    predictor_nme,
    resolve_models,
    run_evaluation,
    write_outputs,
)
from ..emotion.classifier import JUDGE_CLASSIFIER, TEACHER_CLASSIFIER
from ..landmarks.predictor import default_predictor_path
from ..runinfo import machine, now
from ..types import LANDMARK_MODES, LANDMARK_SOURCES, SCALES
from .common import recorded_command

__all__ = ["add_parser", "run_evaluate", "run_evaluate_cache", "run_evaluate_predictor"]


def add_parser(subparsers) -> None:
    """Register ``evaluate``, ``evaluate-cache`` and ``evaluate-predictor``."""
    e = subparsers.add_parser("evaluate", help="PSNR/SSIM, identity, expression geometry and expression fidelity (judge and teacher) of SR models vs HR",
                              description=__doc__.split("\n")[0])
    e.add_argument("--model", required=True, help="comma-separated: bicubic, presets with shipped weights, .safetensors paths, LABEL=PATH.safetensors")
    e.add_argument("--data", required=True, nargs="+", metavar="DIR",
                   help="folder(s) of face images, with labels.csv, or prepared caches; several are pooled")
    e.add_argument("--scale", type=int, choices=SCALES, required=True)
    e.add_argument("--out", required=True, help="output folder (must be empty or new unless --overwrite)")
    e.add_argument("--split", default="auto",
                   help="train/val/test/all (default auto: test where the data names splits, else all)")
    e.add_argument("--limit", type=int, default=None, help="at most this many images (after the split filter)")
    e.add_argument("--landmarks", choices=(*LANDMARK_MODES, "none"), default="auto",
                   help="LR landmarks for the models' prior (default auto: MediaPipe, else the learned predictor)")
    e.add_argument("--judge", "--classifier", dest="judge", default=None,
                   help=f"FER classifier that scores expression fidelity; no training loss may use it (default {JUDGE_CLASSIFIER})")
    e.add_argument("--teacher", default=None,
                   help=f"FER classifier the emotion loss trains against, reported as a second column; 'none' to skip "
                        f"(default {TEACHER_CLASSIFIER})")
    e.add_argument("--no-identity", action="store_true", help="skip the dlib identity columns (they cost ~0.2 s per face)")
    e.add_argument("--device", default="cpu")
    e.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=run_evaluate)

    c = subparsers.add_parser("evaluate-cache", help="PSNR/SSIM/ECM of one model vs bicubic on a prepared cache split, "
                                                     "the raw network as in training's validation",
                              description="The numbers of the model cards: the network run on cache batches as "
                                          "training validates it (no pipeline padding), vs bicubic.")
    c.add_argument("weights", help="preset name or .safetensors path")
    c.add_argument("--data", nargs="+", required=True, help="cache folder(s) made by `affectsr prepare`")
    c.add_argument("--split", default="test")
    c.add_argument("--landmarks", default="detect", choices=LANDMARK_SOURCES)
    c.add_argument("--predictor", default="", help="LandmarkPredictor weights for --landmarks predict/auto")
    c.add_argument("--limit", type=int)
    c.add_argument("--classifier", default=None, help="FER classifier for ECM/agreement (default: the package default)")
    c.add_argument("--json", help="also write the result as JSON here")
    c.set_defaults(func=run_evaluate_cache)

    p = subparsers.add_parser("evaluate-predictor", help="landmark NME of MediaPipe (detect) vs the learned LR "
                                                         "predictor on a prepared cache split")
    p.add_argument("--data", nargs="+", required=True, help="cache folder(s) made by `affectsr prepare`")
    p.add_argument("--scale", type=int, choices=SCALES, required=True)
    p.add_argument("--predictor", default="", help="predictor weights (default: the one shipped for --scale)")
    p.add_argument("--split", default="test")
    p.add_argument("--json", help="also write the result as JSON here")
    p.set_defaults(func=run_evaluate_predictor)


def run_evaluate(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"error: --out {out}: exists and is not a folder", file=sys.stderr)
        return 2
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        print(f"error: --out {out}: not empty (use --overwrite to write into it)", file=sys.stderr)
        return 2
    if args.limit is not None and args.limit < 1:
        print("error: --limit must be at least 1", file=sys.stderr)
        return 2
    names = [n.strip() for n in args.model.split(",") if n.strip()]
    if not names:
        print("error: --model: no model named", file=sys.stderr)
        return 2
    dev = torch.device(args.device)
    models, skipped = resolve_models(names, args.scale, dev)
    for name, why in skipped.items():
        print(f"skipping {name}: {why}", file=sys.stderr)
    if not models:
        print("error: no model left to evaluate", file=sys.stderr)
        return 2
    faces, parts = [], []
    for data in args.data:
        try:
            got, info = load_faces(data, args.scale, args.split, args.limit, progress=not args.quiet)
        except (FileNotFoundError, ValueError, KeyError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if len(args.data) > 1:  # pooled sets: keep image ids unique and traceable
            for f in got:
                f.id = f"{Path(data).name}/{f.id}"
        faces += got
        parts.append({"path": str(data), **info})
    info = {"path": " + ".join(p["path"] for p in parts), "layout": " + ".join(sorted({p["layout"] for p in parts})),
            "split": " + ".join(sorted({p["split"] for p in parts})), "inputs": sum(p["inputs"] for p in parts),
            "skipped": [s for p in parts for s in p["skipped"]], "parts": parts}
    if not faces:
        print(f"error: --data {' '.join(args.data)}: no face found in {info['inputs']} image(s)", file=sys.stderr)
        return 2
    if faces[0].hr.shape[0] % args.scale:
        print(f"error: HR size {faces[0].hr.shape[0]} is not divisible by x{args.scale}", file=sys.stderr)
        return 2
    try:
        result = run_evaluation(faces, models, args.scale, args.landmarks, args.device, judge=args.judge,
                                teacher=args.teacher, identity=not args.no_identity, progress=not args.quiet)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {
        "models": result["models"], "skipped_models": skipped, "scale": args.scale, "hr_size": int(faces[0].hr.shape[0]),
        "faces": len(faces), "landmarks": args.landmarks, "judge": result["judge"], "teacher": result["teacher"],
        "classifier": result["judge"], "notes": result["notes"],
        "lpips": LPIPS_NOTE,
        "data": info,
        "command": recorded_command(args),
        "machine": machine(), "date": now(),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(out, result, summary, args.scale)
    print(format_table(summary))
    print(LPIPS_NOTE)
    for note in result["notes"]:
        print(f"note: {note}")
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    if info["skipped"]:
        print(f"{len(info['skipped'])} image(s) without a detected face were left out")
    print(f"wrote {out}/per_image.csv, summary.json, run.json, summary.md, grid.png, psnr_vs_ecm.png")
    return 0


def run_evaluate_cache(args: argparse.Namespace) -> int:
    try:
        r = evaluate_cache(args.weights, args.data, args.split, args.landmarks, args.predictor, args.limit,
                           classifier=args.classifier)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(format_cache_eval(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0


def run_evaluate_predictor(args: argparse.Namespace) -> int:
    pred = args.predictor or default_predictor_path(args.scale)
    if not pred:
        print(f"error: no predictor for x{args.scale}; pass --predictor", file=sys.stderr)
        return 2
    r = predictor_nme(args.data, args.scale, pred, args.split)
    print(json.dumps(r, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0
