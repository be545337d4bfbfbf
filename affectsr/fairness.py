"""``affectsr fairness``: does expression fidelity hold across groups of people and under occlusion?

    affectsr fairness --data-root ../shared/data --datasets utkface_aligned,taiwanese_expr \\
        --models bicubic,affectsr-x4-lite,rrdb-x4-lite --scale 4 --out fairness/

For each dataset (a folder under ``--data-root``; its ``test`` split), faces are cropped as
``affectsr evaluate`` crops them (:func:`affectsr.evaluate.load_faces`). Each face is then occluded
(``none``, ``eyes_bar``, ``mouth_mask``, ``sunglasses``) *before* degradation, so the LR input, the
bicubic and SR outputs and the HR reference all carry the same occluder, and
:func:`affectsr.evaluate.run_evaluation` scores every model on the occluded set. Two agreements are
reported per face: SR label vs the *occluded* HR face's label (what the SR kept of the face it was
given) and SR label vs the *clean* HR face's label (what survives of the real expression); ECM is
computed against the occluded HR face's FER distribution. Breakdowns by the groups that the
dataset's ``labels.csv`` names (emotion label, gender, race, age in bins, ...) use the first listed
occlusion (``none`` by default; ``fairness.json`` also holds every group under every occlusion). Every
breakdown has counts and 95 % Wilson intervals, and each model's agreement minus bicubic's has a
paired bootstrap interval.

Writes ``fairness.json`` (every table), ``fairness.md``, ``fairness.png`` (grouped bars),
``occlusions.png`` (the occluders on the bundled public-domain face, never a dataset face) and
``per_image.csv``.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import shlex
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .models import mediapipe_topology as topo
from .runinfo import machine, now

__all__ = ["AGE_BINS", "DEFAULT_DATASETS", "DEFAULT_GROUPS", "OCCLUSIONS", "SMALL_GROUP", "add_parser", "age_bin",
           "default_models", "group_metrics", "occlude", "occluder_mask", "paired_difference", "run_report",
           "wilson_interval"]

OCCLUSIONS = ("none", "eyes_bar", "mouth_mask", "sunglasses")
DEFAULT_DATASETS = ("utkface_aligned", "taiwanese_expr")
DEFAULT_GROUPS = ("label", "gender", "race", "age", "performance")
AGE_BINS = ((0, 2, "0-2"), (3, 9, "3-9"), (10, 19, "10-19"), (20, 39, "20-39"), (40, 59, "40-59"), (60, None, "60+"))
SMALL_GROUP = 30
"""Groups with fewer faces are flagged: their intervals are wide and ECM's histograms are noisy."""
MISSING = "unknown"
Z95 = 1.96

# --- occluders -------------------------------------------------------------------------------------

_RIGHT_EYE = sorted(set(topo.RIGHT_EYE))  # the subject's right eye: image left
_LEFT_EYE = sorted(set(topo.LEFT_EYE))
_OVAL = sorted(set(topo.FACE_OVAL))
_MASK_TOP = 195  # nose bridge, about a third of the way from the eyes to the nose tip
_NEEDED = sorted(set(_RIGHT_EYE) | set(_LEFT_EYE) | set(_OVAL) | {_MASK_TOP})

# Fallback anchors (fractions of the crop side) for faces without landmarks: medians over 246
# train-split crops of utkface_aligned and taiwanese_expr (the mask top: over 83 of them), cropped as
# `prepare` crops them.
_FALLBACK_EYE_R = (0.365, 0.395)
_FALLBACK_EYE_L = (0.635, 0.395)
_FALLBACK_MASK_TOP = (0.50, 0.47)
_FALLBACK_OVAL = ((0.497, 0.507), (0.30, 0.315))  # ellipse centre, semi-axes

_COLOURS = {"eyes_bar": (0, 0, 0), "mouth_mask": (200, 222, 235), "sunglasses": (22, 22, 28)}


@dataclass(frozen=True)
class _Anchors:
    """Occluder geometry in pixels; ``u`` runs from the image-left eye to the image-right eye."""

    eye_r: np.ndarray
    eye_l: np.ndarray
    mask_top: np.ndarray
    oval: np.ndarray  # K x 2

    @property
    def iod(self) -> float:
        return float(np.linalg.norm(self.eye_l - self.eye_r))

    @property
    def u(self) -> np.ndarray:
        return (self.eye_l - self.eye_r) / max(self.iod, 1e-6)

    @property
    def v(self) -> np.ndarray:  # perpendicular, pointing down the face
        u = self.u
        return np.array([-u[1], u[0]])


def _anchors(h: int, w: int, landmarks: np.ndarray | None) -> _Anchors:
    scale = np.array([w, h], np.float64)
    if landmarks is not None:
        lm = np.asarray(landmarks, np.float64)
        if lm.shape[0] > max(_NEEDED) and np.isfinite(lm[_NEEDED, :2]).all():
            xy = lm[:, :2] * scale
            return _Anchors(xy[_RIGHT_EYE].mean(0), xy[_LEFT_EYE].mean(0), xy[_MASK_TOP], xy[_OVAL])
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    (cx, cy), (ax, ay) = _FALLBACK_OVAL
    oval = np.stack([cx + ax * np.cos(t), cy + ay * np.sin(t)], 1) * scale
    return _Anchors(np.array(_FALLBACK_EYE_R) * scale, np.array(_FALLBACK_EYE_L) * scale,
                    np.array(_FALLBACK_MASK_TOP) * scale, oval)


def _rect(centre: np.ndarray, u: np.ndarray, v: np.ndarray, half_u: float, half_v: float) -> np.ndarray:
    return np.array([centre - half_u * u - half_v * v, centre + half_u * u - half_v * v,
                     centre + half_u * u + half_v * v, centre - half_u * u + half_v * v])


def _ellipse(centre: np.ndarray, u: np.ndarray, v: np.ndarray, a: float, b: float, k: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, k, endpoint=False)
    return centre + np.outer(a * np.cos(t), u) + np.outer(b * np.sin(t), v)


def _polygons(kind: str, an: _Anchors) -> list[np.ndarray]:
    """The occluder as polygons (pixel x, y); sizes are multiples of the inter-ocular distance."""
    from scipy.spatial import ConvexHull

    iod, u, v = an.iod, an.u, an.v
    mid = (an.eye_r + an.eye_l) / 2
    if kind == "eyes_bar":  # eye corners lie about 0.78 IOD from the midpoint; the bar reaches 1.0
        return [_rect(mid, u, v, 1.0 * iod, 0.25 * iod)]
    if kind == "sunglasses":
        lenses = [_ellipse(c, u, v, 0.45 * iod, 0.33 * iod) for c in (an.eye_r, an.eye_l)]
        return lenses + [_rect(mid - 0.1 * iod * v, u, v, 0.15 * iod, 0.04 * iod)]
    if kind == "mouth_mask":  # the face outline below a line through the nose bridge, across the eye axis
        d = (an.oval - an.mask_top) @ v
        pts = an.oval - np.minimum(d, 0)[:, None] * v  # outline points above the line are moved onto it
        return [pts[ConvexHull(pts).vertices]]
    raise AssertionError(kind)


def _check_kind(kind: str) -> None:
    if kind not in OCCLUSIONS:
        raise ValueError(f"occlusion {kind!r}: not one of {', '.join(OCCLUSIONS)}")


def occluder_mask(shape: tuple[int, ...], kind: str, landmarks: np.ndarray | None = None) -> np.ndarray:
    """H x W bool: the pixels ``occlude`` paints for ``kind`` on a face of ``shape`` (all False for 'none').

    ``landmarks``: 478 x 3 MediaPipe landmarks normalised to the face, NaN rows when not found;
    without usable landmarks the occluder sits at fixed fractions of an aligned crop.
    """
    from PIL import Image, ImageDraw

    _check_kind(kind)
    h, w = int(shape[0]), int(shape[1])
    if kind == "none":
        return np.zeros((h, w), bool)
    polys = _polygons(kind, _anchors(h, w, landmarks))
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    for p in polys:
        draw.polygon([(float(x), float(y)) for x, y in p], fill=255)
    return np.asarray(img) > 0


def occlude(face: np.ndarray, kind: str, landmarks: np.ndarray | None = None) -> np.ndarray:
    """A copy of ``face`` (H x W x 3 uint8) with a synthetic occluder painted on; deterministic.

    Kinds: 'none', 'eyes_bar' (black bar over both eyes), 'mouth_mask' (light surgical-mask-like
    polygon over nose and mouth), 'sunglasses' (dark ellipses over both eyes and a bridge).
    """
    _check_kind(kind)
    face = np.asarray(face)
    if face.ndim != 3 or face.shape[2] != 3 or face.dtype != np.uint8:
        raise ValueError(f"face must be an H x W x 3 uint8 array, got {face.shape} {face.dtype}")
    out = face.copy()
    if kind != "none":
        out[occluder_mask(face.shape, kind, landmarks)] = _COLOURS[kind]
    return out


# --- group statistics ------------------------------------------------------------------------------


def age_bin(age: object) -> str:
    """'0-2', '3-9', '10-19', '20-39', '40-59' or '60+' for an age in years; 'unknown' for anything else."""
    try:
        a = float(age)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return MISSING
    if not math.isfinite(a) or a < 0:
        return MISSING
    a = math.floor(a)
    for lo, hi, name in AGE_BINS:
        if a >= lo and (hi is None or a <= hi):
            return name
    return MISSING


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (stays inside [0, 1] and is sane at k = 0 or n)."""
    if n <= 0:
        return (math.nan, math.nan)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)))  # rounding must not exclude p


def paired_difference(a: Sequence[int], b: Sequence[int], n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """mean(a) - mean(b) for 0/1 outcomes on the same faces, with a 95 % paired bootstrap interval.

    Paired (faces resampled together) because two models' agreements on one face are correlated;
    two separate Wilson intervals overlapping says little about their difference. Fixed seed: same
    inputs, same interval.
    """
    x = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("paired_difference needs two equally long, non-empty sequences")
    idx = np.random.default_rng(seed).integers(0, x.size, (n_boot, x.size))
    boots = x[idx].mean(1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return float(x.mean()), float(lo), float(hi)


_RATES = (("agree", "agreement"), ("agree_clean", "agreement_clean"), ("correct", "accuracy"))
_ORDER = {name: i for i, name in enumerate([b[2] for b in AGE_BINS] + list(OCCLUSIONS))}


def _group_key(g: str) -> tuple:
    """Age bins and occlusions in their natural order, other groups alphabetically, 'unknown' last."""
    return (g == MISSING, _ORDER.get(g, len(_ORDER)), g)


def group_metrics(rows: Iterable[dict], column: str, by: Sequence[str] = ("model",),
                  min_n: int = SMALL_GROUP) -> list[dict]:
    """One dict per (``by`` values, value of ``column``): counts, rates with 95 % Wilson intervals, ECM.

    Rows are per-face dicts. Rates are means of the 0/1 columns ``agree`` -> ``agreement``,
    ``agree_clean`` -> ``agreement_clean`` and ``correct`` -> ``accuracy`` (None/'' entries are left
    out; ``<rate>_n`` says how many counted). ``ecm`` needs ``p_hr`` and ``p_sr`` probability rows;
    ``psnr`` is a plain mean. An empty ``column`` value counts as 'unknown'. ``small`` flags n < min_n.
    """
    from .emotion import ecm

    buckets: dict[tuple, list[dict]] = {}
    for r in rows:
        g = r.get(column)
        key = tuple(r[b] for b in by) + (MISSING if g is None or g == "" else str(g),)
        buckets.setdefault(key, []).append(r)
    heads = list(dict.fromkeys(k[:-1] for k in buckets))  # first-seen order of the `by` values
    out = []
    for head in heads:
        for key in sorted((k for k in buckets if k[:-1] == head), key=lambda k: _group_key(k[-1])):
            rs = buckets[key]
            e: dict = {**dict(zip(by, head)), "column": column, "group": key[-1], "n": len(rs), "small": len(rs) < min_n}
            for src, name in _RATES:
                vals = [int(r[src]) for r in rs if r.get(src) is not None and r.get(src) != ""]
                k = sum(vals)
                e[name] = k / len(vals) if vals else None
                e[f"{name}_ci"] = list(wilson_interval(k, len(vals))) if vals else None
                e[f"{name}_n"] = len(vals)
            if rs and all(r.get("p_hr") is not None and r.get("p_sr") is not None for r in rs):
                e["ecm"] = float(ecm(np.stack([r["p_hr"] for r in rs]), np.stack([r["p_sr"] for r in rs])))
            else:
                e["ecm"] = None
            ps = [float(r["psnr"]) for r in rs if r.get("psnr") not in (None, "")]
            e["psnr"] = float(np.mean(ps)) if ps else None
            out.append(e)
    return out


# --- the report ------------------------------------------------------------------------------------


def default_models(scale: int) -> list[str]:
    return ["bicubic", f"affectsr-x{scale}-lite", f"rrdb-x{scale}-lite"]


def _resolve(specs: Sequence[str], scale: int, device: str) -> tuple[dict, dict]:
    """``name`` or ``name=path.safetensors`` -> ({name: model or None}, {name: why skipped})."""
    import torch

    from .evaluate import resolve_models

    models, skipped = {}, {}
    for spec in specs:
        name, _, src = spec.partition("=")
        name, src = name.strip(), (src.strip() or name.strip())
        got, why = resolve_models([src], scale, torch.device(device))
        if src in got:
            models[name] = got[src]
        else:
            skipped[name] = why.get(src, "not loadable")
    return models, skipped


def _label_rows(folder: Path) -> dict[str, dict]:
    """labels.csv rows by their ``path`` (the face id ``load_faces`` gives); {} without a labels.csv."""
    p = folder / "labels.csv"
    if not p.is_file():
        return {}
    with open(p, newline="") as f:
        return {row["path"]: row for row in csv.DictReader(f) if row.get("path")}


def _group_values(face, row: dict, column: str) -> str:
    if column == "label":
        return face.label or ""
    if column == "age":
        return age_bin(row.get("age")) if row.get("age", "") != "" else ""
    return (row.get(column) or "").strip()


def _group_name(column: str) -> str:
    return "age_bin" if column == "age" else column


def _evaluate_dataset(path: Path, models: dict, scale: int, occlusions: Sequence[str], groups: Sequence[str],
                      split: str, limit: int | None, landmarks: str, device: str, clf, classifier: str | None,
                      progress: bool) -> tuple[list[dict], dict]:
    """Per-face rows (every occlusion x model) and a description of the dataset run."""
    from .emotion.faces import classify_crops
    from .evaluate import Face, load_faces, run_evaluation

    faces, info = load_faces(path, scale, split, limit, progress=progress)
    if not faces:
        raise ValueError(f"{path}: no face found in {info['inputs']} image(s) of split {info['split']!r}")
    meta = _label_rows(path)
    cols = []
    values = {}
    for c in groups:
        vals = [_group_values(f, meta.get(f.id, {}), c) for f in faces]
        if len({v for v in vals if v}) >= 2:
            cols.append(_group_name(c))
            values[_group_name(c)] = vals
    labels = tuple(clf.labels)
    p_clean = classify_crops(clf, [f.hr for f in faces])
    lab = np.array([labels.index(f.label) if f.label in labels else -1 for f in faces])
    has_label = lab >= 0
    rows: list[dict] = []
    occluded_hr: dict[str, dict] = {}
    for occ in occlusions:
        if progress:
            print(f"{path.name}: occlusion {occ}", file=sys.stderr)
        occ_faces = [f if occ == "none" else Face(f.id, occlude(f.hr, occ, f.lm_hr), f.label) for f in faces]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = run_evaluation(occ_faces, models, scale, landmarks, device, classifier, progress=progress)
        p_hr = res["probs"]["hr"]
        same = p_hr.argmax(1) == p_clean.argmax(1)
        occluded_hr[occ] = {"agreement_clean": float(same.mean()),
                            "agreement_clean_ci": list(wilson_interval(int(same.sum()), len(faces))), "n": len(faces)}
        if has_label.any():  # the classifier's own accuracy on the occluded HR faces: the ceiling for SR
            hit = p_hr[has_label].argmax(1) == lab[has_label]
            occluded_hr[occ] |= {"accuracy_hr": float(hit.mean()),
                                 "accuracy_hr_ci": list(wilson_interval(int(hit.sum()), len(hit))), "n_labelled": len(hit)}
        by_model: dict[str, list[dict]] = {}
        for r in res["rows"]:
            by_model.setdefault(r["model"], []).append(r)
        for name in models:
            p_sr = res["probs"][name]
            for i, (f, er) in enumerate(zip(faces, by_model[name])):
                sr_i, hr_i, clean_i = int(p_sr[i].argmax()), int(p_hr[i].argmax()), int(p_clean[i].argmax())
                rows.append({
                    "dataset": path.name, "image": f.id, "occlusion": occ, "model": name,
                    **{c: values[c][i] for c in cols},
                    "hr_clean_pred": labels[clean_i], "hr_pred": labels[hr_i], "sr_pred": labels[sr_i],
                    "agree": int(sr_i == hr_i), "agree_clean": int(sr_i == clean_i),
                    "correct": int(sr_i == labels.index(f.label)) if f.label in labels else None,
                    "psnr": er["psnr"], "ssim": er["ssim"], "nme": er["nme"],
                    "p_hr": p_hr[i], "p_sr": p_sr[i],
                })
    desc = {"path": str(path), "split": info["split"], "inputs": info["inputs"], "faces": len(faces),
            "no_face": len(info["skipped"]), "groups": cols, "occluded_hr_vs_clean": occluded_hr,
            "landmarks_on_clean_hr": int(sum(f.lm_hr is not None and np.isfinite(f.lm_hr).all() for f in faces))}
    return rows, desc


def run_report(data_root: str | Path, out_dir: str | Path, models: Sequence[str] | None = None, scale: int = 4,
               limit: int | None = None, occlusions: Sequence[str] = OCCLUSIONS,
               datasets: Sequence[str] = DEFAULT_DATASETS, groups: Sequence[str] = DEFAULT_GROUPS,
               split: str = "test", landmarks: str = "auto", device: str = "cpu", classifier: str | None = None,
               progress: bool = True, overwrite: bool = False, command: str | None = None) -> dict:
    """Evaluate ``models`` on each dataset's ``split`` under each occlusion; write the report files.

    ``models``: names or ``name=path.safetensors`` (default bicubic, affectsr-x<scale>-lite,
    rrdb-x<scale>-lite); models without weights are skipped and listed. Raises ValueError /
    FileNotFoundError with a one-line message on bad input. Returns the ``fairness.json`` content.
    """
    from .emotion import load_emotion_classifier

    root, out = Path(data_root), Path(out_dir)
    bad = [o for o in occlusions if o not in OCCLUSIONS]
    if bad or not occlusions:
        raise ValueError(f"--occlusions: {', '.join(bad) or 'none given'}: choose from {', '.join(OCCLUSIONS)}")
    if scale not in (4, 8):
        raise ValueError(f"--scale {scale}: must be 4 or 8")
    if limit is not None and limit < 1:
        raise ValueError("--limit must be at least 1")
    if not datasets:
        raise ValueError("--datasets: no dataset named")
    paths = [root / d for d in datasets]
    for p in paths:
        if not p.is_dir():
            raise FileNotFoundError(f"dataset {p}: not a folder (set --data-root / --datasets)")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"--out {out}: not empty (use --overwrite to write into it)")
    specs = list(models) if models else default_models(scale)
    nets, skipped = _resolve(specs, scale, device)
    for name, why in skipped.items():
        print(f"skipping {name}: {why}", file=sys.stderr)
    if not nets:
        raise ValueError("no model left to evaluate")
    clf = load_emotion_classifier(classifier, device=device) if classifier else load_emotion_classifier(device=device)

    rows, described = [], {}
    for p in paths:
        r, d = _evaluate_dataset(p, nets, scale, occlusions, groups, split, limit, landmarks, device, clf,
                                 classifier, progress)
        rows += r
        described[p.name] = d
    report = {
        "command": command, "machine": machine(), "date": now(),
        "scale": scale, "models": list(nets), "skipped_models": skipped, "classifier": clf.name,
        "occlusions": list(occlusions), "landmarks": landmarks, "limit": limit, "small_group": SMALL_GROUP,
        "datasets": {},
    }
    for name, d in described.items():
        rs = [r for r in rows if r["dataset"] == name]
        base = [r for r in rs if r["occlusion"] == occlusions[0]]
        report["datasets"][name] = {
            **d, "groups_on": occlusions[0],
            "by_group": {c: group_metrics(base, c) for c in d["groups"]},
            "by_group_and_occlusion": {c: group_metrics(rs, c, by=("occlusion", "model")) for c in d["groups"]},
            "by_occlusion": group_metrics(rs, "occlusion"),
            "vs_reference": _versus(rs, list(nets), "occlusion"),
            "vs_reference_by_group": {c: _versus(base, list(nets), c) for c in d["groups"]},
        }
    out.mkdir(parents=True, exist_ok=True)
    _write(out, report, rows)
    return report


def _versus(rows: list[dict], models: list[str], column: str) -> list[dict]:
    """Per value of ``column``: each model minus the reference (bicubic if evaluated, else the first
    model) in agreement, with paired bootstrap intervals over the same faces."""
    if len(models) < 2:
        return []
    ref = "bicubic" if "bicubic" in models else models[0]
    groups = sorted({str(r.get(column) or MISSING) for r in rows}, key=_group_key)
    out = []
    for g in groups:
        by_model = {m: [r for r in rows if str(r.get(column) or MISSING) == g and r["model"] == m] for m in models}
        for m in models:
            if m == ref or not by_model[m]:
                continue
            e = {"column": column, "group": g, "model": m, "reference": ref, "n": len(by_model[m])}
            for src, name in _RATES[:2]:
                d, lo, hi = paired_difference([r[src] for r in by_model[m]], [r[src] for r in by_model[ref]])
                e[f"{name}_diff"], e[f"{name}_diff_ci"] = d, [lo, hi]
            out.append(e)
    return out


# --- outputs ---------------------------------------------------------------------------------------

_CSV_FIELDS = ("dataset", "image", "occlusion", "model", "hr_clean_pred", "hr_pred", "sr_pred", "agree",
               "agree_clean", "correct", "psnr", "ssim", "nme")


def _pct(v: float | None, ci: list | None = None) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.1f}" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def _diff(v: float, ci: list) -> str:
    return f"{100 * v:+.1f} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"


def _num(v: float | None, spec: str = ".3f") -> str:
    return "n/a" if v is None else f"{v:{spec}}"


def _table(entries: list[dict], models: list[str], first: str, clean: bool = True) -> list[str]:
    """Markdown: one line per group, per model agreement [95 % CI] / agreement with clean HR / ECM."""
    groups = list(dict.fromkeys(e["group"] for e in entries))
    has_acc = any(e["accuracy"] is not None for e in entries)
    per = 2 + int(clean) + int(has_acc)
    head = f"| {first} | n |" + "".join(f" {m}: agreement % |" + (f" {m}: vs clean HR % |" if clean else "")
                                       + f" {m}: ECM |" + (f" {m}: FER acc % |" if has_acc else "") for m in models)
    lines = [head, "|" + "---|" * (2 + len(models) * per)]
    for g in groups:
        es = {e["model"]: e for e in entries if e["group"] == g}
        n = next(iter(es.values()))["n"]
        cells = [f"{g}{' (small)' if n < SMALL_GROUP else ''}", str(n)]
        for m in models:
            e = es.get(m)
            if e is None:
                cells += ["n/a"] * per
                continue
            cells.append(_pct(e["agreement"], e["agreement_ci"]))
            if clean:
                cells.append(_pct(e["agreement_clean"], e["agreement_clean_ci"]))
            cells.append(_num(e["ecm"]))
            if has_acc:
                cells.append(_pct(e["accuracy"], e["accuracy_ci"]))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _diff_table(entries: list[dict], first: str, clean: bool) -> list[str]:
    if not entries:
        return []
    lines = ["", (f"Agreement minus `{entries[0]['reference']}`'s, percentage points, 95 % paired bootstrap interval "
                  "over the same faces (an interval containing 0 is no evidence of a difference):"), "",
             f"| {first} | n | model | agreement diff |" + (" vs clean HR diff |" if clean else ""),
             "|---|---|---|---|" + ("---|" if clean else "")]
    for e in entries:
        lines.append(f"| {e['group']} | {e['n']} | {e['model']} | {_diff(e['agreement_diff'], e['agreement_diff_ci'])} |"
                     + (f" {_diff(e['agreement_clean_diff'], e['agreement_clean_diff_ci'])} |" if clean else ""))
    return lines


def _markdown(report: dict) -> str:
    models = report["models"]
    about = (f"{report['machine']}, {report['date']}. FER classifier `{report['classifier']}`; LR landmarks: "
             f"{report['landmarks']}. Groups with fewer than {report['small_group']} faces are marked (small).")
    legend = ("Agreement: SR label == label of the occluded HR face (what `evaluate` reports). vs clean HR: SR label "
              "== label of the un-occluded HR face. ECM (lower is better) against the occluded HR face's FER "
              "distribution. Brackets: 95 % Wilson intervals.")
    out = [f"# affectsr fairness: x{report['scale']}", "", f"`{report['command']}`", "", about, "", legend, ""]
    for name, why in report["skipped_models"].items():
        out.append(f"- skipped `{name}`: {why}")
    for name, d in report["datasets"].items():
        counts = (f"`{d['path']}`, split {d['split']}: {d['faces']} faces from {d['inputs']} images "
                  f"({d['no_face']} without a detected face); landmarks found on {d['landmarks_on_clean_hr']} clean "
                  "HR crops (the others get occluders at fixed crop fractions).")
        alone = ", ".join(f"{o} {_pct(v['agreement_clean'], v['agreement_clean_ci'])} %"
                          for o, v in d["occluded_hr_vs_clean"].items())
        out += ["", f"## {name}", "", counts, "", "### By occlusion", "",
                f"Occluded HR vs clean HR agreement (the occluder alone, no SR): {alone}."]
        if any("accuracy_hr" in v for v in d["occluded_hr_vs_clean"].values()):
            acc = ", ".join(f"{o} {_pct(v['accuracy_hr'], v['accuracy_hr_ci'])} %"
                            for o, v in d["occluded_hr_vs_clean"].items())
            n_lab = next(v["n_labelled"] for v in d["occluded_hr_vs_clean"].values() if "n_labelled" in v)
            out += ["", (f"FER accuracy of the (occluded) HR faces against the dataset label ({n_lab} labelled "
                    f"faces; the ceiling for SR): {acc}.")]
        out.append("")
        out += _table(d["by_occlusion"], models, "occlusion")
        out += _diff_table(d["vs_reference"], "occlusion", clean=True)
        for c, entries in d["by_group"].items():
            clean = d["groups_on"] != "none"
            out += ["", f"### By {c} (occlusion: {d['groups_on']})", ""]
            out += _table(entries, models, c, clean=clean)
            out += _diff_table(d["vs_reference_by_group"][c], c, clean=clean)
    return "\n".join(out) + "\n"


def _plot(report: dict, path: Path) -> None:
    """Grouped bars: per dataset a row of agreement and a row of ECM, panels per group column + occlusion."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .atomic import atomic_write

    models = report["models"]
    panels = [(ds, c, d["by_group"][c]) for ds, d in report["datasets"].items() for c in d["groups"]]
    panels += [(ds, "occlusion", d["by_occlusion"]) for ds, d in report["datasets"].items()]
    ncol = min(4, len(panels))
    nrow_p = math.ceil(len(panels) / ncol)
    fig, axes = plt.subplots(2 * nrow_p, ncol, figsize=(4.2 * ncol, 3.0 * 2 * nrow_p), dpi=110, squeeze=False)
    width = 0.8 / max(1, len(models))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (ds, col, entries) in enumerate(panels):
        ra, rc = 2 * (k // ncol), k % ncol
        groups = list(dict.fromkeys(e["group"] for e in entries))
        x = np.arange(len(groups))
        for j, m in enumerate(models):
            es = [next((e for e in entries if e["group"] == g and e["model"] == m), None) for g in groups]
            agr = [np.nan if e is None or e["agreement"] is None else 100 * e["agreement"] for e in es]
            ci = [(0.0, 0.0) if e is None or e["agreement_ci"] is None else  # float rounding can flip a 0 error bar
                  (max(0.0, e["agreement"] - e["agreement_ci"][0]), max(0.0, e["agreement_ci"][1] - e["agreement"]))
                  for e in es]
            lo, hi = [100 * c[0] for c in ci], [100 * c[1] for c in ci]
            ecm_v = [np.nan if e is None or e["ecm"] is None else e["ecm"] for e in es]
            off = x + (j - (len(models) - 1) / 2) * width
            axes[ra, rc].bar(off, agr, width, yerr=[lo, hi], capsize=2, color=colours[j % len(colours)], label=m)
            axes[ra + 1, rc].bar(off, ecm_v, width, color=colours[j % len(colours)], label=m)
        n_of = {e["group"]: e["n"] for e in entries}
        ticks = [f"{g}{'*' if n_of[g] < SMALL_GROUP else ''}\nn={n_of[g]}" for g in groups]
        for ax, ylab in ((axes[ra, rc], "agreement with HR (%)"), (axes[ra + 1, rc], "ECM (lower better)")):
            ax.set_xticks(x, ticks, fontsize=7, rotation=0 if len(groups) <= 4 else 45)
            ax.set_ylabel(ylab, fontsize=8)
            ax.set_title(f"{ds}: {col}", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
        axes[ra, rc].set_ylim(0, 100)
    for k in range(len(panels), nrow_p * ncol):
        axes[2 * (k // ncol), k % ncol].axis("off")
        axes[2 * (k // ncol) + 1, k % ncol].axis("off")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"x{report['scale']}: agreement (95 % Wilson CI) and ECM per group; * = fewer than "
                 f"{SMALL_GROUP} faces", fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def _examples(path: Path, occlusions: Sequence[str]) -> None:
    """The occluders on the bundled public-domain face (dataset faces must not be redistributed)."""
    from .assets import default_face
    from .data.prepare import _detector
    from .images import save_image

    face = default_face(128)
    lms, found = _detector().detect_landmarks([face])
    strip = np.concatenate([occlude(face, o, lms[0] if found[0] else None) for o in occlusions], axis=1)
    save_image(path, strip, overwrite=True)


def _write(out: Path, report: dict, rows: list[dict]) -> None:
    from .atomic import atomic_write

    cols = list(dict.fromkeys(_CSV_FIELDS[:4] + tuple(c for d in report["datasets"].values() for c in d["groups"])
                              + _CSV_FIELDS[4:]))

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            w.writerows({k: ("" if r.get(k) is None else r.get(k)) for k in cols} for r in rows)

    text = json.dumps(report, indent=2) + "\n"
    atomic_write(out / "fairness.json", lambda tmp: Path(tmp).write_text(text))
    md = _markdown(report)
    atomic_write(out / "fairness.md", lambda tmp: Path(tmp).write_text(md))
    atomic_write(out / "per_image.csv", write_csv)
    _plot(report, out / "fairness.png")
    _examples(out / "occlusions.png", report["occlusions"])


# --- command line ----------------------------------------------------------------------------------


def _split_list(s: str | None) -> list[str]:
    return [x.strip() for x in (s or "").split(",") if x.strip()]


def add_parser(subparsers) -> argparse.ArgumentParser:
    f = subparsers.add_parser("fairness", help="ECM and FER agreement per demographic group and under synthetic "
                              "occlusions, per model", description=__doc__.split("\n")[0])
    f.add_argument("--data-root", default="../shared/data", help="folder holding the datasets (default ../shared/data)")
    f.add_argument("--datasets", default=",".join(DEFAULT_DATASETS),
                   help=f"comma-separated sub-folders of --data-root (default {','.join(DEFAULT_DATASETS)})")
    f.add_argument("--models", default=None, help="comma-separated: bicubic, presets, .safetensors paths or "
                   "name=path.safetensors (default bicubic,affectsr-x<scale>-lite,rrdb-x<scale>-lite)")
    f.add_argument("--scale", type=int, choices=(4, 8), default=4)
    f.add_argument("--occlusions", default=",".join(OCCLUSIONS), help=f"comma-separated, from {','.join(OCCLUSIONS)}")
    f.add_argument("--groups", default=",".join(DEFAULT_GROUPS),
                   help="labels.csv columns to break down by, where present ('age' is binned; 'label' = emotion)")
    f.add_argument("--split", default="test", help="split to use (default test)")
    f.add_argument("--limit", type=int, default=None, help="at most this many images per dataset (the first N of the split by path)")
    f.add_argument("--landmarks", choices=("auto", "detect", "predict", "none"), default="auto",
                   help="LR landmarks for the models' prior (as in evaluate)")
    f.add_argument("--classifier", default=None, help="FER classifier (default: the shipped default)")
    f.add_argument("--device", default="cpu")
    f.add_argument("--out", required=True, help="output folder (must be empty or new unless --overwrite)")
    f.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    f.set_defaults(func=cmd_fairness)
    return f


def _command(args: argparse.Namespace) -> str:
    a = ["--data-root", str(args.data_root), "--datasets", args.datasets, "--scale", str(args.scale),
         "--occlusions", args.occlusions, "--out", str(args.out)]
    if args.models:
        a += ["--models", args.models]
    if args.groups != ",".join(DEFAULT_GROUPS):
        a += ["--groups", args.groups]
    if args.split != "test":
        a += ["--split", args.split]
    if args.limit is not None:
        a += ["--limit", str(args.limit)]
    if args.landmarks != "auto":
        a += ["--landmarks", args.landmarks]
    if args.classifier:
        a += ["--classifier", args.classifier]
    return "affectsr fairness " + " ".join(shlex.quote(x) for x in a)


def cmd_fairness(args: argparse.Namespace) -> int:
    import torch

    try:
        torch.device(args.device)
    except RuntimeError:
        print(f"error: --device {args.device}: not a device", file=sys.stderr)
        return 2
    try:
        report = run_report(args.data_root, args.out, _split_list(args.models) or None, args.scale, args.limit,
                            _split_list(args.occlusions), _split_list(args.datasets), _split_list(args.groups),
                            args.split, args.landmarks, args.device, args.classifier, progress=not args.quiet,
                            overwrite=args.overwrite, command=_command(args))
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    for name, d in report["datasets"].items():
        print(f"{name}: {d['faces']} faces; agreement with HR % per occlusion:")
        for e in d["by_occlusion"]:
            print(f"  {e['group']:<11} {e['model']:<20} "
                  f"{_pct(e['agreement'], e['agreement_ci'])}  vs clean {_pct(e['agreement_clean'])}  ECM {_num(e['ecm'])}")
    for name, why in report["skipped_models"].items():
        print(f"skipped {name}: {why}")
    print(f"wrote {args.out}/fairness.json, fairness.md, fairness.png, occlusions.png, per_image.csv")
    return 0
