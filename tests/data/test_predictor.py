"""The LR landmark predictor: shapes, save/load, routes, NME."""
from __future__ import annotations

import numpy as np
import torch

from affectsr.landmarks.predictor import (
    LandmarkPredictor,
    PredictorConfig,
    get_landmarks,
    load_predictor,
    nme,
    predict_array,
    save_predictor,
)


def test_forward_any_size_and_roundtrip(tmp_path, default_face):
    torch.manual_seed(0)
    m = LandmarkPredictor(PredictorConfig(in_size=16, width=8, hidden=32))
    m.mean_shape.uniform_(0.2, 0.8)
    for s in (16, 32, 48):
        assert m(torch.rand(2, 3, s, s)).shape == (2, 478, 3)
    p = save_predictor(m.eval(), tmp_path / "p.safetensors")
    m2 = load_predictor(p)
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(m.eval()(x), m2(x), atol=2e-3)  # fp16 storage
    out = predict_array(m2, default_face[None], scale=8)
    assert out.shape == (1, 478, 3) and np.isfinite(out).all()


def test_routes_and_nme(default_face):
    m = LandmarkPredictor(PredictorConfig(in_size=16, width=8, hidden=32)).eval()

    class NoFace:
        def detect_landmarks(self, crops):
            return np.full((1, 478, 3), np.nan, np.float32), np.zeros(1, bool)

    lm, route = get_landmarks(default_face[:16, :16], "auto", NoFace(), m)
    assert route == "predict" and lm.shape == (478, 3)
    assert get_landmarks(default_face[:16, :16], "detect", NoFace(), m) == (None, "none")
    t = np.random.default_rng(0).random((3, 478, 3)).astype(np.float32)
    assert np.allclose(nme(t, t), 0)
    shifted = t.copy()
    shifted[..., 0] += 0.01
    iod = np.linalg.norm(t[:, 263, :2] - t[:, 33, :2], axis=1)
    assert np.allclose(nme(shifted, t), 0.01 / iod, rtol=1e-4)
