"""How a result was made: the machine, the command line as typed, and the date (recorded with every report)."""
from __future__ import annotations

import datetime as dt
import platform
import shlex
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version as _dist_version

import torch

__all__ = ["command_line", "machine", "now", "package_version", "today"]


def package_version() -> str:
    """The installed affectsr version (0.1.0 when running from a source tree that is not installed)."""
    try:
        return _dist_version("affectsr")
    except PackageNotFoundError:
        return "0.1.0"


def machine() -> str:
    """CPU (or architecture), torch threads and version, and the GPU when there is one."""
    desc = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    if torch.cuda.is_available():
        desc += f", {torch.cuda.get_device_name()}"
    return desc


def command_line(argv: Sequence[str] | None = None, prog: str = "affectsr") -> str:
    """``prog`` and its arguments exactly as given (``sys.argv[1:]`` by default), quoted for a shell."""
    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join([prog, *map(str, args)])


def now() -> str:
    """Local time with its UTC offset, to the second (ISO 8601)."""
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def today() -> str:
    return dt.date.today().isoformat()
