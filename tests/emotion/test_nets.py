"""FER bodies built by ``ClassifierConfig.arch``: shapes, gradients, frozen wrapper, old files unchanged, teacher vs judge."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from affectsr.emotion.classifier import (
    ARCHS,
    EMOTIONS,
    JUDGE_CLASSIFIER,
    TEACHER_CLASSIFIER,
    WEIGHTS_DIR,
    ClassifierConfig,
    EmotionClassifier,
    build_net,
    load_emotion_classifier,
    save_classifier_weights,
)
from affectsr.emotion.data import DATA_ENV, default_data_root, load_aligned, read_labels

SMALL = {
    "mini_xception": ClassifierConfig(),
    "vgg": ClassifierConfig(arch="vgg", input_size=40, widths=(8, 16, 32), depths=(2, 1, 1), bn_eps=1e-5, dropout=0.3),
    "resnet": ClassifierConfig(arch="resnet", input_size=40, widths=(8, 16, 32), depths=(1, 2, 1), stem=8, bn_eps=1e-5, dropout=0.3),
}
FEATURE_SIDE = {"mini_xception": 4, "vgg": 10, "resnet": 10}  # 64 px / 16; 40 px / 4 (two 2x downsamplings)


def test_every_arch_has_a_small_config():
    assert set(SMALL) == set(ARCHS)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_arch_returns_logits_and_penultimate_features(arch):
    config = SMALL[arch]
    net = build_net(config).eval()
    s = config.input_size
    logits, feats = net(torch.rand(3, 1, s, s) * 2 - 1)
    side = FEATURE_SIDE[arch]
    assert logits.shape == (3, 7) and feats.shape == (3, config.widths[-1], side, side)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_wrapped_arch_is_frozen_and_differentiable_in_its_input(arch, tmp_path):
    torch.manual_seed(0)
    net = build_net(SMALL[arch])
    path = save_classifier_weights(net, tmp_path / f"{arch}.safetensors")
    clf = load_emotion_classifier(str(path))
    assert clf.config == SMALL[arch] and clf.config.arch == arch
    assert all(not p.requires_grad for p in clf.parameters())
    torch.nn.Sequential(torch.nn.Identity(), clf).train()
    assert not any(m.training for m in clf.modules())
    x = torch.rand(2, 3, 77, 77, requires_grad=True)  # any size, colour
    logits, feats = clf(x)
    (logits[:, 3].sum() + feats.mean()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in clf.parameters())
    net.eval()
    ref = EmotionClassifier(net)(x.detach())
    torch.testing.assert_close(clf(x.detach())[0], ref[0])  # the file round-trips the weights and the config


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="unknown classifier arch 'alexnet'"):
        build_net(ClassifierConfig(arch="alexnet"))
    with pytest.raises(ValueError, match="depths"):
        build_net(ClassifierConfig(arch="vgg", widths=(8, 16), depths=(1,)))


@pytest.mark.parametrize("name, expected", [
    # logits for a seeded 2 x 3 x 56 x 56 input, recorded with the code before `arch` existed (main at b9a1f0b)
    ("fer-mini-xception", [[1.3262, -6.2629, 1.4003, 2.6813, 3.0643, -1.8199, -0.9759],
                           [0.4072, -5.4004, 0.9571, 2.6334, 3.2902, -0.998, -0.5953]]),
    ("fer-mini-xception-ft", [[1.6001, -4.9404, 0.5258, 1.0844, 2.3778, -0.5537, -0.9777],
                              [1.35, -4.3945, -0.074, 1.1224, 3.2115, -1.2775, -0.5865]]),
])
def test_old_weights_files_load_with_unchanged_outputs(name, expected):
    clf = load_emotion_classifier(name)
    assert clf.config.arch == "mini_xception"
    x = torch.rand(2, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    logits, feats = clf(x)
    torch.testing.assert_close(logits, torch.tensor(expected), atol=2e-4, rtol=0)
    assert feats.shape == (2, 128, 4, 4)
