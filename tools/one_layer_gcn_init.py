"""The start of affectsr-x8-lite's one-layer-GCN fine-tune (2026-11-30, issue 17) from a two-layer -lite file.

    python tools/one_layer_gcn_init.py TWO_LAYER.safetensors OUT.safetensors [--preset affectsr-x8-lite]

Every tensor that fits is carried over; the splat projection P, p is composed with the dropped second layer's linear
map W1, b1 (P W1, P b1 + p), so the start differs from the two-layer network only by the second propagation
(Â h ~ h for node features smooth over the mesh). Then: INIT=OUT INIT_SKIP= LR=1e-4 STEPS=700
tools/train_lite_distill.sh 8 (model_args from presets.FAST).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package

from affectsr.models import create_model, load_model, save_weights  # noqa: E402
from affectsr.weights import load_fitting  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--preset", default="affectsr-x8-lite")
    a = ap.parse_args(argv)
    src = load_model(a.src)
    if len(src.prior.gcn.layers) != 2:
        raise SystemExit(f"{a.src}: a {len(src.prior.gcn.layers)}-layer GCN; this composes a two-layer one into one")
    keep = ("fusion_stages", "prior_kernel", "splat_channels", "splat_once")
    dst = create_model(a.preset, **{k: getattr(src.config, k) for k in keep}, gcn_dims=src.config.gcn_dims[:1])
    load_fitting(dst, src.state_dict(), a.src)
    w1, b1 = src.prior.gcn.layers[1].lin.weight, src.prior.gcn.layers[1].bias
    with torch.no_grad():
        for new, old in zip(dst.prior.to_splat, src.prior.to_splat):
            new.weight.copy_(old.weight @ w1)
            new.bias.copy_(old.weight @ b1 + old.bias)
    save_weights(dst, a.out, half=False)
    print(f"wrote {a.out}: gcn_dims {dst.config.gcn_dims}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
