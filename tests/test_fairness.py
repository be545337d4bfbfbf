"""affectsr.fairness: occluders, group statistics by hand, and `fairness` end to end on a tiny folder."""
from __future__ import annotations

import csv
import json
import math
import shlex

import numpy as np
import pytest
from PIL import Image

from affectsr.assets import default_face
from affectsr.cli import main
from affectsr.fairness import (
    OCCLUSIONS,
    age_bin,
    group_metrics,
    occlude,
    occluder_mask,
    paired_difference,
    paired_statistic,
    wilson_interval,
)
from affectsr.models import mediapipe_topology as topo

EYES = sorted(set(topo.RIGHT_EYE) | set(topo.LEFT_EYE))
LIPS = sorted(set(topo.LIPS))


@pytest.fixture(scope="module")
def face_and_landmarks():
    from affectsr.landmarks import LandmarkDetector

    face = default_face(128)
    with LandmarkDetector() as det:
        lms, found = det.detect_landmarks([face])
    assert found[0]
    return face, lms[0]


def _px(lm: np.ndarray, idx, shape) -> np.ndarray:
    """Integer pixel (row, col) of landmarks ``idx``."""
    h, w = shape[:2]
    xy = lm[idx, :2] * [w, h]
    return np.stack([np.clip(xy[:, 1].astype(int), 0, h - 1), np.clip(xy[:, 0].astype(int), 0, w - 1)], 1)


@pytest.mark.parametrize("kind", OCCLUSIONS[1:])
def test_occluder_covers_its_region_only(face_and_landmarks, kind):
    face, lm = face_and_landmarks
    before = face.copy()
    out = occlude(face, kind, lm)
    assert np.array_equal(face, before)  # the input is not touched
    assert np.array_equal(out, occlude(face, kind, lm))  # deterministic
    mask = occluder_mask(face.shape, kind, lm)
    changed = (out != face).any(-1)
    assert changed.any() and not (changed & ~mask).any()  # nothing outside the occluder changes
    assert len({tuple(c) for c in out[mask]}) == 1  # one flat colour
    rows = np.nonzero(mask.any(1))[0]
    eye_rows, lip_rows = _px(lm, EYES, face.shape)[:, 0], _px(lm, LIPS, face.shape)[:, 0]
    eyes_hit = mask[tuple(_px(lm, EYES, face.shape).T)]
    lips_hit = mask[tuple(_px(lm, LIPS, face.shape).T)]
    if kind in ("eyes_bar", "sunglasses"):
        assert eyes_hit.all() and not lips_hit.any()
        assert rows.max() < lip_rows.min() and rows.min() > _px(lm, [10], face.shape)[0, 0]  # below the forehead top
    else:  # mouth_mask: nose tip and lips covered, eyes free, nothing above the eyes
        assert lips_hit.all() and mask[tuple(_px(lm, [1], face.shape)[0])] and not eyes_hit.any()
        assert rows.min() > eye_rows.max()


@pytest.mark.parametrize("kind", OCCLUSIONS[1:])
def test_occluder_fallback_without_landmarks(kind):
    face = default_face(96)
    no_lm = np.full((478, 3), np.nan, np.float32)
    out = occlude(face, kind, None)
    assert np.array_equal(out, occlude(face, kind, no_lm))  # NaN rows = no landmarks
    mask = occluder_mask(face.shape, kind)
    rows = np.nonzero(mask.any(1))[0] / face.shape[0]
    if kind == "mouth_mask":
        assert rows.min() > 0.44 and rows.max() < 0.85
    else:
        assert rows.min() > 0.25 and rows.max() < 0.55
    assert not ((out != face).any(-1) & ~mask).any()


def test_occlude_none_and_bad_input(default_face):
    out = occlude(default_face, "none")
    assert out is not default_face and np.array_equal(out, default_face)
    with pytest.raises(ValueError, match="not one of"):
        occlude(default_face, "scarf")
    with pytest.raises(ValueError, match="uint8"):
        occlude(default_face.astype(np.float32), "eyes_bar")


def test_age_bins():
    cases = {0: "0-2", 2: "0-2", 2.9: "0-2", 3: "3-9", 9: "3-9", 10: "10-19", 19: "10-19", 20: "20-39", 39: "20-39",
             40: "40-59", 59: "40-59", 60: "60+", 110: "60+", "25": "20-39", "": "unknown", None: "unknown",
             "abc": "unknown", -1: "unknown", float("nan"): "unknown"}
    assert {k if not (isinstance(k, float) and math.isnan(k)) else "nan": age_bin(k) for k in cases} == {
        k if not (isinstance(k, float) and math.isnan(k)) else "nan": v for k, v in cases.items()}


def test_wilson_by_hand():
    # 3 of 4, z = 1.96: centre (0.75 + 0.4802) / 1.9604, half 1.96 * sqrt(0.046875 + 0.060025) / 1.9604
    assert wilson_interval(3, 4) == pytest.approx((0.30064, 0.95441), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-4)
    assert wilson_interval(10, 10)[1] == 1.0
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    for n in (1, 6, 11, 21, 22, 27, 500):  # float rounding must never put k / n outside its own interval
        for k in range(n + 1):
            lo, hi = wilson_interval(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_group_metrics_by_hand():
    same = np.array([0.5, 0.5])
    rows = [
        # model A, group g1: agree 1,1,0,1 -> 3/4; identical HR/SR probabilities -> ECM = ln(1e-12)
        *({"model": "A", "sex": "g1", "agree": a, "agree_clean": 0, "correct": None, "psnr": 20.0 + i,
           "p_hr": same, "p_sr": same} for i, a in enumerate((1, 1, 0, 1))),
        # model A, group g2: one face, HR certain of class 0, SR 50/50:
        # L_H = 2 classes x (10^2 + 10^2) = 400, L_conf = ln 2, ECM = 0.5 * 400 + ln(ln 2) = 199.6335
        {"model": "A", "sex": "g2", "agree": 0, "agree_clean": 1, "correct": 1, "psnr": 30.0,
         "p_hr": np.array([1.0, 0.0]), "p_sr": same},
        {"model": "A", "sex": "", "agree": 1, "agree_clean": 1, "correct": "", "psnr": 25.0, "p_hr": same, "p_sr": same},
        {"model": "B", "sex": "g1", "agree": 0, "agree_clean": 0, "correct": 0, "psnr": ""},
    ]
    t = group_metrics(rows, "sex", min_n=2)
    assert [(e["model"], e["group"], e["n"]) for e in t] == [("A", "g1", 4), ("A", "g2", 1), ("A", "unknown", 1),
                                                             ("B", "g1", 1)]
    a1, a2, au, b1 = t
    assert a1["agreement"] == 0.75 and a1["agreement_ci"] == pytest.approx([0.30064, 0.95441], abs=1e-4)
    assert a1["agreement_clean"] == 0.0 and a1["accuracy"] is None and a1["accuracy_n"] == 0
    assert a1["ecm"] == pytest.approx(math.log(1e-12)) and a1["psnr"] == pytest.approx(21.5)
    assert a1["small"] is False and a2["small"] is True
    assert a2["ecm"] == pytest.approx(0.5 * 400 + math.log(math.log(2)), abs=1e-6)
    assert a2["accuracy"] == 1.0 and au["accuracy"] is None
    assert b1["ecm"] is None and b1["psnr"] is None and b1["accuracy"] == 0.0


def test_group_metrics_orders_age_bins_and_occlusions():
    rows = [{"model": "m", "age_bin": b, "occlusion": o, "agree": 1}
            for b, o in (("60+", "sunglasses"), ("3-9", "none"), ("20-39", "eyes_bar"), ("", "mouth_mask"))]
    assert [e["group"] for e in group_metrics(rows, "age_bin")] == ["3-9", "20-39", "60+", "unknown"]
    assert [e["group"] for e in group_metrics(rows, "occlusion")] == list(OCCLUSIONS)


def test_paired_difference():
    d, lo, hi = paired_difference([1, 1, 1, 0], [0, 1, 1, 0])
    assert d == 0.25 and 0.0 <= lo <= d <= hi <= 0.75  # resampled means of {1, 0, 0, 0} lie in [0, 1]
    assert paired_difference([1, 1, 1, 0], [0, 1, 1, 0]) == (d, lo, hi)
    assert paired_difference([1, 0], [1, 0]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        paired_difference([], [])


def test_paired_statistic_resamples_faces_together():
    """A set-level statistic's difference (ECM has no per-face value): the point estimate is the statistic's own, the
    interval holds it, identical sets give exactly 0, and the mean reproduces paired_difference's estimate."""
    from affectsr.emotion import ecm

    rng = np.random.default_rng(0)
    hr = rng.dirichlet(np.ones(7), 200)
    near = 0.9 * hr + 0.1 * rng.dirichlet(np.ones(7), 200)
    far = rng.dirichlet(np.ones(7), 200)
    stat = lambda x: ecm(x[:, :7], x[:, 7:])  # noqa: E731
    a, b = np.concatenate([hr, far], 1), np.concatenate([hr, near], 1)
    d, lo, hi = paired_statistic(stat, a, b, n_boot=200)
    assert d == pytest.approx(stat(a) - stat(b)) and lo <= d <= hi and lo > 0  # far from HR scores clearly worse
    assert paired_statistic(stat, b, b, n_boot=50) == (0.0, 0.0, 0.0)
    x, y = rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    assert paired_statistic(np.mean, x, y, n_boot=50)[0] == pytest.approx(paired_difference(x, y)[0])
    with pytest.raises(ValueError):
        paired_statistic(np.mean, x, y[:10])


# --- end to end ------------------------------------------------------------------------------------


def _cli(argv: list[str]) -> int:
    return main(["fairness", *argv])


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    d = root / "tiny"
    (d / "images").mkdir(parents=True)
    base = default_face(160)
    variants = [base, np.roll(base, (6, -5), axis=(0, 1)), base[:, ::-1]]
    meta = [("happy", "25", "female"), ("happy", "70", "male"), ("neutral", "30", "female")]
    with open(d / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split", "subject", "age", "gender"])
        for i, (v, (lab, age, sex)) in enumerate(zip(variants, meta)):
            canvas = np.full((224, 224, 3), 127, np.uint8)
            canvas[32:192, 32:192] = v
            Image.fromarray(canvas).save(d / "images" / f"face{i}.png")
            w.writerow([f"images/face{i}.png", lab, "test", "", age, sex])
        w.writerow(["images/face0.png", "happy", "train", "", "25", "female"])  # not in the test split
    return root


@pytest.fixture(scope="module")
def report_run(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("fair") / "out"
    argv = ["--data-root", str(data_root), "--datasets", "tiny", "--models",
            "bicubic,affectsr-x4-lite,gone=missing.safetensors", "--occlusions", "none,eyes_bar", "--out", str(out), "-q"]
    assert _cli(argv) == 0
    assert json.loads((out / "fairness.json").read_text())["command"] == shlex.join(["affectsr", "fairness", *argv])
    return 0, out


@pytest.mark.slow
def test_end_to_end_writes_the_report(report_run):
    rc, out = report_run
    assert rc == 0
    for f in ("fairness.json", "fairness.md", "fairness.png", "occlusions.png", "per_image.csv"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    rep = json.loads((out / "fairness.json").read_text())
    assert rep["models"] == ["bicubic", "affectsr-x4-lite"] and set(rep["skipped_models"]) == {"gone"}
    d = rep["datasets"]["tiny"]
    assert d["faces"] == 3 and d["split"] == "test"
    assert d["occluded_hr_vs_clean"]["none"]["agreement_clean"] == 1.0
    assert d["occluded_hr_vs_clean"]["eyes_bar"]["n_labelled"] == 3
    assert set(d["groups"]) == {"label", "gender", "age_bin"}
    assert {(e["group"], e["n"]) for e in d["by_group"]["gender"]} == {("female", 2), ("male", 1)}
    assert {e["group"] for e in d["by_group"]["age_bin"]} == {"20-39", "60+"}
    assert [(e["group"], e["model"]) for e in d["by_occlusion"]] == [
        ("none", "bicubic"), ("eyes_bar", "bicubic"), ("none", "affectsr-x4-lite"), ("eyes_bar", "affectsr-x4-lite")]
    assert [(e["group"], e["model"], e["reference"], e["n"]) for e in d["vs_reference"]] == [
        ("none", "affectsr-x4-lite", "bicubic", 3), ("eyes_bar", "affectsr-x4-lite", "bicubic", 3)]
    assert [(e["group"], e["n"]) for e in d["vs_reference_by_group"]["gender"]] == [("female", 2), ("male", 1)]
    with open(out / "per_image.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 2 * 2
    for r in rows:  # on clean faces both agreements are the same comparison
        if r["occlusion"] == "none":
            assert r["agree"] == r["agree_clean"] and r["hr_pred"] == r["hr_clean_pred"]
    md = (out / "fairness.md").read_text()
    assert "affectsr fairness" in md and "(small)" in md and "skipped `gone`" in md
    assert Image.open(out / "occlusions.png").size == (128 * 2, 128)


@pytest.mark.slow
def test_bad_input_exits_2(report_run, data_root, tmp_path, capsys):
    _, out = report_run
    assert _cli(["--data-root", str(data_root), "--datasets", "tiny", "--out", str(out), "-q"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert _cli(["--data-root", str(data_root), "--datasets", "tiny", "--occlusions", "scarf", "--out",
                 str(tmp_path / "a"), "-q"]) == 2
    assert "scarf" in capsys.readouterr().err
    assert _cli(["--data-root", str(data_root), "--datasets", "nope", "--out", str(tmp_path / "b"), "-q"]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert _cli(["--data-root", str(data_root), "--datasets", "tiny", "--models", "gone=missing.safetensors",
                 "--out", str(tmp_path / "c"), "-q"]) == 2
    assert "no model left" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()
