"""What every command shares: running one with the exit codes every command has, one-line errors, --device."""
from __future__ import annotations

import argparse
import os
import sys

import torch

from ..models.presets import default_model
from ..runinfo import command_line
from ..types import SCALES
from ..weights import WeightsError

__all__ = ["BROKEN_PIPE", "default_models", "device_error", "fail", "recorded_command", "run_command"]

BROKEN_PIPE = 141
"""Exit status when stdout's reader went away (``affectsr models --json | head -c 600``): 128 + SIGPIPE, what
git, cat and every C tool a shell pipes report when their reader stops early. Without ``pipefail`` the shell
ignores it (a pipeline's status is its last command's); with ``pipefail`` it says the output was cut short,
which is true. Nothing is printed: the reader stopped listening on purpose."""


def run_command(args: argparse.Namespace) -> int:
    """``args.func(args)`` with the exits every command shares, decided here once.

    A :class:`~affectsr.weights.WeightsError` from any command (``--model``, ``--classifier``, ``init=``,
    ...) is one ``error:`` line and exit 2; a closed stdout is a quiet :data:`BROKEN_PIPE`; Ctrl-C is 130.
    """
    try:
        code = args.func(args)
        sys.stdout.flush()  # a reader that went away shows up here, not in the interpreter's exit
        return code
    except WeightsError as e:
        return fail(str(e))
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush does not fail on the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout is not a file (an embedding, a test's capture)
        pass


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


def default_models() -> str:
    """The default model per scale for help texts, from :func:`~affectsr.models.presets.default_model` itself."""
    return ", ".join(f"{default_model(s)} at x{s}" for s in SCALES)
