"""The resolution study: how much expression does a face lose when it arrives at 16-64 px?

For each labelled test face (the "original", HR), make bicubic LR versions at each size and
upscale them back with bicubic (and, where trained weights exist, with SR models), then read
every version with the frozen FER classifier and report, per dataset and method/size:
accuracy against the labels, label agreement with the original, mean KL(p_orig || p),
and ECM (with its terms) against the original.

Datasets and sizes: FER2013 and CK+48 faces are 48 px, so their original is 48 px and only
the sizes below 48 (32, 24, 16) are made; taiwanese_expr (256 px photos) gives 128 px
FER-framed face crops, where 64, 32, 24 and 16 px all make sense, so it is the main set.
Downscaling is PIL bicubic with antialiasing (the project's ``images.resize``), as the SR
literature degrades faces; upscaling back is the same bicubic.
"""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from affectsr.images import resize
from affectsr.landmarks import LandmarkDetector
from affectsr.models import WeightsNotFoundError, load_model
from affectsr.plots import pyplot
from affectsr.runinfo import machine, today

from .classifier import EMOTIONS, EmotionClassifier
from .evaluate import PHOTO_DATASETS, FaceSet, load_face_set
from .faces import classify_crops
from .metrics import accuracy, confusion_matrix, fidelity_report, sr_vs_hr_confusion

__all__ = ["STUDY_DATASETS", "STUDY_SIZES", "SRModel", "StudyResult", "StudyRow", "bicubic_roundtrip", "load_sr_models",
           "plot_study", "run_study", "study_meta", "to_markdown", "write_csv", "write_json"]

STUDY_DATASETS = ("taiwanese_expr", "fer2013", "ck_plus_48")
STUDY_SIZES = (64, 32, 24, 16)


@dataclass
class StudyRow:
    dataset: str
    method: str  # "original", "bicubic" or an SR model name
    lr_px: int  # the side the face was degraded to (= hr_px for the original)
    hr_px: int
    n: int
    accuracy: float
    agreement: float  # argmax agrees with the original's
    mean_kl: float  # KL(p_original || p), nats
    ecm: float
    l_h: float
    l_conf: float
    note: str = ""
    teacher_accuracy: float = float("nan")  # the same faces read by the teacher (NaN without one)
    teacher_agreement: float = float("nan")


@dataclass
class StudyResult:
    rows: list[StudyRow]
    confusion: dict[str, np.ndarray] = field(default_factory=dict)  # dataset -> original vs labels
    sr_vs_hr: dict[tuple[str, str, int], np.ndarray] = field(default_factory=dict)  # (dataset, method, lr) -> HR vs method
    skipped: dict[str, list[str]] = field(default_factory=dict)  # dataset -> files without a detected face
    notes: list[str] = field(default_factory=list)


def bicubic_roundtrip(images: np.ndarray, lr: int) -> np.ndarray:
    """Each ``S x S`` face bicubic-downscaled to ``lr`` and back up to ``S`` (uint8)."""
    s = images.shape[1]
    return np.stack([resize(resize(im, (lr, lr)), (s, s)) for im in images]) if len(images) else images.copy()


@dataclass
class SRModel:
    """A trained SR network for the study: LR faces of ``in_size`` px in, ``in_size * scale`` out."""

    name: str
    net: torch.nn.Module
    in_size: int
    scale: int

    @torch.no_grad()
    def upscale(self, lr_faces: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray:
        """uint8 N x s x s x 3 -> uint8 N x (s*scale) x (s*scale) x 3; landmarks N x 478 x 3 crop-normalised (NaN = none)."""
        device = next(self.net.parameters()).device
        out = []
        for i, face in enumerate(lr_faces):
            x = torch.from_numpy(face).permute(2, 0, 1)[None].float().div(255.0).to(device)
            lm = None
            if landmarks is not None and not np.isnan(landmarks[i]).any():
                lm = torch.from_numpy(landmarks[i][None]).float().to(device)
            y = self.net(x, lm).clamp(0, 1)
            out.append((y[0].permute(1, 2, 0) * 255.0 + 0.5).byte().cpu().numpy())
        return np.stack(out)


def load_sr_models(names: list[str], device: str = "cpu") -> tuple[list[SRModel], list[str]]:
    """The models that have trained weights, and one message per name skipped (untrained preset, bad path)."""
    models, messages = [], []
    for name in names:
        try:
            net = load_model(name, pretrained=True, device=device)
        except WeightsNotFoundError as e:
            messages.append(f"skipped SR model {name!r}: {e}")
            continue
        cfg = net.config
        models.append(SRModel(Path(name).stem if name.endswith(".safetensors") else name, net, cfg.in_size, cfg.scale))
    return models, messages


def _row(dataset: str, method: str, lr: int, hr: int, p_hr: np.ndarray, p: np.ndarray, labels: np.ndarray, note: str = "",
         teacher: tuple[np.ndarray, np.ndarray] | None = None) -> StudyRow:
    """One row read by the judge (``p_hr``, ``p``); ``teacher``: the teacher's (p_hr, p) for its two columns."""
    r = fidelity_report(p_hr, p, labels)
    # The original against itself has L_conf = 0: its ECM would only show the guard (ln 1e-12), so it is left NaN.
    ecm = float("nan") if method == "original" else r.ecm
    t_acc = t_agr = float("nan")
    if teacher is not None:
        t = fidelity_report(teacher[0], teacher[1], labels)
        t_acc, t_agr = float(t.accuracy_sr), t.agreement
    return StudyRow(dataset, method, lr, hr, r.n, float(r.accuracy_sr), r.agreement, r.mean_kl, ecm, r.l_h, r.l_conf, note,
                    t_acc, t_agr)


def run_study(classifier: EmotionClassifier, root: str | os.PathLike[str] | None = None,
              datasets: tuple[str, ...] = STUDY_DATASETS, sizes: tuple[int, ...] = STUDY_SIZES,
              models: list[SRModel] | None = None, split: str = "test", limit: int | None = None,
              log: Callable[[str], None] = lambda s: None, face_sets: dict[str, FaceSet] | None = None,
              teacher: EmotionClassifier | None = None) -> StudyResult:
    """All rows of the study (see the module docstring); ``face_sets`` overrides loading (tests).

    ``classifier`` is the judge that fills the main columns; ``teacher``, when given, reads every
    version again for the teacher columns (a model tuned to its teacher shows up as a gap between them).
    """

    def read(images) -> tuple[np.ndarray, np.ndarray | None]:
        images = list(images)
        return classify_crops(classifier, images), (classify_crops(teacher, images) if teacher is not None else None)

    result = StudyResult(rows=[])
    detector = None
    for dataset in datasets:
        if face_sets and dataset in face_sets:
            faces = face_sets[dataset]
        else:
            if dataset in PHOTO_DATASETS and detector is None:
                detector = LandmarkDetector()
            faces = load_face_set(dataset, split, root, detector=detector, limit=limit)
        if faces.skipped:
            result.skipped[dataset] = faces.skipped
            log(f"{dataset}: {len(faces.skipped)} image(s) without a detected face left out")
        hr = faces.size
        labels = faces.labels
        p_hr, t_hr = read(faces.images)
        result.confusion[dataset] = confusion_matrix(labels, p_hr.argmax(1), len(EMOTIONS))
        result.rows.append(_row(dataset, "original", hr, hr, p_hr, p_hr, labels,
                                teacher=(t_hr, t_hr) if t_hr is not None else None))
        log(f"{dataset}: {len(labels)} faces at {hr} px, accuracy {accuracy(p_hr, labels):.2%}")
        for lr in sizes:
            if lr >= hr:
                result.notes.append(f"{dataset}: {lr} px is not below the {hr} px original; no row")
                continue
            p, t = read(bicubic_roundtrip(faces.images, lr))
            result.rows.append(_row(dataset, "bicubic", lr, hr, p_hr, p, labels, teacher=(t_hr, t) if t is not None else None))
            result.sr_vs_hr[(dataset, "bicubic", lr)] = sr_vs_hr_confusion(p_hr, p)
            log(f"{dataset}: bicubic from {lr} px done")
        for m in models or []:
            if m.in_size >= hr:
                result.notes.append(f"{dataset}: {m.name} takes {m.in_size} px, not below the {hr} px original; no row")
                continue
            lr_faces = np.stack([resize(im, (m.in_size, m.in_size)) for im in faces.images])
            if detector is None:
                detector = LandmarkDetector()
            landmarks, _ = detector.detect_landmarks(list(lr_faces))
            p, t = read(m.upscale(lr_faces, landmarks))
            result.rows.append(_row(dataset, m.name, m.in_size, hr, p_hr, p, labels, note=f"x{m.scale}",
                                    teacher=(t_hr, t) if t is not None else None))
            result.sr_vs_hr[(dataset, m.name, m.in_size)] = sr_vs_hr_confusion(p_hr, p)
            log(f"{dataset}: {m.name} from {m.in_size} px done")
    if detector is not None:
        detector.close()
    return result


CSV_FIELDS = [f for f in StudyRow.__dataclass_fields__]


def write_csv(rows: list[StudyRow], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in rows:
            d = asdict(r)
            w.writerow({k: (("" if np.isnan(v) else f"{v:.6g}") if isinstance(v, float) else v) for k, v in d.items()})
    return path


def write_json(result: StudyResult, path: str | Path, meta: dict) -> Path:
    """Everything, including confusion matrices (rows true / HR class, columns predicted, EMOTIONS order)."""
    path = Path(path)
    rows = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in asdict(r).items()} for r in result.rows]
    doc = {**meta, "labels": list(EMOTIONS), "rows": rows,
           "confusion_original_vs_labels": {d: m.tolist() for d, m in result.confusion.items()},
           "confusion_hr_vs_method": [{"dataset": d, "method": me, "lr_px": lr, "matrix": m.tolist()}
                                      for (d, me, lr), m in result.sr_vs_hr.items()],
           "skipped": result.skipped, "notes": result.notes}
    path.write_text(json.dumps(doc, indent=1))
    return path


def plot_study(rows: list[StudyRow], path: str | Path, title: str = "") -> Path:
    """Accuracy and ECM against the LR side, one line per dataset and method; originals as dashed levels."""
    plt = pyplot()
    datasets = list(dict.fromkeys(r.dataset for r in rows))
    colours = dict(zip(datasets, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    panels = [("accuracy", "FER accuracy (vs labels)"), ("agreement", "label agreement with original"), ("ecm", "ECM vs original (lower is better)")]
    for ax, (key, label) in zip(axes, panels):
        for d in datasets:
            mine = [r for r in rows if r.dataset == d]
            orig = next((r for r in mine if r.method == "original"), None)
            for method in dict.fromkeys(r.method for r in mine if r.method != "original"):
                pts = sorted((r.lr_px, getattr(r, key)) for r in mine if r.method == method)
                style = "-o" if method == "bicubic" else "--s"
                if orig is not None and key != "ecm":  # the original sits at its own size, linking the curve
                    pts = pts + [(orig.hr_px, getattr(orig, key))]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=colours[d],
                        label=f"{d} {method}" + (f" (orig. {orig.hr_px} px)" if orig else ""))
        ax.set_xscale("log", base=2)
        ticks = sorted({r.lr_px for r in rows} | {r.hr_px for r in rows})
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
        ax.set_xlabel("face side before upscaling (px)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def study_meta(classifier: EmotionClassifier, command: str, teacher: EmotionClassifier | None = None) -> dict:
    return {"command": command, "date": today(), "machine": machine(), "torch": torch.__version__,
            "classifier": classifier.name, "judge": classifier.name, "teacher": teacher.name if teacher else None}


def to_markdown(rows: list[StudyRow]) -> str:
    teacher = any(not np.isnan(r.teacher_accuracy) for r in rows)
    lines = ["| dataset | method | from px | faces | accuracy | agreement | mean KL | ECM | L_H | L_conf |"
             + (" accuracy, teacher | agreement, teacher |" if teacher else ""),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if teacher else "")]
    for r in rows:
        ecm = "-" if np.isnan(r.ecm) else f"{r.ecm:.2f}"
        lines.append(f"| {r.dataset} | {r.method}{' ' + r.note if r.note else ''} | {r.lr_px} | {r.n} | {r.accuracy:.2%} | "
                     f"{r.agreement:.2%} | {r.mean_kl:.3f} | {ecm} | {r.l_h:.2f} | {r.l_conf:.3f} |"
                     + (f" {r.teacher_accuracy:.2%} | {r.teacher_agreement:.2%} |" if teacher else ""))
    return "\n".join(lines)

