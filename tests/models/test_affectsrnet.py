"""AffectSRNet: preset shapes, missing landmarks, learning through the zero-initialised fusion, splatting."""
from __future__ import annotations

import math

import pytest
import torch

from affectsr.models import PRESETS, AffectSRNet, ModelConfig, create_model, list_models
from affectsr.models.prior import gaussian_splat

SMALL = dict(nf=16, nb=1, gc=8, gcn_dims=(8, 8), pooled_map=(4, 8))
# (LR side -> SR side) the presets are documented for
EXPECTED_SIZES = {4: [(32, 128), (64, 256)], 8: [(16, 128), (32, 256)]}


def _landmarks(b: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lm = torch.rand(b, 478, 3, generator=g)
    lm[..., :2] = 0.2 + 0.6 * lm[..., :2]  # a face inside the crop
    lm[..., 2] = (lm[..., 2] - 0.5) * 0.1  # MediaPipe z: small, signed
    return lm


def _small(prior="spatial", fusion="msaf", scale=4, seed=0) -> AffectSRNet:
    torch.manual_seed(seed)
    return AffectSRNet(ModelConfig(scale=scale, prior=prior, fusion=fusion, **SMALL)).eval()


def _perturb_fusion(model: AffectSRNet, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for f in model.fusions:
            f.proj.weight.copy_(torch.randn(f.proj.weight.shape, generator=g) * 0.1)
            f.proj.bias.copy_(torch.randn(f.proj.bias.shape, generator=g) * 0.1)


# --------------------------------------------------------------------------------- presets
def test_list_models_covers_presets():
    infos = list_models()
    assert [i.name for i in infos] == list(PRESETS)
    for i in infos:
        assert i.config == PRESETS[i.name][0]
        assert i.config.in_size * i.config.scale == 128


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if getattr(PRESETS[n][0], "nf", 0) == 64 else n
                                  for n in PRESETS])  # the full nf64 nb23 presets take tens of seconds on a CPU
def test_preset_output_shapes(name):
    cfg = PRESETS[name][0]
    model = create_model(name).eval()
    assert model.config == cfg and model.scale == cfg.scale
    sizes = [cfg.in_size, 2 * cfg.in_size]
    assert [(s, s * cfg.scale) for s in sizes] == EXPECTED_SIZES[cfg.scale]
    b = 2 if name.endswith("lite") else 1
    with torch.no_grad():
        for s in sizes:
            lr = torch.rand(b, 3, s, s)
            out = model(lr, _landmarks(b))
            assert out.shape == (b, 3, s * cfg.scale, s * cfg.scale)
            assert torch.isfinite(out).all()


@pytest.mark.parametrize("prior", ["spatial", "pooled", "none"])
@pytest.mark.parametrize("scale", [2, 4, 8])
def test_non_square_input(prior, scale):
    model = _small(prior, scale=scale)
    _perturb_fusion(model) if model.fusions is not None else None
    with torch.no_grad():
        out = model(torch.rand(2, 3, 6, 10), _landmarks(2))
    assert out.shape == (2, 3, 6 * scale, 10 * scale)


def test_fresh_model_equals_backbone():
    for prior in ("spatial", "pooled"):
        model = _small(prior)
        lr = torch.rand(2, 3, 8, 8)
        with torch.no_grad():
            assert torch.equal(model(lr, _landmarks(2)), model.backbone(lr))


# ------------------------------------------------------------------------- missing landmarks
@pytest.mark.parametrize("prior", ["spatial", "pooled"])
@pytest.mark.parametrize("fusion", ["msaf", "concat"])
def test_missing_landmarks_use_image_path(prior, fusion):
    model = _small(prior, fusion)
    _perturb_fusion(model)
    lr = torch.rand(2, 3, 8, 8)
    lm = _landmarks(2)
    with torch.no_grad():
        base = model.backbone(lr)
        assert torch.equal(model(lr, None), base)
        assert torch.equal(model(lr), base)
        nan = torch.full_like(lm, float("nan"))
        assert torch.equal(model(lr, nan), base)
        one_bad = lm.clone()
        one_bad[:, 100, 1] = float("nan")  # one missing coordinate makes the whole face missing
        assert torch.equal(model(lr, one_bad), base)
        inf = lm.clone()
        inf[:, 5, 0] = float("inf")
        assert torch.equal(model(lr, inf), base)
        with_prior = model(lr, lm)
    assert torch.isfinite(with_prior).all()
    assert (with_prior - base).abs().amax(dim=(1, 2, 3)).min() > 1e-4, "valid faces must use the prior"


@pytest.mark.parametrize("prior", ["spatial", "pooled"])
def test_mixed_batch_rows_are_independent(prior):
    model = _small(prior)
    _perturb_fusion(model)
    lr = torch.rand(3, 3, 8, 8)
    lm = _landmarks(3)
    lm[1] = float("nan")
    with torch.no_grad():
        out = model(lr, lm)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out[0:1], model(lr[0:1], lm[0:1]), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[1:2], model.backbone(lr[1:2]), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[2:3], model(lr[2:3], lm[2:3]), atol=1e-5, rtol=1e-5)
        assert (out[0] - model.backbone(lr[0:1])[0]).abs().max() > 1e-4
        # moving face 0's landmarks changes face 0 only
        lm2 = lm.clone()
        lm2[0, :, :2] = lm2[0, :, :2] * 0.5
        out2 = model(lr, lm2)
        assert (out2[0] - out[0]).abs().max() > 1e-5
        torch.testing.assert_close(out2[1:], out[1:], atol=1e-5, rtol=1e-5)


def test_wrong_landmark_shape_raises():
    model = _small("spatial")
    lr = torch.rand(2, 3, 8, 8)
    for bad in (torch.rand(2, 468, 3), torch.rand(2, 478, 2), torch.rand(3, 478, 3), torch.rand(1, 478, 3),
                torch.rand(478, 3), torch.rand(2, 478, 3, 1)):
        with pytest.raises(ValueError):
            model(lr, bad)


# ------------------------------------------------------------------------------- learning
@pytest.mark.parametrize("prior,fusion", [("spatial", "msaf"), ("pooled", "msaf"), ("spatial", "concat")])
def test_prior_learns_through_zero_init(prior, fusion):
    model = _small(prior, fusion, seed=5).train()
    prior_params = dict(model.prior.named_parameters(prefix="prior"))
    if fusion == "msaf":
        for i, f in enumerate(model.fusions):
            prior_params.update(f.fuse.named_parameters(prefix=f"fusions.{i}.fuse"))
    proj_params = {f"fusions.{i}.proj.weight": f.proj.weight for i, f in enumerate(model.fusions)}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    lr = torch.rand(2, 3, 8, 8, generator=g)
    hr = torch.rand(2, 3, 32, 32, generator=g)
    lm = _landmarks(2, seed=1)
    lm_other = _landmarks(2, seed=2)

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.l1_loss(model(lr, lm), hr)
        loss.backward()
        return loss

    step()
    # step 1: zero-initialised proj blocks the gradient into the prior, but proj itself learns
    for name, p in prior_params.items():
        assert p.grad is None or not p.grad.any(), f"{name} got a gradient through a zero proj"
    for name, p in proj_params.items():
        assert p.grad is not None and p.grad.abs().max() > 0, name
    opt.step()
    with torch.no_grad():
        model.eval()
        a, b_ = model(lr, lm), model(lr, lm_other)
        base = model.backbone(lr)
        model.train()
    assert (a - b_).abs().max() > 1e-5, "after one step the output must depend on the landmarks"
    assert (a - base).abs().max() > 1e-5

    step()
    # step 2: every parameter of the prior path now receives a gradient
    for name, p in prior_params.items():
        assert p.grad is not None and p.grad.abs().max() > 0, f"{name} gets no gradient at step 2"


# ---------------------------------------------------------------------------- gaussian_splat
def _direct_splat(nodes, xy, size, sigma):
    b, n, c = nodes.shape
    h, w = size
    ys = (torch.arange(h, dtype=torch.float64) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float64) + 0.5) / w
    d2 = (ys.view(1, 1, h, 1) - xy[..., 1].double().view(b, n, 1, 1)) ** 2 + (
        xs.view(1, 1, 1, w) - xy[..., 0].double().view(b, n, 1, 1)
    ) ** 2
    g = torch.exp(-d2 / (2 * sigma**2))  # B x N x H x W
    maps = torch.einsum("bnc,bnhw->bchw", nodes.double(), g)
    return maps, g.sum(1)


@pytest.mark.parametrize("size,peak", [((10, 6), (7, 1)), ((6, 10), (4, 2)), ((20, 20), None)])
def test_gaussian_splat_single_node_peak(size, peak):
    sigma = 0.1
    nodes = torch.ones(1, 1, 1)
    xy = torch.tensor([[[0.25, 0.75]]])  # x (width) = 0.25, y (height) = 0.75
    out = gaussian_splat(nodes, xy, size, sigma)
    h, w = size
    assert out.shape == (1, 2, h, w)
    feat, dens = out[0, 0], out[0, 1]
    flat = int(feat.argmax())
    row, col = divmod(flat, w)
    if peak is None:  # 0.25 / 0.75 fall between pixel centres: peak on the 2x2 block around them
        assert row in (h * 3 // 4 - 1, h * 3 // 4) and col in (w // 4 - 1, w // 4)
    else:
        assert (row, col) == peak
        assert feat[row, col].item() == pytest.approx(1.0, abs=1e-6)  # the node sits on a pixel centre
        # one pixel down: distance 1/h in normalised units, sigma is a fraction of the side
        assert feat[row - 1, col].item() == pytest.approx(math.exp(-((1 / h) ** 2) / (2 * sigma**2)), rel=1e-5)
        assert feat[row, col + 1].item() == pytest.approx(math.exp(-((1 / w) ** 2) / (2 * sigma**2)), rel=1e-5)
    torch.testing.assert_close(dens, feat)  # one node with feature 1: density == the Gaussian


@pytest.mark.parametrize("size", [(7, 9), (16, 16)])
def test_gaussian_splat_matches_direct_sum(size):
    g = torch.Generator().manual_seed(0)
    b, n, c, sigma = 2, 13, 5, 0.07
    nodes = torch.randn(b, n, c, generator=g)
    xy = torch.rand(b, n, 2, generator=g)
    out = gaussian_splat(nodes, xy, size, sigma)
    maps, dens = _direct_splat(nodes, xy, size, sigma)
    assert out.shape == (b, c + 1, *size)
    torch.testing.assert_close(out[:, :c].double(), maps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, c].double(), dens, atol=1e-5, rtol=1e-5)
    # the batch rows do not mix
    torch.testing.assert_close(gaussian_splat(nodes[1:], xy[1:], size, sigma), out[1:])


@pytest.mark.parametrize("prior", ["spatial", "none"])
def test_residual_starts_at_bicubic_and_default_is_off(prior):
    """``residual=True`` (the global bicubic skip) starts exactly at torch bicubic; the default keeps old weights' output."""
    assert ModelConfig().residual is False
    torch.manual_seed(0)
    model = AffectSRNet(ModelConfig(scale=4, prior=prior, residual=True, **SMALL)).eval()
    lr = torch.rand(2, 3, 8, 8)
    bicubic = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
    with torch.no_grad():
        assert torch.equal(model(lr, _landmarks(2)), bicubic)
        plain = AffectSRNet(ModelConfig(scale=4, prior=prior, **SMALL)).eval()
        plain.load_state_dict(model.state_dict())
        # the same weights without the skip: the network's own output, which the skip adds to bicubic
        assert torch.allclose(model(lr, _landmarks(2)) - bicubic, plain(lr, _landmarks(2)), atol=1e-6)
        # the split forward (trunk, then head) is the forward
        bb = model.backbone
        assert torch.equal(bb.head(bb.trunk(lr)), bb(lr))
