"""affectsr: emotion-aware face super-resolution (AffectSRNet and beyond).

    >>> import affectsr
    >>> result = affectsr.upscale("photo.jpg", scale=4)      # faces found, upscaled, pasted back
    >>> model = affectsr.load_model("affectsr-x4")            # an nn.Module (shipped weights)
"""
from __future__ import annotations

from .models import ModelConfig, WeightsNotFoundError, create_model, list_models, load_model
from .runinfo import package_version

__version__ = package_version()


def upscale(image, scale: int | None = None, model=None, aligned: bool = False, **kwargs):
    """Super-resolve the faces in ``image`` (path, PIL image or numpy array); see :func:`affectsr.pipeline.upscale`."""
    from .pipeline import upscale as _upscale  # lazy: `import affectsr` loads the models only, not the pipeline

    return _upscale(image, scale=scale, model=model, aligned=aligned, **kwargs)


__all__ = ["ModelConfig", "WeightsNotFoundError", "create_model", "list_models", "load_model", "upscale", "__version__"]
