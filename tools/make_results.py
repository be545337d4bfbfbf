"""Writes docs/RESULTS.md from `affectsr evaluate` outputs and the training runs behind them.

    python tools/make_results.py --eval x4=.data/eval/compare-x4 x8=.data/eval/compare-x8 \
        --runs x4=.data/runs/compare-x4 x8=.data/runs/compare-x8 --out docs

Every number in the page is read from those folders (summary.json / run.json of the evaluation,
config.json / log.csv / ema.safetensors metadata of each training run): nothing is typed in by hand
except the published figures, which are quoted from ../shared/MISSION.md and kept in their own section.
The page's own command list is tools/results.sh, which produces the inputs and then calls this script.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from affectsr.atomic import atomic_write  # noqa: E402

# What each row is. Labels are the names given to `affectsr evaluate --model LABEL=PATH`.
ROLES = {
    "bicubic": ("reference", "PIL bicubic"),
    "ours": ("ours", "AffectSRNet-lite: RRDB nf32 nb3 + spatial GCN prior + MSAF, L1 + 0.02 emotion loss"),
    "no-gcn": ("ablation", "ours, GCN without edges (an MLP per landmark)"),
    "concat": ("ablation", "ours, concatenation + 1x1 conv instead of MSAF"),
    "no-emotion-loss": ("ablation", "ours, L1 only (emotion loss weight 0)"),
    "pooled-prior": ("ablation", "ours, the prototype's pooled prior instead of the spatial one"),
    "rrdb": ("baseline", "ESRGAN RRDBNet nf32 nb3, no prior (ours without prior), L1"),
    "srcnn": ("baseline", "SRCNN 9-1-5 (residual over bicubic), L1"),
    "fsrnet": ("baseline", "FSRNet-style: coarse SR, heatmap prior estimation, prior-guided decoder"),
    "dic": ("baseline", "DIC-style: iterative SR + landmark attention, shared weights"),
    "ours-residual": ("variant", "ours + a global bicubic skip (conv_last starts at 0), as SRCNN/FSRNet/DIC have"),
    "rrdb-emo": ("ablation", "rrdb + ours' emotion loss (0.02): the loss without the prior"),
    "srcnn-emo": ("ablation", "srcnn + ours' emotion loss (0.02)"),
    "fsrnet-emo": ("ablation", "fsrnet + ours' emotion loss (0.02): the loss on the strongest baseline"),
    "dic-emo": ("ablation", "dic + ours' emotion loss (0.02)"),
    "shipped": ("context", "the shipped -lite weights of this scale: the same network as `ours`, trained longer (see its model card)"),
}

TRAINER_READ = """> **Read by the trainer.** The ECM, agreement and FER-accuracy columns of this table were read by `{clf}`,
> which is (a fine-tune of) the classifier the emotion loss of `ours`, the ablations with that loss and `shipped`
> trained against: a biased reader of those rows. They are not evidence that expression is kept, and no claim
> rests on them. Re-run `tools/results.sh` to read every row with the held-apart judge; the shipped models
> under the judge are in [JUDGED.md](JUDGED.md)."""

PUBLISHED = """Published x8 (16 -> 128) PSNR / SSIM, quoted from ../shared/MISSION.md (their test splits and
their training budgets, not ours: only the gain over bicubic within one table is comparable).

| method | CelebA | Helen |
|---|---|---|
| bicubic | 23.58 / 0.6285 | 23.88 / 0.6628 |
| SRCNN | 23.93 / 0.6348 | 24.72 / 0.6770 |
| FSRNet | 26.66 / 0.7714 | 26.43 / 0.7799 |
| DIC | 27.37 / 0.8022 | 26.94 / 0.8026 |
| SFMNet | 27.56 / 0.8047 | 27.22 / 0.8141 |
"""


def _kv(items: list[str]) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep:
            raise SystemExit(f"expected SCALE=DIR, got {it!r}")
        out.setdefault(k, []).append(Path(v))
    return out


def load_evaluations(dirs: list[Path]) -> dict:
    """One summary from one or more `affectsr evaluate` folders of the same faces (later rows are appended;
    a folder evaluated on other faces is refused, so a table never mixes test sets)."""
    merged: dict = {}
    for d in dirs:
        run = json.loads((d / "run.json").read_text())  # summary.json is model -> metrics; run.json how it was made
        models = json.loads((d / "summary.json").read_text())
        if not merged:
            merged = {**run, "models": dict(models), "commands": [run["command"]]}
            continue
        if (run["faces"], run["data"]["path"], run["scale"], run["landmarks"]) != \
                (merged["faces"], merged["data"]["path"], merged["scale"], merged["landmarks"]):
            raise SystemExit(f"{d}: evaluated on other faces or settings than {dirs[0]}; not merged")
        for name, m in models.items():
            merged["models"].setdefault(name, m)
        merged["commands"].append(run["command"])
    order = list(ROLES)  # rows in the page's order whatever the folders' order (unknown names last, as given)
    merged["models"] = dict(sorted(merged["models"].items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
    return merged


def run_info(run_dir: Path) -> dict:
    """Steps, wall time, batch and seed of a training run (from its weights' metadata and config.json)."""
    info: dict = {}
    cfg = run_dir / "config.json"
    if cfg.is_file():
        c = json.loads(cfg.read_text())
        info.update(batch=c.get("batch_size"), seed=c.get("seed"), lambda_emo=c.get("lambda_emo"),
                    model=c.get("model"), model_args=c.get("model_args", ""), lr=c.get("lr"),
                    classifier=c.get("classifier") if c.get("lambda_emo") else None)
    w = run_dir / "ema.safetensors"
    if w.is_file():
        from affectsr.weights import read_metadata

        meta = read_metadata(w, "sr")
        info.update(steps=int(meta.get("steps", 0)), seconds=float(meta.get("train_seconds", "nan")),
                    machine=meta.get("machine", ""))
        import torch

        from affectsr.models import count_params, load_model

        with torch.device("cpu"):
            info["params"] = count_params(load_model(str(w)))
    return info


def _f(v, spec: str, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:{spec}}%" if pct else f"{v:{spec}}"


def table(summary: dict, runs: dict[str, dict]) -> list[str]:
    """One line per row: pixels, expression read by the judge (and by the teacher), identity, geometry."""
    ms = summary["models"]
    bic = ms.get("bicubic", {})
    lines = ["| model | role | params | steps | PSNR-Y | Δ bicubic | SSIM-Y | ECM ↓ judge | agreement ↑ judge | "
             "agreement teacher | FER acc SR (HR) judge | identity kept ↑ | NME ↓ | NME mouth ↓ | NME eyes ↓ | NME brows ↓ |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in ms.items():
        role = ROLES.get(name, ("", ""))[0]
        r = runs.get(name, {})
        params = f"{r['params'] / 1e6:.2f}M" if r.get("params") else "-"
        steps = str(r["steps"]) if r.get("steps") else "-"
        d = f"{m['psnr'] - bic['psnr']:+.2f}" if bic and name != "bicubic" else "-"
        acc = f"{_f(m.get('accuracy_sr'), '.1f', True)} ({_f(m.get('accuracy_hr'), '.1f', True)})"
        bold = "**" if role == "ours" else ""
        lines.append(f"| {bold}{name}{bold} | {role} | {params} | {steps} | {m['psnr']:.2f} | {d} | "
                     f"{m['ssim']:.4f} | {m['ecm']:.3f} | {_f(m['agreement'], '.1f', True)} | "
                     f"{_f(m.get('teacher_agreement'), '.1f', True)} | {acc} | {_f(m.get('identity_kept'), '.1f', True)} | "
                     f"{_f(m.get('nme'), '.4f')} | {_f(m.get('nme_mouth'), '.4f')} | {_f(m.get('nme_eyes'), '.4f')} | "
                     f"{_f(m.get('nme_brows'), '.4f')} |")
    return lines


def verdict(summary: dict) -> list[str]:
    """Where ours wins and loses against every other row, metric by metric (computed, not written)."""
    ms = summary["models"]
    if "ours" not in ms:
        return []
    o = ms["ours"]
    better = {"psnr": 1, "ssim": 1, "ecm": -1, "agreement": 1, "kl": -1, "identity_kept": 1, "nme": -1, "nme_mouth": -1}
    out = []
    for name, m in ms.items():
        if name == "ours":
            continue
        wins = [k for k, s in better.items() if o.get(k) is not None and m.get(k) is not None and s * (o[k] - m[k]) > 0]
        loses = [k for k, s in better.items() if o.get(k) is not None and m.get(k) is not None and s * (o[k] - m[k]) < 0]
        out.append(f"- vs **{name}**: better on {', '.join(wins) or 'nothing'}; worse on {', '.join(loses) or 'nothing'}.")
    return out


README_BEGIN, README_END = "<!-- comparison: generated by tools/make_results.py -->", "<!-- /comparison -->"
README_ROWS = ("bicubic", "ours", "ours-residual", "no-emotion-loss", "no-gcn", "pooled-prior", "rrdb", "rrdb-emo",
               "srcnn", "fsrnet", "fsrnet-emo", "dic", "dic-emo")


def readme_block(summaries: dict[str, dict]) -> list[str]:
    """The README's short form of the comparison: PSNR-Y and the judge's agreement / ECM and identity kept per scale."""
    scales = list(summaries)
    lines = ["| 300 steps each | " + " | ".join(f"{s} PSNR-Y | {s} agreement, judge | {s} ECM, judge | {s} identity kept"
                                              for s in scales) + " |",
             "|---|" + "---:|" * (4 * len(scales))]
    for name in README_ROWS:
        if not any(name in s["models"] for s in summaries.values()):
            continue
        cells = []
        for s in scales:
            m = summaries[s]["models"].get(name)
            cells += ["-"] * 4 if m is None else [f"{m['psnr']:.2f}", _f(m["agreement"], ".1f", True), f"{m['ecm']:.2f}",
                                                   _f(m.get("identity_kept"), ".1f", True)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    first = next(iter(summaries.values()))
    lines += ["", f"*Generated by `tools/make_results.py` from docs/RESULTS.md's evaluations ({first['faces']} test faces, "
              f"judge `{first.get('judge')}`, {first['machine']}, {first['date'][:10]}).*"]
    return lines


def splice_readme(path: Path, block: list[str]) -> None:
    """Replace the README's comparison block (between the markers), or refuse: its place in the prose is chosen by hand."""
    text = path.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise SystemExit(f"{path}: no {README_BEGIN} ... {README_END} block to replace")
    a, b = text.index(README_BEGIN), text.index(README_END) + len(README_END)
    text = text[:a] + "\n".join([README_BEGIN, *block, README_END]) + text[b:]
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


# The questions the table is for, as pairs of rows on the same faces: (question, row, against)
CONTRASTS = (
    ("what the emotion loss adds to an RRDB without prior", "rrdb-emo", "rrdb"),
    ("what the emotion loss adds to ours", "ours", "no-emotion-loss"),
    ("what the landmark prior adds beyond the loss", "ours", "rrdb-emo"),
    ("what the prior adds without the loss", "no-emotion-loss", "rrdb"),
    ("what graph edges add", "ours", "no-gcn"),
    ("MSAF against concatenation", "ours", "concat"),
    ("the spatial prior against the pooled one", "ours", "pooled-prior"),
    ("what the emotion loss adds to the FSRNet-style baseline", "fsrnet-emo", "fsrnet"),
    ("what the emotion loss adds to the DIC-style baseline", "dic-emo", "dic"),
    ("ours with the skip against the FSRNet-style baseline", "ours-residual", "fsrnet"),
    ("ours with the skip against the FSRNet-style baseline with the loss", "ours-residual", "fsrnet-emo"),
)


def per_image(dirs: list[Path]) -> dict[str, dict[str, dict]]:
    """model -> image -> per_image.csv row, over the evaluation folders of one scale."""
    import csv

    out: dict[str, dict[str, dict]] = {}
    for d in dirs:
        with open(d / "per_image.csv", newline="") as f:
            for r in csv.DictReader(f):
                out.setdefault(r["model"], {}).setdefault(r["image"], r)
    return out


def paired_ci(a: list[float], b: list[float], scale: float = 100, spec: str = "+.1f") -> str:
    """``mean(a - b) [low, high]`` on the same faces, a paired-bootstrap 95 % interval, times ``scale`` (100: points)."""
    from affectsr.fairness.stats import paired_difference

    d, lo, hi = paired_difference(a, b)
    return f"{scale * d:{spec}} [{scale * lo:{spec}}, {scale * hi:{spec}}]"


def contrasts(rows: dict[str, dict[str, dict]]) -> list[str]:
    """Paired differences on the same faces with bootstrap 95 % intervals (affectsr.fairness.stats.paired_difference):
    a gap whose interval holds 0 is not a finding at this budget."""
    lines = ["| question | rows | Δ PSNR-Y (dB) | Δ agreement, judge (pp) | Δ NME mouth (x1000) |", "|---|---|---:|---:|---:|"]
    for question, a, b in CONTRASTS:
        if a not in rows or b not in rows:
            continue
        ids = [i for i in rows[a] if i in rows[b]]
        psnr = paired_ci([float(rows[a][i]["psnr"]) for i in ids], [float(rows[b][i]["psnr"]) for i in ids], 1, "+.2f")
        agree = paired_ci([int(rows[a][i]["agree"]) for i in ids], [int(rows[b][i]["agree"]) for i in ids], 100, "+.1f")
        m_ids = [i for i in ids if rows[a][i]["nme_mouth"] != "" and rows[b][i]["nme_mouth"] != ""]
        mouth = paired_ci([float(rows[a][i]["nme_mouth"]) for i in m_ids], [float(rows[b][i]["nme_mouth"]) for i in m_ids],
                   1000, "+.1f") if m_ids else "n/a"
        lines.append(f"| {question} | `{a}` - `{b}` | {psnr} | {agree} | {mouth} |")
    return lines if len(lines) > 2 else []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--eval", nargs="+", required=True, metavar="SCALE=DIR", help="e.g. x4=.data/eval/compare-x4")
    ap.add_argument("--runs", nargs="*", default=[], metavar="SCALE=DIR", help="e.g. x4=.data/runs/compare-x4")
    ap.add_argument("--out", default="docs")
    ap.add_argument("--notes", default=None, help="a markdown file appended as 'Reading' (written by a person)")
    ap.add_argument("--readme", default=None, help="also rewrite README.md's comparison block (between its markers)")
    args = ap.parse_args(argv)
    evals, runs_dirs = _kv(args.eval), _kv(args.runs)
    out = Path(args.out)
    (out / "results").mkdir(parents=True, exist_ok=True)

    page = ["# Results: ours, ablations and baselines side by side", "",
            "Generated by `tools/make_results.py` from `affectsr evaluate` outputs; re-run everything with "
            "`tools/results.sh` (training: `tools/train_comparison.sh`). Do not edit by hand.", ""]
    summaries = {}
    for scale, edirs in evals.items():
        summary = summaries[scale] = load_evaluations(edirs)
        edir = edirs[0]
        runs = {}
        for rdir in runs_dirs.get(scale, []):
            for name in summary["models"]:
                if name not in runs and (rdir / name).is_dir():
                    runs[name] = run_info(rdir / name)
        d = summary["data"]
        page += [f"## {scale}: {summary['hr_size'] // summary['scale']} -> {summary['hr_size']} px", ""]
        if "judge" not in summary:  # evaluated before the judge existed: the reader may be the rows' own trainer
            page += [TRAINER_READ.format(clf=summary["classifier"]), ""]
        page += [
                 f"- Test faces: {summary['faces']} ({d['path']}, split {d['split']}); LR = bicubic /{summary['scale']}; "
                 f"PSNR/SSIM on Y with {summary['scale']} px border cropped; expression read by the judge "
                 f"`{summary.get('judge', summary['classifier'])}` (no training loss uses it), teacher "
                 f"`{summary.get('teacher')}` beside it; "
                 f"LR landmarks: {summary['landmarks']}. {summary.get('lpips', '')}.",
                 f"- Evaluated on: {summary['machine']}, {summary['date']}.",
                 *[f"- Command: `{c}`" for c in summary["commands"]], ""]
        trained = [r for r in runs.values() if r.get("steps")]
        if trained:
            r0 = trained[0]
            page += [f"- Training budget, identical for every trained row: {r0['steps']} steps of batch {r0['batch']}, "
                     f"lr {r0['lr']}, seed {r0['seed']}, train splits of the same caches; machine: {r0['machine']}."]
            if loss_teachers := sorted({r["classifier"] for r in trained if r.get("classifier")}):
                page += [f"- The rows with an emotion loss trained against {', '.join(f'`{t}`' for t in loss_teachers)} "
                         f"(their config.json); the judge `{summary.get('judge')}` is none of them."]
            page += [""]
        page += table(summary, runs) + [""]
        page += ["Rows:", ""] + [f"- `{n}` ({ROLES.get(n, ('', ''))[0]}): {ROLES.get(n, ('', 'your model'))[1]}"
                                 for n in summary["models"]] + [""]
        if c := contrasts(per_image(edirs)):
            page += ["What each part adds, on the same faces (row minus row; brackets: paired-bootstrap 95 % interval, "
                     "2,000 resamples of the faces; pp = percentage points; lower NME is better, so a negative Δ NME "
                     "is a gain):", ""] + c + [""]
        if v := verdict(summary):
            page += ["Where ours wins and loses (this table, under the judge; higher PSNR/SSIM/agreement/identity and "
                     "lower ECM/KL/NME are "
                     "better; differences of a few hundredths of a dB or a point or two of agreement are within noise at this "
                     "budget):", ""] + v + [""]
        for png in ("grid.png", "psnr_vs_ecm.png"):
            if (edir / png).is_file():
                shutil.copyfile(edir / png, out / "results" / f"{scale}_{png}")
                page += [f"![{scale} {png}](results/{scale}_{png})", ""]
        (out / "results" / f"{scale}_summary.json").write_text(json.dumps({**summary, "runs": runs},
                                                                          indent=2, default=str))
    old = (out / "RESULTS.md").read_text() if (out / "RESULTS.md").is_file() else ""
    begin, end = "<!-- full-presets: generated by tools/make_full_results.py -->", "<!-- /full-presets -->"
    if begin in old and end in old:  # tools/make_full_results.py's section (other inputs): kept as it is
        page += [old[old.index(begin):old.index(end) + len(end)], ""]
    page += ["## Published numbers (context only)", "", PUBLISHED]
    if args.notes:
        page += ["## Reading", "", Path(args.notes).read_text().strip(), ""]
    atomic_write(out / "RESULTS.md", lambda tmp: Path(tmp).write_text("\n".join(page) + "\n"))
    print(f"wrote {out / 'RESULTS.md'}")
    if args.readme:
        splice_readme(Path(args.readme), readme_block(summaries))
        print(f"wrote the comparison block of {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
