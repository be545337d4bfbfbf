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

import csv
import json
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..assets import default_face
from ..atomic import atomic_write
from ..emotion.faces import classify_crops
from ..emotion.classifier import load_fer_pair
from ..evaluate import Face, load_faces, resolve_models, run_evaluation
from ..images import save_image
from ..landmarks import shared_detector
from ..plots import pyplot
from ..runinfo import machine, now
from ..types import check_scale
from .occluders import OCCLUSIONS, occlude
from .stats import SMALL_GROUP, age_bin, group_metrics, versus, wilson_interval

__all__ = ["DEFAULT_DATASETS", "DEFAULT_GROUPS", "default_models", "run_report", "summary_lines"]

DEFAULT_DATASETS = ("utkface_aligned", "taiwanese_expr")
DEFAULT_GROUPS = ("label", "gender", "race", "age", "performance")


def default_models(scale: int) -> list[str]:
    return ["bicubic", f"affectsr-x{scale}-lite", f"rrdb-x{scale}-lite"]


def _resolve(specs: Sequence[str], scale: int, device: str) -> tuple[dict, dict]:
    """``name`` or ``name=path.safetensors`` -> ({name: model or None}, {name: why skipped})."""
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
                      split: str, limit: int | None, landmarks: str, device: str, clf, judge: str | None,
                      teacher: str | None, progress: bool) -> tuple[list[dict], dict]:
    """Per-face rows (every occlusion x model) and a description of the dataset run."""
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
            res = run_evaluation(occ_faces, models, scale, landmarks, device, judge=judge, teacher=teacher,
                                 identity=False, progress=progress)
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
                    "teacher_agree": er["teacher_agree"],
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
               split: str = "test", landmarks: str = "auto", device: str = "cpu", judge: str | None = None,
               teacher: str | None = None, progress: bool = True, overwrite: bool = False, command: str | None = None) -> dict:
    """Evaluate ``models`` on each dataset's ``split`` under each occlusion; write the report files.

    ``models``: names or ``name=path.safetensors`` (default bicubic, affectsr-x<scale>-lite,
    rrdb-x<scale>-lite); models without weights are skipped and listed. Raises ValueError /
    FileNotFoundError with a one-line message on bad input. Returns the ``fairness.json`` content.
    """
    root, out = Path(data_root), Path(out_dir)
    bad = [o for o in occlusions if o not in OCCLUSIONS]
    if bad or not occlusions:
        raise ValueError(f"--occlusions: {', '.join(bad) or 'none given'}: choose from {', '.join(OCCLUSIONS)}")
    check_scale(scale)
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
    clf, tea = load_fer_pair(judge, teacher, device)  # the judge scores; the teacher is a second column

    rows, described = [], {}
    for p in paths:
        r, d = _evaluate_dataset(p, nets, scale, occlusions, groups, split, limit, landmarks, device, clf,
                                 judge, teacher, progress)
        rows += r
        described[p.name] = d
    report = {
        "command": command, "machine": machine(), "date": now(),
        "scale": scale, "models": list(nets), "skipped_models": skipped, "classifier": clf.name,
        "judge": clf.name, "teacher": tea.name if tea is not None else None,
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
            "vs_reference": versus(rs, list(nets), "occlusion"),
            "vs_reference_by_group": {c: versus(base, list(nets), c) for c in d["groups"]},
        }
    out.mkdir(parents=True, exist_ok=True)
    _write(out, report, rows)
    return report


# --- outputs ---------------------------------------------------------------------------------------

_CSV_FIELDS = ("dataset", "image", "occlusion", "model", "hr_clean_pred", "hr_pred", "sr_pred", "agree",
               "agree_clean", "correct", "teacher_agree", "psnr", "ssim", "nme")


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
    has_teacher = any(e.get("teacher_agreement") is not None for e in entries)
    per = 2 + int(clean) + int(has_acc) + int(has_teacher)
    head = f"| {first} | n |" + "".join(f" {m}: agreement % |" + (f" {m}: vs clean HR % |" if clean else "")
                                       + f" {m}: ECM |" + (f" {m}: FER acc % |" if has_acc else "")
                                       + (f" {m}: agreement, teacher % |" if has_teacher else "") for m in models)
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
            if has_teacher:
                cells.append(_pct(e.get("teacher_agreement"), e.get("teacher_agreement_ci")))
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
    about = (f"{report['machine']}, {report['date']}. Expression read by the judge `{report['judge']}` (no training "
             f"loss uses it); 'agreement, teacher' = the same agreement read by `{report['teacher']}`, the classifier "
             f"the emotion loss trains against. LR landmarks: "
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
    plt = pyplot()
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
    face = default_face(128)
    lms, found = shared_detector().detect_landmarks([face])
    strip = np.concatenate([occlude(face, o, lms[0] if found[0] else None) for o in occlusions], axis=1)
    save_image(path, strip, overwrite=True)


def _write(out: Path, report: dict, rows: list[dict]) -> None:
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


def summary_lines(report: dict) -> list[str]:
    """What ``affectsr fairness`` prints: per dataset, agreement with HR per occlusion and model."""
    lines = []
    for name, d in report["datasets"].items():
        lines.append(f"{name}: {d['faces']} faces; agreement with HR % per occlusion:")
        for e in d["by_occlusion"]:
            lines.append(f"  {e['group']:<11} {e['model']:<20} "
                         f"{_pct(e['agreement'], e['agreement_ci'])}  vs clean {_pct(e['agreement_clean'])}  ECM {_num(e['ecm'])}")
    return lines
