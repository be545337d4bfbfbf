"""``affectsr models``: the presets, their sizes and whether trained weights ship."""
from __future__ import annotations

import argparse
import json

from ..models import list_models


def add_parser(subparsers) -> None:
    m = subparsers.add_parser("models", help="list the model presets and whether trained weights ship")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    infos = list_models()
    if args.json:
        print(json.dumps([{"name": i.name, "scale": i.config.scale, "params": i.num_params, "trained": i.trained,
                           "description": i.description} for i in infos], indent=2))
        return 0
    print(f"{'name':<18} {'scale':>5} {'params':>8}  {'weights':<10} description")
    for i in infos:
        print(f"{i.name:<18} {'x' + str(i.config.scale):>5} {i.num_params / 1e6:>7.2f}M  "
              f"{'trained' if i.trained else 'untrained':<10} {i.description}")
    if not any(i.trained for i in infos):
        print("\nNo trained weights ship yet: every preset runs with random weights until they do.")
    return 0
