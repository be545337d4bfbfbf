"""What ``affectsr evaluate`` writes: the per-image CSV, the summaries, the Markdown table and two figures."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..atomic import atomic_write
from ..images import resize
from ..plots import pyplot
from .core import LPIPS_NOTE, bicubic_up

__all__ = ["format_table", "write_outputs"]


def _fmt(v, spec: str, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{100 * v:{spec}}%" if pct else f"{v:{spec}}"


def format_table(summary: dict) -> str:
    """Two Markdown tables: pixels, identity and expression geometry; then expression read by the judge and the teacher."""
    ms = summary["models"]
    first = next(iter(ms.values()), {})
    judge, teacher = first.get("judge", summary.get("classifier")), first.get("teacher")
    lines = ["| model | PSNR-Y (dB) | SSIM-Y | identity kept (dlib < 0.6) | identity cosine | NME face | NME mouth "
             "| NME eyes | NME brows | NME faces | n |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in ms.items():
        lines.append(f"| {name} | {_fmt(m['psnr'], '.2f')} | {_fmt(m['ssim'], '.4f')} "
                     f"| {_fmt(m.get('identity_kept'), '.1f', True)} | {_fmt(m.get('identity_cosine'), '.4f')} "
                     f"| {_fmt(m['nme'], '.4f')} | {_fmt(m.get('nme_mouth'), '.4f')} | {_fmt(m.get('nme_eyes'), '.4f')} "
                     f"| {_fmt(m.get('nme_brows'), '.4f')} | {m['nme_n']} | {m['n']} |")
    lines += ["", f"Expression, read by the judge `{judge}` (no training loss uses it)"
              + (f" and by the teacher `{teacher}` (the classifier affectsr's emotion loss trains against by default):"
                 if teacher else ":"), "",
              "| model | ECM judge (lower better) | agreement with HR, judge | FER acc SR, judge | FER acc HR, judge "
              "| ECM teacher | agreement with HR, teacher | FER acc SR, teacher |", "|---|---|---|---|---|---|---|---|"]
    for name, m in ms.items():
        lines.append(f"| {name} | {_fmt(m['ecm'], '.4f')} | {_fmt(m['agreement'], '.1f', True)} "
                     f"| {_fmt(m['accuracy_sr'], '.1f', True)} | {_fmt(m['accuracy_hr'], '.1f', True)} "
                     f"| {_fmt(m.get('teacher_ecm'), '.4f')} | {_fmt(m.get('teacher_agreement'), '.1f', True)} "
                     f"| {_fmt(m.get('teacher_accuracy_sr'), '.1f', True)} |")
    return "\n".join(lines)


def _markdown(summary: dict) -> str:
    d = summary["data"]
    out = [f"# affectsr evaluate: x{summary['scale']}", "",
           f"Data: `{d['path']}` ({d['layout']} layout, split {d['split']}): {summary['faces']} faces from "
           f"{d['inputs']} images, {len(d['skipped'])} without a detected face. HR {summary['hr_size']} px, "
           f"LR = bicubic /{summary['scale']}. PSNR/SSIM on Y, {summary['scale']} px border cropped. "
           f"FER judge `{summary['judge']}`, teacher `{summary['teacher']}`; LR landmarks: {summary['landmarks']}.", "",
           format_table(summary), "", LPIPS_NOTE, *summary.get("notes", []), "",
           "NME: MediaPipe landmarks on SR vs on HR, mean point error / inter-ocular distance of the HR face, "
           "over the whole face and over the mouth (lips), eyes (lids and irises) and brows; faces where either is not "
           "found are excluded (NME faces = faces used). Identity: dlib ResNet face descriptors of SR vs HR (the HR "
           "face's dlib box on both); kept = descriptor distance below dlib's 0.6 same-person threshold.", ""]
    for name, m in summary["models"].items():
        if m.get("trained_with"):
            out.append(f"- `{name}`: its emotion loss trained against `{m['trained_with']}`")
    for name, why in summary["skipped_models"].items():
        out.append(f"- skipped `{name}`: {why}")
    out += ["", f"`{summary['command']}` on {summary['machine']}, {summary['date']}", ""]
    return "\n".join(out)


def _grid(examples: dict, names: list[str], scale: int, path: Path) -> None:
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
                tile = bicubic_up(examples["lr"][r], scale)
            else:
                tile = examples[col][r]
            img.paste(Image.fromarray(tile), (c * s, head + r * s))
    img.save(path)


def _scatter(summary: dict, path: Path) -> None:
    plt = pyplot()
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


def _write_probs(path: Path, result: dict) -> None:
    """``probs.npz``: the FER distributions per face, in per_image.csv's face order: ``judge.hr``, ``judge.<model>``
    (and ``teacher.*``), ``ids``. Set-level metrics such as ECM have no per-face value, so an interval on a difference
    of them (tools/quality_check.py) resamples these."""
    arrays = {f"judge.{k}": np.asarray(v, np.float32) for k, v in result.get("probs", {}).items()}
    arrays |= {f"teacher.{k}": np.asarray(v, np.float32) for k, v in result.get("teacher_probs", {}).items()}
    if not arrays:
        return
    arrays["ids"] = np.asarray(result.get("ids", []), dtype=str)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    atomic_write(path, write)


def write_outputs(out: Path, result: dict, summary: dict, scale: int) -> None:
    """``per_image.csv``, ``summary.json``, ``run.json``, ``summary.md``, ``probs.npz``, ``grid.png`` and
    ``psnr_vs_ecm.png`` in ``out``."""
    fields = ["image", "model", "label", "psnr", "ssim", "hr_pred", "sr_pred", "agree", "p_hr_top",
              "p_sr_of_hr_top", "teacher_hr_pred", "teacher_sr_pred", "teacher_agree", "nme", "nme_mouth", "nme_eyes",
              "nme_brows", "identity_cos", "identity_dist", "lr_landmarks"]

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
    _write_probs(out / "probs.npz", result)
    _grid(result["examples"], list(result["models"]), scale, out / "grid.png")
    _scatter(summary, out / "psnr_vs_ecm.png")
