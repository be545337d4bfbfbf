"""``affectsr bench-detect``: face detection recall by face size (colour and grey), false positives, tight crops
and time per 1080p frame, on seeded scenes built from the test splits (:mod:`affectsr.landmarks.detect_bench`)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..atomic import atomic_write
from ..landmarks import LandmarkDetector
from ..landmarks.detect_bench import DEFAULT_DATASETS, BenchConfig, picture, run_detect_bench, to_markdown
from ..landmarks.detector import DEFAULT_MIN_FACE

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench-detect", help="face detection recall by face size (colour and grey), false "
                              "positives and time per 1080p frame, on scenes built from the test splits",
                              description=__doc__.split("\n")[0].strip("`"))
    p.add_argument("--data-root", default="../shared/data", help="folder holding the datasets (default ../shared/data)")
    p.add_argument("--datasets", default=",".join(DEFAULT_DATASETS), help="comma-separated sub-folders of --data-root")
    p.add_argument("--scenes", type=int, default=BenchConfig.scenes, help="face scenes (default %(default)s)")
    p.add_argument("--faces-per-scene", type=int, default=BenchConfig.faces_per_scene)
    p.add_argument("--min-face", type=float, default=DEFAULT_MIN_FACE, help="detector min_face (default %(default)s)")
    p.add_argument("--time-min-face", default="", metavar="A,B",
                   help="also time 1080p frames at these min_face values (e.g. 24,32)")
    p.add_argument("--timing-only", action="store_true",
                   help="only time the 1080p frames (the same frames as a full run): no recall, false positives or crops")
    p.add_argument("--threads", type=int, default=BenchConfig.threads, help="detector threads (default %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="at most this many source images per dataset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder: results.json, results.md, scene.png")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        times = [float(v) for v in args.time_min_face.split(",") if v.strip()]
        cfg = BenchConfig(data_root=args.data_root, datasets=tuple(d for d in args.datasets.split(",") if d),
                          scenes=args.scenes, faces_per_scene=args.faces_per_scene, seed=args.seed,
                          min_face=args.min_face, threads=args.threads, limit=args.limit,
                          timing_only=args.timing_only)
        if cfg.scenes < 1 or cfg.faces_per_scene < 1 or cfg.threads < 1:
            raise ValueError("--scenes, --faces-per-scene and --threads must be at least 1")
        with LandmarkDetector(min_face=cfg.min_face, threads=cfg.threads) as det:
            report = run_detect_bench(cfg, detector=det, log=(lambda m: None) if args.quiet else
                                      (lambda m: print(m, file=sys.stderr)), timing_min_faces=times)
            image, info = (None, None) if cfg.timing_only else picture(det, cfg.seed, cfg.min_face)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if info is not None:
        report["picture"] = info
    if getattr(args, "command_line", None):
        report["command"] = args.command_line  # recorded as typed (affectsr.cli)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = to_markdown(report)
    atomic_write(out / "results.json", lambda p: Path(p).write_text(json.dumps(report, indent=2) + "\n"))
    atomic_write(out / "results.md", lambda p: Path(p).write_text(text))
    if image is not None:
        atomic_write(out / "scene.png", lambda p: image.save(p, format="PNG"))
    print(text, end="")
    print(f"wrote {out}/results.json, results.md{'' if image is None else ', scene.png'}", file=sys.stderr)
    return 0
