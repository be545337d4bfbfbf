"""``affectsr evaluate``: SR models vs HR on a folder of faces, the numbers a paper table needs.

    affectsr evaluate --model bicubic,affectsr-x4-lite --data ../shared/data/taiwanese_expr --scale 4 --out eval/

``--data`` is a folder of images, a folder with ``labels.csv`` (``path,label,split,subject``), or a
cache made by ``affectsr prepare`` (has ``index.json``). Faces are cropped exactly as ``prepare``
does (:func:`affectsr.data.prepare.process_image`: largest MediaPipe face, ``FaceBox.square(0.6)``,
128 px HR); LR = PIL bicubic downscale. Per model: PSNR/SSIM on Y with ``scale`` border pixels
cropped (:mod:`affectsr.metrics`), ECM / SR-vs-HR label agreement / FER accuracy (the shipped FER
classifier), and landmark NME of MediaPipe on SR vs on HR (faces where either is not found are
excluded and counted). LPIPS is not computed: no weights ship offline.

Writes ``per_image.csv``, ``summary.json`` (model name -> metrics), ``run.json`` (command, machine,
date, data, skipped models), ``summary.md``, ``grid.png`` and ``psnr_vs_ecm.png``.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import shlex
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .images import resize
from .metrics import psnr_y, ssim_y, to_tensor
from .runinfo import machine, now

__all__ = ["Face", "add_parser", "format_table", "load_faces", "resolve_models", "run_evaluation"]

LPIPS_NOTE = "LPIPS: n/a (no offline weights)"
HR_SIZE = 128
SUMMARY_KEYS = ("psnr", "ssim", "ecm", "agreement", "nme", "accuracy_sr", "accuracy_hr", "n")


class ModelSkipped(Exception):
    """A model that cannot be evaluated (no weights, wrong scale, unreadable file)."""


@dataclass
class Face:
    id: str
    hr: np.ndarray  # S x S x 3 uint8
    label: str = ""
    lm_hr: np.ndarray | None = None  # 478 x 3 normalised, NaN where not found
    lm_lr: np.ndarray | None = None  # from a cache (MediaPipe on the LR crop), else None
    extra: dict = field(default_factory=dict)


# --- data ------------------------------------------------------------------------------------------


def load_faces(data: str | Path, scale: int, split: str = "auto", limit: int | None = None,
               progress: bool = True) -> tuple[list[Face], dict]:
    """Faces of ``data`` (cache, labels.csv folder or image folder) and a description with skip counts."""
    from tqdm import tqdm

    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f"--data {data}: not a folder")
    if (data / "index.json").is_file():
        from .data.dataset import FaceCache

        sp = None if split == "all" else ("test" if split == "auto" else split)
        ds = FaceCache(data, split=sp, limit=limit)
        lr_key = f"lm_lr{scale}"
        faces = [Face(str(ds.path[i]).split("/", 1)[-1], ds.hr[i], str(ds.label_name[i]), ds.lm_hr[i],
                      ds.arrays[lr_key][i] if lr_key in ds.arrays else None) for i in range(len(ds))]
        return faces, {"layout": "cache", "split": sp or "all", "inputs": len(faces), "skipped": []}

    from .data.prepare import PrepareConfig, discover, process_image

    recs, layout = discover(data)
    if split == "auto":  # explicit splits (labels.csv, CelebA): the test split; a plain folder: every image
        sp = "test" if layout != "folder" else "all"
    else:
        sp = split
    if sp != "all":
        recs = [r for r in recs if r.split == sp]
    if limit is not None:
        recs = recs[:limit]
    if not recs:
        raise ValueError(f"--data {data}: no images{'' if sp == 'all' else f' in split {sp!r}'}")
    cfg = PrepareConfig(size=HR_SIZE, margin=0.6, lr_scales=(scale,))
    faces, skipped = [], []
    for r in tqdm(recs, desc="crop faces", unit="img", disable=not progress or None, file=sys.stderr):
        res = process_image(r, cfg)
        if "skip" in res:
            skipped.append([r.rel, res["skip"]])
            continue
        faces.append(Face(r.rel, res["hr"], r.label, res["lm_hr"], res.get(f"lm_lr{scale}")))
    return faces, {"layout": layout, "split": sp, "inputs": len(recs), "skipped": skipped}


# --- models ----------------------------------------------------------------------------------------


def resolve_models(names: list[str], scale: int, device: torch.device) -> tuple[dict, dict]:
    """({name: nn.Module or None for bicubic}, {name: reason skipped}).

    A name is ``bicubic``, a preset with shipped weights, a ``.safetensors`` path, or ``LABEL=PATH``.
    """
    from .models import PRESETS, WeightsNotFoundError, load_model
    from .models.presets import weights_path

    models, skipped = {}, {}
    for entry in names:
        # LABEL=PATH.safetensors names a weights file in the tables (ablations, your own runs)
        name, sep, source = entry.partition("=")
        source = source if sep else name
        if name in models or name in skipped:
            continue
        if name == "bicubic":
            models[name] = None
            continue
        try:
            if source in PRESETS and weights_path(source) is None:
                raise ModelSkipped(f"no trained weights ship for preset {source!r} (untrained: skipped)")
            try:
                net = load_model(source, device=device)
            except (WeightsNotFoundError, ValueError, OSError) as e:
                raise ModelSkipped(str(e)) from e
            if getattr(net, "scale", None) != scale:
                raise ModelSkipped(f"{name!r} upscales x{getattr(net, 'scale', '?')}, not x{scale}")
            net.name, net.trained = name, True
            models[name] = net
        except ModelSkipped as e:
            skipped[name] = str(e)
    return models, skipped


def _bicubic(lr: np.ndarray, scale: int) -> np.ndarray:
    h, w = lr.shape[:2]
    return resize(lr, (w * scale, h * scale))


# --- evaluation ------------------------------------------------------------------------------------


def _mean(v) -> float | None:
    v = [x for x in v if x is not None and np.isfinite(x)]
    return float(np.mean(v)) if v else None


def run_evaluation(faces: list[Face], models: dict, scale: int, landmarks: str = "auto", device: str = "cpu",
                   classifier: str | None = None, progress: bool = True, keep: int = 4) -> dict:
    """Metrics per model. Returns {'rows': per-image dicts, 'models': summaries, 'examples': images for the grid,
    'probs': FER probabilities per face of the HR faces ('hr') and of each model's output}."""
    from tqdm import tqdm

    from .data.degrade import bicubic_down
    from .data.prepare import _detector
    from .emotion import ecm, label_agreement, load_emotion_classifier, mean_kl
    from .emotion.faces import classify_crops
    from .landmarks.predictor import (
        default_predictor_path,
        get_landmarks,
        load_predictor,
        nme,
    )
    from .pipeline import Upscaler

    dev = torch.device(device)
    det = _detector()
    clf = load_emotion_classifier(classifier, device=dev) if classifier else load_emotion_classifier(device=dev)
    labels = tuple(clf.labels)
    predictor = None
    if landmarks in ("predict", "auto") and any(m is not None for m in models.values()):
        path = default_predictor_path(scale)
        if path is None and landmarks == "predict":
            raise ValueError(f"no landmark predictor ships for x{scale}; use --landmarks detect")
        predictor = load_predictor(path, dev) if path is not None else None
    ups = {}
    for name, net in models.items():
        if net is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ups[name] = Upscaler(scale, net, str(dev), detector=det, landmarks="detect")

    hr = np.stack([f.hr for f in faces])
    lrs = [np.array(bicubic_down(f.hr, scale)) for f in faces]  # writable copies (torch.from_numpy)
    lr_lms, routes = [], []
    if ups:
        for f, lr in zip(faces, lrs):
            if landmarks == "none":
                lm, route = None, "none"
            elif f.lm_lr is not None and np.isfinite(f.lm_lr).all() and landmarks in ("detect", "auto"):
                lm, route = f.lm_lr, "detect"
            else:
                lm, route = get_landmarks(lr, landmarks, det, predictor)
            lr_lms.append(lm)
            routes.append(route)
    lm_hr = np.stack([f.lm_hr if f.lm_hr is not None else np.full((478, 3), np.nan, np.float32) for f in faces])
    if any(f.lm_hr is None for f in faces):
        missing = [i for i, f in enumerate(faces) if f.lm_hr is None]
        found_lm, _ = det.detect_landmarks([faces[i].hr for i in missing])
        lm_hr[missing] = found_lm
    hr_found = np.isfinite(lm_hr).all(axis=(1, 2))
    p_hr = classify_crops(clf, list(hr))
    lab = np.array([labels.index(f.label) if f.label in labels else -1 for f in faces])
    has_label = lab >= 0
    hr_t = to_tensor(hr)

    rows, summaries, examples = [], {}, {"lr": lrs[:keep], "hr": list(hr[:keep]), "ids": [f.id for f in faces[:keep]]}
    probs = {"hr": p_hr}  # FER distributions per face, for callers that break the metrics down (fairness)
    total = len(faces) * len(models)
    bar = tqdm(total=total, desc=f"evaluate x{scale}", unit="face", disable=not progress or None, file=sys.stderr)
    try:
        for name, net in models.items():
            srs = []
            for i, lr in enumerate(lrs):
                srs.append(_bicubic(lr, scale) if net is None else ups[name].super_resolve(lr, lr_lms[i]))
                bar.update(1)
            sr = np.stack(srs)
            sr_t = to_tensor(sr)
            ps = psnr_y(sr_t, hr_t, scale).numpy().astype(float)
            ss = ssim_y(sr_t, hr_t, scale).numpy().astype(float)
            p_sr = classify_crops(clf, list(sr))
            probs[name] = p_sr
            lm_sr, sr_found = det.detect_landmarks(list(sr))
            ok = sr_found & hr_found
            err = np.full(len(faces), np.nan)
            if ok.any():
                err[ok] = nme(lm_sr[ok], lm_hr[ok])
            for i, f in enumerate(faces):
                rows.append({
                    "image": f.id, "model": name, "label": f.label, "psnr": round(float(ps[i]), 4),
                    "ssim": round(float(ss[i]), 6), "hr_pred": labels[int(p_hr[i].argmax())],
                    "sr_pred": labels[int(p_sr[i].argmax())], "agree": int(p_hr[i].argmax() == p_sr[i].argmax()),
                    "p_hr_top": round(float(p_hr[i].max()), 4), "p_sr_of_hr_top": round(float(p_sr[i][p_hr[i].argmax()]), 4),
                    "nme": "" if not np.isfinite(err[i]) else round(float(err[i]), 5),
                    "lr_landmarks": "" if net is None else routes[i],
                })
            acc_sr = float((p_sr[has_label].argmax(1) == lab[has_label]).mean()) if has_label.any() else None
            acc_hr = float((p_hr[has_label].argmax(1) == lab[has_label]).mean()) if has_label.any() else None
            summaries[name] = {
                "psnr": float(ps.mean()), "ssim": float(ss.mean()), "lpips": None,
                "ecm": float(ecm(p_hr, p_sr)), "agreement": float(label_agreement(p_hr, p_sr)),
                "kl": float(mean_kl(p_hr, p_sr)),
                "nme": _mean(err[ok]) if ok.any() else None, "nme_n": int(ok.sum()),
                "nme_excluded": {"hr_not_found": int((~hr_found).sum()), "sr_not_found": int((hr_found & ~sr_found).sum())},
                "accuracy_sr": acc_sr, "accuracy_hr": acc_hr, "n_labelled": int(has_label.sum()), "n": len(faces),
            }
            examples[name] = srs[:keep]
    finally:
        bar.close()
    return {"rows": rows, "models": summaries, "examples": examples, "probs": probs, "classifier": clf.name}


# --- outputs ---------------------------------------------------------------------------------------


def _fmt(v, spec: str, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{100 * v:{spec}}%" if pct else f"{v:{spec}}"


def format_table(summary: dict) -> str:
    lines = ["| model | PSNR-Y (dB) | SSIM-Y | LPIPS | ECM (lower better) | agreement with HR | NME SR vs HR (faces) "
             "| FER acc SR | FER acc HR | n |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in summary["models"].items():
        lines.append(f"| {name} | {_fmt(m['psnr'], '.2f')} | {_fmt(m['ssim'], '.4f')} | n/a | {_fmt(m['ecm'], '.4f')} "
                     f"| {_fmt(m['agreement'], '.1f', True)} | {_fmt(m['nme'], '.4f')} ({m['nme_n']}) "
                     f"| {_fmt(m['accuracy_sr'], '.1f', True)} | {_fmt(m['accuracy_hr'], '.1f', True)} | {m['n']} |")
    return "\n".join(lines)


def _markdown(summary: dict) -> str:
    d = summary["data"]
    out = [f"# affectsr evaluate: x{summary['scale']}", "",
           f"Data: `{d['path']}` ({d['layout']} layout, split {d['split']}): {summary['faces']} faces from "
           f"{d['inputs']} images, {len(d['skipped'])} without a detected face. HR {summary['hr_size']} px, "
           f"LR = bicubic /{summary['scale']}. PSNR/SSIM on Y, {summary['scale']} px border cropped. "
           f"FER classifier `{summary['classifier']}`; LR landmarks: {summary['landmarks']}.", "",
           format_table(summary), "", LPIPS_NOTE, "",
           "NME: MediaPipe landmarks on SR vs on HR, mean point error / inter-ocular distance; faces where "
           "either is not found are excluded (count in brackets = faces used).", ""]
    for name, why in summary["skipped_models"].items():
        out.append(f"- skipped `{name}`: {why}")
    out += ["", f"`{summary['command']}` on {summary['machine']}, {summary['date']}", ""]
    return "\n".join(out)


def _grid(examples: dict, names: list[str], scale: int, path: Path) -> None:
    from PIL import Image, ImageDraw

    cols = ["LR"] + (["bicubic"] if "bicubic" not in names else []) + names + ["HR"]
    n = len(examples["hr"])
    if n == 0:
        return
    s = examples["hr"][0].shape[0]
    head = 18
    img = Image.new("RGB", (s * len(cols), head + s * n), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for c, col in enumerate(cols):
        draw.text((c * s + 4, 3), col[: s // 6], fill=(0, 0, 0))
        for r in range(n):
            if col == "LR":
                lr = examples["lr"][r]
                tile = resize(lr, (s, s), Image.Resampling.NEAREST)
            elif col == "HR":
                tile = examples["hr"][r]
            elif col == "bicubic" and "bicubic" not in examples:
                tile = _bicubic(examples["lr"][r], scale)
            else:
                tile = examples[col][r]
            img.paste(Image.fromarray(tile), (c * s, head + r * s))
    img.save(path)


def _scatter(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    for name, m in summary["models"].items():
        ax.scatter(m["psnr"], m["ecm"], s=40)
        ax.annotate(name, (m["psnr"], m["ecm"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("PSNR-Y (dB, higher better)")
    ax.set_ylabel("ECM (lower better)")
    ax.set_title(f"x{summary['scale']}: {summary['faces']} faces", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_outputs(out: Path, result: dict, summary: dict, scale: int) -> None:
    from .atomic import atomic_write

    fields = ["image", "model", "label", "psnr", "ssim", "hr_pred", "sr_pred", "agree", "p_hr_top",
              "p_sr_of_hr_top", "nme", "lr_landmarks"]

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(result["rows"])

    atomic_write(out / "per_image.csv", write_csv)
    # summary.json: model name -> metrics, nothing else (what comparison scripts read); run.json: how it was made
    models_json = json.dumps(summary["models"], indent=2) + "\n"
    run_json = json.dumps({k: v for k, v in summary.items() if k != "models"}, indent=2) + "\n"
    atomic_write(out / "summary.json", lambda tmp: Path(tmp).write_text(models_json))
    atomic_write(out / "run.json", lambda tmp: Path(tmp).write_text(run_json))
    atomic_write(out / "summary.md", lambda tmp: Path(tmp).write_text(_markdown(summary)))
    _grid(result["examples"], list(result["models"]), scale, out / "grid.png")
    _scatter(summary, out / "psnr_vs_ecm.png")


# --- command line ----------------------------------------------------------------------------------


def add_parser(subparsers) -> argparse.ArgumentParser:
    e = subparsers.add_parser("evaluate", help="PSNR/SSIM, ECM, FER agreement and landmark NME of SR models vs HR",
                              description=__doc__.split("\n")[0])
    e.add_argument("--model", required=True, help="comma-separated: bicubic, presets with shipped weights, .safetensors paths, LABEL=PATH.safetensors")
    e.add_argument("--data", required=True, nargs="+", metavar="DIR",
                   help="folder(s) of face images, with labels.csv, or prepared caches; several are pooled")
    e.add_argument("--scale", type=int, choices=(4, 8), required=True)
    e.add_argument("--out", required=True, help="output folder (must be empty or new unless --overwrite)")
    e.add_argument("--split", default="auto",
                   help="train/val/test/all (default auto: test where the data names splits, else all)")
    e.add_argument("--limit", type=int, default=None, help="at most this many images (after the split filter)")
    e.add_argument("--landmarks", choices=("auto", "detect", "predict", "none"), default="auto",
                   help="LR landmarks for the models' prior (default auto: MediaPipe, else the learned predictor)")
    e.add_argument("--classifier", default=None, help="FER classifier (default: the shipped default)")
    e.add_argument("--device", default="cpu")
    e.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_evaluate)
    return e


def cmd_evaluate(args: argparse.Namespace) -> int:
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
    result = run_evaluation(faces, models, args.scale, args.landmarks, args.device, args.classifier,
                            progress=not args.quiet)
    summary = {
        "models": result["models"], "skipped_models": skipped, "scale": args.scale, "hr_size": int(faces[0].hr.shape[0]),
        "faces": len(faces), "landmarks": args.landmarks, "classifier": result["classifier"],
        "lpips": LPIPS_NOTE,
        "data": info,
        "command": "affectsr evaluate " + " ".join(shlex.quote(a) for a in _argv(args)),
        "machine": machine(), "date": now(),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(out, result, summary, args.scale)
    print(format_table(summary))
    print(LPIPS_NOTE)
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    if info["skipped"]:
        print(f"{len(info['skipped'])} image(s) without a detected face were left out")
    print(f"wrote {out}/per_image.csv, summary.json, run.json, summary.md, grid.png, psnr_vs_ecm.png")
    return 0


def _argv(args: argparse.Namespace) -> list[str]:
    a = ["--model", args.model, "--data", *map(str, args.data), "--scale", str(args.scale), "--out", str(args.out)]
    if args.split != "auto":
        a += ["--split", args.split]
    if args.limit is not None:
        a += ["--limit", str(args.limit)]
    if args.landmarks != "auto":
        a += ["--landmarks", args.landmarks]
    return a
