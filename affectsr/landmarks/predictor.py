"""A learned landmark predictor: 478 face-mesh landmarks regressed from a tiny LR face.

MediaPipe finds faces in 24-32 px crops but rarely in 16 px ones (the x8 input), so the
landmark prior would vanish exactly where it is needed most. This small CNN regresses the
478 x 3 landmarks (x, y normalised to the crop, z as MediaPipe) directly from the LR crop; it
is trained against the landmarks MediaPipe found on the HR crop (normalised coordinates do not
depend on the scale), so the prior exists at every scale.

Routes (``landmarks=`` in :func:`get_landmarks`, and the proposed ``Upscaler(landmarks=...)``):
``detect`` (MediaPipe only; NaN when it finds nothing), ``predict`` (this network only), ``auto``
(detect, else predict).

Weights: ``affectsr/weights/affectsr-x4-lite.landmarks.safetensors`` (trained on 32 px inputs)
and ``affectsr-x8-lite.landmarks.safetensors`` (16 px); see :func:`default_predictor_path`.
Train with ``affectsr train-predictor`` (:mod:`affectsr.train.predictor`) and report NME with
``affectsr evaluate-predictor`` (:func:`affectsr.evaluate.predictor_nme`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..images import bicubic_down
from ..types import check_landmark_mode
from ..weights import load_state, make_config, read_weights, shipped, write_weights
from .detector import NUM_LANDMARKS
from .geometry import LEFT_EYE_OUTER, RIGHT_EYE_OUTER, nme

__all__ = ["PredictorConfig", "LandmarkPredictor", "load_predictor", "save_predictor", "predict_array",
           "default_predictor_path", "get_landmarks", "nme", "LEFT_EYE_OUTER", "RIGHT_EYE_OUTER"]



@dataclass(frozen=True)
class PredictorConfig:
    in_size: int = 32  # input side the network works at (any LR crop is resized to it)
    width: int = 32
    hidden: int = 256

    def to_dict(self) -> dict:
        return asdict(self)


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class LandmarkPredictor(nn.Module):
    """``B x 3 x h x w`` RGB in [0, 1] (any size, resized to ``in_size``) -> ``B x 478 x 3`` landmarks.

    A mean face shape (a buffer, set from the training data) plus a regressed offset; the
    output is differentiable in the input, so it can also serve as a landmark loss on SR faces.
    """

    def __init__(self, config: PredictorConfig = PredictorConfig()):
        super().__init__()
        self.config = c = config
        w = c.width
        stages, side, cin = [], c.in_size, 3
        for i, cout in enumerate((w, 2 * w, 4 * w, 4 * w)):
            stride = 1 if i == 0 else 2
            stages.append(_block(cin, cout, stride))
            side //= stride
            cin = cout
        self.features = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(cin * 16, c.hidden), nn.ReLU(inplace=True),
                                  nn.Linear(c.hidden, NUM_LANDMARKS * 3))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        self.register_buffer("mean_shape", torch.zeros(NUM_LANDMARKS, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.config.in_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=x.shape[-1] > s)
        f = self.pool(self.features((x - 0.5) * 2))
        return self.mean_shape + self.head(f).view(-1, NUM_LANDMARKS, 3) * 0.1


def save_predictor(model: LandmarkPredictor, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write fp16 weights + config atomically (:mod:`affectsr.weights`, kind ``landmarks``)."""
    return write_weights(model.state_dict(), path, "landmarks", model.config.to_dict(), metadata, half=True)


def load_predictor(path: str | Path, device: str | torch.device = "cpu") -> LandmarkPredictor:
    """A frozen predictor in eval mode from a weights file (no pickle)."""
    state, meta = read_weights(path, "landmarks")
    model = LandmarkPredictor(make_config(path, lambda d: PredictorConfig(**d), meta))
    load_state(model, state, path)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(device).eval()


def default_predictor_path(scale: int) -> Path | None:
    """The shipped predictor for LR faces of a ``scale`` model (x4: 32 px, x8: 16 px), if any."""
    return shipped(f"affectsr-x{scale}-lite.landmarks")


@torch.no_grad()
def predict_array(model: LandmarkPredictor, hr_or_lr: np.ndarray, scale: int | None = None, batch: int = 256,
                  device: str | torch.device = "cpu") -> np.ndarray:
    """N x H x W x 3 uint8 crops -> N x 478 x 3 float32. With ``scale``, the crops are HR and are
    bicubic-downscaled by it first (the LR the SR model sees)."""
    model = model.to(device).eval()
    out = []
    for i in range(0, len(hr_or_lr), batch):
        chunk = hr_or_lr[i:i + batch]
        if scale is not None:
            chunk = np.stack([bicubic_down(c, scale) for c in chunk])
        x = torch.from_numpy(np.ascontiguousarray(chunk)).permute(0, 3, 1, 2).float().div(255.0).to(device)
        out.append(model(x).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, NUM_LANDMARKS, 3), np.float32)


def get_landmarks(crop: np.ndarray, mode: str = "auto", detector=None, predictor: LandmarkPredictor | None = None
                  ) -> tuple[np.ndarray | None, str]:
    """Landmarks (478 x 3, normalised to ``crop``) of one uint8 face crop, and the route that gave them.

    ``mode``: 'detect' (MediaPipe), 'predict' (the learned predictor), 'auto' (detect, else predict).
    Returns (None, 'none') when nothing is available.
    """
    check_landmark_mode(mode)
    if mode in ("detect", "auto") and detector is not None:
        lms, found = detector.detect_landmarks([crop])
        if found[0]:
            return lms[0], "detect"
    if mode in ("predict", "auto") and predictor is not None:
        device = next(predictor.parameters()).device  # stay where the caller put it
        return predict_array(predictor, np.asarray(crop)[None], device=device)[0], "predict"
    return None, "none"

