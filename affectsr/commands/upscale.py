"""``affectsr upscale``: the faces in images or folders of images, upscaled and pasted back."""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from ..atomic import write_error
from ..export import ExportError, load_onnx_model
from ..images import WRITABLE_SUFFIXES, ImageReadError, iter_image_files, output_suffix
from ..landmarks.detector import DEFAULT_MIN_FACE
from ..pipeline import UntrainedModelWarning, Upscaler
from ..progress import progress
from ..types import LANDMARK_MODES, SCALES
from .common import default_models, device_error


def add_parser(subparsers) -> None:
    u = subparsers.add_parser("upscale", help="upscale the faces in images or folders of images")
    u.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders (searched recursively)")
    u.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    u.add_argument("--scale", type=int, choices=SCALES, default=None, help="4 or 8 (default: the model's, else 4)")
    u.add_argument("--model", default=None, help=f"preset name or .safetensors path (default: {default_models()})")
    u.add_argument("--aligned", action="store_true", help="inputs are face crops: no detection, no paste-back")
    u.add_argument("--overwrite", action="store_true", help="replace existing output files")
    u.add_argument("--ext", default=None, help="output format, e.g. png (default: keep the input's; GIF and "
                                                "unknown formats are written as PNG, with a note)")
    u.add_argument("--margin", type=float, default=0.6, help="face crop margin around the detected box (default 0.6)")
    u.add_argument("--min-face", type=float, default=DEFAULT_MIN_FACE, metavar="PX",
                   help=f"smallest face looked for, in input pixels (default {DEFAULT_MIN_FACE}; larger is faster)")
    u.add_argument("--landmarks", choices=LANDMARK_MODES, default="auto",
                   help="landmark route for the prior: MediaPipe (detect), the learned LR predictor (predict), "
                        "or detect then predict (auto, default)")
    u.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    u.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                   help="run the network with PyTorch (default) or ONNX Runtime (exported and cached on first use)")
    u.add_argument("-q", "--quiet", action="store_true", help="no progress (a bar on a terminal, a line every 15 s in a log)")
    u.set_defaults(func=run)


def _output_path(src: Path, root: Path | None, out_dir: Path, ext: str | None) -> Path:
    rel = src.relative_to(root) if root is not None else Path(src.name)
    return (out_dir / rel).with_suffix(output_suffix(src, ext)[0])


def plan_outputs(inputs: list[str], out_dir: Path, ext: str | None) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(input, output) pairs, keeping sub-folders of folder inputs; and errors found before any work."""
    pairs, errors, seen = [], [], {}
    for item in inputs:
        p = Path(item)
        if not p.exists():
            errors.append(f"{item}: no such file or folder")
            continue
        files = iter_image_files([p])
        if p.is_dir() and out_dir.resolve() != p.resolve():  # -o inside an input folder: outputs are not inputs
            files = [f for f in files if not f.resolve().is_relative_to(out_dir.resolve())]
        if p.is_dir() and not files:
            errors.append(f"{item}: folder holds no images")
        for f in files:
            dst = _output_path(f, p if p.is_dir() else None, out_dir, ext)
            key = dst.resolve()
            if key in seen and seen[key].resolve() == f.resolve():
                continue  # the same file named twice (e.g. a folder and a file inside it)
            if key in seen:
                errors.append(f"{f}: would write the same output as {seen[key]} ({dst}); upscale them separately")
                continue
            seen[key] = f
            pairs.append((f, dst))
    input_set = {f.resolve() for f, _ in pairs}
    safe = []
    for f, dst in pairs:
        if dst.resolve() in input_set:
            errors.append(f"{f}: output {dst} is an input file; choose another -o folder")
        else:
            safe.append((f, dst))
    return safe, errors


def run(args: argparse.Namespace) -> int:
    out_dir = Path(args.output)
    ext = ("." + args.ext.lower().lstrip(".")) if args.ext else None
    if ext and ext not in WRITABLE_SUFFIXES:
        print(f"error: --ext {args.ext}: not one of {sorted(WRITABLE_SUFFIXES)}", file=sys.stderr)
        return 2
    if (err := device_error(args.device)) is not None:
        print(err, file=sys.stderr)
        return 2
    if (why := write_error(out_dir)) is not None:  # fail before loading anything; the folder is made by the first image
        print(f"error: -o {out_dir}: cannot write there ({why})", file=sys.stderr)
        return 2
    pairs, errors = plan_outputs(args.inputs, out_dir, ext)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    todo = []
    for src, dst in pairs:
        if dst.exists() and not args.overwrite:
            errors.append(f"{src}: {dst} exists (use --overwrite to replace it)")
            print(f"error: {errors[-1]}", file=sys.stderr)
        else:
            todo.append((src, dst))
    if not todo:
        if not errors:
            print("nothing to do", file=sys.stderr)
        return 1 if errors else 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UntrainedModelWarning)
        try:
            model = args.model
            if args.backend == "onnxruntime" or str(args.model or "").endswith(".onnx"):
                # the same pipeline, the network run by ONNX Runtime (a .onnx model implies it)
                try:
                    model = load_onnx_model(args.model, args.scale)
                except (ExportError, ImportError, OSError) as e:
                    raise ValueError(f"--backend onnxruntime: {e}") from e
            up = Upscaler(args.scale, model, args.device, margin=args.margin, landmarks=args.landmarks,
                          min_face=args.min_face)
        except (ValueError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    failed = len(errors)
    n_faces = 0
    with up, progress(todo, desc=f"upscale x{up.scale}", unit="img", enabled=not args.quiet) as bar:
        for src, dst in bar:
            try:
                result = up(src, aligned=args.aligned)
                result.save(dst, overwrite=args.overwrite)
                n_faces += len(result.faces)
                fmt_note = output_suffix(src, ext)[1]
                for note in result.notes + ([f"{fmt_note}: {dst}"] if fmt_note else []):
                    bar.write(f"note: {src}: {note}", file=sys.stderr)
            except (ImageReadError, ValueError, OSError) as e:
                failed += 1
                msg = str(e) if isinstance(e, ImageReadError) and str(e).startswith(str(src)) else f"{src}: {e}"
                bar.write(f"error: {msg}", file=sys.stderr)
            except Exception as e:  # noqa: BLE001 - one broken input must not stop a folder run
                failed += 1
                bar.write(f"error: {src}: unexpected {type(e).__name__}: {e}", file=sys.stderr)
            bar.set_postfix(faces=n_faces, failed=failed)
    done = len(todo) - (failed - len(errors))
    print(f"{done} image(s) written to {out_dir} ({n_faces} face(s)), {failed} failed", file=sys.stderr)
    return 1 if failed else 0
