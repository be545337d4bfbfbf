"""Presets, the model factory, and safetensors weights (round trip, metadata, atomic writes)."""
from __future__ import annotations

import json
import os
import stat
import sys

import pytest
import torch
from safetensors import safe_open

import affectsr.models.presets as presets
from affectsr.models.presets import PACKAGE_WEIGHTS
from affectsr.models import (
    PRESETS,
    AffectSRNet,
    ModelConfig,
    WeightsNotFoundError,
    count_params,
    create_model,
    list_models,
    load_model,
    save_weights,
)

from .test_rrdb import ESRGANRRDBNet

SMALL = dict(nf=16, nb=1, gc=8, gcn_dims=(8, 8), pooled_map=(4, 8))


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """An empty weights folder, so these tests stay valid once trained weights ship."""
    d = tmp_path / "weights"
    d.mkdir()
    monkeypatch.setattr("affectsr.weights.WEIGHTS_DIR", d)
    return d


def _trained_like(name="affectsr-x4", seed=0, **overrides) -> AffectSRNet:
    """A small model whose every parameter (zero-initialised proj included) is non-trivial."""
    torch.manual_seed(seed)
    model = create_model(name, **{**SMALL, **overrides})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


def _inputs(b=2, s=8):
    g = torch.Generator().manual_seed(1)
    return torch.rand(b, 3, s, s, generator=g), torch.rand(b, 478, 3, generator=g)


@pytest.mark.parametrize("prior", ["spatial", "pooled", "none"])
def test_save_load_round_trip_fp32_exact(tmp_path, prior):
    model = _trained_like(prior=prior)
    path = save_weights(model, tmp_path / "sub" / "m.safetensors", half=False)
    assert path == tmp_path / "sub" / "m.safetensors" and path.is_file()
    loaded = load_model(str(path))
    assert isinstance(loaded, AffectSRNet) and not loaded.training
    assert loaded.config == model.config
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    for k in sd:
        assert sd2[k].dtype == sd[k].dtype and torch.equal(sd2[k], sd[k]), k
    lr, lm = _inputs()
    with torch.no_grad():
        assert torch.equal(loaded(lr, lm), model(lr, lm))


def test_save_load_round_trip_fp16(tmp_path):
    model = _trained_like()
    path = save_weights(model, tmp_path / "m.safetensors")  # half=True is the default
    with safe_open(str(path), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    loaded = load_model(path)  # a Path works as well as a str
    sd, sd2 = model.state_dict(), loaded.state_dict()
    for k in sd:
        assert sd2[k].dtype == torch.float32, k  # loaded back as fp32
        torch.testing.assert_close(sd2[k], sd[k], rtol=1e-3, atol=1e-4)
    lr, lm = _inputs()
    with torch.no_grad():
        out, ref = loaded(lr, lm), model(lr, lm)
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)
    assert not torch.equal(out, ref)  # it really went through fp16


def test_metadata_holds_config(tmp_path):
    model = _trained_like(name="affectsr-x8", fusion="concat", splat_sigma=0.03)
    path = save_weights(model, tmp_path / "m.safetensors", metadata={"note": "hello"})
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "affectsr"
    assert meta["note"] == "hello"
    cfg = json.loads(meta["config"])
    assert cfg["scale"] == 8 and cfg["nf"] == 16 and cfg["fusion"] == "concat" and cfg["splat_sigma"] == 0.03
    assert cfg["gcn_dims"] == [8, 8] and cfg["in_size"] == 16
    assert ModelConfig(**cfg) == model.config
    assert presets.read_config(path) == model.config


def test_read_config_rejects_foreign_safetensors(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(p))
    with pytest.raises(ValueError, match="not an affectsr weights file"):
        load_model(str(p))


def test_save_is_atomic(tmp_path, monkeypatch):
    model = _trained_like()
    target = tmp_path / "m.safetensors"
    save_weights(model, target, half=False)
    save_weights(model, target, half=True)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"], "temp files left behind"
    good = target.read_bytes()

    # a write that dies half-way leaves the previous file intact and no temp file behind
    def broken_save_file(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("affectsr.weights.save_file", broken_save_file)
    with pytest.raises(OSError, match="disk full"):
        save_weights(model, target)
    assert target.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    monkeypatch.undo()
    load_model(str(target))  # still a valid file


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_saved_file_respects_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_weights(_trained_like(), tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_untrained_preset_raises_helpful_error(no_weights):
    with pytest.raises(WeightsNotFoundError) as exc:
        load_model("affectsr-x4")
    msg = str(exc.value)
    assert "affectsr-x4" in msg and "pretrained=False" in msg and ".safetensors" in msg
    assert isinstance(exc.value, FileNotFoundError)
    # every preset whose weights would be a file in affectsr/weights (not the pip-package ones) is untrained here
    assert all(not i.trained and i.weights is None for i in list_models() if i.name not in PACKAGE_WEIGHTS)


def test_unknown_names(no_weights, tmp_path):
    with pytest.raises(WeightsNotFoundError, match="nope"):
        load_model("nope")
    with pytest.raises(WeightsNotFoundError):
        load_model(str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="nope"):
        create_model("nope")
    with pytest.raises(ValueError):
        create_model("affectsr-x4", prior="nope")
    with pytest.raises(TypeError):
        create_model("affectsr-x4", not_a_field=1)


def test_untrained_preset_with_pretrained_false(no_weights):
    model = load_model("affectsr-x4-lite", pretrained=False)
    assert isinstance(model, AffectSRNet) and not model.training
    assert model.config == PRESETS["affectsr-x4-lite"][0]


def test_shipped_weights_are_found_and_loaded(no_weights):
    """A <preset>.safetensors in WEIGHTS_DIR makes the preset trained and load_model loads it."""
    model = _trained_like("affectsr-x4-lite", seed=3)
    save_weights(model, no_weights / "affectsr-x4-lite.safetensors", half=False)
    trained = {i.name: i.trained for i in list_models()}
    assert trained["affectsr-x4-lite"] and not trained["affectsr-x4"]
    loaded = load_model("affectsr-x4-lite")
    lr, lm = _inputs()
    with torch.no_grad():
        assert torch.equal(loaded(lr, lm), model(lr, lm))


def test_create_model_overrides():
    m = create_model("affectsr-x8", **SMALL)
    assert m.config.scale == 8 and m.config.nf == 16 and m.config.in_size == 16
    assert PRESETS["affectsr-x8"][0].nf == 64  # the preset itself is untouched
    assert m.backbone.nf == 16 and len(m.backbone.RRDB_trunk) == 1


def test_list_models_param_counts_match_real_instances():
    infos = list_models()
    assert [i.name for i in infos] == list(PRESETS)
    for info in infos:
        torch.manual_seed(0)
        real = create_model(info.name)
        n = sum(p.numel() for p in real.parameters())
        assert info.num_params == n == count_params(real), info.name
        assert all(p.device.type == "cpu" for p in real.parameters())
        del real
    counts = {i.name: i.num_params for i in infos}
    assert counts["affectsr-x4"] > counts["rrdb-x4"] > counts["affectsr-x4-lite"]
    assert counts["affectsr-x8"] > counts["rrdb-x8"] > counts["rrdb-x4"]


def test_rrdb_x4_is_published_esrgan_size():
    with torch.device("meta"):
        ref = ESRGANRRDBNet(3, 3, nf=64, nb=23, gc=32)
    n_ref = sum(p.numel() for p in ref.parameters())
    assert n_ref == 16_697_987
    counts = {i.name: i.num_params for i in list_models()}
    assert counts["rrdb-x4"] == n_ref
    # rrdb-x8 = rrdb-x4 + one 64->64 3x3 conv (upconv3)
    assert counts["rrdb-x8"] == n_ref + 64 * 64 * 9 + 64


def test_default_is_the_best_trained_preset_and_the_lite_is_the_fast_one(monkeypatch):
    """Issue 12: upscale/demo/video/serve take the full preset when its weights ship (best on every judged
    measure, docs/JUDGED.md), the -lite one when only it ships, and the untrained full preset otherwise."""
    from affectsr.models import presets

    assert presets.default_model(4) == "affectsr-x4" and presets.default_model(8) == "affectsr-x8"
    assert presets.fast_model(4) == "affectsr-x4-lite" and presets.fast_model(8) == "affectsr-x8-lite"
    real = presets.weights_path
    monkeypatch.setattr(presets, "weights_path", lambda n: None if n == "affectsr-x8" else real(n))
    assert presets.default_model(8) == "affectsr-x8-lite"
    monkeypatch.setattr(presets, "weights_path", lambda n: None)
    assert presets.default_model(8) == "affectsr-x8" and presets.fast_model(8) == "affectsr-x8"
