"""Atomic file writes: a crash or Ctrl-C never leaves a half-written checkpoint, shard or weights file."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[str], None], mode: int = 0o644) -> Path:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then rename it over ``path``.

    The rename is atomic on one filesystem; the temp file is removed if ``write`` fails.
    ``mode`` is applied because ``mkstemp`` creates 0600 files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_safetensors(tensors: Mapping, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Atomically write a safetensors file (the project's only weights format: no pickle)."""
    from safetensors.torch import save_file

    return atomic_write(path, lambda tmp: save_file(dict(tensors), tmp, metadata=metadata))
