"""Progress for every long command: a tqdm bar on a terminal, a periodic one-line report in a log.

Redirected to a file (a batch job, ``nohup``, CI), a bar prints nothing useful: carriage returns, or
with tqdm's ``disable=None`` nothing at all until the end. :func:`progress` gives the same object
interface either way (``update``, ``set_postfix``, ``write``, iteration, ``with``), and off a terminal
it writes one plain line every :data:`LOG_EVERY_S` seconds: items done/total, rate and ETA.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

from tqdm import tqdm

__all__ = ["LOG_EVERY_S", "LogProgress", "progress"]

LOG_EVERY_S = 15.0
"""Seconds between two progress lines in a log."""


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class LogProgress:
    """A tqdm stand-in for logs: ``desc: done/total unit (pct), rate unit/s, ETA m:ss [postfix]`` every ``every`` s."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "", unit: str = "it",
                 file: IO[str] | None = None, every: float = LOG_EVERY_S):
        self.iterable, self.desc, self.unit, self.file, self.every = iterable, desc, unit, file or sys.stderr, every
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.n, self.postfix = total, 0, ""
        self.start = self.last = time.monotonic()
        self.lines = 0

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def line(self) -> str:
        """The progress line as it stands now."""
        elapsed = time.monotonic() - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        eta = f", ETA {_clock((self.total - self.n) / rate)}" if self.total and rate > 0 and self.n < self.total else ""
        post = f" [{self.postfix}]" if self.postfix else ""
        return f"{self.desc}: {done} {self.unit}{pct}, {rate:.3g} {self.unit}/s, {_clock(elapsed)} elapsed{eta}{post}"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.lines += 1
            print(self.line(), file=self.file, flush=True)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def write(self, message: str, file: IO[str] | None = None) -> None:
        print(message, file=file or self.file, flush=True)

    def close(self) -> None:
        """A last line with the totals when the run was long enough to report along the way."""
        if self.lines:
            self.lines = 0
            print(self.line(), file=self.file, flush=True)


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             enabled: bool = True, file: IO[str] | None = None, every: float | None = None) -> tqdm | LogProgress:
    """A progress reporter: tqdm on a terminal, :class:`LogProgress` otherwise, silent when not ``enabled`` (-q)."""
    file = file or sys.stderr
    if not enabled:
        return tqdm(iterable, total=total, disable=True)
    isatty = getattr(file, "isatty", None)
    if isatty is not None and isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, file=file)
    return LogProgress(iterable, total, desc, unit, file, LOG_EVERY_S if every is None else every)
