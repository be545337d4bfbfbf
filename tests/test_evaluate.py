"""affectsr.metrics vs scikit-image, and `affectsr evaluate` end to end on a tiny folder."""
from __future__ import annotations

import csv
import json
import shlex

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from affectsr.assets import default_face
from affectsr.cli import main
from affectsr.emotion.classifier import TEACHER_CLASSIFIER
from affectsr.metrics import psnr_y, rgb_to_y, ssim_y, to_tensor


def _y_np(img: np.ndarray) -> np.ndarray:
    """BT.601 luma of uint8 RGB in float64, independently of affectsr.metrics."""
    x = img.astype(np.float64) / 255.0
    return x[..., 0] * 65.481 + x[..., 1] * 128.553 + x[..., 2] * 24.966 + 16.0


def _pair(seed: int = 0):
    rng = np.random.default_rng(seed)
    hr = default_face(64)
    sr = np.clip(hr.astype(int) + rng.integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)
    return hr, sr


@pytest.mark.parametrize("border", [0, 4, 8])
def test_psnr_ssim_match_skimage(border):
    hr, sr = _pair(border)
    yh, ys = _y_np(hr), _y_np(sr)
    if border:
        yh, ys = yh[border:-border, border:-border], ys[border:-border, border:-border]
    ref_p = peak_signal_noise_ratio(yh, ys, data_range=255)
    ref_s = structural_similarity(yh, ys, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    assert float(psnr_y(to_tensor(sr), to_tensor(hr), border)[0]) == pytest.approx(ref_p, abs=1e-3)
    assert float(ssim_y(to_tensor(sr), to_tensor(hr), border)[0]) == pytest.approx(ref_s, abs=1e-5)


def test_rgb_to_y_range():
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]).T.reshape(1, 3, 1, 2)
    y = rgb_to_y(x)
    assert y.flatten().tolist() == pytest.approx([16.0, 235.0])


@pytest.fixture(scope="module")
def face_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("faces")
    base = default_face(160)
    # three faces: as is, shifted, mirrored (padded onto a grey canvas so the detector sees a portrait)
    variants = [base, np.roll(base, (6, -5), axis=(0, 1)), base[:, ::-1]]
    for i, v in enumerate(variants):
        canvas = np.full((224, 224, 3), 127, np.uint8)
        canvas[32:192, 32:192] = v
        Image.fromarray(canvas).save(d / f"face{i}.png")
    return d


@pytest.fixture(scope="module")
def eval_run(face_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "out"
    argv = ["evaluate", "--model", "bicubic,affectsr-x4-lite,rrdb-x4,missing.safetensors", "--data",
            str(face_folder), "--scale", "4", "--out", str(out), "-q"]
    return main(argv), out, argv


@pytest.mark.slow
def test_end_to_end_files_and_keys(eval_run):
    rc, out, argv = eval_run
    assert rc == 0
    for f in ("per_image.csv", "summary.json", "run.json", "summary.md", "grid.png", "psnr_vs_ecm.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    s = json.loads((out / "summary.json").read_text())
    assert set(s) == {"bicubic", "affectsr-x4-lite"}  # summary.json maps model name -> metrics
    run = json.loads((out / "run.json").read_text())
    for m in s.values():
        assert {"psnr", "ssim", "ecm", "agreement", "nme", "accuracy_sr", "accuracy_hr", "n", "judge_ecm",
                "judge_agreement", "teacher_ecm", "teacher_agreement", "nme_mouth", "nme_eyes", "nme_brows",
                "identity_cosine", "identity_kept"} <= set(m)
        assert m["n"] == 3 and m["accuracy_sr"] is None  # a plain folder has no labels
        # the judge scores by default; the teacher is the second column; ecm/agreement are the judge's
        assert (m["judge"], m["teacher"]) == ("fer-judge-resnet", TEACHER_CLASSIFIER)
        assert (m["ecm"], m["agreement"]) == (m["judge_ecm"], m["judge_agreement"])
        assert 0 <= m["teacher_agreement"] <= 1 and m["teacher_ecm"] is not None
        # the same face at x4 through bicubic or SR stays the same person for dlib, and its regions are near
        assert m["identity_kept"] == 1.0 and m["identity_cosine"] > 0.9
        for k in ("nme_mouth", "nme_eyes", "nme_brows"):
            assert 0 < m[k] < 0.2
    # the distilled x4 -lite file records the classifier its emotion loss read (train's default, the teacher; the
    # 2026-11-30 fine-tune ran with the default of then, fer-teacher-vgg2)
    assert s["affectsr-x4-lite"]["trained_with"] == TEACHER_CLASSIFIER and s["bicubic"]["trained_with"] is None
    assert (run["judge"], run["teacher"]) == ("fer-judge-resnet", TEACHER_CLASSIFIER)
    for k in ("command", "machine", "date"):
        assert run[k]
    assert run["command"] == shlex.join(["affectsr", *argv])  # as typed
    # untrained preset and missing file: reported, not crashed
    assert "rrdb-x4" in run["skipped_models"] and "missing.safetensors" in run["skipped_models"]
    md = (out / "summary.md").read_text()
    assert "LPIPS: n/a (no offline weights)" in md and "skipped `rrdb-x4`" in md
    with open(out / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and {r["model"] for r in rows} == {"bicubic", "affectsr-x4-lite"}
    assert all(r["identity_cos"] and r["teacher_sr_pred"] and r["nme_mouth"] for r in rows)
    assert f"its emotion loss trained against `{TEACHER_CLASSIFIER}`" in md
    with Image.open(out / "grid.png") as g:
        assert g.size[0] == 128 * 4  # LR | bicubic | affectsr-x4-lite | HR
    # probs.npz: the FER distributions per face in per_image.csv's order; ECM recomputed from them is the summary's
    from affectsr.emotion import ecm

    with np.load(out / "probs.npz") as z:
        assert {"ids", "judge.hr", "judge.bicubic", "judge.affectsr-x4-lite", "teacher.hr", "teacher.bicubic"} <= set(z.files)
        assert list(z["ids"]) == [r["image"] for r in rows if r["model"] == "bicubic"]
        assert z["judge.hr"].shape == (3, 7) and np.allclose(z["judge.hr"].sum(1), 1, atol=1e-4)
        assert ecm(z["judge.hr"], z["judge.bicubic"]) == pytest.approx(s["bicubic"]["judge_ecm"], rel=1e-4, abs=1e-3)


@pytest.mark.slow
@pytest.mark.slow
def test_quality_check_reads_an_evaluation(eval_run, capsys):
    """tools/quality_check.py on a real evaluate folder: the paired table, ECM with an interval, a verdict as exit code."""
    import importlib.util
    from pathlib import Path

    tool = Path(__file__).resolve().parents[1] / "tools" / "quality_check.py"
    spec = importlib.util.spec_from_file_location("quality_check", tool)
    qc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(qc)
    _, out, _ = eval_run
    rc = qc.main([str(out), "--new", "bicubic", "--old", "bicubic"])
    text = capsys.readouterr().out
    assert rc == 0 and "| PSNR-Y (dB) |" in text and "+0.000 [+0.000, +0.000] | 3 |" in text
    assert "| ECM, judge (lower better) |" in text and "quality held" in text
    # the bar: a PSNR loss beyond the tolerance, or an agreement interval below 0, fails
    assert qc.verdict({"psnr": (30.0, -0.06, -0.1, -0.02, 9), "agree": (0.9, 0.0, -0.02, 0.02, 9)}, 0.05)[0] is False
    assert qc.verdict({"psnr": (30.0, -0.04, -0.1, 0.02, 9), "agree": (0.9, -0.03, -0.05, -0.01, 9)}, 0.05)[0] is False
    assert qc.verdict({"psnr": (30.0, -0.04, -0.1, 0.02, 9), "agree": (0.9, -0.01, -0.05, 0.01, 9),
                       "ecm_judge": (10.0, 1.0, -1.0, 3.0, 9)}, 0.05)[0] is True
    with pytest.raises(SystemExit):
        qc.main([str(out), "--new", "nope", "--old", "bicubic"])


def test_bicubic_psnr_matches_independent_computation(eval_run, face_folder):
    rc, out, _ = eval_run
    from affectsr.data.prepare import PrepareConfig, discover, process_image

    recs, _ = discover(face_folder)
    got = {r["image"]: float(r["psnr"]) for r in csv.DictReader(open(out / "per_image.csv")) if r["model"] == "bicubic"}
    for rec in recs:
        hr = process_image(rec, PrepareConfig(lr_scales=(4,)))["hr"]
        assert hr.shape == (128, 128, 3)
        lr = Image.fromarray(hr).resize((32, 32), Image.Resampling.BICUBIC)
        sr = np.asarray(lr.resize((128, 128), Image.Resampling.BICUBIC))
        yh, ys = _y_np(hr)[4:-4, 4:-4], _y_np(sr)[4:-4, 4:-4]
        assert got[rec.rel] == pytest.approx(peak_signal_noise_ratio(yh, ys, data_range=255), abs=1e-3)
    s = json.loads((out / "summary.json").read_text())
    assert s["bicubic"]["psnr"] == pytest.approx(np.mean(list(got.values())), abs=1e-3)


@pytest.mark.slow
def test_refuses_non_empty_out(eval_run, face_folder, capsys):
    _, out, _ = eval_run
    assert main(["evaluate", "--model", "bicubic", "--data", str(face_folder), "--scale", "4", "--out", str(out), "-q"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_only_untrained_models_is_an_error_not_a_crash(face_folder, tmp_path, capsys):
    rc = main(["evaluate", "--model", "rrdb-x4", "--data", str(face_folder), "--scale", "4", "--out",
               str(tmp_path / "o"), "-q"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no trained weights ship" in err and "no model left" in err


def test_the_judge_is_never_the_trainer(face_folder, tmp_path, capsys):
    """Every shipped affectsr model's emotion loss used fer-teacher-vgg (the full presets through a copy of it,
    recorded by content in their train_config) or the ensemble holding it, fer-teacher-vgg2 (the -lite fine-tunes of
    2026-11-30): neither may judge any of them."""
    for model, scale, judge in (("affectsr-x8-lite", "8", "fer-teacher-vgg"), ("affectsr-x4-lite", "4", "fer-teacher-vgg"),
                                ("affectsr-x8", "8", "fer-teacher-vgg"), ("affectsr-x8", "8", "fer-teacher-vgg2")):
        rc = main(["evaluate", "--model", f"bicubic,{model}", "--data", str(face_folder), "--scale", scale,
                   "--out", str(tmp_path / "o"), "--judge", judge, "--teacher", "none", "--no-identity", "-q"])
        assert rc == 2
        assert "emotion loss trained against" in capsys.readouterr().err
        assert not (tmp_path / "o").exists()


def test_judge_and_teacher_must_differ():
    from affectsr.emotion.classifier import load_fer_pair

    with pytest.raises(ValueError, match="judge must be a classifier no training loss used"):
        load_fer_pair("fer-teacher-vgg", "fer-teacher-vgg")
    judge, teacher = load_fer_pair("fer-teacher-vgg", "none")
    assert judge.name == "fer-teacher-vgg" and teacher is None


def test_a_fine_tune_of_the_trainer_counts_as_the_trainer():
    """A model trained against fer-mini-xception may not be judged by its fine-tune fer-mini-xception-ft (any
    spelling of the name), nor the other way round; another classifier is fine."""
    from affectsr.evaluate.core import _same_family

    assert _same_family("fer-mini-xception", "/x/fer-mini-xception-ft.safetensors")
    assert _same_family("fer-mini-xception-ft", "fer-mini-xception")
    assert not _same_family("fer-teacher-vgg", "fer-judge-resnet")


def test_an_ensemble_that_holds_the_trainer_counts_as_the_trainer():
    """fer-teacher-vgg2 averages fer-teacher-vgg (named by sha256 in its recipe): a model trained against either may
    not be judged by the other; the judge shares no member with them."""
    from affectsr.evaluate.core import _family, _same_family

    assert _family("fer-teacher-vgg2") == {"fer-teacher-vgg2", "fer-teacher-vgg"}
    assert _same_family("fer-teacher-vgg2", "fer-teacher-vgg") and _same_family("fer-teacher-vgg", "fer-teacher-vgg2")
    assert not _same_family("fer-teacher-vgg2", "fer-judge-resnet")
