"""``affectsr emotion IMAGE...`` (each face's expression) and ``affectsr study-resolution`` (the resolution study)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..assets import default_scene
from ..emotion.classifier import DEFAULT_CLASSIFIER, JUDGE_CLASSIFIER, TEACHER_CLASSIFIER, load_emotion_classifier, load_fer_pair
from ..emotion.data import DatasetNotFoundError, resolve_data_root
from ..emotion.faces import FER_MARGIN, detect_emotions
from ..emotion.study import (
    STUDY_DATASETS,
    STUDY_SIZES,
    load_sr_models,
    plot_study,
    run_study,
    study_meta,
    to_markdown,
    write_csv,
    write_json,
)
from ..images import ImageReadError, iter_image_files
from ..landmarks import LandmarkDetector
from .common import recorded_command

__all__ = ["add_parser", "run_emotion", "run_study_resolution"]


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated pixel sizes like 64,32,24,16, got {text!r}") from None
    if not sizes or min(sizes) < 4:
        raise argparse.ArgumentTypeError(f"sizes must be at least 4 px, got {text!r}")
    return sizes


def run_emotion(args: argparse.Namespace) -> int:
    """Print each face's expression (or JSON); exit 1 if an input could not be read, 2 on bad arguments."""
    try:
        classifier = load_emotion_classifier(args.classifier, device=args.device)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    files: list = []
    errors: list[str] = []
    if not args.inputs:  # like `affectsr demo`: something to try with no files at hand
        print("no IMAGE given: reading the bundled astronaut photo (NASA, public domain)", file=sys.stderr)
        files.append(("<bundled astronaut photo>", default_scene()))
    for item in args.inputs:
        try:
            found = iter_image_files([item])
        except FileNotFoundError as e:
            errors.append(str(e))
            continue
        if not found:
            errors.append(f"{item}: folder holds no images")
        files += found
    images = []
    with LandmarkDetector() as detector:
        for entry in files:
            path, image = entry if isinstance(entry, tuple) else (entry, entry)
            try:
                faces = detect_emotions(image, classifier, detector, margin=args.margin, aligned=args.aligned)
            except (ImageReadError, OSError, ValueError) as e:
                errors.append(str(e) if str(path) in str(e) else f"{path}: {e}")
                continue
            images.append((path, faces))
    if args.json:
        doc = {"classifier": classifier.name, "labels": list(classifier.labels),
               "images": [{"path": str(p), "faces": [f.to_dict() for f in faces]} for p, faces in images],
               "errors": errors}
        print(json.dumps(doc, indent=2))
    else:
        for path, faces in images:
            if not faces:
                print(f"{path}: no face found")
            for i, f in enumerate(faces, 1):
                others = sorted(zip(classifier.labels, f.probabilities), key=lambda t: -t[1])
                probs = " ".join(f"{name} {p:.2f}" for name, p in others)
                where = "whole image" if f.detection is None else "box " + ",".join(str(v) for v in f.box)
                print(f"{path}: face {i} ({where}): {f.label} ({f.confidence:.0%})  [{probs}]")
        for e in errors:
            print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


def run_study_resolution(args: argparse.Namespace) -> int:
    """Run the study, write CSV + JSON + PNG into --out and print the table; exit 2 when data is missing."""
    try:
        root = resolve_data_root(args.data)
        classifier, teacher = load_fer_pair(args.judge, args.teacher, args.device)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    models, messages = load_sr_models([m for m in (args.models or "").split(",") if m], device=args.device)
    for m in messages:
        print(f"note: {m}", file=sys.stderr)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr))
    try:
        result = run_study(classifier, root, tuple(args.datasets.split(",")), args.sizes, models,
                           split=args.split, limit=args.limit, log=log, teacher=teacher)
    except DatasetNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = study_meta(classifier, recorded_command(args), teacher)
    meta["skipped_models"] = messages
    stem = args.name
    csv_path = write_csv(result.rows, out / f"{stem}.csv")
    json_path = write_json(result, out / f"{stem}.json", meta)
    png_path = plot_study(result.rows, out / f"{stem}.png",
                          title=f"FER judge ({classifier.name}) on bicubic-degraded faces, {args.split} splits; {meta['date']}")
    print(to_markdown(result.rows))
    for note in result.notes:
        log(f"note: {note}")
    print(f"\nwrote {csv_path}, {json_path}, {png_path}", file=sys.stderr)
    return 0


def add_parser(subparsers) -> None:
    """Register ``emotion`` and ``study-resolution``."""
    e = subparsers.add_parser("emotion", help="find faces and print each one's expression and class probabilities")
    e.add_argument("inputs", nargs="*", metavar="IMAGE",
                   help="image files and/or folders (searched recursively); none: the bundled astronaut photo")
    e.add_argument("--json", action="store_true", help="machine-readable output with the label names")
    e.add_argument("--aligned", action="store_true", help="each image is one face crop: no detection")
    e.add_argument("--margin", type=float, default=FER_MARGIN,
                   help=f"square crop side = detector box x (1 + margin) (default {FER_MARGIN}, FER2013 framing)")
    # the most accurate shipped reader (docs/EMOTION.md: 68.2% on FER2013 PrivateTest against the mini-Xception's 59.2%)
    e.add_argument("--classifier", default=TEACHER_CLASSIFIER,
                   help=f"shipped name or .safetensors path (default {TEACHER_CLASSIFIER}, the most accurate shipped; "
                        f"{DEFAULT_CLASSIFIER} is the small fast one)")
    e.add_argument("--device", default="cpu")
    e.set_defaults(func=run_emotion)

    s = subparsers.add_parser("study-resolution",
                              help="FER accuracy and ECM on labelled test faces: originals vs bicubic from 64/32/24/16 px (and SR models)")
    s.add_argument("--data", default=None, metavar="DIR", help="data root holding fer2013/, ck_plus_48/, taiwanese_expr/ "
                   "(default: $AFFECTSR_DATA_ROOT or ../shared/data next to the repo)")
    s.add_argument("--out", default="affectsr-study", metavar="OUTDIR", help="output folder (default ./affectsr-study)")
    s.add_argument("--name", default="study_resolution", help="file stem of the CSV/JSON/PNG (default study_resolution)")
    s.add_argument("--datasets", default=",".join(STUDY_DATASETS), help=f"comma-separated (default {','.join(STUDY_DATASETS)})")
    s.add_argument("--sizes", type=_sizes, default=STUDY_SIZES, help=f"LR sides in px (default {','.join(map(str, STUDY_SIZES))})")
    s.add_argument("--models", default=None, metavar="NAME,...",
                   help="SR presets or .safetensors paths to add (presets without trained weights are skipped)")
    s.add_argument("--split", default="test")
    s.add_argument("--limit", type=int, default=None, help="first N faces per dataset (quick runs)")
    s.add_argument("--judge", "--classifier", dest="judge", default=JUDGE_CLASSIFIER,
                   help=f"FER classifier that fills the main columns (default {JUDGE_CLASSIFIER})")
    s.add_argument("--teacher", default=TEACHER_CLASSIFIER,
                   help=f"FER classifier for the teacher columns; 'none' to skip (default {TEACHER_CLASSIFIER})")
    s.add_argument("--device", default="cpu")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=run_study_resolution)
