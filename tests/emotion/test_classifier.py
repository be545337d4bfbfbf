"""The shipped FER classifier: interface, frozen-ness, gradients, TF-style pooling, and a real face."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from affectsr.emotion import (
    EMOTIONS,
    EmotionClassifier,
    MiniXception,
    load_emotion_classifier,
    to_model_input,
)
from affectsr.emotion.classifier import _same_pad_max_pool
from affectsr.weights import WEIGHTS_DIR


@pytest.fixture(scope="module")
def clf() -> EmotionClassifier:
    return load_emotion_classifier()


def face_tensor(face: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(face).permute(2, 0, 1)[None].float() / 255.0


def test_label_order_is_explicit(clf):
    assert EMOTIONS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert clf.labels == EMOTIONS


def test_shipped_weights_have_a_model_card_with_provenance():
    files = sorted(WEIGHTS_DIR.glob("fer-*.safetensors"))
    assert files, "no fer-*.safetensors shipped"
    for f in files:
        card = f.with_suffix(".md")
        assert card.is_file(), f"{f.name} has no model card"
        text = card.read_text()
        assert "MIT" in text and "FER2013" in text and "accuracy" in text.lower()


@pytest.mark.parametrize("shape", [(2, 3, 48, 48), (1, 3, 128, 128), (3, 3, 37, 53), (2, 1, 64, 64)])
def test_any_size_rgb_or_grey_gives_logits_and_features(clf, shape):
    logits, feats = clf(torch.rand(shape))
    assert logits.shape == (shape[0], 7)
    assert feats.shape == (shape[0], 128, 4, 4)
    assert torch.isfinite(logits).all()


def test_rgb_and_its_grey_version_agree(clf):
    rgb = torch.rand(2, 3, 48, 48)
    grey = (rgb * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    torch.testing.assert_close(clf(rgb)[0], clf(grey)[0], atol=1e-5, rtol=1e-5)


def test_frozen_and_always_in_eval_mode(clf):
    assert all(not p.requires_grad for p in clf.parameters())
    parent = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), clf)
    parent.train()
    assert not clf.training and not any(m.training for m in clf.modules())
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    clf(torch.rand(4, 3, 48, 48))  # BatchNorm must not update running statistics
    for k, v in clf.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_differentiable_with_respect_to_the_input_only(clf):
    x = torch.rand(2, 3, 96, 96, requires_grad=True)
    logits, feats = clf(x)
    (logits[:, 3].sum() + feats.mean()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in clf.parameters())


def test_input_errors_are_clear(clf):
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        clf(torch.rand(2, 4, 48, 48))
    with pytest.raises(TypeError, match="float"):
        clf(torch.zeros(1, 3, 48, 48, dtype=torch.uint8))
    with pytest.raises(FileNotFoundError, match="shipped"):
        load_emotion_classifier("fer-does-not-exist")


def test_preprocessing_matches_the_keras_recipe():
    # Keras recipe: grey 48 px -> bilinear (OpenCV INTER_LINEAR = half-pixel centres) 64 px -> (x/255 - 0.5) * 2
    grey = torch.randint(0, 256, (1, 1, 48, 48)).float()
    expected = (F.interpolate(grey, size=64, mode="bilinear", align_corners=False) / 255.0 - 0.5) * 2.0
    torch.testing.assert_close(to_model_input(grey / 255.0, 64), expected, atol=1e-6, rtol=0)


def _tf_same_max_pool_reference(x: np.ndarray, k: int = 3, s: int = 2) -> np.ndarray:
    """TensorFlow 'same' max pooling written out: out = ceil(n / s), extra padding after, pads never win."""
    n = x.shape[-1]
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    before = total // 2
    y = np.empty(x.shape[:-2] + (out, out), x.dtype)
    for i in range(out):
        for j in range(out):
            r0, c0 = i * s - before, j * s - before
            win = x[..., max(r0, 0):min(r0 + k, n), max(c0, 0):min(c0 + k, n)]
            y[..., i, j] = win.max(axis=(-1, -2))
    return y


@pytest.mark.parametrize("n", [60, 30, 15, 8, 7])
def test_same_padding_max_pool_matches_tensorflow_semantics(n):
    x = torch.randn(2, 3, n, n)
    np.testing.assert_allclose(_same_pad_max_pool(x).numpy(), _tf_same_max_pool_reference(x.numpy()), rtol=0, atol=0)


def test_feature_map_sizes_follow_keras():
    net = MiniXception().eval()
    logits, feats = net(torch.zeros(1, 1, 64, 64))
    assert feats.shape == (1, 128, 4, 4) and logits.shape == (1, 7)
    assert sum(p.numel() for p in net.parameters()) < 70_000  # mini-Xception: ~58k parameters


def test_bundled_smiling_face_is_happy(clf, default_face):
    p = torch.softmax(clf(face_tensor(default_face))[0], 1)[0]
    assert EMOTIONS[int(p.argmax())] == "happy"
    assert float(p[EMOTIONS.index("happy")]) > 0.5


def test_predict_proba_batches_and_sums_to_one(clf):
    p = clf.predict_proba(torch.rand(5, 3, 48, 48), batch_size=2)
    assert p.shape == (5, 7)
    torch.testing.assert_close(p.sum(1), torch.ones(5))
