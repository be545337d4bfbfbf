"""Atomic file writes: a crash or Ctrl-C never leaves a half-written checkpoint, shard, image, video or weights file."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
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


def write_error(folder: str | Path) -> str | None:
    """Why files could not be written into ``folder`` (it need not exist yet), else None; creates nothing.

    The check commands run before loading a model, so that a failed run leaves no empty output
    folder behind: the folder itself is made by the first write. Probes the nearest existing
    ancestor with a temporary file (which also catches read-only mounts that ``os.access`` misses).
    """
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return f"{probe} is a file, not a folder" if probe != folder else "is a file, not a folder"
    try:
        tempfile.TemporaryFile(dir=probe).close()
    except OSError as e:
        return e.strerror or str(e)
    return None


def missing_folders(folder: str | Path) -> list[Path]:
    """``folder`` and those of its ancestors that do not exist yet, deepest first."""
    missing, probe = [], Path(folder)
    while not probe.exists() and probe.parent != probe:
        missing.append(probe)
        probe = probe.parent
    return missing


def make_folder(folder: str | Path) -> list[Path]:
    """``mkdir -p folder``; returns the folders it made, deepest first, for :func:`remove_folders` on failure."""
    made = missing_folders(folder)
    Path(folder).mkdir(parents=True, exist_ok=True)
    return made


def remove_folders(made: list[Path]) -> None:
    """Remove the folders :func:`make_folder` made, deepest first, where they are still empty."""
    for d in made:
        try:
            d.rmdir()
        except OSError:  # not empty (someone else wrote there) or already gone
            return


def publish_new(tmp: str | Path, path: str | Path) -> None:
    """Move the finished file ``tmp`` to ``path`` unless ``path`` exists (FileExistsError then).

    A hard link is an atomic no-replace rename, so a file that appears meanwhile is never clobbered;
    on filesystems without hard links this falls back to check-then-rename.
    """
    tmp, path = Path(tmp), Path(path)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it") from None
    except OSError:
        if path.exists():
            raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it") from None
        os.replace(tmp, path)
        return
    tmp.unlink()
