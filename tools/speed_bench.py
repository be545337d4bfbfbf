"""The README's speed tables: every AffectSRNet preset against its plain RRDB (PyTorch and ONNX Runtime), and
whole 1080p frames through detection + landmarks + SR + paste; ``--readme`` rewrites them in place.

The preset table is one ``affectsr bench`` run (``affectsr.bench.run_bench``) over affectsr-x4, affectsr-x8,
affectsr-x4-lite and affectsr-x8-lite as they ship (the full presets: as they are built until weights ship), the
cheap prior of ``presets.FAST`` on the -lite networks (rows ``affectsr-x4-lite-cheap``, ``affectsr-x8-lite-cheap``:
random weights, the configuration the -lite presets take when retrained; speed does not depend on the weights'
values) and the plain RRDB each is compared with, headed by the date, the machine, the threads, the commit and
the machine's load (``os.getloadavg``) before and after. ``--rounds R`` repeats the whole run and keeps each
row's best faces/s, which on a machine shared with other jobs is closer to what the code costs than one round.

``--frames 1,4,16`` adds ``affectsr.bench.bench_frames``: 1920 x 1080 frames with that many faces of 24-48 px
through the whole-image pipeline of ``affectsr upscale`` (x4 preset with shipped weights), per backend, with the
milliseconds per stage.

A second table times each preset in alternation with its RRDB (median per call, ``paired_ratios``): both see
the same load, so on a shared machine its ratio is the steadier one. ``--clock cpu`` prints that table in process
CPU time at one thread instead (time other jobs hold the cores does not count: what the prior costs, whatever
the load) and writes nothing else.

    nice -n -5 python tools/speed_bench.py --batch 1 --threads 2 --frames 1,4,16 --readme README.md
    python tools/speed_bench.py --clock cpu --batch 1,8 --min-time 4
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import onnxruntime
import torch

# this checkout's package, not an installed one (a tool run from another worktree measures that worktree's code)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from affectsr.bench import add_ratios, bench_frames, frames_markdown, machine, rrdb_reference, run_bench, to_markdown  # noqa: E402
from affectsr.export import OnnxSRModel, export_onnx  # noqa: E402
from affectsr.models import presets  # noqa: E402
from affectsr.models.profile import interleaved_medians  # noqa: E402

NAMES = ["affectsr-x4", "affectsr-x8", "affectsr-x4-lite", "affectsr-x8-lite"]  # (both -lite ship the cheap prior)
CHEAP = "-cheap"
BEGIN, END = "<!-- speed-tables:begin (tools/speed_bench.py --readme) -->", "<!-- speed-tables:end -->"


@contextmanager
def cheap_lite_presets():
    """PRESETS plus NAME-cheap = the -lite preset NAME with FAST applied, for this block only."""
    added = []
    try:
        for name, fast in presets.FAST.items():
            cfg, desc = presets.PRESETS[name]
            presets.PRESETS[name + CHEAP] = (dataclasses.replace(cfg, **fast), f"{desc}, cheap prior (FAST)")
            added.append(name + CHEAP)
        yield
    finally:
        for name in added:
            presets.PRESETS.pop(name, None)


def best_of(rounds: list[list]) -> list:
    """Each row's fastest round, ratios recomputed from those rows."""
    best: dict[tuple, object] = {}
    for rows in rounds:
        for r in rows:
            key = (r.name, r.stage, r.device, r.dtype, r.options, r.batch, r.lr_size, r.scale)
            if key not in best or r.faces_per_s > best[key].faces_per_s:
                best[key] = dataclasses.replace(r, vs_rrdb=None, slower_than_bicubic=None)
    return add_ratios(list(best.values()))


def paired_ratios(names: list[str], batches: list[int], min_time: float, backends: tuple[str, ...],
                  clock: str = "wall", threads: int = 1) -> list[dict]:
    """Per preset with a landmark prior, backend and batch: ms per forward of the preset and of its RRDB, called
    in alternation (median per call, ``interleaved_medians``), so both see the same load and a call another job
    slowed down drops out. ``clock="cpu"`` counts process CPU time instead (use 1 thread): what the forward
    costs whatever the load."""
    torch.set_num_threads(threads)
    out = []
    with tempfile.TemporaryDirectory(prefix="speed-bench-") as tmp, torch.inference_mode():
        for name in names:
            if getattr(presets.PRESETS[name][0], "prior", "none") == "none":
                continue
            ref = rrdb_reference(name)
            nets = {"torch": (presets.create_shipped(name).eval(), presets.create_shipped(ref).eval())}
            if "onnxruntime" in backends:
                nets["onnxruntime"] = tuple(OnnxSRModel(export_onnx(n, Path(tmp) / f"{name}-{i}.onnx", check=False).path,
                                                        threads=threads) for i, n in enumerate(nets["torch"]))
            s = nets["torch"][0].config.in_size
            for backend in backends:
                net, rrdb = nets[backend]
                for b in batches:
                    gen = torch.Generator().manual_seed(0)
                    lr = torch.rand(b, 3, s, s, generator=gen)
                    lm = torch.rand(b, 478, 3, generator=gen) * 0.7 + 0.15
                    t, t_ref = interleaved_medians([lambda: net(lr, lm), lambda: rrdb(lr)], min_time,
                                                   time.process_time if clock == "cpu" else time.perf_counter)
                    out.append({"name": name, "rrdb": ref, "backend": backend, "batch": b, "ms": 1e3 * t,
                                "rrdb_ms": 1e3 * t_ref, "faces_per_s": b / t, "vs_rrdb": t_ref / t})
    return out


def paired_markdown(res: list[dict], clock: str) -> str:
    unit = "CPU ms" if clock == "cpu" else "ms"
    rate = "faces per CPU-second" if clock == "cpu" else "faces/s"
    lines = [f"| preset | backend | batch | {unit} per batch | RRDB {unit} | {rate} | RRDB {rate} | vs RRDB |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['name']} | {r['backend']} | {r['batch']} | {r['ms']:.1f} | {r['rrdb_ms']:.1f} | "
              f"{r['faces_per_s']:.1f} | {r['batch'] / r['rrdb_ms'] * 1e3:.1f} | {r['vs_rrdb']:.3f} |" for r in res]
    return "\n".join(lines)


def commit() -> str:
    """The checkout's commit (and '+changes' when the tree differs from it), for the record."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1]).stdout.strip()

    return (git("rev-parse", "--short", "HEAD") or "unknown") + ("+changes" if git("status", "--porcelain", "affectsr") else "")


def cpu() -> str:
    """The CPU's model name and core count (Linux), which machine() leaves out."""
    try:
        name = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        name = "CPU"
    return f"{name}, {os.cpu_count()} cores"


def load(avg: tuple[float, float, float]) -> str:
    return ", ".join(f"{x:.1f}" for x in avg)


def readme_block(command: str, head: str, sections: list[tuple[str, str]]) -> str:
    out = [BEGIN, "", f"`{command}`", "", head]
    for text, table in sections:
        out += ["", text, "", table]
    return "\n".join(out + ["", END])


def write_readme(path: Path, block: str) -> None:
    text = path.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"error: {path} has no {BEGIN} ... {END} block to rewrite")
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(pattern.sub(lambda _: block, text))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(NAMES))
    p.add_argument("--batch", default="1")
    p.add_argument("--backend", default="torch,onnxruntime")
    p.add_argument("--min-time", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads (default 2)")
    p.add_argument("--frames", default="", help="comma-separated face counts for whole 1080p frames, e.g. 1,4,16")
    p.add_argument("--frames-model", default=None,
                   help="preset for the whole-frame rows (default: the x4 preset `affectsr upscale` uses)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: `affectsr bench` rows; cpu: process CPU time at one thread, each preset alternating with its RRDB")
    p.add_argument("--json", default=None, help="also write rows and context here")
    p.add_argument("--readme", default=None, help="rewrite the speed-tables block of this README")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [n for n in args.models.split(",") if n]
    batches = [int(b) for b in args.batch.split(",")]
    backends = tuple(args.backend.split(","))
    load_before = os.getloadavg()
    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes")
    if args.clock == "cpu":
        with cheap_lite_presets():
            res = paired_ratios(names, batches, args.min_time, backends, "cpu", 1)
        print(f"{when}; {cpu()}; load average {load(load_before)} before, {load(os.getloadavg())} after; "
              "process CPU time, 1 thread, median per call, each preset alternating with its RRDB\n\n"
              + paired_markdown(res, "cpu"))
        if args.json:
            Path(args.json).write_text(json.dumps({"date": when, "machine": machine(), "rows": res}, indent=2))
        return 0
    rounds = []
    with cheap_lite_presets():  # (the ratios look the -cheap names up in PRESETS too)
        for _ in range(args.rounds):
            rounds.append(run_bench(names, batches, "cpu", args.min_time, backends=backends, landmarks=False))
        rows = best_of(rounds)
        paired = paired_ratios(names, batches, args.min_time, backends, "wall", args.threads)
    frames = (bench_frames(args.frames_model, [int(n) for n in args.frames.split(",")], backends, args.min_time)
              if args.frames else [])
    load_after = os.getloadavg()
    head = (f"{when}; {cpu()}; {machine()}; torch and onnxruntime {onnxruntime.__version__} with {args.threads} threads; "
            f"commit {commit()}; load average (1, 5, 15 min) {load(load_before)} before, {load(load_after)} after "
            f"(the machine was shared with other jobs); best of {args.rounds} round(s).")
    worst = min(paired, key=lambda r: r["vs_rrdb"]) if paired else None
    shipped = [r for r in paired if not r["name"].endswith(CHEAP)]
    summary = "".join(f" Lowest vs RRDB {what}: {r['vs_rrdb']:.3f} ({r['name']}, {r['backend']})."
                      for what, r in (("as shipped", min(shipped, key=lambda r: r["vs_rrdb"]) if shipped else None),
                                      ("over all rows", worst)) if r is not None)
    sections = [
        ("`affectsr bench` rows (`affectsr.bench.run_bench`: each model timed in turn, mean per call; model forward "
         "only, random landmarks fed)" + (". `-cheap` rows are the -lite networks with the cheap prior of `presets.FAST` "
         "and random weights; the shipped files are the networks of the rows without `-cheap`:"
         if any(r.name.endswith(CHEAP) for r in rows) else ":"), to_markdown(rows).split("\n", 2)[2]),
        ("The same presets, each called in alternation with its plain RRDB (median per call): both see the same "
         "load, so on a shared machine this ratio is the steadier one." + summary, paired_markdown(paired, "wall")),
    ]
    if frames:
        sections.append((
            "Whole frames (`affectsr.bench.bench_frames`): 1920 x 1080 frames with 1, 4 or 16 copies of the bundled "
            f"face at 24-48 px on a noisy grey ground, through the pipeline of `affectsr upscale` with "
            f"`{frames[0].model}` (detection on the whole frame, landmarks per face crop, SR, feathered paste into the bicubic x4 "
            "frame). frames/s times the whole call; the stage columns (ms per frame, share) time the same steps one "
            "by one:", frames_markdown(frames)))
    command = "python tools/speed_bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print("\n\n".join([head] + [f"{t}\n\n{m}" for t, m in sections]))
    if args.json:
        blob = {"date": when, "machine": machine(), "cpu": cpu(), "onnxruntime": onnxruntime.__version__,
                "commit": commit(), "threads": args.threads, "load_before": load_before, "load_after": load_after,
                "rounds": args.rounds, "cheap": presets.FAST, "rows": [dataclasses.asdict(r) for r in rows],
                "paired": paired, "frames": [dataclasses.asdict(r) for r in frames]}
        Path(args.json).write_text(json.dumps(blob, indent=2))
    if args.readme:
        write_readme(Path(args.readme), readme_block(command, head, sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
