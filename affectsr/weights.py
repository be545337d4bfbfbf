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

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .atomic import atomic_write

__all__ = ["FORMATS", "WEIGHTS_DIR", "Kind", "read_config", "read_metadata", "read_weights", "shipped", "shipped_names",
           "write_weights"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
"""The shipped weights and model cards (package data)."""

Kind = Literal["sr", "classifier", "landmarks"]
FORMATS: dict[str, str] = {"sr": "affectsr", "classifier": "affectsr-fer", "landmarks": "affectsr-landmarks"}
_WHAT = {"sr": "an affectsr weights file", "classifier": "an affectsr emotion-classifier weights file",
         "landmarks": "a landmark-predictor weights file"}
_HOLDS = {"sr": "an SR model", "classifier": "an emotion classifier", "landmarks": "a landmark predictor"}


def shipped(name: str) -> Path | None:
    """``WEIGHTS_DIR/<name>.safetensors`` if it ships, else None."""
    path = WEIGHTS_DIR / f"{name}.safetensors"
    return path if path.is_file() else None


def shipped_names(prefix: str = "") -> list[str]:
    """Names (file stems) of the shipped weights starting with ``prefix``, sorted."""
    return sorted(p.name.removesuffix(".safetensors") for p in WEIGHTS_DIR.glob(f"{prefix}*.safetensors"))


def read_metadata(path: str | Path, kind: Kind) -> dict[str, str]:
    """The metadata of a ``kind`` weights file; a one-line ValueError when the file is something else.

    SR files written before the format tag existed have only a ``config``; they still read.
    """
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except SafetensorError as e:
        raise ValueError(f"{path}: not a readable safetensors file ({' '.join(str(e).split())[:200]})") from e
    tag = meta.get("format")
    if tag != FORMATS[kind] and not (kind == "sr" and tag is None):
        other = next((k for k, t in FORMATS.items() if t == tag), None)
        why = f"it holds {_HOLDS[other]}" if other else f"format {tag!r}"
        raise ValueError(f"{path}: not {_WHAT[kind]} ({why})")
    if "config" not in meta:
        raise ValueError(f"{path}: not {_WHAT[kind]} (no config in its metadata)")
    return meta


def read_config(path: str | Path, kind: Kind) -> dict:
    """The config dict stored in a ``kind`` weights file."""
    return json.loads(read_metadata(path, kind)["config"])


def read_weights(path: str | Path, kind: Kind) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict with floating-point tensors as float32, metadata) of a ``kind`` weights file."""
    meta = read_metadata(path, kind)
    try:
        tensors = load_file(str(path))
    except SafetensorError as e:
        raise ValueError(f"{path}: not a readable safetensors file ({' '.join(str(e).split())[:200]})") from e
    return {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}, meta


def write_weights(state: Mapping[str, torch.Tensor], path: str | Path, kind: Kind, config: dict,
                  metadata: Mapping[str, str] | None = None, half: bool = False) -> Path:
    """Atomically write a state dict (floats as fp16 with ``half``) with its format tag, config and ``metadata``."""
    tensors = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).contiguous().cpu()
               for k, v in state.items()}
    meta = {"format": FORMATS[kind], "config": json.dumps(config), **(metadata or {})}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
