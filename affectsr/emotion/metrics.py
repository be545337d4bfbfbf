"""Expression-fidelity metrics on classifier outputs: ECM and the figures people read more easily.

All functions are pure and take numpy arrays (or anything ``np.asarray`` accepts):
``p_hr`` and ``p_sr`` are ``N x C`` probability rows for the same N faces (HR and its SR or
upscaled counterpart), labels are ``N`` integer class indices. Logarithms are natural.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "ECM_BINS",
    "ECM_EPS",
    "EcmTerms",
    "FidelityReport",
    "accuracy",
    "confusion_matrix",
    "density_histograms",
    "ecm",
    "ecm_terms",
    "entropy",
    "fidelity_report",
    "label_agreement",
    "mean_kl",
    "sr_vs_hr_confusion",
]

ECM_BINS = 10
ECM_EPS = 1e-12
"""Floor for L_conf inside ln(): identical HR and SR entropies give ln(1e-12) = -27.63 instead of -inf."""

_TOL = 1e-4  # probabilities may overshoot [0, 1] by float rounding


def _probs(p: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(p, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty N x C array of probabilities, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    if a.min() < -_TOL or a.max() > 1 + _TOL:
        raise ValueError(f"{name} must lie in [0, 1] (got min {a.min():.4g}, max {a.max():.4g}); pass softmax outputs, not logits")
    return np.clip(a, 0.0, 1.0)


def _pair(p_hr: np.ndarray, p_sr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = _probs(p_hr, "p_hr"), _probs(p_sr, "p_sr")
    if a.shape != b.shape:
        raise ValueError(f"p_hr and p_sr must have the same shape, got {a.shape} and {b.shape}")
    return a, b


def entropy(p: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row; 0 log 0 = 0."""
    a = _probs(p, "p")
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(a > 0, a * np.log(a), 0.0)
    return -terms.sum(axis=1)


def density_histograms(p: np.ndarray, bins: int = ECM_BINS) -> np.ndarray:
    """``C x bins`` density histograms of each class's probability over the N rows, bins on [0, 1].

    Density as ``numpy.histogram(density=True)``: count / (N * bin width), so each row
    integrates to 1; a value of exactly 1.0 falls in the last bin.
    """
    a = _probs(p, "p")
    return np.stack([np.histogram(a[:, c], bins=bins, range=(0.0, 1.0), density=True)[0] for c in range(a.shape[1])])


@dataclass(frozen=True)
class EcmTerms:
    l_h: float  # histogram term
    l_conf: float  # mean absolute entropy difference (nats)
    ecm: float  # alpha * l_h + ln(max(l_conf, eps))
    alpha: float


def ecm_terms(p_hr: np.ndarray, p_sr: np.ndarray, alpha: float = 0.5, bins: int = ECM_BINS,
              eps: float = ECM_EPS) -> EcmTerms:
    """ECM and its two terms (MISSION.md section 5). Lower is better; it can be negative."""
    a, b = _pair(p_hr, p_sr)
    l_h = float(((density_histograms(a, bins) - density_histograms(b, bins)) ** 2).sum())
    l_conf = float(np.abs(entropy(a) - entropy(b)).mean())
    return EcmTerms(l_h=l_h, l_conf=l_conf, ecm=alpha * l_h + float(np.log(max(l_conf, eps))), alpha=alpha)


def ecm(p_hr: np.ndarray, p_sr: np.ndarray, alpha: float = 0.5) -> float:
    """Emotion Consistency Metric, lower is better.

    ``L_H`` = sum over classes and 10 bins on [0, 1] of the squared difference between the
    density histograms of ``p_hr[:, c]`` and ``p_sr[:, c]``; ``L_conf`` = mean |H(p_hr,i) - H(p_sr,i)|
    (Shannon entropy, nats); ECM = alpha * L_H + ln(L_conf). Guard: L_conf is floored at
    ``ECM_EPS`` = 1e-12 so identical entropies give a finite value (ln 1e-12 = -27.63).
    """
    return ecm_terms(p_hr, p_sr, alpha).ecm


def _labels(y: np.ndarray, n: int, name: str) -> np.ndarray:
    a = np.asarray(y)
    if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be {n} integer class indices, got shape {a.shape} dtype {a.dtype}")
    return a


def label_agreement(p_hr: np.ndarray, p_sr: np.ndarray) -> float:
    """Fraction of faces whose SR argmax equals the HR argmax."""
    a, b = _pair(p_hr, p_sr)
    return float((a.argmax(1) == b.argmax(1)).mean())


def accuracy(p: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose argmax equals the label."""
    a = _probs(p, "p")
    return float((a.argmax(1) == _labels(labels, a.shape[0], "labels")).mean())


def mean_kl(p_hr: np.ndarray, p_sr: np.ndarray, eps: float = 1e-12) -> float:
    """Mean over faces of KL(p_hr || p_sr) in nats; p_sr is floored at ``eps`` so a zero there stays finite."""
    a, b = _pair(p_hr, p_sr)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(a > 0, a * (np.log(a) - np.log(np.maximum(b, eps))), 0.0)
    return float(terms.sum(axis=1).mean())


def confusion_matrix(true: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``C x C`` counts, rows = true (or HR) class, columns = predicted (or SR) class."""
    t = np.asarray(true)
    p = np.asarray(pred)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"true and pred must be 1-D arrays of the same length, got {t.shape} and {p.shape}")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= num_classes):
        raise ValueError(f"class indices must lie in [0, {num_classes})")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass(frozen=True)
class FidelityReport:
    """Everything the study reports for one (HR, SR) pair of prediction sets."""

    n: int
    accuracy_hr: float | None  # None where no labels exist
    accuracy_sr: float | None
    agreement: float
    mean_kl: float
    ecm: float
    l_h: float
    l_conf: float

    def to_dict(self) -> dict:
        return asdict(self)


def fidelity_report(p_hr: np.ndarray, p_sr: np.ndarray, labels: np.ndarray | None = None, alpha: float = 0.5) -> FidelityReport:
    """ECM (with its terms), label agreement, mean KL and, where labels exist, accuracy on HR and on SR."""
    a, b = _pair(p_hr, p_sr)
    terms = ecm_terms(a, b, alpha)
    return FidelityReport(
        n=a.shape[0],
        accuracy_hr=None if labels is None else accuracy(a, labels),
        accuracy_sr=None if labels is None else accuracy(b, labels),
        agreement=label_agreement(a, b),
        mean_kl=mean_kl(a, b),
        ecm=terms.ecm,
        l_h=terms.l_h,
        l_conf=terms.l_conf,
    )


def sr_vs_hr_confusion(p_hr: np.ndarray, p_sr: np.ndarray) -> np.ndarray:
    """Confusion of SR predictions against HR predictions (rows HR class, columns SR class)."""
    a, b = _pair(p_hr, p_sr)
    return confusion_matrix(a.argmax(1), b.argmax(1), a.shape[1])

