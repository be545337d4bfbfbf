"""What every command shares: one-line errors and the --device check."""
from __future__ import annotations

import argparse
import sys

import torch

from ..runinfo import command_line

__all__ = ["device_error", "fail", "recorded_command"]


def recorded_command(args: argparse.Namespace) -> str:
    """The command line to record in a report: as typed (set by :func:`affectsr.cli.main`), else ``sys.argv``."""
    return getattr(args, "command_line", None) or command_line()


def fail(message: str, code: int = 2) -> int:
    """Print ``error: message`` on stderr and return ``code`` (2: bad arguments or input)."""
    print(f"error: {message}", file=sys.stderr)
    return code


def device_error(device: str | None) -> str | None:
    """A one-line error for a --device this machine cannot use, else None."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except RuntimeError:
        return f"error: --device {device}: not a device (use cpu or cuda)"
    if dev.type == "cuda" and not torch.cuda.is_available():
        return f"error: --device {device}: CUDA is not available on this machine"
    return None
