"""What every command shares: running one with the exit codes every command has, one-line errors, --device."""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator

import torch

from ..models.presets import default_model, fast_model
from ..runinfo import command_line
from ..types import SCALES
from ..weights import WeightsError

__all__ = ["BROKEN_PIPE", "Interrupted", "default_models", "device_error", "fail", "prompt_signals", "recorded_command",
           "run_command"]

BROKEN_PIPE = 141
"""Exit status when stdout's reader went away (``affectsr models --json | head -c 600``): 128 + SIGPIPE, what
git, cat and every C tool a shell pipes report when their reader stops early. Without ``pipefail`` the shell
ignores it (a pipeline's status is its last command's); with ``pipefail`` it says the output was cut short,
which is true. Nothing is printed: the reader stopped listening on purpose."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised in the main thread so that every ``finally`` (temporary files) runs.

    A KeyboardInterrupt, so that ``except Exception`` never swallows it; ``code`` is the exit status
    a shell expects: 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM).
    """

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.code = 128 + signum


def _raise_interrupted(signum: int, frame) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`Interrupted` (exit 143, temporary files removed) instead of killing the process."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run_command(args: argparse.Namespace) -> int:
    """``args.func(args)`` with the exits every command shares, decided here once.

    A :class:`~affectsr.weights.WeightsError` from any command (``--model``, ``--classifier``, ``init=``,
    ...) is one ``error:`` line and exit 2; a closed stdout is a quiet :data:`BROKEN_PIPE`; Ctrl-C is 130
    and SIGTERM 143, both after the command's own clean-up ran.
    """
    try:
        with _terminate_as_interrupt():
            code = args.func(args)
            sys.stdout.flush()  # a reader that went away shows up here, not in the interpreter's exit
        return code
    except WeightsError as e:
        return fail(str(e))
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE
    except KeyboardInterrupt as e:
        print("interrupted", file=sys.stderr)
        return getattr(e, "code", 130)


@contextlib.contextmanager
def prompt_signals(cleanup: Callable[[], None], grace: float = 1.5) -> Iterator[None]:
    """SIGINT and SIGTERM end the command within about ``grace`` seconds, whatever the main thread is in.

    Python runs signal handlers only between bytecodes of the main thread, so a signal that lands
    while it sits in native code (loading MediaPipe, a long FFmpeg or torch call) waits for that call.
    Here the handler raises :class:`Interrupted` as usual (clean-up by ``finally``), and a watcher
    thread, woken at once through :func:`signal.set_wakeup_fd`, gives that ``grace`` seconds; if the
    command is still running then, it calls ``cleanup()`` (remove temporary files) and ends the process
    with 128 + the signal number.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    r, w = socket.socketpair()
    w.setblocking(False)
    done = threading.Event()

    def watch() -> None:
        try:
            data = r.recv(1)
        except OSError:
            return
        if not data or done.wait(grace):
            return
        with contextlib.suppress(Exception):
            cleanup()
        with contextlib.suppress(OSError):
            os.write(2, b"interrupted\n")
        os._exit(128 + data[0])

    old_fd = signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
    old = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGINT, signal.SIGTERM)}
    watcher = threading.Thread(target=watch, name="affectsr-signals", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        signal.set_wakeup_fd(old_fd)
        for s, h in old.items():
            signal.signal(s, h)
        w.close()  # wakes the watcher with an empty read
        watcher.join(timeout=1)
        r.close()


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
    """The default model per scale for help texts, from :func:`~affectsr.models.presets.default_model` itself,
    and the fast alternative where there is one."""
    text = ", ".join(f"{default_model(s)} at x{s}" for s in SCALES)
    fast = [f for f in (fast_model(s) for s in SCALES) if f not in {default_model(s) for s in SCALES}]
    return text + (f"; faster on a CPU: {', '.join(fast)}" if fast else "")
