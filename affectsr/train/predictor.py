"""Training the LR landmark predictor (``affectsr train-predictor``) on prepared caches."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..data.dataset import FaceCache
from ..images import bicubic_down
from ..landmarks.predictor import LandmarkPredictor, PredictorConfig, save_predictor

__all__ = ["train_predictor"]


def train_predictor(data: list[str], scale: int, out: str | Path, steps: int = 1500, batch: int = 64, lr: float = 2e-3,
                    seed: int = 0, width: int = 32, threads: int = 0, log=print) -> dict:
    """Fit a predictor on the train split of prepared caches: LR (bicubic, x``scale``) -> HR-crop landmarks."""
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
