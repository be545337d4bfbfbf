"""FSRNet baseline: shapes, starts at bicubic, ignores landmarks, aux supervision, learns, round trips."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from affectsr.images import resize
from affectsr.models.fsrnet import FSRNet, FSRNetConfig
from affectsr.models.heatmaps import NUM_KEYPOINTS

SMALL = {"nf": 16, "coarse_blocks": 1, "encoder_blocks": 1, "decoder_blocks": 1, "prior_nf": 16, "hourglass_depth": 1,
         "hr_nf": 8}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _small(scale: int = 4, seed: int = 0, perturb: bool = True) -> FSRNet:
    torch.manual_seed(seed)
    model = FSRNet(FSRNetConfig(scale=scale, **SMALL)).eval()
    if perturb:  # the zero-initialised last convs make a fresh model plain bicubic
        with torch.no_grad():
            for seq in (model.coarse, model.decoder):
                seq[-1].weight.normal_(0, 0.05)
    return model


def _landmarks(b: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lm = torch.rand(b, 478, 3, generator=g)
    lm[..., :2] = 0.2 + 0.6 * lm[..., :2]
    return lm


def _bicubic(lr: torch.Tensor, scale: int) -> torch.Tensor:
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)


def test_config():
    cfg = FSRNetConfig()
    assert FSRNetConfig.arch == "fsrnet" and "arch" not in cfg.to_dict()
    assert FSRNetConfig(**cfg.to_dict()) == cfg
    for bad in (2, 3, 16):
        with pytest.raises(ValueError):
            FSRNetConfig(scale=bad)


@pytest.mark.parametrize("scale,in_size", [(4, 32), (8, 16)])
def test_default_model_size_and_shapes(scale, in_size):
    model = FSRNet(FSRNetConfig(scale=scale, in_size=in_size)).eval()
    assert model.scale == scale and model.uses_landmarks is False and model.num_landmarks == 478
    assert 0.3e6 < sum(p.numel() for p in model.parameters()) < 1e6
    lr = torch.rand(1, 3, in_size, in_size)
    with torch.no_grad():
        sr, aux = model(lr, return_aux=True)
    side = in_size * scale
    assert sr.shape == (1, 3, side, side) and aux["coarse"].shape == (1, 3, side, side)
    assert aux["heatmaps"].shape == (1, NUM_KEYPOINTS, side // 4, side // 4)
    # a fresh model starts at bicubic (zero-initialised residuals)
    torch.testing.assert_close(sr, _bicubic(lr, scale))
    torch.testing.assert_close(aux["coarse"], _bicubic(lr, scale))


@pytest.mark.parametrize("scale", [4, 8])
@pytest.mark.parametrize("size", [(8, 8), (6, 10), (5, 7)])
def test_any_input_size(scale, size):
    model = _small(scale)
    with torch.no_grad():
        sr, aux = model(torch.rand(2, 3, *size), return_aux=True)
    h, w = size[0] * scale, size[1] * scale
    assert sr.shape == (2, 3, h, w) and torch.isfinite(sr).all()
    assert aux["heatmaps"].shape == (2, NUM_KEYPOINTS, h // 4, w // 4)


def test_ignores_landmarks():
    model = _small()
    lr = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        base = model(lr)
        assert (base - _bicubic(lr, 4)).abs().max() > 1e-4  # not trivially bicubic
        assert torch.equal(model(lr, _landmarks(2)), base)
        assert torch.equal(model(lr, torch.full((2, 478, 3), float("nan"))), base)
        assert torch.equal(model(lr, None, return_aux=True)[0], base)


def test_bad_input_raises():
    model = _small()
    for bad in (torch.rand(3, 8, 8), torch.rand(1, 1, 8, 8)):
        with pytest.raises(ValueError):
            model(bad)


def test_aux_loss_with_missing_landmarks():
    model = _small().train()
    lr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    lm = _landmarks(2)
    _, aux = model(lr, return_aux=True)
    full = model.aux_loss(aux, hr, lm)
    lm_half = lm.clone()
    lm_half[0] = float("nan")
    half = model.aux_loss(aux, hr, lm_half)
    none = model.aux_loss(aux, hr, torch.full_like(lm, float("nan")))
    assert full.ndim == 0 and all(torch.isfinite(x) for x in (full, half, none))
    coarse_l1 = F.l1_loss(aux["coarse"], hr)
    assert none.item() == pytest.approx(coarse_l1.item(), rel=1e-6)  # heatmap term drops out
    assert full.item() > coarse_l1.item() and half.item() > coarse_l1.item()
    none.backward()  # still differentiable with no landmarks at all
    assert model.coarse[-1].weight.grad is not None


def test_training_steps_lower_the_loss(default_face):
    """A few Adam steps on one tiny batch of the bundled face lower L1 + aux (coarse L1 + heatmaps)."""
    hr_np = resize(default_face, (32, 32))
    hr = torch.from_numpy(hr_np).permute(2, 0, 1)[None].float().div(255).repeat(2, 1, 1, 1)
    hr[1] = hr[1].flip(-1)
    lr = F.interpolate(hr, size=(8, 8), mode="area")
    lm = _landmarks(2, seed=3)
    model = _small(perturb=False, seed=1).train()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)

    def losses():
        sr, aux = model(lr, lm, return_aux=True)
        l1 = F.l1_loss(sr, hr)
        return l1, l1 + model.aux_loss(aux, hr, lm)

    with torch.no_grad():
        l1_start, start = (x.item() for x in losses())
    for _ in range(20):
        opt.zero_grad()
        losses()[1].backward()
        opt.step()
    with torch.no_grad():
        l1_end, end = (x.item() for x in losses())
    assert end < 0.85 * start, (start, end)
    assert l1_end < 0.97 * l1_start, "the SR output itself must improve on its bicubic start"


def test_state_dict_round_trip():
    model = _small(seed=2)
    clone = FSRNet(model.config).eval()
    clone.load_state_dict(model.state_dict(), strict=True)
    lr = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(clone(lr), model(lr))
