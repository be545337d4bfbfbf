"""Emotion Consistency Loss: it pulls a degraded smiling face's expression back towards the HR face's."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from affectsr.emotion import EMOTIONS, EmotionConsistencyLoss, load_emotion_classifier
from affectsr.images import resize

HAPPY = EMOTIONS.index("happy")


@pytest.fixture(scope="module")
def loss() -> EmotionConsistencyLoss:
    return EmotionConsistencyLoss(load_emotion_classifier(), temperature=2.0, kl_weight=1.0, feature_weight=0.1)


def as_tensor(face: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(face).permute(2, 0, 1)[None].float() / 255.0


def probs(loss: EmotionConsistencyLoss, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(loss.classifier(x)[0], 1)[0]


def kl(p: torch.Tensor, q: torch.Tensor) -> float:
    return float((p * (p.clamp_min(1e-12).log() - q.clamp_min(1e-12).log())).sum())


def test_optimising_a_degraded_smile_restores_its_expression(loss, default_face):
    hr = as_tensor(default_face)
    degraded = as_tensor(resize(resize(default_face, (12, 12)), (128, 128)))  # a 12 px face, bicubic back up
    p_hr, p_start = probs(loss, hr), probs(loss, degraded)
    assert int(p_hr.argmax()) == HAPPY and float(p_start[HAPPY]) < 0.5  # the degradation loses the smile

    sr = degraded.clone().requires_grad_(True)
    opt = torch.optim.Adam([sr], lr=0.01)
    values = []
    for _ in range(6):
        value = loss(sr, hr)
        opt.zero_grad()
        value.backward()
        opt.step()
        with torch.no_grad():
            sr.clamp_(0, 1)
        values.append(float(value.detach()))
    final = float(loss(sr, hr).detach())
    p_end = probs(loss, sr)
    assert final < 0.5 * values[0]
    assert kl(p_hr, p_end) < 0.5 * kl(p_hr, p_start)
    assert float(p_end[HAPPY]) > float(p_start[HAPPY]) + 0.2
    assert float((sr.detach() - degraded).abs().mean()) < 0.05  # small pixel changes, not a new face


def test_gradients_reach_the_sr_image_only(loss):
    sr = torch.rand(2, 3, 64, 64, requires_grad=True)
    hr = torch.rand(2, 3, 128, 128, requires_grad=True)  # SR and HR sizes may differ
    terms = loss.terms(sr, hr)
    terms.total.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert hr.grad is None
    assert all(p.grad is None for p in loss.classifier.parameters())
    torch.testing.assert_close(terms.total, terms.kl + 0.1 * terms.feature)


def test_zero_for_identical_faces_and_weights_switch_terms(loss):
    x = torch.rand(3, 3, 48, 48)
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    only_features = EmotionConsistencyLoss(loss.classifier, kl_weight=0.0, feature_weight=1.0, feature_distance="cosine")
    y = torch.rand(3, 3, 48, 48)
    t = only_features.terms(y, x)
    torch.testing.assert_close(t.total, t.feature)


def test_stays_frozen_when_the_parent_trains(loss):
    parent = torch.nn.ModuleDict({"sr": torch.nn.Conv2d(3, 3, 1), "ecl": loss})
    parent.train()
    assert not loss.classifier.training
    assert not any(p.requires_grad for p in loss.classifier.parameters())


@pytest.mark.parametrize("kwargs", [dict(temperature=0), dict(kl_weight=-1), dict(feature_distance="l3")])
def test_bad_settings_are_refused(loss, kwargs):
    with pytest.raises(ValueError):
        EmotionConsistencyLoss(loss.classifier, **kwargs)
