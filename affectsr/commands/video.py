"""``affectsr video IN -o OUT``: the faces of a video super-resolved, tracked, smoothed; audio kept."""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from ..atomic import missing_folders, remove_folders
from ..landmarks.detector import DEFAULT_MIN_FACE, check_min_face
from ..pipeline import UntrainedModelWarning
from ..types import SCALES
from ..video.io import VIDEO_FORMATS, VideoError, check_paths, open_input
from ..video.upscale import remove_temp_files, upscale_video
from .common import default_models, device_error, prompt_signals

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("video", help="super-resolve the faces of a video (tracked, smoothed, audio kept)",
                              description="Face super-resolution for video: faces tracked and smoothed over time, "
                                          "frame rate and audio kept, streamed frame by frame.")
    p.add_argument("input", metavar="IN", help="input video (anything FFmpeg reads: mp4, mov, mkv, avi, webm...)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help=f"output video ({', '.join(VIDEO_FORMATS)})")
    p.add_argument("--scale", type=int, choices=SCALES, default=None, help="default: the model's (x4 if no model)")
    p.add_argument("--model", default=None, help=f"preset name or .safetensors path (default: {default_models()})")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT (and the --stats file) if they exist")
    p.add_argument("--no-smooth", dest="smooth", action="store_false",
                   help="no One-Euro smoothing of face boxes and landmarks over time")
    p.add_argument("--stats", metavar="FILE.json", default=None,
                   help="measure temporal stability (flicker SR vs bicubic, landmark jitter, FER change) into FILE.json")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    p.add_argument("--min-face", type=float, default=None, metavar="PX",
                   help=f"smallest face looked for, in input pixels (default {DEFAULT_MIN_FACE}; larger is faster)")
    p.add_argument("--keyframe-interval", type=int, default=8, metavar="N",
                   help="scan the whole frame for faces every N frames, tracking in between (default 8)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """The run under :func:`prompt_signals`: Ctrl-C and SIGTERM stop it within 2 s, temporary files removed."""
    dst = Path(args.output)
    made = missing_folders(dst.parent)  # what the run will create: removed again if it is stopped

    def cleanup() -> None:  # a forced stop: the run's own ``finally`` did not get to run
        remove_temp_files(dst)
        remove_folders(made)

    with prompt_signals(cleanup):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if (err := device_error(args.device)) is not None:
        print(err, file=sys.stderr)
        return 2
    if args.max_frames is not None and args.max_frames < 1:
        print("error: --max-frames must be at least 1", file=sys.stderr)
        return 2
    if args.keyframe_interval < 1:
        print("error: --keyframe-interval must be at least 1", file=sys.stderr)
        return 2
    if args.min_face is not None:
        try:
            check_min_face(args.min_face)
        except ValueError as e:
            print(f"error: --min-face: {e}", file=sys.stderr)
            return 2
    src, dst = Path(args.input), Path(args.output)
    try:  # cheap checks before loading any model
        check_paths(src, dst, args.overwrite)
        open_input(src)[0].close()
    except (VideoError, ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UntrainedModelWarning)
        try:
            report = upscale_video(src, dst, args.scale, args.model, args.device, args.overwrite, args.smooth,
                                   args.stats, progress=not args.quiet, max_frames=args.max_frames,
                                   keyframe_interval=args.keyframe_interval, min_face=args.min_face)
        except (VideoError, ValueError, FileExistsError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"error: {dst}: {e.strerror or ' '.join(str(e).split()) or type(e).__name__}", file=sys.stderr)
            return 1
    for w in caught:
        if issubclass(w.category, UntrainedModelWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(report.summary())
    if report.stability is not None:
        o = report.stability["overall"]

        def f(key: str, spec: str = ".3f") -> str:
            return "n/a" if o.get(key) is None else format(o[key], spec)

        print(f"stability ({o['pairs']} frame pairs): flicker SR {f('flicker_sr', '.2f')} vs bicubic "
              f"{f('flicker_bicubic', '.2f')} levels; landmark jitter raw {f('jitter_raw', '.4f')} vs used "
              f"{f('jitter_used', '.4f')} IOD; FER change (JS) SR {f('fer_js_sr', '.4f')} vs bicubic "
              f"{f('fer_js_bicubic', '.4f')}; written to {args.stats}")
    return 0
