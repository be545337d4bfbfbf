"""docs/TEMPORAL.md: does the temporal consistency term steady the SR face? (issue: temporal model)

    tools/train_temporal.sh                  # two fine-tunes of the shipped affectsr-x4-lite, with/without the term
    python tools/temporal_report.py          # flicker on the synthetic clip + PSNR/ECM on the test split, both models

Runs ``tools/video_stability.py --model RUN --no-docs`` and ``affectsr evaluate`` for each run (skipped when
their outputs already exist under .data/, so the page can be regenerated cheaply) and writes the page.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from affectsr.atomic import atomic_write  # noqa: E402

RUNS = {"tc-0": "without the term (lambda_temporal=0)", "tc-1.0": "with the term (lambda_temporal=1.0)"}


def main() -> int:
    py = sys.executable
    stab = {}
    for run in RUNS:
        out = ROOT / f".data/logs/vs-{run}.json"
        if not out.is_file():
            res = subprocess.run([py, "tools/video_stability.py", "--model", f".data/runs/temporal/{run}/ema.safetensors",
                                  "--no-docs", "--data", "../shared/data/taiwanese_expr"], cwd=ROOT, check=True,
                                 capture_output=True, text=True)
            out.write_text(res.stdout)
        stab[run] = json.loads(out.read_text())
    ev = ROOT / ".data/eval/temporal"
    if not (ev / "summary.json").is_file():
        models = "bicubic," + ",".join(f"{r}=.data/runs/temporal/{r}/ema.safetensors" for r in RUNS)
        subprocess.run([py, "-m", "affectsr", "evaluate", "--model", models, "--data", ".data/cache/utkface_aligned",
                        ".data/cache/taiwanese_expr", "--scale", "4", "--landmarks", "detect", "--out", str(ev),
                        "--overwrite", "-q"], cwd=ROOT, check=True)
    summary, run_json = json.loads((ev / "summary.json").read_text()), json.loads((ev / "run.json").read_text())
    cfg = {r: json.loads((ROOT / f".data/runs/temporal/{r}/config.json").read_text()) for r in RUNS}

    rows = []
    for run, what in RUNS.items():
        o = stab[run]["runs"]["smooth"]["stability"]["overall"]
        m = summary[run]
        rows.append(f"| {what} | {o['flicker_sr']:.2f} | {o['flicker_bicubic']:.2f} | {o['flicker_ratio']:.2f} | "
                    f"{1000 * o['fer_js_sr']:.1f} | {100 * o['fer_flip_sr']:.1f}% | {m['psnr']:.2f} | {m['ssim']:.4f} | "
                    f"{m['ecm']:.3f} | {100 * m['agreement']:.1f}% |")
    b = summary["bicubic"]
    c = cfg["tc-1.0"]
    page = f"""# Temporal consistency term

Faces in video flicker after super-resolution (docs/VIDEO.md): every frame is hallucinated afresh. The
optional training term `lambda_temporal` (`affectsr.train`, `affectsr.train.losses`) makes a 'next frame' of
each still training face by a small random affine (shift <= 2 px, rotation <= 2 deg, scale +-2 %),
degrades it like the first, moves its landmarks with the same affine, and penalises the L1 difference
between the first SR output warped by that motion and the second SR output. No video is needed to train it.

Experiment: the shipped `affectsr-x4-lite` fine-tuned twice from the same weights, on the same data,
seed and steps ({c['steps']} steps of batch {c['batch_size']}, lr {c['lr']}, emotion loss {c['lambda_emo']}), once
without and once with the term. Flicker and FER stability on the synthetic clip of
`tools/video_stability.py` (known motion, One-Euro smoothing on); quality on the test split
({run_json['faces']} faces, `{run_json['command']}`).

| fine-tune | flicker SR (8-bit levels) | flicker bicubic | SR / bicubic | FER change JS x1000 | FER label flips | PSNR-Y | SSIM-Y | ECM | agreement |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}
| bicubic | - | - | - | - | - | {b['psnr']:.2f} | {b['ssim']:.4f} | {b['ecm']:.3f} | {100 * b['agreement']:.1f}% |

Machine: {run_json['machine']}; {run_json['date']}. Commands: `tools/train_temporal.sh`, then
`python tools/temporal_report.py`. MediaPipe's detections are not bit-exact, so the clip numbers move in the
last digit between runs (docs/VIDEO.md gives the spread).
"""
    atomic_write(ROOT / "docs/TEMPORAL.md", lambda tmp: Path(tmp).write_text(page))
    print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
