"""Emotion Consistency Loss: the frozen FER classifier should read the SR face as it reads the HR face.

Two terms, both computed by the frozen classifier of :mod:`affectsr.emotion.classifier`:

- ``kl``: KL(p_HR || p_SR) on temperature-softened softmaxes, times T^2 (Hinton et al. 2015,
  so the gradient scale does not shrink as T grows). T > 1 exposes the classifier's
  "dark knowledge" (how much fear is in a surprised face), not only its top class.
- ``feature``: mean squared distance between the classifier's penultimate feature maps
  (128 x 4 x 4), which also constrains what the 7 probabilities cannot see.

The HR branch runs without gradient; the classifier's parameters are frozen, so gradients
reach the SR image only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .classifier import EmotionClassifier, load_emotion_classifier

__all__ = ["EmotionConsistencyLoss", "EmotionLossTerms"]

_FEATURE_DISTANCES = ("mse", "l1", "cosine")


@dataclass
class EmotionLossTerms:
    total: torch.Tensor  # weighted sum, differentiable w.r.t. the SR image
    kl: torch.Tensor  # KL(p_HR || p_SR) at temperature T, times T^2, batch mean
    feature: torch.Tensor  # feature distance, batch mean


class EmotionConsistencyLoss(nn.Module):
    """``loss(sr, hr)`` for ``B x 3 x H x W`` RGB in [0, 1] (SR and HR may differ in size).

    ``kl_weight`` and ``feature_weight`` scale the two terms (0 switches a term off);
    ``feature_distance`` is ``"mse"``, ``"l1"`` or ``"cosine"`` (1 - cosine similarity of the
    flattened maps). Without a classifier the shipped default is loaded.
    """

    def __init__(self, classifier: EmotionClassifier | None = None, temperature: float = 2.0,
                 kl_weight: float = 1.0, feature_weight: float = 0.1, feature_distance: str = "mse") -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if kl_weight < 0 or feature_weight < 0:
            raise ValueError(f"weights must be non-negative, got kl_weight={kl_weight}, feature_weight={feature_weight}")
        if feature_distance not in _FEATURE_DISTANCES:
            raise ValueError(f"feature_distance must be one of {_FEATURE_DISTANCES}, got {feature_distance!r}")
        self.classifier = classifier if classifier is not None else load_emotion_classifier()
        if any(p.requires_grad for p in self.classifier.parameters()):
            raise ValueError("the classifier must be frozen (use EmotionClassifier)")
        self.temperature = float(temperature)
        self.kl_weight = float(kl_weight)
        self.feature_weight = float(feature_weight)
        self.feature_distance = feature_distance

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, kl_weight={self.kl_weight}, "
                f"feature_weight={self.feature_weight}, feature_distance={self.feature_distance!r}")

    def _feature_term(self, f_sr: torch.Tensor, f_hr: torch.Tensor) -> torch.Tensor:
        if self.feature_distance == "mse":
            return F.mse_loss(f_sr, f_hr)
        if self.feature_distance == "l1":
            return F.l1_loss(f_sr, f_hr)
        return (1.0 - F.cosine_similarity(f_sr.flatten(1), f_hr.flatten(1), dim=1)).mean()

    def terms(self, sr: torch.Tensor, hr: torch.Tensor) -> EmotionLossTerms:
        """The weighted total and both (unweighted) terms, for logging."""
        if sr.shape[0] != hr.shape[0]:
            raise ValueError(f"sr and hr must hold the same number of faces, got {sr.shape[0]} and {hr.shape[0]}")
        with torch.no_grad():
            logits_hr, feats_hr = self.classifier(hr.detach())
        logits_sr, feats_sr = self.classifier(sr)
        t = self.temperature
        kl = F.kl_div(F.log_softmax(logits_sr / t, dim=1), F.log_softmax(logits_hr / t, dim=1),
                      reduction="batchmean", log_target=True) * (t * t)
        feature = self._feature_term(feats_sr, feats_hr)
        total = self.kl_weight * kl + self.feature_weight * feature
        return EmotionLossTerms(total=total, kl=kl, feature=feature)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return self.terms(sr, hr).total
