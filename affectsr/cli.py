"""Command line: ``affectsr demo | upscale | video | models | bench | emotion | study-resolution | prepare | train |
evaluate | export | fairness | serve`` (``affectsr --help``)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

WRITABLE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def _version() -> str:
    from . import __version__

    return __version__


def cmd_models(args: argparse.Namespace) -> int:
    from .models import list_models

    infos = list_models()
    if args.json:
        print(json.dumps([{"name": i.name, "scale": i.config.scale, "params": i.num_params, "trained": i.trained,
                           "description": i.description} for i in infos], indent=2))
        return 0
    print(f"{'name':<18} {'scale':>5} {'params':>8}  {'weights':<10} description")
    for i in infos:
        print(f"{i.name:<18} {'x' + str(i.config.scale):>5} {i.num_params / 1e6:>7.2f}M  "
              f"{'trained' if i.trained else 'untrained':<10} {i.description}")
    if not any(i.trained for i in infos):
        print("\nNo trained weights ship yet: every preset runs with random weights until they do.")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    if (err := _device_error(args.device)) is not None:
        print(err, file=sys.stderr)
        return 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the demo states untrained weights in its own words
        try:
            path, rep = run_demo(args.out, args.scale, args.model, device=args.device)
        except (ValueError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(f"wrote {path}")
    print(f"model: {rep['model']} ({'trained' if rep['trained'] else 'UNTRAINED: random weights, see `affectsr models`'})")
    print(f"landmarks found on the LR face: {'yes' if rep['landmarks_found'] else 'no'}")
    print(f"RGB PSNR vs original: bicubic {rep['psnr_bicubic']:.2f} dB, {rep['model']} {rep['psnr_affectsr']:.2f} dB")
    return 0


def _device_error(device: str | None) -> str | None:
    """A one-line error for a --device this machine cannot use, else None."""
    if device is None:
        return None
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        return f"error: --device {device}: not a device (use cpu or cuda)"
    if dev.type == "cuda" and not torch.cuda.is_available():
        return f"error: --device {device}: CUDA is not available on this machine"
    return None


def _output_path(src: Path, root: Path | None, out_dir: Path, ext: str | None) -> Path:
    rel = src.relative_to(root) if root is not None else Path(src.name)
    suffix = ext or (src.suffix.lower() if src.suffix.lower() in WRITABLE_SUFFIXES else ".png")
    return (out_dir / rel).with_suffix(suffix)


def plan_outputs(inputs: list[str], out_dir: Path, ext: str | None) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(input, output) pairs, keeping sub-folders of folder inputs; and errors found before any work."""
    from .images import iter_image_files

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


def cmd_upscale(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .images import ImageReadError
    from .pipeline import UntrainedModelWarning, Upscaler

    out_dir = Path(args.output)
    ext = ("." + args.ext.lower().lstrip(".")) if args.ext else None
    if ext and ext not in WRITABLE_SUFFIXES:
        print(f"error: --ext {args.ext}: not one of {sorted(WRITABLE_SUFFIXES)}", file=sys.stderr)
        return 2
    if (err := _device_error(args.device)) is not None:
        print(err, file=sys.stderr)
        return 2
    try:  # fail before loading anything if the output folder cannot be written
        out_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out_dir).close()
    except OSError as e:
        print(f"error: -o {out_dir}: cannot write there ({e.strerror or e})", file=sys.stderr)
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
                from .export import ExportError, load_onnx_model

                try:
                    model = load_onnx_model(args.model, args.scale)
                except (ExportError, ImportError, OSError) as e:
                    raise ValueError(f"--backend onnxruntime: {e}") from e
            up = Upscaler(args.scale, model, args.device, margin=args.margin, landmarks=args.landmarks)
        except (ValueError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    failed = len(errors)
    n_faces = 0
    with up, tqdm(todo, desc=f"upscale x{up.scale}", unit="img", disable=args.quiet or None, file=sys.stderr) as bar:
        for src, dst in bar:
            try:
                result = up(src, aligned=args.aligned)
                result.save(dst, overwrite=args.overwrite)
                n_faces += len(result.faces)
                for note in result.notes:
                    tqdm.write(f"note: {src}: {note}", file=sys.stderr)
            except (ImageReadError, ValueError, OSError) as e:
                failed += 1
                msg = str(e) if isinstance(e, ImageReadError) and str(e).startswith(str(src)) else f"{src}: {e}"
                tqdm.write(f"error: {msg}", file=sys.stderr)
            except Exception as e:  # noqa: BLE001 - one broken input must not stop a folder run
                failed += 1
                tqdm.write(f"error: {src}: unexpected {type(e).__name__}: {e}", file=sys.stderr)
            bar.set_postfix(faces=n_faces, failed=failed)
    done = len(todo) - (failed - len(errors))
    print(f"{done} image(s) written to {out_dir} ({n_faces} face(s)), {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import DTYPES, machine, rows_to_dicts, run_bench, to_markdown

    names = args.models.split(",") if args.models else None
    try:
        batches = [int(b) for b in args.batch.split(",")]
        if any(b < 1 for b in batches):
            raise ValueError
    except ValueError:
        print(f"error: --batch {args.batch}: expected comma-separated positive integers, e.g. 1,8", file=sys.stderr)
        return 2
    dtypes = args.dtype.split(",") if args.dtype else None
    if dtypes and (bad := [d for d in dtypes if d not in DTYPES]):
        print(f"error: --dtype {','.join(bad)}: choose from {', '.join(DTYPES)}", file=sys.stderr)
        return 2
    backends = tuple(args.backend.split(","))
    if bad := [b for b in backends if b not in ("torch", "onnxruntime")]:
        print(f"error: --backend {','.join(bad)}: choose from torch, onnxruntime", file=sys.stderr)
        return 2
    if (err := _device_error(args.device)) is not None:
        print(err, file=sys.stderr)
        return 2
    try:
        rows = run_bench(names, batches, args.device, args.min_time, dtypes, args.compile, backends,
                         landmarks=not args.no_landmarks)
    except ImportError as e:
        print(f"error: {e} (the onnxruntime backend needs `pip install affectsr[onnx]`)", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"machine": machine(), "rows": rows_to_dicts(rows)}, indent=2) if args.json else to_markdown(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="affectsr", description="Emotion-aware face super-resolution.")
    p.add_argument("--version", action="version", version=f"affectsr {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="upscale the bundled face and write a side-by-side PNG (no arguments needed)")
    d.add_argument("--out", default="affectsr-demo", help="output folder (default: ./affectsr-demo)")
    d.add_argument("--scale", type=int, choices=(4, 8), default=None, help="4 or 8 (default: the model's, else 4)")
    d.add_argument("--model", default=None, help="preset name or .safetensors path (default: affectsr-x<scale>)")
    d.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    d.set_defaults(func=cmd_demo)

    u = sub.add_parser("upscale", help="upscale the faces in images or folders of images")
    u.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders (searched recursively)")
    u.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    u.add_argument("--scale", type=int, choices=(4, 8), default=None, help="4 or 8 (default: the model's, else 4)")
    u.add_argument("--model", default=None, help="preset name or .safetensors path (default: affectsr-x<scale>)")
    u.add_argument("--aligned", action="store_true", help="inputs are face crops: no detection, no paste-back")
    u.add_argument("--overwrite", action="store_true", help="replace existing output files")
    u.add_argument("--ext", default=None, help="output format, e.g. png (default: keep the input's)")
    u.add_argument("--margin", type=float, default=0.6, help="face crop margin around the detected box (default 0.6)")
    u.add_argument("--landmarks", choices=("auto", "detect", "predict"), default="auto",
                   help="landmark route for the prior: MediaPipe (detect), the learned LR predictor (predict), "
                        "or detect then predict (auto, default)")
    u.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    u.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                   help="run the network with PyTorch (default) or ONNX Runtime (exported and cached on first use)")
    u.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    u.set_defaults(func=cmd_upscale)

    m = sub.add_parser("models", help="list the model presets and whether trained weights ship")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_models)
    b = sub.add_parser("bench", help="faces/s and latency per preset and baseline on this machine, with ratios "
                                     "to plain RRDB and to bicubic")
    b.add_argument("--models", default=None, help="comma-separated presets (default: all)")
    b.add_argument("--batch", default="1,8", help="comma-separated batch sizes (default: 1,8)")
    b.add_argument("--device", default="cpu")
    b.add_argument("--dtype", default=None,
                   help="comma-separated float32,bfloat16,float16 (default: float32 on CPU, bfloat16 on CUDA)")
    b.add_argument("--backend", default="torch", help="comma-separated torch,onnxruntime (default: torch)")
    b.add_argument("--compile", action="store_true", help="torch.compile the models (GPU; slow to warm up)")
    b.add_argument("--no-landmarks", action="store_true", help="skip timing the MediaPipe landmark stage")
    b.add_argument("--min-time", type=float, default=2.0, help="seconds of timing per measurement (default 2)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)

    from .emotion.commands import add_parsers as add_emotion_parsers

    add_emotion_parsers(sub)  # emotion, study-resolution
    from .data.commands import add_parsers as add_data_parsers

    add_data_parsers(sub)  # prepare, train
    from .evaluate import add_parser as add_evaluate_parser

    add_evaluate_parser(sub)  # evaluate
    from .video import add_parser as add_video_parser

    add_video_parser(sub)  # video
    from .export import add_parser as add_export_parser

    add_export_parser(sub)  # export
    from .fairness import add_parser as add_fairness_parser

    add_fairness_parser(sub)  # fairness
    from .serve import add_parser as add_serve_parser

    add_serve_parser(sub)  # serve
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
