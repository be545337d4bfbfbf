"""Distillation: teacher outputs (full forward and from a trunk cache), the KD term on the right rows, and
``init_partial`` (a FAST prior started from a -lite file)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from affectsr.cli import main as cli
from affectsr.data.dataset import FaceCache, make_batch
from affectsr.data.trunk_cache import TrunkCacheConfig, build_trunk_cache
from affectsr.metrics import quantize
from affectsr.models import create_model, load_model, save_weights
from affectsr.models.presets import FAST, OLD_PRIOR
from affectsr.train import TrainConfig, train
from affectsr.train.loop import _build_model
from affectsr.train.teacher import FORMAT, TeacherOutputs, build_teacher_outputs
from affectsr.weights import WeightsError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST_ARGS = ";".join(f"{k}={v}" for k, v in FAST["affectsr-x4-lite"].items())


def _teacher_file(tmp_path: Path, seed: int = 1) -> Path:
    torch.manual_seed(seed)
    net = create_model("affectsr-x4-lite", residual=True)  # residual: a random net's output is near bicubic ...
    torch.nn.init.normal_(net.backbone.conv_last.weight, 0, 0.05)  # ... and (conv_last not zero) depends on its trunk
    return save_weights(net, tmp_path / f"teacher{seed}.safetensors", half=False)


def test_teacher_outputs_full_forward_and_from_a_trunk_cache(tiny_cache, tmp_path):
    teacher = _teacher_file(tmp_path)
    faces = FaceCache([str(tiny_cache)], split="train")
    out = tmp_path / "t.npz"
    stats = build_teacher_outputs(str(teacher), [str(tiny_cache)], out, indices=[5, 1, 2], progress=False)
    t = TeacherOutputs(out)
    assert stats["faces"] == 3 and t.meta["format"] == FORMAT and t.index.tolist() == [5, 1, 2]
    b = make_batch(faces, t.index, 4, "bicubic", landmarks="detect")
    with torch.no_grad():
        want = (quantize(load_model(str(teacher))(b.lr, b.landmarks)) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(t.sr, want)
    rows = t.rows_for(faces, 4)
    assert rows.tolist() == [-1, 1, 2, -1, -1, 0, -1, -1]
    with pytest.raises(ValueError, match="x4; the model is x8"):
        t.rows_for(faces, 8)

    # from a trunk cache of the teacher's own trunk: the same outputs (float16 features: within a level)
    tc = tmp_path / "trunk"
    build_trunk_cache(TrunkCacheConfig([str(tiny_cache)], 4, "train", stop_before=1, indices=[0, 3, 6]), tc,
                      backbone=load_model(str(teacher)).backbone, progress=False)
    via = build_teacher_outputs(str(teacher), [str(tiny_cache)], tmp_path / "v.npz", trunk_cache=str(tc),
                                progress=False)
    full = build_teacher_outputs(str(teacher), [str(tiny_cache)], tmp_path / "f.npz", indices=[0, 3, 6],
                                 progress=False)
    assert via["trunk_check_db"] >= 45 and full["trunk_check_db"] is None
    a, f = TeacherOutputs(tmp_path / "v.npz"), TeacherOutputs(tmp_path / "f.npz")
    assert a.index.tolist() == [0, 3, 6]
    assert np.abs(a.sr.astype(int) - f.sr.astype(int)).max() <= 1
    # another model's trunk is refused, on the command line too (one error line, exit 2)
    other = _teacher_file(tmp_path, seed=2)
    with pytest.raises(ValueError, match="do not fit the teacher's trunk"):
        build_teacher_outputs(str(other), [str(tiny_cache)], tmp_path / "x.npz", trunk_cache=str(tc), progress=False)
    assert cli(["cache-teacher", "--teacher", str(other), "--data", str(tiny_cache), "--trunk-cache", str(tc),
                "--out", str(tmp_path / "x.npz"), "-q"]) == 2
    assert not (tmp_path / "x.npz").exists()


def _perfect_teacher(cache: Path, path: Path, order: list[int]) -> Path:
    """Teacher outputs equal to the HR faces, stored in ``order`` (so a row mix-up shows)."""
    faces = FaceCache([str(cache)], split="train")
    meta = {"format": FORMAT, "teacher": "hr", "scale": 4, "split": "train", "caches": [str(cache)],
            "landmarks": "detect", "trunk_cache": ""}
    idx = np.asarray(order)
    np.savez(path, index=idx, path=faces.path[idx], sr=faces.hr[idx], meta=np.array(json.dumps(meta)))
    return path


def _cfg(cache: Path, out: Path, **kw) -> TrainConfig:
    base = dict(model="affectsr-x4-lite", data=(str(cache),), out=str(out), steps=3, batch_size=2, lr=1e-3, warmup=1,
                landmarks="hr", val_every=0, log_every=1, ckpt_every=100, threads=1, seed=3)
    return TrainConfig(**(base | kw))


def test_kd_term_reads_the_teacher_rows_of_the_batch(tiny_cache, tmp_path):
    n = len(FaceCache([str(tiny_cache)], split="train"))
    order = np.random.default_rng(0).permutation(n).tolist()
    teacher = _perfect_teacher(tiny_cache, tmp_path / "hr.npz", order)
    out = tmp_path / "run"
    train(_cfg(tiny_cache, out, teacher=str(teacher), lambda_kd=0.5, kd_batch=2), log=lambda *_: None)
    with open(out / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    for r in rows:  # every face has a teacher output equal to its HR: the KD term is the L1 term
        assert float(r["kd"]) == pytest.approx(float(r["l1"]), abs=2e-5)  # the log keeps 5 decimals
        assert float(r["loss"]) == pytest.approx(1.5 * float(r["l1"]), abs=3e-5)

    # a teacher for half the faces, no extra rows: the term covers only the batch rows that have one
    half = _perfect_teacher(tiny_cache, tmp_path / "half.npz", order[: n // 2])
    train(_cfg(tiny_cache, tmp_path / "run2", teacher=str(half), lambda_kd=1.0, steps=4, batch_size=4),
          log=lambda *_: None)
    with open(tmp_path / "run2" / "log.csv", newline="") as f:
        assert all(r["kd"] != "" for r in csv.DictReader(f))


def test_kd_settings_are_checked(tiny_cache, tmp_path):
    with pytest.raises(ValueError, match="need teacher="):
        train(_cfg(tiny_cache, tmp_path / "a", lambda_kd=1.0), log=lambda *_: None)
    teacher = _perfect_teacher(tiny_cache, tmp_path / "hr.npz", [0, 1])
    with pytest.raises(ValueError, match="kd_batch=3 is more than the 2"):
        train(_cfg(tiny_cache, tmp_path / "b", teacher=str(teacher), lambda_kd=1.0, kd_batch=3), log=lambda *_: None)
    with pytest.raises(ValueError, match="bicubic"):
        train(_cfg(tiny_cache, tmp_path / "c", teacher=str(teacher), lambda_kd=1.0, degradation="blind"),
              log=lambda *_: None)
    with pytest.raises(ValueError, match="not a teacher-outputs file"):
        train(_cfg(tiny_cache, tmp_path / "d", teacher=str(tmp_path / "nothing.npz"), lambda_kd=1.0),
              log=lambda *_: None)
    assert cli(["train", f"data={tiny_cache}", f"out={tmp_path / 'e'}", "lambda_kd=1", "threads=1"]) == 2


def test_init_partial_starts_a_fast_prior_from_a_lite_file(tmp_path):
    torch.manual_seed(5)
    lite = save_weights(create_model("affectsr-x4-lite", **OLD_PRIOR), tmp_path / "lite.safetensors", half=False)
    cfg = TrainConfig(model="affectsr-x4-lite", model_args=FAST_ARGS, init=str(lite))
    with pytest.raises(WeightsError, match="wrong shape"):  # the strict default refuses a partial fit
        _build_model(cfg)
    msgs: list[str] = []
    net = _build_model(TrainConfig(**(cfg.to_dict() | {"init_partial": True})), msgs.append)
    src, got = load_model(str(lite)).state_dict(), net.state_dict()
    loaded = [k for k in got if k in src and src[k].shape == got[k].shape]
    assert any(k.startswith("backbone.") for k in loaded) and any(k.startswith("prior.gcn") for k in loaded)
    for k in loaded:
        assert torch.equal(got[k], src[k]), k
    fresh = [k for k in got if k not in loaded]
    assert fresh and all(k.startswith("prior.") for k in fresh)  # the FAST prior's new heads and projections
    assert msgs and f"{len(fresh)} left fresh" in msgs[0]
    # init_skip leaves the fusions fresh too: zero-initialised projections, so the loaded backbone's output stands
    skip = _build_model(TrainConfig(**(cfg.to_dict() | {"init_partial": True, "init_skip": ("fusions.",)})))
    for k, v in skip.state_dict().items():
        if k.startswith("fusions.") and ".proj." in k:
            assert not v.any(), k
        elif k in loaded and not k.startswith("fusions."):
            assert torch.equal(v, src[k]), k
    with pytest.raises(WeightsError, match="none of its tensors fit"):
        _build_model(TrainConfig(model="srcnn-x4", init=str(lite), init_partial=True))
