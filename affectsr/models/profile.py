"""Where an AffectSRNet's time goes: milliseconds per stage of one forward pass (``affectsr bench --profile``).

Stages are timed with forward hooks on the model's own submodules, so the profile times the real
forward (no copy of it that could drift): the trunk, every x2 upsampling, the tail (HRconv +
conv_last), the GCN, each scale's splat and prior head, and each scale's fusion (MSAF); "rest"
is the full forward minus those (landmark checks, projections to the splat, activations). On
the CPU every op is synchronous, so the time between a module's pre- and post-hook is its cost.
Each row also says its share of the forward; two totals close the table, with landmarks and
without (the image path alone = the plain RRDB of the same size), timed in alternation (median
per call), so their ratio is what the prior costs even on a loaded machine.

``clock="cpu"`` times with the process's CPU time instead of the wall clock: on a machine shared
with other jobs it does not count the time the process waits for a core, so it is the steadier
measure there; with several torch threads it sums their CPU time (use it with one thread).
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import nn

from .presets import PRESETS, create_shipped

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


@dataclass
class StageRow:
    model: str
    batch: int
    lr_size: int
    stage: str
    calls: int  # calls per forward pass
    ms: float  # per forward pass (per batch)
    share: float  # of the forward with landmarks (stages: of the hooked passes they were timed in)


def _stage_modules(model: nn.Module) -> dict[nn.Module, str]:
    """Module -> stage label; labels ending in '@' get the output's H x W appended per call."""
    bb = model.backbone
    stages = {bb.conv_first: "trunk", bb.RRDB_trunk: "trunk", bb.trunk_conv: "trunk",
              bb.HRconv: "tail (HRconv + conv_last)", bb.conv_last: "tail (HRconv + conv_last)"}
    if hasattr(bb, "upsample"):
        stages[bb.upsample] = "upsample: nearest x2 @"
    for i in range(1, bb.num_up + 1):
        stages[getattr(bb, f"upconv{i}")] = "upsample: conv @"
    stages[bb.lrelu] = "backbone LeakyReLU @"
    prior = getattr(model, "prior", None)
    if prior is not None:
        stages[prior.gcn] = "gcn"
        if hasattr(prior, "splat"):
            stages[prior.splat] = "prior splat @"
        for head in prior.heads:
            stages[head] = "prior head @"
        for fusion in model.fusions:
            stages[fusion] = "fusion (MSAF) @"
    return stages


def interleaved_medians(fns: list, min_time: float, clock=time.perf_counter) -> list[float]:
    """Median seconds per call of each function, calling them in turn until ``min_time`` has passed.

    Alternating the calls exposes every function to the same load, and the median drops the calls
    another job slowed down: on a shared machine the ratio of two medians is far steadier than the
    ratio of two means timed one after the other.
    """
    for fn in fns:
        fn()  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    start = clock()
    while clock() - start < min_time or len(times[0]) < 3:
        for fn, t in zip(fns, times):
            t0 = clock()
            fn()
            t.append(clock() - t0)
    return [sorted(t)[len(t) // 2] for t in times]


def _hooked_times(model: nn.Module, run, min_time: float, clock) -> tuple[dict[str, float], dict[str, int], int]:
    """Seconds per stage summed over ``n`` forward passes (and under "rest" what no stage covers), calls
    per stage in one pass, and ``n``."""
    stages = _stage_modules(model)
    total: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    starts: dict[int, list[float]] = defaultdict(list)

    def pre(module, _args):
        starts[id(module)].append(clock())

    def post(module, _args, out):
        t = clock() - starts[id(module)].pop()
        label = stages[module]
        if label.endswith("@"):
            out0 = out[0] if isinstance(out, (tuple, list)) else out
            label = f"{label[:-1]}{out0.shape[-2]}x{out0.shape[-1]}"
        total[label] += t
        calls[label] += 1

    handles = [h for m in stages for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
    try:
        run()  # warm-up
        total.clear()
        calls.clear()
        n, start = 0, clock()
        while True:
            run()
            n += 1
            if (elapsed := clock() - start) >= min_time:
                break
    finally:
        for h in handles:
            h.remove()
    total["rest"] = elapsed - sum(total.values())
    calls["rest"] = n
    return total, {k: v // n for k, v in calls.items()}, n


def profile_stages(model: nn.Module, batch: int = 1, lr_size: int | None = None, min_time: float = 2.0,
                   name: str | None = None, seed: int = 0, clock: str = "wall") -> list[StageRow]:
    """Per-stage milliseconds of ``model``'s forward on random input and landmarks (``torch.inference_mode``).

    ``model``: an AffectSRNet (any preset or config; weights do not change the timing). Rows are in
    forward order, then "rest", "total (landmarks)" and "total (no landmarks)"; ``share`` is each
    row's fraction of the total with landmarks. Threads: whatever ``torch.get_num_threads()`` is.
    """
    if not hasattr(model, "backbone") or not hasattr(model, "fusions"):
        raise ValueError(f"profile_stages needs an AffectSRNet, got {type(model).__name__}")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    tick = CLOCKS[clock]
    cfg = model.config
    s = lr_size or cfg.in_size
    gen = torch.Generator().manual_seed(seed)
    lr = torch.rand(batch, 3, s, s, generator=gen)
    lm = torch.rand(batch, model.num_landmarks, 3, generator=gen)
    lm[..., :2] = 0.15 + 0.7 * lm[..., :2]  # inside the crop, as detections are
    lm[..., 2] = (lm[..., 2] - 0.5) * 0.1
    model = model.eval()
    with torch.inference_mode():
        per_stage, calls, n = _hooked_times(model, lambda: model(lr, lm), min_time, tick)
        total, plain = interleaved_medians([lambda: model(lr, lm), lambda: model(lr, None)], 2 * min_time, tick)
    label = name or getattr(model, "name", None) or f"affectsrnet-x{cfg.scale}"
    hooked = sum(per_stage.values()) / n  # shares are of the hooked passes, so they add up to 100%
    rows = [StageRow(label, batch, s, k, calls[k], v / n * 1e3, v / n / hooked) for k, v in per_stage.items()]
    rows.append(StageRow(label, batch, s, "total (landmarks)", 1, total * 1e3, 1.0))
    rows.append(StageRow(label, batch, s, "total (no landmarks)", 1, plain * 1e3, plain / total))
    return rows


def profile_markdown(rows: list[StageRow]) -> str:
    """One table per (model, batch): stage, calls, ms per batch, share of the forward with landmarks."""
    out: list[str] = []
    for key in dict.fromkeys((r.model, r.batch, r.lr_size) for r in rows):
        sel = [r for r in rows if (r.model, r.batch, r.lr_size) == key]
        with_lm = next(r.ms for r in sel if r.stage == "total (landmarks)")
        plain = next(r.ms for r in sel if r.stage == "total (no landmarks)")
        out += [f"{key[0]}, batch {key[1]}, {key[2]} px input: prior + fusion = {with_lm - plain:.2f} ms "
                f"= {(with_lm - plain) / plain:.0%} of the image path ({plain / with_lm:.2f}x its speed)", "",
                "| stage | calls | ms | share |", "|---|---:|---:|---:|"]
        out += [f"| {r.stage} | {r.calls} | {r.ms:.2f} | {r.share:.1%} |" for r in sel]
        out.append("")
    return "\n".join(out)


def profile_presets(names: list[str] | None = None, batches: list[int] | None = None, min_time: float = 2.0,
                    clock: str = "wall") -> list[StageRow]:
    """:func:`profile_stages` of presets with a landmark prior (default: every ``affectsr-*`` preset),
    untrained (the timing does not depend on the weights), at each batch size."""
    names = names or [n for n, (cfg, _) in PRESETS.items() if getattr(cfg, "prior", "none") != "none"]
    rows: list[StageRow] = []
    for name in names:
        if name not in PRESETS:
            raise ValueError(f"unknown model {name!r}; known: {', '.join(PRESETS)}")
        if getattr(PRESETS[name][0], "prior", "none") == "none":
            raise ValueError(f"{name} has no landmark prior to profile (profile the affectsr-* presets)")
        model = create_shipped(name)  # the shipped file's config
        for b in batches or [1]:
            rows += profile_stages(model, b, min_time=min_time, name=name, clock=clock)
    return rows
