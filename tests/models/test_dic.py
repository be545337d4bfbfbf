"""DIC baseline: shapes, recurrence, landmark attention wiring, aux supervision, learns, round trips."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from affectsr.images import resize
from affectsr.models.dic import DIC, DICConfig
from affectsr.models.heatmaps import NUM_KEYPOINTS

SMALL = {"nf": 16, "blocks": 1, "steps": 2, "part_nf": 4, "hg_nf": 16, "hourglass_depth": 1, "hr_nf": 8}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _small(scale: int = 4, seed: int = 0, perturb: bool = True, **kw) -> DIC:
    torch.manual_seed(seed)
    model = DIC(DICConfig(scale=scale, **{**SMALL, **kw})).eval()
    if perturb:  # zero-initialised tail and attention projection: make both do something
        with torch.no_grad():
            model.tail[-1].weight.normal_(0, 0.05)
            model.block.fusion.proj.weight.normal_(0, 0.2)
    return model


def _landmarks(b: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lm = torch.rand(b, 478, 3, generator=g)
    lm[..., :2] = 0.2 + 0.6 * lm[..., :2]
    return lm


def _bicubic(lr: torch.Tensor, scale: int) -> torch.Tensor:
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)


def test_config():
    cfg = DICConfig()
    assert DICConfig.arch == "dic" and "arch" not in cfg.to_dict()
    assert DICConfig(**cfg.to_dict()) == cfg
    for bad in ({"scale": 2}, {"scale": 3}, {"steps": 0}):
        with pytest.raises(ValueError):
            DICConfig(**bad)


@pytest.mark.parametrize("scale,in_size", [(4, 32), (8, 16)])
def test_default_model_size_and_shapes(scale, in_size):
    model = DIC(DICConfig(scale=scale, in_size=in_size)).eval()
    assert model.scale == scale and model.uses_landmarks is False and model.num_landmarks == 478
    assert 0.3e6 < sum(p.numel() for p in model.parameters()) < 1e6
    lr = torch.rand(1, 3, in_size, in_size)
    steps, side = model.config.steps, in_size * scale
    with torch.no_grad():
        sr, aux = model(lr, return_aux=True)
    assert sr.shape == (1, 3, side, side)
    assert aux["sr"].shape == (steps, 1, 3, side, side)
    assert aux["heatmaps"].shape == (steps, 1, NUM_KEYPOINTS, side // 4, side // 4)
    assert torch.equal(aux["sr"][-1], sr)
    torch.testing.assert_close(sr, _bicubic(lr, scale))  # a fresh model starts at bicubic


@pytest.mark.parametrize("scale", [4, 8])
@pytest.mark.parametrize("size", [(8, 8), (6, 10), (5, 7)])
def test_any_input_size(scale, size):
    model = _small(scale)
    with torch.no_grad():
        sr, aux = model(torch.rand(2, 3, *size), return_aux=True)
    h, w = size[0] * scale, size[1] * scale
    assert sr.shape == (2, 3, h, w) and torch.isfinite(sr).all()
    assert aux["heatmaps"].shape == (2, 2, NUM_KEYPOINTS, h // 4, w // 4)


def test_ignores_landmarks():
    model = _small()
    lr = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        base = model(lr)
        assert (base - _bicubic(lr, 4)).abs().max() > 1e-4
        assert torch.equal(model(lr, _landmarks(2)), base)
        assert torch.equal(model(lr, torch.full((2, 478, 3), float("nan"))), base)
        assert torch.equal(model(lr, None, return_aux=True)[0], base)  # inference skips only the last heatmaps


def test_bad_input_raises():
    model = _small()
    for bad in (torch.rand(3, 8, 8), torch.rand(1, 4, 8, 8)):
        with pytest.raises(ValueError):
            model(bad)


def test_heatmaps_steer_the_next_step_only():
    """Changing the landmark branch's output leaves SR_1 alone and changes SR_2 (attention)."""
    model = _small()
    lr = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        _, a = model(lr, return_aux=True)
        model.landmarks.head.weight.normal_(0, 1.0)
        _, b = model(lr, return_aux=True)
    assert torch.equal(a["sr"][0], b["sr"][0])
    assert (a["sr"][1] - b["sr"][1]).abs().max() > 1e-5


@pytest.mark.parametrize("detach", [False, True])
def test_sr_loss_reaches_landmark_branch_unless_detached(detach):
    model = _small(detach_attention=detach).train()
    sr = model(torch.rand(2, 3, 8, 8))  # the last SR only: no heatmap loss involved
    F.l1_loss(sr, torch.rand_like(sr)).backward()
    g = model.landmarks.head.weight.grad
    reached = g is not None and bool(g.abs().max() > 0)
    assert reached is (not detach)


def test_aux_loss_with_missing_landmarks():
    model = _small().train()
    lr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    lm = _landmarks(2)
    _, aux = model(lr, return_aux=True)
    full = model.aux_loss(aux, hr, lm)
    half_lm = lm.clone()
    half_lm[1] = float("nan")
    half = model.aux_loss(aux, hr, half_lm)
    none = model.aux_loss(aux, hr, torch.full_like(lm, float("nan")))
    mean_l1 = (F.l1_loss(aux["sr"][0], hr) + F.l1_loss(aux["sr"][1], hr)) / 2
    assert full.ndim == 0 and all(torch.isfinite(x) for x in (full, half, none))
    assert none.item() == pytest.approx(mean_l1.item(), rel=1e-6)  # every step's L1, no heatmap term
    assert full.item() > mean_l1.item() and half.item() > mean_l1.item()
    none.backward()
    assert model.tail[-1].weight.grad is not None


def test_training_steps_lower_the_loss(default_face):
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
    clone = DIC(model.config).eval()
    clone.load_state_dict(model.state_dict(), strict=True)
    lr = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(clone(lr), model(lr))
