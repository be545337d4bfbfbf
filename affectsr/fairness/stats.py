"""Group statistics for the fairness report: age bins, Wilson intervals, paired bootstrap differences,
and per-group agreement / accuracy / ECM tables from per-face rows."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from ..emotion import ecm
from .occluders import OCCLUSIONS

__all__ = ["AGE_BINS", "MISSING", "SMALL_GROUP", "age_bin", "group_key", "group_metrics", "paired_difference", "versus",
           "wilson_interval"]

AGE_BINS = ((0, 2, "0-2"), (3, 9, "3-9"), (10, 19, "10-19"), (20, 39, "20-39"), (40, 59, "40-59"), (60, None, "60+"))
SMALL_GROUP = 30
"""Groups with fewer faces are flagged: their intervals are wide and ECM's histograms are noisy."""
MISSING = "unknown"
Z95 = 1.96


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


def paired_statistic(stat: Callable[[np.ndarray], float], a: np.ndarray, b: np.ndarray, n_boot: int = 1000,
                     seed: int = 0) -> tuple[float, float, float]:
    """stat(a) - stat(b) for a set-level statistic (e.g. ECM over a set's FER distributions), rows = the same faces,
    with a 95 % paired bootstrap interval (the faces resampled together, as :func:`paired_difference`)."""
    a, b = np.asarray(a), np.asarray(b)
    if len(a) != len(b) or len(a) == 0:
        raise ValueError("paired_statistic needs two equally long, non-empty arrays")
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(a), len(a))
        boots.append(stat(a[i]) - stat(b[i]))
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return float(stat(a) - stat(b)), float(lo), float(hi)


_RATES = (("agree", "agreement"), ("agree_clean", "agreement_clean"), ("correct", "accuracy"),
          ("teacher_agree", "teacher_agreement"))
_ORDER = {name: i for i, name in enumerate([b[2] for b in AGE_BINS] + list(OCCLUSIONS))}


def group_key(g: str) -> tuple:
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
    buckets: dict[tuple, list[dict]] = {}
    for r in rows:
        g = r.get(column)
        key = tuple(r[b] for b in by) + (MISSING if g is None or g == "" else str(g),)
        buckets.setdefault(key, []).append(r)
    heads = list(dict.fromkeys(k[:-1] for k in buckets))  # first-seen order of the `by` values
    out = []
    for head in heads:
        for key in sorted((k for k in buckets if k[:-1] == head), key=lambda k: group_key(k[-1])):
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


def versus(rows: list[dict], models: list[str], column: str) -> list[dict]:
    """Per value of ``column``: each model minus the reference (bicubic if evaluated, else the first
    model) in agreement, with paired bootstrap intervals over the same faces."""
    if len(models) < 2:
        return []
    ref = "bicubic" if "bicubic" in models else models[0]
    groups = sorted({str(r.get(column) or MISSING) for r in rows}, key=group_key)
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
