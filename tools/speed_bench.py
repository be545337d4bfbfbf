"""The speed table of docs/SPEED.md: every AffectSRNet preset against its plain RRDB, in PyTorch and ONNX Runtime.

One ``affectsr bench`` run (``affectsr.bench.run_bench``) over affectsr-x4-lite, affectsr-x8-lite, affectsr-x4 and
affectsr-x8 and the RRDB each is compared with, headed by the date, the machine, the torch threads and the
machine's load (``os.getloadavg``) before and after. The -lite presets are timed as they will be retrained:
with ``presets.FAST`` applied and random weights (speed does not depend on the weights' values; ``--shipped``
times the shipped network instead). ``--rounds R`` repeats the whole run and keeps each row's best faces/s,
which on a machine shared with other jobs is closer to what the code costs than any single round.

``--clock cpu`` measures instead what each forward costs in process CPU time at one thread, each model in
alternation with its RRDB (median per call, ``affectsr.profile.interleaved_medians``): time other jobs hold
the cores does not count, so on a loaded machine this is the figure that says what the prior costs; faces
per CPU-second is the single-core speed of an idle core (up to cache effects).

    python tools/speed_bench.py --batch 1,8 --min-time 2 --rounds 2 --threads 2 --json docs/speed.json
    python tools/speed_bench.py --clock cpu --batch 1,8 --min-time 4
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from affectsr.bench import add_ratios, machine, run_bench, to_markdown
from affectsr.models import presets

NAMES = ["affectsr-x4-lite", "affectsr-x8-lite", "affectsr-x4", "affectsr-x8"]


@contextmanager
def fast_lite_presets():
    """PRESETS with FAST applied to the -lite presets, for this block only."""
    saved = {name: presets.PRESETS[name] for name in presets.FAST}
    try:
        for name, fast in presets.FAST.items():
            cfg, desc = saved[name]
            presets.PRESETS[name] = (dataclasses.replace(cfg, **fast), f"{desc} (FAST settings)")
        yield
    finally:
        presets.PRESETS.update(saved)


def best_of(rounds: list[list]) -> list:
    """Each row's fastest round, ratios recomputed from those rows."""
    best: dict[tuple, object] = {}
    for rows in rounds:
        for r in rows:
            key = (r.name, r.stage, r.device, r.dtype, r.options, r.batch, r.lr_size, r.scale)
            if key not in best or r.faces_per_s > best[key].faces_per_s:
                best[key] = dataclasses.replace(r, vs_rrdb=None, slower_than_bicubic=None)
    return add_ratios(list(best.values()))


def cpu_ratios(names: list[str], batches: list[int], min_time: float, backends: tuple[str, ...]) -> list[dict]:
    """Per preset, backend and batch: CPU ms per forward of the preset and of its RRDB, timed in alternation."""
    import tempfile
    import time

    from affectsr.bench import rrdb_reference
    from affectsr.export import OnnxSRModel, export_onnx
    from affectsr.models import create_model
    from affectsr.models.profile import interleaved_medians

    torch.set_num_threads(1)
    out = []
    with tempfile.TemporaryDirectory(prefix="speed-bench-") as tmp, torch.inference_mode():
        for name in names:
            ref = rrdb_reference(name)
            nets = {"torch": (create_model(name).eval(), create_model(ref).eval())}
            if "onnxruntime" in backends:
                nets["onnxruntime"] = tuple(OnnxSRModel(export_onnx(n, Path(tmp) / f"{i}.onnx", check=False).path, threads=1)
                                            for i, n in enumerate(nets["torch"]))
            s = nets["torch"][0].config.in_size
            for backend in backends:
                net, rrdb = nets[backend]
                for b in batches:
                    gen = torch.Generator().manual_seed(0)
                    lr = torch.rand(b, 3, s, s, generator=gen)
                    lm = torch.rand(b, 478, 3, generator=gen) * 0.7 + 0.15
                    t, t_ref = interleaved_medians([lambda: net(lr, lm), lambda: rrdb(lr)], min_time, time.process_time)
                    out.append({"name": name, "rrdb": ref, "backend": backend, "batch": b, "cpu_ms": 1e3 * t,
                                "rrdb_cpu_ms": 1e3 * t_ref, "faces_per_cpu_s": b / t, "vs_rrdb": t_ref / t})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(NAMES))
    p.add_argument("--batch", default="1,8")
    p.add_argument("--backend", default="torch,onnxruntime")
    p.add_argument("--min-time", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads (default: torch's)")
    p.add_argument("--shipped", action="store_true", help="time the -lite presets as shipped, without FAST")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: `affectsr bench` rows; cpu: process CPU time at one thread, each preset alternating with its RRDB")
    p.add_argument("--json", default=None, help="also write rows and context here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in args.models.split(",") if n]
    batches = [int(b) for b in args.batch.split(",")]
    backends = tuple(args.backend.split(","))
    load_before = os.getloadavg()
    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if args.clock == "cpu":
        with nullcontext() if args.shipped else fast_lite_presets():
            res = cpu_ratios(names, batches, args.min_time, backends)
        load_after = os.getloadavg()
        print(f"{when}; {machine()}; load average {', '.join(f'{x:.1f}' for x in load_before)} before, "
              f"{', '.join(f'{x:.1f}' for x in load_after)} after; process CPU time, 1 thread, median per call, "
              f"each preset alternating with its RRDB; -lite presets: {'as shipped' if args.shipped else 'FAST settings'}"
              "\n\n| preset | backend | batch | CPU ms per batch | RRDB CPU ms | faces per CPU-second | vs RRDB |\n"
              "|---|---|---:|---:|---:|---:|---:|")
        for r in res:
            print(f"| {r['name']} | {r['backend']} | {r['batch']} | {r['cpu_ms']:.1f} | {r['rrdb_cpu_ms']:.1f} | "
                  f"{r['faces_per_cpu_s']:.1f} | {r['vs_rrdb']:.2f} |")
        if args.json:
            Path(args.json).write_text(json.dumps({"date": when, "machine": machine(), "load_before": load_before,
                                                   "load_after": load_after, "clock": "cpu", "rows": res}, indent=2))
        return 0
    rounds = []
    for _ in range(args.rounds):
        with nullcontext() if args.shipped else fast_lite_presets():
            rounds.append(run_bench(names, batches, "cpu", args.min_time, backends=backends, landmarks=False))
    rows = best_of(rounds)
    load_after = os.getloadavg()
    import onnxruntime

    head = (f"{when}; {machine()}; onnxruntime {onnxruntime.__version__}; load average (1, 5, 15 min) "
            f"{', '.join(f'{x:.1f}' for x in load_before)} before, {', '.join(f'{x:.1f}' for x in load_after)} after; "
            f"best of {args.rounds} round(s); -lite presets: {'as shipped' if args.shipped else 'FAST settings'}, "
            f"random weights")
    print(head + "\n\n" + to_markdown(rows).split("\n", 2)[2])
    prior_rows = [r for r in rows if r.stage == "model" and r.name.startswith("affectsr-")]
    worst = min(prior_rows, key=lambda r: r.vs_rrdb or 0.0)
    print(f"\nlowest vs RRDB: {worst.vs_rrdb:.2f} ({worst.name}, {worst.device}, batch {worst.batch})")
    if args.json:
        blob = {"date": when, "machine": machine(), "onnxruntime": onnxruntime.__version__,
                "load_before": load_before, "load_after": load_after, "rounds": args.rounds,
                "lite": "shipped" if args.shipped else presets.FAST, "rows": [dataclasses.asdict(r) for r in rows]}
        Path(args.json).write_text(json.dumps(blob, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
