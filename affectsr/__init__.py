"""affectsr: emotion-aware face super-resolution (AffectSRNet and beyond).

    >>> import affectsr
    >>> result = affectsr.upscale("photo.jpg", scale=4)      # faces found, upscaled, pasted back
    >>> model = affectsr.load_model("affectsr-x4")            # an nn.Module (shipped weights)
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .models import ModelConfig, WeightsNotFoundError, create_model, list_models, load_model

try:
    __version__ = version("affectsr")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0"


def upscale(image, scale: int | None = None, model=None, aligned: bool = False, **kwargs):
    """Super-resolve the faces in ``image`` (path, PIL image or numpy array); see :func:`affectsr.pipeline.upscale`."""
    from .pipeline import upscale as _upscale  # lazy: keeps `import affectsr` light (no mediapipe)

    return _upscale(image, scale=scale, model=model, aligned=aligned, **kwargs)


__all__ = ["ModelConfig", "WeightsNotFoundError", "create_model", "list_models", "load_model", "upscale", "__version__"]
