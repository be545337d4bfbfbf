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
Train with ``python -m affectsr.landmarks.predictor train`` and report NME with ``... nme``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..images import bicubic_down
from ..weights import read_weights, shipped, write_weights
from .detector import NUM_LANDMARKS

__all__ = ["PredictorConfig", "LandmarkPredictor", "load_predictor", "save_predictor", "predict_array",
           "default_predictor_path", "get_landmarks", "nme", "train_predictor", "LEFT_EYE_OUTER", "RIGHT_EYE_OUTER"]

RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263  # outer eye corners in MediaPipe's indexing (inter-ocular distance)


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
    model = LandmarkPredictor(PredictorConfig(**json.loads(meta["config"])))
    model.load_state_dict(state)
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
    if mode not in ("detect", "predict", "auto"):
        raise ValueError(f"landmarks mode must be detect, predict or auto, got {mode!r}")
    if mode in ("detect", "auto") and detector is not None:
        lms, found = detector.detect_landmarks([crop])
        if found[0]:
            return lms[0], "detect"
    if mode in ("predict", "auto") and predictor is not None:
        device = next(predictor.parameters()).device  # stay where the caller put it
        return predict_array(predictor, np.asarray(crop)[None], device=device)[0], "predict"
    return None, "none"


def nme(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-face NME: mean 2-D point error / inter-ocular distance (outer eye corners 33, 263 of ``target``)."""
    iod = np.linalg.norm(target[:, LEFT_EYE_OUTER, :2] - target[:, RIGHT_EYE_OUTER, :2], axis=1)
    err = np.linalg.norm(pred[..., :2] - target[..., :2], axis=2).mean(1)
    return err / np.maximum(iod, 1e-6)


# --- training ----------------------------------------------------------------------------------------


def train_predictor(data: list[str], scale: int, out: str | Path, steps: int = 1500, batch: int = 64, lr: float = 2e-3,
                    seed: int = 0, width: int = 32, threads: int = 0, log=print) -> dict:
    """Fit a predictor on the train split of prepared caches: LR (bicubic, x``scale``) -> HR-crop landmarks."""
    from affectsr.data.dataset import FaceCache
    from affectsr.data.degrade import bicubic_down

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    ds = FaceCache(data, split="train")
    ok = np.isfinite(ds.lm_hr).all(axis=(1, 2))
    hr, target = ds.hr[ok], ds.lm_hr[ok]
    lr_imgs = np.stack([bicubic_down(h, scale) for h in hr])
    x_all = torch.from_numpy(lr_imgs).permute(0, 3, 1, 2).float().div(255.0)
    y_all = torch.from_numpy(target).float()
    model = LandmarkPredictor(PredictorConfig(in_size=lr_imgs.shape[1], width=width))
    model.mean_shape.copy_(y_all.mean(0))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    t0 = time.time()
    model.train()
    wz = torch.tensor([1.0, 1.0, 0.1])
    for step in range(steps):
        idx = torch.randint(0, len(x_all), (batch,), generator=g)
        x, y = x_all[idx], y_all[idx]
        # photometric jitter only: geometric augmentation would need the mesh's left/right index map
        x = (x * (1 + 0.2 * (torch.rand(batch, 1, 1, 1, generator=g) - 0.5))
             + 0.1 * (torch.rand(batch, 1, 1, 1, generator=g) - 0.5)).clamp(0, 1)
        for pg in opt.param_groups:
            pg["lr"] = lr * 0.5 * (1 + np.cos(np.pi * step / steps))
        loss = ((model(x) - y).abs() * wz).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 100 == 0:
            log(f"predictor x{scale} step {step + 1}/{steps} loss {loss.item():.5f} ({time.time() - t0:.0f} s)")
    model.eval()
    meta = {"scale": str(scale), "steps": str(steps), "seed": str(seed), "train_images": str(len(x_all)),
            "train_seconds": f"{time.time() - t0:.0f}", "data": json.dumps([Path(d).name for d in data])}
    save_predictor(model, out, meta)
    return {"weights": str(out), "seconds": round(time.time() - t0, 1), "images": int(len(x_all))}


def evaluate_nme(data: list[str], scale: int, predictor: str | Path, split: str = "test") -> dict:
    """NME on ``split`` of detect (MediaPipe on the bicubic LR, cached by prepare) vs predict, against HR-crop landmarks."""
    from affectsr.data.dataset import FaceCache

    ds = FaceCache(data, split=split)
    ok = np.isfinite(ds.lm_hr).all(axis=(1, 2))
    target = ds.lm_hr[ok]
    det = ds.lr_landmarks(scale)[ok]
    found = np.isfinite(det).all(axis=(1, 2))
    pred = predict_array(load_predictor(predictor), ds.hr[ok], scale)
    e_det, e_pred = nme(det[found], target[found]), nme(pred, target)
    auto = np.where(found[:, None, None], det, pred)
    lr_side = ds.size // scale
    return {"scale": scale, "lr_side": lr_side, "split": split, "faces": int(ok.sum()),
            "detect_found": float(found.mean()), "nme_detect_on_found": float(e_det.mean()) if found.any() else None,
            "nme_predict_on_found": float(e_pred[found].mean()) if found.any() else None,
            "nme_predict_all": float(e_pred.mean()), "nme_auto_all": float(nme(auto, target).mean())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m affectsr.landmarks.predictor")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a predictor on prepared caches")
    t.add_argument("--data", nargs="+", required=True)
    t.add_argument("--scale", type=int, required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--steps", type=int, default=1500)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=0)
    e = sub.add_parser("nme", help="NME of detect vs predict on a split")
    e.add_argument("--data", nargs="+", required=True)
    e.add_argument("--scale", type=int, required=True)
    e.add_argument("--predictor", default="")
    e.add_argument("--split", default="test")
    e.add_argument("--json")
    a = p.parse_args(argv)
    if a.cmd == "train":
        print(train_predictor(a.data, a.scale, a.out, a.steps, a.batch, seed=a.seed, threads=a.threads))
        return 0
    pred = a.predictor or default_predictor_path(a.scale)
    if not pred:
        print(f"error: no predictor for x{a.scale}; pass --predictor", file=sys.stderr)
        return 2
    r = evaluate_nme(a.data, a.scale, pred, a.split)
    print(json.dumps(r, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
