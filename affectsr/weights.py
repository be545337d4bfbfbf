"""Weights files: one safetensors reader and writer for every network the package ships.

A weights file holds tensors plus string metadata: ``format`` (which kind of network it is),
``config`` (the network's config dataclass as JSON) and free-form facts (training steps, source,
licence, ...). Kinds and their format tags (the tags of every file shipped so far, unchanged):

- ``sr``: super-resolution models, ``format: affectsr`` (+ ``arch``, the architecture name);
- ``classifier``: the FER classifier, ``format: affectsr-fer``;
- ``landmarks``: the LR landmark predictor, ``format: affectsr-landmarks``.

Reading never unpickles anything and never downloads anything: shipped files live in
:data:`WEIGHTS_DIR` (``affectsr/weights/``) beside their model cards. Writes are atomic.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .atomic import atomic_write

__all__ = ["FORMATS", "WEIGHTS_DIR", "Kind", "WeightsError", "load_state", "make_config", "read_config", "read_metadata",
           "read_weights", "shipped", "shipped_names", "write_weights"]

T = TypeVar("T")

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
"""The shipped weights and model cards (package data)."""

Kind = Literal["sr", "classifier", "landmarks"]
FORMATS: dict[str, str] = {"sr": "affectsr", "classifier": "affectsr-fer", "landmarks": "affectsr-landmarks"}
_WHAT = {"sr": "an affectsr weights file", "classifier": "an affectsr emotion-classifier weights file",
         "landmarks": "a landmark-predictor weights file"}
_HOLDS = {"sr": "an SR model", "classifier": "an emotion classifier", "landmarks": "a landmark predictor"}


class WeightsError(ValueError):
    """A weights file that cannot be used, said in one line: its path and a plain reason.

    Every reader here raises it (damaged, foreign, or holding NaN); the commands map it to exit 2.
    """

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), " ".join(reason.split())
        super().__init__(f"{self.path}: {self.reason}")


def _unreadable(path: str | Path, e: BaseException) -> WeightsError:
    return WeightsError(path, f"not a readable safetensors file ({' '.join(str(e).split())[:200] or type(e).__name__})")


def shipped(name: str) -> Path | None:
    """``WEIGHTS_DIR/<name>.safetensors`` if it ships, else None."""
    path = WEIGHTS_DIR / f"{name}.safetensors"
    return path if path.is_file() else None


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MB chunks: how cards, caches and checks name a weights file by content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def shipped_name(path: str | Path, prefix: str = "") -> str | None:
    """The shipped weights file (stem) with the same bytes as ``path``, or None: which shipped file a run's copy is."""
    digest = file_sha256(path)
    for name in shipped_names(prefix):
        if file_sha256(WEIGHTS_DIR / f"{name}.safetensors") == digest:
            return name
    return None


def shipped_names(prefix: str = "") -> list[str]:
    """Names (file stems) of the shipped weights starting with ``prefix``, sorted."""
    return sorted(p.name.removesuffix(".safetensors") for p in WEIGHTS_DIR.glob(f"{prefix}*.safetensors"))


def read_metadata(path: str | Path, kind: Kind) -> dict[str, str]:
    """The metadata of a ``kind`` weights file; a :class:`WeightsError` when the file is something else.

    SR files written before the format tag existed have only a ``config``; they still read.
    """
    if not Path(path).exists():
        raise WeightsError(path, "no such file")
    if Path(path).is_dir():
        raise WeightsError(path, "is a folder, not a weights file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, OverflowError, MemoryError) as e:
        raise _unreadable(path, e) from e
    tag = meta.get("format")
    if tag != FORMATS[kind] and not (kind == "sr" and tag is None):
        other = next((k for k, t in FORMATS.items() if t == tag), None)
        why = f"it holds {_HOLDS[other]}" if other else f"format {tag!r}"
        raise WeightsError(path, f"not {_WHAT[kind]} ({why})")
    if "config" not in meta:
        raise WeightsError(path, f"not {_WHAT[kind]} (no config in its metadata)")
    return meta


def _config_json(path: str | Path, meta: Mapping[str, str]) -> dict:
    try:
        config = json.loads(meta["config"])
    except ValueError as e:
        raise WeightsError(path, f"its config metadata is not valid JSON ({e})") from e
    if not isinstance(config, dict):
        raise WeightsError(path, f"its config metadata is not a JSON object (got {type(config).__name__})")
    return config


def read_config(path: str | Path, kind: Kind) -> dict:
    """The config dict stored in a ``kind`` weights file (a WeightsError when it is not a JSON object)."""
    return _config_json(path, read_metadata(path, kind))


def make_config(path: str | Path, factory: Callable[[dict], T], meta: Mapping[str, str]) -> T:
    """``factory(config dict)`` for the config in ``meta`` (a file's metadata); a WeightsError when it does not fit."""
    config = _config_json(path, meta)
    try:
        return factory(config)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise WeightsError(path, f"its config does not fit this version of affectsr ({' '.join(str(e).split())[:200]})"
                           ) from e


def read_weights(path: str | Path, kind: Kind) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict with floating-point tensors as float32, metadata) of a ``kind`` weights file.

    Every floating-point tensor is checked for NaN and infinity: a bit flip in the data would
    otherwise load silently and paint faces black.
    """
    meta = read_metadata(path, kind)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, OverflowError, MemoryError) as e:
        raise _unreadable(path, e) from e
    state = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    for name, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).sum())
            raise WeightsError(path, f"tensor {name!r} holds {bad} NaN or infinite value(s) (a damaged file)")
    return state, meta


def load_state(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """``module.load_state_dict(state, strict=True)``; a one-line WeightsError naming what does not fit."""
    want = module.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    wrong = [k for k in want if k in state and tuple(state[k].shape) != tuple(want[k].shape)]
    if missing or unexpected or wrong:
        def some(keys: list[str]) -> str:
            return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

        parts = [f"{len(missing)} missing ({some(missing)})" if missing else "",
                 f"{len(unexpected)} unexpected ({some(unexpected)})" if unexpected else "",
                 f"{len(wrong)} of the wrong shape ({some(wrong)})" if wrong else ""]
        raise WeightsError(path, f"its tensors do not fit the network its config describes: "
                                 f"{'; '.join(p for p in parts if p)}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:  # anything the checks above did not foresee
        raise WeightsError(path, f"its tensors do not fit the network ({' '.join(str(e).split())[:200]})") from e


def load_fitting(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: str | Path,
                 skip: tuple[str, ...] = (), hint: str = "") -> list[str]:
    """Load the tensors of ``state`` whose name and shape fit ``module``, except names starting with one of ``skip``
    (e.g. the fusions of a prior that comes back fresh: zero-initialised, they leave the loaded backbone's output as
    it was): a start for training a changed network from a trained one. Returns the names left as they were; a
    WeightsError (``hint`` appended) when nothing fits."""
    own = module.state_dict()
    fit = {k: v for k, v in state.items()
           if k in own and tuple(v.shape) == tuple(own[k].shape) and not k.startswith(tuple(skip))}
    if not fit:
        raise WeightsError(path, "none of its tensors fit the network" + (f" ({hint})" if hint else ""))
    module.load_state_dict(fit, strict=False)
    return [k for k in own if k not in fit]


def write_weights(state: Mapping[str, torch.Tensor], path: str | Path, kind: Kind, config: dict,
                  metadata: Mapping[str, str] | None = None, half: bool = False) -> Path:
    """Atomically write a state dict (floats as fp16 with ``half``) with its format tag, config and ``metadata``."""
    tensors = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).contiguous().cpu()
               for k, v in state.items()}
    meta = {"format": FORMATS[kind], "config": json.dumps(config), **(metadata or {})}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
