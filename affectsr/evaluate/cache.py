"""Scores on prepared caches: the raw network on cache batches (training's validation and
``affectsr evaluate-cache``) and the landmark predictor's NME (``affectsr evaluate-predictor``).

:func:`score_cache` feeds the network the cache's batches directly, as training does: no replicate
padding, the cache's landmarks (including the HR-crop oracle 'hr'), batches of 32. So its numbers
compare with the validation curves of a run and with the model cards. ``affectsr evaluate``
(:func:`~affectsr.evaluate.core.run_evaluation`) instead measures what the pipeline gives users
(padded crops, landmark NME on the SR faces) on any folder; both score with the same metrics
(:mod:`affectsr.metrics`, :func:`~affectsr.evaluate.core.fer_summary`).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..data.dataset import FaceCache, make_batch
from ..emotion import EmotionClassifier, load_emotion_classifier
from ..landmarks.predictor import default_predictor_path, load_predictor, nme, predict_array
from ..metrics import psnr_y, quantize, ssim_y
from ..models import load_model
from ..types import LANDMARK_SOURCES, SRModel, check_landmark_mode
from .core import bicubic_batch, fer_probs, fer_summary

__all__ = ["default_predictor", "evaluate_cache", "format_cache_eval", "predictor_nme", "score_cache"]


@torch.no_grad()
def score_cache(model: SRModel, cache: FaceCache, index: np.ndarray, scale: int, landmarks: str, device: torch.device,
                classifier: EmotionClassifier | None = None, bicubic: bool = True, batch: int = 32
                ) -> dict[str, torch.Tensor]:
    """Per-image scores of ``model`` (and bicubic) on cache rows ``index``, LR = bicubic /``scale``.

    Keys: ``psnr``, ``ssim`` (Y channel, ``scale`` border), with ``bicubic`` also ``bpsnr``, ``bssim``,
    and with a ``classifier`` the FER probabilities ``p_hr``, ``p_sr`` (and ``p_bic``); CPU tensors.
    """
    res: dict[str, list[torch.Tensor]] = {}

    def add(key: str, value: torch.Tensor) -> None:
        res.setdefault(key, []).append(value.cpu())

    for i in range(0, len(index), batch):
        b = make_batch(cache, index[i:i + batch], scale, "bicubic", 0, 0, landmarks).to(device)
        sr = quantize(model(b.lr, b.landmarks).float().clamp(0, 1))
        add("psnr", psnr_y(sr, b.hr, scale))
        add("ssim", ssim_y(sr, b.hr, scale))
        if bicubic:
            bic = bicubic_batch(b.lr, scale).to(device)
            add("bpsnr", psnr_y(bic, b.hr, scale))
            add("bssim", ssim_y(bic, b.hr, scale))
        if classifier is not None:
            add("p_hr", fer_probs(classifier, b.hr))
            add("p_sr", fer_probs(classifier, sr))
            if bicubic:
                add("p_bic", fer_probs(classifier, bic))
    return {k: torch.cat(v) for k, v in res.items()}


def default_predictor(scale: int) -> str:
    """The shipped landmark predictor for ``scale``; FileNotFoundError when none ships."""
    p = default_predictor_path(scale)
    if p is None:
        raise FileNotFoundError(f"no landmark predictor ships for x{scale}; pass --predictor")
    return str(p)


def _summary(s: dict[str, np.ndarray], m: np.ndarray) -> dict:
    return {"model": {"psnr": float(s["psnr"][m].mean()), "ssim": float(s["ssim"][m].mean()),
                      **fer_summary(s["p_hr"][m], s["p_sr"][m])},
            "bicubic": {"psnr": float(s["bpsnr"][m].mean()), "ssim": float(s["bssim"][m].mean()),
                        **fer_summary(s["p_hr"][m], s["p_bic"][m])}}


def evaluate_cache(weights: str, data: list[str], split: str = "test", landmarks: str = "detect", predictor: str = "",
                   limit: int | None = None, device: str = "cpu", batch: int = 32, classifier: str | None = None) -> dict:
    """PSNR-Y/SSIM-Y (border = scale) and ECM / FER agreement / KL of a model vs bicubic on a cache split,
    overall and per cache when there are several."""
    check_landmark_mode(landmarks, LANDMARK_SOURCES)
    dev = torch.device(device)
    model = load_model(weights, device=dev)
    scale = model.scale
    ds = FaceCache(data, split=split, limit=limit)
    if landmarks in ("predict", "auto"):
        ds.predicted[scale] = predict_array(load_predictor(predictor or default_predictor(scale)), ds.hr, scale)
    clf = load_emotion_classifier(classifier, device=dev) if classifier else load_emotion_classifier(device=dev)
    t0 = time.time()
    scores = {k: v.numpy() for k, v in score_cache(model, ds, np.arange(len(ds)), scale, landmarks, dev, clf,
                                                    batch=batch).items()}
    lm_found = float(np.isfinite(ds.lr_landmarks(scale)).all(axis=(1, 2)).mean())
    sources = np.array([p.split("/", 1)[0] for p in ds.path])
    per_source = {str(s): {"images": int((sources == s).sum()), **_summary(scores, sources == s)}
                  for s in dict.fromkeys(sources)} if len(set(sources)) > 1 else {}
    return {
        "weights": str(weights), "scale": scale, "data": [str(d) for d in data], "split": split, "images": len(ds),
        "landmarks": landmarks, "lr_landmarks_detected": round(lm_found, 4), "classifier": clf.name,
        **_summary(scores, np.ones(len(ds), bool)), "per_source": per_source,
        "seconds": round(time.time() - t0, 1),
    }


def format_cache_eval(r: dict) -> str:
    """The Markdown table of :func:`evaluate_cache` (bicubic, then the model)."""
    lines = [f"{r['weights']} on {', '.join(Path(d).name for d in r['data'])} [{r['split']}], {r['images']} faces, "
             f"x{r['scale']}, LR landmarks: {r['landmarks']} (detected on {100 * r['lr_landmarks_detected']:.1f}% of LR faces)",
             "| method | PSNR-Y (dB) | SSIM-Y | ECM (lower better) | FER agreement with HR | KL(p_HR‖p_SR) |",
             "|---|---|---|---|---|---|"]
    for name, k in (("bicubic", "bicubic"), (Path(r["weights"]).stem, "model")):
        m = r[k]
        lines.append(f"| {name} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['ecm']:.3f} | {100 * m['agreement']:.1f}% | {m['kl']:.4f} |")
    return "\n".join(lines)


def predictor_nme(data: list[str], scale: int, predictor: str | Path, split: str = "test") -> dict:
    """NME on ``split`` of detect (MediaPipe on the bicubic LR, cached by prepare) vs predict, against HR-crop landmarks."""
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
