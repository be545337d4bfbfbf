"""The shared vocabulary: scales, landmark modes, and the interface every SR model has.

One place for the values that the pipeline, the CLI, training and evaluation all accept, and one
check per value, so an unknown scale or landmark mode gets the same one-line error everywhere.
"""
from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import torch

__all__ = ["LANDMARK_MODES", "LANDMARK_SOURCES", "SCALES", "LandmarkMode", "SRModel", "Scale", "check_landmark_mode",
           "check_scale", "uses_landmarks"]

Scale = Literal[4, 8]
SCALES: tuple[int, ...] = (4, 8)
"""The scales models ship for and the command line offers (networks themselves may accept x2)."""

LandmarkMode = Literal["auto", "detect", "predict"]
LANDMARK_MODES: tuple[str, ...] = ("auto", "detect", "predict")
"""How a face's LR landmarks are found at inference: MediaPipe on the LR crop and else the learned
predictor (auto), MediaPipe only (detect), or the predictor only (predict)."""

LANDMARK_SOURCES: tuple[str, ...] = (*LANDMARK_MODES, "hr", "none")
"""What training and evaluation can feed the prior: an inference route, the HR crop's landmarks
(an oracle, for ablations), or nothing."""


def check_scale(scale: int, allowed: tuple[int, ...] = SCALES) -> int:
    """``scale`` if it is one of ``allowed``, else a one-line ValueError."""
    if scale not in allowed:
        raise ValueError(f"scale must be {' or '.join(map(str, allowed))}, got {scale}")
    return int(scale)


def check_landmark_mode(mode: str, allowed: tuple[str, ...] = LANDMARK_MODES) -> str:
    """``mode`` if it is one of ``allowed``, else a one-line ValueError naming them."""
    if mode not in allowed:
        raise ValueError(f"landmarks must be {', '.join(allowed[:-1])} or {allowed[-1]}, got {mode!r}")
    return mode


@runtime_checkable
class SRModel(Protocol):
    """What the pipeline, evaluation, export and benchmarks need from a super-resolution network.

    AffectSRNet, the baselines, :class:`affectsr.export.OnnxSRModel` and test doubles all have it:
    ``forward(lr, landmarks=None)`` maps ``B x 3 x h x w`` RGB in [0, 1] to ``B x 3 x (h*scale) x (w*scale)``
    (not clamped); ``landmarks`` is ``B x num_landmarks x 3`` with x, y normalised to ``lr`` and a row
    holding NaN meaning "no landmarks for this face". Models that do not read landmarks
    (``uses_landmarks`` False) accept and ignore them, so every model has the same call.
    """

    @property
    def scale(self) -> int: ...

    @property
    def uses_landmarks(self) -> bool: ...

    @property
    def num_landmarks(self) -> int: ...

    def __call__(self, lr: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor: ...


def uses_landmarks(model: object) -> bool:
    """Whether ``model`` reads landmarks; objects that do not say are assumed to (the safe default for export)."""
    if getattr(getattr(model, "config", None), "prior", None) == "none":
        return False
    return bool(getattr(model, "uses_landmarks", True))
