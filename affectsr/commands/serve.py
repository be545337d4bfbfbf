"""``affectsr serve``: a local Gradio web demo (upload a photo, compare LR / bicubic / SR / original)."""
from __future__ import annotations

import argparse
import sys

from ..serve import ServeConfig, import_gradio, port_error, serve

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("serve", help="a local web demo (Gradio): upload a photo, compare, download",
                              description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for the network)")
    p.add_argument("--max-upload-mb", type=float, default=ServeConfig.max_upload_mb,
                   help=f"largest upload accepted, in MB (default {ServeConfig.max_upload_mb:g})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        print(f"error: --port {args.port}: must be 1..65535", file=sys.stderr)
        return 2
    if not args.max_upload_mb > 0:
        print(f"error: --max-upload-mb {args.max_upload_mb:g}: must be positive", file=sys.stderr)
        return 2
    try:
        import_gradio()
    except ImportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if (err := port_error(args.host, args.port)) is not None:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        serve(args.port, args.host, ServeConfig(max_upload_mb=args.max_upload_mb))
    except OSError as e:  # lost a race for the port, or the host does not resolve
        print(f"error: cannot serve on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
        return 2
    return 0
