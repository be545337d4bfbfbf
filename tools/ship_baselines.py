"""Ship the trained comparison baselines as presets (weights + model card), from tools/results.sh's outputs.

    python tools/ship_baselines.py            # after tools/results.sh (needs .data/runs/compare-x*/ and .data/eval/)

For each scale, the `rrdb`, `srcnn`, `fsrnet` and `dic` rows of docs/RESULTS.md become
``affectsr/weights/{rrdb-x?-lite,srcnn-x?,fsrnet-x?,dic-x?}.safetensors`` (fp16 EMA weights) with a
model card whose numbers are copied from the same evaluation (``.data/eval/compare-x?/summary.json``),
so ``affectsr upscale --model fsrnet-x8`` or ``affectsr evaluate --model dic-x4`` work by name.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from affectsr.atomic import atomic_write  # noqa: E402
from affectsr.models import PRESETS, count_params, load_model, save_weights  # noqa: E402
from affectsr.weights import WEIGHTS_DIR, read_metadata  # noqa: E402

ROWS = {"rrdb": "rrdb-x{s}-lite", "srcnn": "srcnn-x{s}", "fsrnet": "fsrnet-x{s}", "dic": "dic-x{s}"}
WHAT = {
    "rrdb": "ESRGAN's RRDBNet at the -lite size (nf32 nb3 gc16) without any prior: AffectSRNet-lite minus its "
            "landmark prior and fusion, trained with L1 only.",
    "srcnn": "SRCNN 9-1-5 (64/32 channels) on the bicubic-upsampled face, predicting the residual over bicubic "
             "(a change from the paper, so that a short budget starts from bicubic), trained with L1.",
    "fsrnet": "FSRNet-style network: coarse SR, then an hourglass that estimates 64 keypoint heatmaps (from MediaPipe's "
              "478 landmarks) beside a fine encoder, and a decoder on both; trained with L1 + coarse L1 + heatmap loss "
              "against the HR landmarks. No face-parsing maps (no parsing labels here).",
    "dic": "DIC-style network: a shared recurrent SR block and a shared landmark branch alternate for 3 steps; "
           "the previous step's heatmaps, grouped into 6 face parts, attend over per-part features; trained with "
           "L1 on every step + heatmap loss against the HR landmarks.",
}


def card(preset: str, row: str, scale: int, run: Path, summary: dict, run_json: dict, meta: dict, params: int) -> str:
    cfg = json.loads((run / "config.json").read_text())
    m, b = summary[row], summary["bicubic"]

    def line(name: str, x: dict) -> str:
        return (f"| {name} | {x['psnr']:.2f} | {x['ssim']:.4f} | {x['ecm']:.3f} | {100 * x['agreement']:.1f}% | "
                f"{x['kl']:.3f} |")

    return f"""# {preset}

Baseline for docs/RESULTS.md. {WHAT[row]} {params / 1e6:.2f} M parameters, x{scale}
({128 // scale} px -> 128 px faces). **A comparison baseline at the CPU budget, not a production model**: trained for
{meta['steps']} steps from scratch, exactly like every other row of the comparison (same data, steps, batch, seed,
schedule). Use `affectsr-x{scale}-lite` for upscaling.

## Training

- Data: the `train` splits of `utkface_aligned` and `taiwanese_expr` from `../shared/data` (academic,
  non-commercial terms, which these weights inherit; see their MANIFEST.md), cropped by `affectsr prepare`
  (MediaPipe face box, `square(margin=0.6)`, 128 px); LR = PIL bicubic /{scale}.
- Adam, lr {cfg['lr']} cosine, {cfg['warmup']} warm-up steps, batch {cfg['batch_size']}, grad-clip {cfg['grad_clip']},
  EMA {cfg['ema_decay']} (shipped = EMA, fp16), seed {cfg['seed']}, {meta['steps']} steps; emotion loss weight
  {cfg['lambda_emo']}.
- Machine: {meta.get('machine', '?')}; wall time {float(meta.get('train_seconds', 'nan')) / 60:.0f} min on a CPU
  shared with other jobs (not a speed figure).
- Command: `tools/train_comparison.sh {scale} {row}` (= `python -m affectsr train model={cfg['model']} ...`, see
  `.data/runs/compare-x{scale}/{row}/config.json` after a run).

## Test results

`{run_json['command']}` ({run_json['faces']} test faces: {run_json['data']['path']}; {run_json['machine']},
{run_json['date']}). PSNR/SSIM on Y with {scale} px border cropped; ECM with `{run_json['classifier']}`
(alpha 0.5, 10 bins; lower is better); agreement = same top FER class on SR as on HR.

| method | PSNR-Y (dB) | SSIM-Y | ECM | FER agreement with HR | KL(p_HR‖p_SR) |
|---|---|---|---|---|---|
{line('bicubic', b)}
{line(preset, m)}

Every row of the comparison: docs/RESULTS.md.
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scales", default="4,8")
    ap.add_argument("--runs", default=".data/runs/compare-x{s}")
    ap.add_argument("--eval", default=".data/eval/compare-x{s}")
    args = ap.parse_args()
    for s in (int(x) for x in args.scales.split(",")):
        summary = json.loads((Path(args.eval.format(s=s)) / "summary.json").read_text())
        run_json = json.loads((Path(args.eval.format(s=s)) / "run.json").read_text())
        for row, pattern in ROWS.items():
            preset = pattern.format(s=s)
            run = Path(args.runs.format(s=s)) / row
            if preset not in PRESETS or row not in summary or not (run / "ema.safetensors").is_file():
                print(f"skip {preset}: no run or no evaluation")
                continue
            meta = read_metadata(run / "ema.safetensors", "sr")
            net = load_model(str(run / "ema.safetensors"))
            keep = {k: meta[k] for k in ("steps", "seed", "train_seconds", "machine", "train_config") if k in meta}
            save_weights(net, WEIGHTS_DIR / f"{preset}.safetensors", half=True, metadata=keep)
            text = card(preset, row, s, run, summary, run_json, meta, count_params(net))
            atomic_write(WEIGHTS_DIR / f"{preset}.md", lambda tmp, t=text: Path(tmp).write_text(t))
            print(f"shipped {preset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
