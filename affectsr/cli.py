"""The ``affectsr`` command: builds the parser from :mod:`affectsr.commands` and runs the chosen subcommand.

``affectsr demo | upscale | video | models | bench | bench-detect | emotion | study-resolution | prepare |
cache-trunk | cache-teacher | train | train-frozen-trunk | train-predictor | evaluate | evaluate-cache | evaluate-predictor | export |
fairness | serve``
(``affectsr --help``). Each subcommand returns its exit code: 0 done, 1 some inputs failed, 2 bad
arguments or input (a damaged weights file included), 130 interrupted, 141 stdout closed by its reader.
"""
from __future__ import annotations

import argparse
import os
import sys

from .commands import bench, bench_detect, demo, emotion, evaluate, export, fairness, models, prepare, serve, train, upscale, video
from .commands.common import run_command
from .runinfo import command_line, package_version

COMMANDS = (demo, upscale, models, bench, bench_detect, emotion, prepare, train, evaluate, video, export, fairness, serve)
"""In the order ``affectsr --help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="affectsr", description="Emotion-aware face super-resolution.")
    p.add_argument("--version", action="version", version=f"affectsr {package_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    args.command_line = command_line(argv)  # recorded in reports exactly as typed
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
