"""Did a retrained model keep the quality of the one it replaces? Paired differences of two rows of one
`affectsr evaluate` folder (the same faces), with bootstrap 95 % intervals.

    python -m affectsr evaluate --model old=affectsr/weights/affectsr-x8-lite.safetensors,new=RUN/ema.safetensors \\
        --data .data/cache/utkface_aligned .data/cache/taiwanese_expr --scale 8 --landmarks detect --out EVAL
    python tools/quality_check.py EVAL --new new --old old [--psnr-tol 0.05]

The bar (issue 17, for a change that is not exact): PSNR-Y within ``--psnr-tol`` dB (new - old >= -tol), and the
held-apart judge's agreement with the HR reading and its ECM within noise (each paired interval holds 0 or lies on the
better side). ECM is a set-level statistic: its interval resamples the faces' FER distributions (probs.npz). Exit status 0 when the bar
is met, 1 when not, so a script can gate shipping on it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from make_results import load_evaluations, per_image  # noqa: E402

import numpy as np  # noqa: E402

from affectsr.emotion import ecm  # noqa: E402
from affectsr.fairness.stats import paired_difference, paired_statistic  # noqa: E402

# per_image.csv column -> (label, scale for printing, format); the identity and landmark columns may be empty
COLUMNS = {"psnr": ("PSNR-Y (dB)", 1, "+.3f"), "ssim": ("SSIM-Y", 1, "+.4f"), "agree": ("agreement, judge (pp)", 100, "+.1f"),
           "teacher_agree": ("agreement, teacher (pp)", 100, "+.1f"), "nme_mouth": ("NME mouth (x1000)", 1000, "+.2f"),
           "nme": ("NME face (x1000)", 1000, "+.2f"), "identity_cos": ("identity cosine (x100)", 100, "+.2f")}


def paired_rows(rows: dict[str, dict[str, dict]], new: str, old: str) -> dict[str, tuple[float, float, float, float, int]]:
    """column -> (mean of old, mean new - old, low, high, faces) over the faces both rows have a value for."""
    out = {}
    for col in COLUMNS:
        ids = [i for i in rows[new] if i in rows[old] and rows[new][i].get(col, "") != "" and rows[old][i].get(col, "") != ""]
        if ids:
            a, b = [float(rows[new][i][col]) for i in ids], [float(rows[old][i][col]) for i in ids]
            out[col] = (float(np.mean(b)), *paired_difference(a, b), len(ids))
    return out


def ecm_difference(eval_dirs: list[Path], new: str, old: str, which: str = "judge") -> tuple[float, float, float, float, int] | None:
    """(ECM of old, ECM new - old, 95 % interval, faces) from the folders' probs.npz (faces resampled together);
    None when no folder holds both rows' distributions (`affectsr evaluate` writes them since 2026-11-30)."""
    p: dict[str, np.ndarray] = {}
    for d in eval_dirs:
        f = d / "probs.npz"
        if f.is_file():
            with np.load(f) as z:
                p |= {k: z[k] for k in z.files if k.startswith(which + ".") and k not in p}
    hr, a, b = (p.get(f"{which}.{k}") for k in ("hr", new, old))
    if hr is None or a is None or b is None:
        return None
    k = hr.shape[1]
    d, lo, hi = paired_statistic(lambda x: ecm(x[:, :k], x[:, k:]), np.concatenate([hr, a], 1), np.concatenate([hr, b], 1))
    return ecm(hr, b), d, lo, hi, len(hr)


def verdict(diffs: dict[str, tuple], psnr_tol: float) -> tuple[bool, list[str]]:
    """(bar met, reasons it is not)."""
    why = []
    if "psnr" not in diffs or diffs["psnr"][1] < -psnr_tol:
        why.append(f"PSNR-Y moved {diffs.get('psnr', (0, float('nan')))[1]:+.3f} dB (tolerance -{psnr_tol})")
    if "agree" not in diffs or diffs["agree"][3] < 0:
        why.append("the judge's agreement fell: its interval lies below 0")
    if "ecm_judge" in diffs and diffs["ecm_judge"][2] > 0:
        why.append("the judge's ECM rose: its interval lies above 0")
    return not why, why


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("eval", nargs="+", type=Path, help="`affectsr evaluate` folder(s) of the same faces")
    ap.add_argument("--new", required=True, help="row of the retrained model")
    ap.add_argument("--old", required=True, help="row of the model it replaces")
    ap.add_argument("--psnr-tol", type=float, default=0.05, help="largest PSNR-Y loss accepted, dB (default 0.05)")
    args = ap.parse_args(argv)
    rows = per_image(args.eval)
    for name in (args.new, args.old):
        if name not in rows:
            ap.error(f"no row {name!r} in {', '.join(map(str, args.eval))} (rows: {', '.join(rows)})")
    summary = load_evaluations(args.eval)["models"]  # (refuses folders of other faces; first folder gives a row)
    diffs = paired_rows(rows, args.new, args.old)
    print(f"`{args.new}` - `{args.old}` on the same faces (paired bootstrap 95 % interval):\n")
    print("| metric | old | new | new - old [95 % interval] | faces |\n|---|---:|---:|---:|---:|")
    for col, (base, d, lo, hi, n) in diffs.items():
        label, k, spec = COLUMNS[col]
        plain = spec.lstrip("+")
        print(f"| {label} | {k * base:{plain}} | {k * (base + d):{plain}} | "
              f"{k * d:{spec}} [{k * lo:{spec}}, {k * hi:{spec}}] | {n} |")
    for which in ("judge", "teacher"):
        label = f"ECM, {which} (lower better)"
        e = ecm_difference(args.eval, args.new, args.old, which)
        if e is not None:
            diffs[f"ecm_{which}"] = e
            print(f"| {label} | {e[0]:.2f} | {e[0] + e[1]:.2f} | {e[1]:+.2f} [{e[2]:+.2f}, {e[3]:+.2f}] | {e[4]} |")
        elif f"{which}_ecm" in summary.get(args.old, {}) and f"{which}_ecm" in summary.get(args.new, {}):
            o, n_ = summary[args.old][f"{which}_ecm"], summary[args.new][f"{which}_ecm"]
            print(f"| {label} | {o:.2f} | {n_:.2f} | {n_ - o:+.2f} (no probs.npz: no interval) | {summary[args.new]['n']} |")
    ok, why = verdict(diffs, args.psnr_tol)
    print("\n" + ("quality held: PSNR-Y within %.2f dB, judge agreement within noise" % args.psnr_tol if ok
                  else "quality NOT held: " + "; ".join(why)))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
