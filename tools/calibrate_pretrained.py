"""The calibration experiment of issue 12: which recipe turns Real-ESRGAN's frozen trunk into the best full
preset on a 2-core CPU? Trains one variant for a fixed CPU-time budget on cached trunk features and
logs PSNR-Y on a test subset as it goes. The recipe it chose is `affectsr train-frozen-trunk`
(affectsr/train/frozen_trunk.py); its logs are summarised in docs/RESULTS.md.

    # 1. trunk features of a train and a test subset (K blocks short of the end; K >= any --train-blocks)
    python tools/calibrate_pretrained.py features --scale 4 --out RUN --n-train 1200 --n-test 200 --stop-before 2
    # 2. one variant per call, each for the same CPU time (1 thread)
    python tools/calibrate_pretrained.py train --run RUN --variant b --cpu-minutes 12

Variants (all start from Real-ESRGAN x4plus; L1 loss, Adam):
  a   the upsampling path only (upconv*, HRconv, conv_last), output = head(features)
  b   the same plus a global bicubic skip: output = bicubic(LR) + head(features), conv_last zeroed
  c   b plus the landmark prior (AffectSRNet prior='spatial') and MSAF fusion at every scale
  d   b with the last --train-blocks RRDB blocks trainable too (the cache stops before them)
At x8 the third x2 stage (upconv3) is new: --up3-init default (PyTorch's) or dirac (identity conv).

The budget is the process's CPU time (time.process_time), not wall time: the machine is shared,
and with one thread CPU time is what the run would take alone. Evaluation time is not counted.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# this checkout's package, not an installed one (a tool run from another worktree measures that worktree's code)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from affectsr.atomic import atomic_write  # noqa: E402
from affectsr.data.dataset import FaceCache, make_batch  # noqa: E402
from affectsr.data.trunk_cache import TrunkCache, TrunkCacheConfig, build_trunk_cache, finish_trunk  # noqa: E402
from affectsr.images import resize  # noqa: E402
from affectsr.metrics import psnr_y, to_tensor  # noqa: E402
from affectsr.models.affectsrnet import AffectSRNet, ModelConfig  # noqa: E402
from affectsr.models.realesrgan import rrdb_state_dict  # noqa: E402

CACHES = ["/work/main/.data/cache/utkface_aligned", "/work/main/.data/cache/taiwanese_expr"]


def features(a: argparse.Namespace) -> None:
    torch.set_num_threads(a.threads)
    run = Path(a.out)
    rng = np.random.default_rng(a.seed)
    for split, n in (("train", a.n_train), ("test", a.n_test)):
        faces = FaceCache(a.caches, split=split)
        idx = np.sort(rng.choice(len(faces), size=min(n, len(faces)), replace=False)).tolist()
        cfg = TrunkCacheConfig(a.caches, a.scale, split, a.stop_before, shard_size=200, batch_size=8, indices=idx)
        stats = build_trunk_cache(cfg, run / f"x{a.scale}-{split}", threads=a.threads, faces=faces)
        print(json.dumps({"split": split, "scale": a.scale, "threads": a.threads, **stats}), flush=True)


def _savez(path: Path, arrays: dict) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


class Data:
    """Trunk features (``k`` blocks short of the end), LR, HR and LR landmarks of one cached subset, in memory.

    A cache made further from the end than ``k`` is advanced once by its frozen blocks (saved beside it
    as ``derived-k{k}.npz``), so no training step pays for frozen blocks.
    """

    def __init__(self, path: Path, caches: list[str], k: int, backbone):
        self.tc = TrunkCache(path)
        faces = FaceCache(caches, split=self.tc.meta["split"])
        self.tc.check_faces(faces)
        idx, s = self.tc.index, self.tc.scale
        self.fea, self.base = self.tc.fea, self.tc.arrays.get("base")
        if k > self.tc.stop_before:
            raise SystemExit(f"--train-blocks {k} needs a cache made with --stop-before >= it (has {self.tc.stop_before})")
        if k < self.tc.stop_before:
            derived = path / f"derived-k{k}.npz"
            if not derived.is_file():
                nb, k0 = len(backbone.RRDB_trunk), self.tc.stop_before
                out_f, out_b = [], []
                with torch.no_grad():
                    for j in range(0, len(idx), 25):
                        fea, base = self.tc.batch(np.arange(j, min(j + 25, len(idx))))
                        fea = backbone.RRDB_trunk[nb - k0: nb - k](fea)
                        if k == 0:
                            fea = base + backbone.trunk_conv(fea)
                        out_f.append(fea.half().numpy())
                        out_b.append(base.half().numpy())
                arrays = {"fea": np.concatenate(out_f)}
                if k:
                    arrays["base"] = np.concatenate(out_b)
                _savez(derived, arrays)
            with np.load(derived) as z:
                self.fea, self.base = z["fea"], (z["base"] if k else None)
        b = make_batch(faces, idx, s, "bicubic", landmarks="detect")
        self.lr, self.hr, self.lm = b.lr, b.hr, b.landmarks
        lr_u8 = (self.lr * 255).round().byte().permute(0, 2, 3, 1).numpy()
        self.bicubic_pil = to_tensor(np.stack([resize(x, (x.shape[1] * s, x.shape[0] * s)) for x in lr_u8]))
        self.scale, self.k = s, k

    def __len__(self) -> int:
        return len(self.lr)

    def get(self, rows: np.ndarray):
        fea = torch.from_numpy(self.fea[rows]).float()
        base = torch.from_numpy(self.base[rows]).float() if self.k else None
        return fea, base, self.lr[rows], self.hr[rows], self.lm[rows]


def build_model(variant: str, scale: int, up3_init: str) -> AffectSRNet:
    cfg = ModelConfig(scale=scale, in_size=32 if scale == 4 else 16, prior="spatial" if variant == "c" else "none",
                      residual=variant != "a")
    model = AffectSRNet(cfg)
    model.load_backbone(rrdb_state_dict())
    if cfg.residual:  # load_backbone brought Real-ESRGAN's conv_last: zero it again so the start is bicubic
        torch.nn.init.zeros_(model.backbone.conv_last.weight)
        torch.nn.init.zeros_(model.backbone.conv_last.bias)
    if scale == 8 and up3_init == "dirac":
        torch.nn.init.dirac_(model.backbone.upconv3.weight)
        torch.nn.init.zeros_(model.backbone.upconv3.bias)
    return model


def head_forward(model: AffectSRNet, fea: torch.Tensor, lr: torch.Tensor, lm: torch.Tensor | None,
                 skip: torch.Tensor | None = None) -> torch.Tensor:
    """AffectSRNet.forward from the trunk's output on (the lines after the trunk in RRDBNet/AffectSRNet).

    ``skip``: the bicubic image to add (a crop of the full face's); default: bicubic of ``lr``."""
    bb = model.backbone
    fuse = None
    if model.prior is not None and lm is not None:
        valid = torch.isfinite(lm).flatten(1).all(1)
        lm0 = torch.where(valid[:, None, None], lm, torch.zeros_like(lm))
        h, w = lr.shape[-2:]
        priors = model.prior(lm0, [(h * 2**k, w * 2**k) for k in range(bb.num_up + 1)])
        fuse = lambda i, f: model.fusions[i](f, priors[i], valid)  # noqa: E731
    if fuse is not None:
        fea = fuse(0, fea)
    for i in range(1, bb.num_up + 1):
        fea = bb.lrelu(getattr(bb, f"upconv{i}")(F.interpolate(fea, scale_factor=2, mode="nearest")))
        if fuse is not None:
            fea = fuse(i, fea)
    out = bb.conv_last(bb.lrelu(bb.HRconv(fea)))
    if model.config.residual:
        out = out + (skip if skip is not None else F.interpolate(lr, scale_factor=model.scale, mode="bicubic",
                                                                   align_corners=False))
    return out


def forward(model, data: Data, rows, train_blocks: int, crop: int = 0,
            g: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(SR, HR) of cache rows; ``crop`` > 0: a random crop-px HR patch per face (features cropped alike)."""
    fea, base, lr, hr, lm = data.get(rows)
    skip = None
    if crop:
        s, c = data.scale, crop // data.scale
        n = lr.shape[-1] - c + 1
        offs = torch.randint(0, n, (len(rows), 2), generator=g).tolist()
        cut = lambda t, f: torch.stack([t[i, :, y * f:(y + c) * f, x * f:(x + c) * f] for i, (y, x) in enumerate(offs)])  # noqa: E731
        full = F.interpolate(lr, scale_factor=s, mode="bicubic", align_corners=False)
        fea, hr, skip = cut(fea, 1), cut(hr, s), cut(full, s)
        base = cut(base, 1) if base is not None else None
        lm = None  # the prior needs whole faces (variant c trains without crops)
    fea = finish_trunk(model.backbone, fea, base, train_blocks)  # the trainable blocks, if any
    return head_forward(model, fea, lr, lm, skip), hr


@torch.no_grad()
def evaluate(model, data: Data, train_blocks: int, bs: int = 25) -> float:
    model.eval()
    ps = []
    for j in range(0, len(data), bs):
        rows = np.arange(j, min(j + bs, len(data)))
        sr, hr = forward(model, data, rows, train_blocks)
        ps.append(psnr_y(sr.clamp(0, 1), hr, data.scale))
    model.train()
    return float(torch.cat(ps).mean())


def train(a: argparse.Namespace) -> None:
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    run = Path(a.run)
    model = build_model(a.variant, a.scale, a.up3_init)
    t0 = time.perf_counter()
    tr = Data(run / f"x{a.scale}-train", a.caches, a.train_blocks, model.backbone)
    te = Data(run / f"x{a.scale}-test", a.caches, a.train_blocks, model.backbone)
    print(json.dumps({"data_load_s": round(time.perf_counter() - t0, 1)}), flush=True)
    bb = model.backbone
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = [bb.HRconv, bb.conv_last, *[getattr(bb, f"upconv{i}") for i in range(1, bb.num_up + 1)]]
    if a.variant == "c":
        trainable += [model.prior, model.fusions]
    if a.train_blocks:
        trainable += [*bb.RRDB_trunk[len(bb.RRDB_trunk) - a.train_blocks:], bb.trunk_conv]
    params = [p for m in trainable for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    # the split forward is the model's forward (checked on test faces, full trunk run from the LR), with the
    # trainable weights perturbed so that the zero-initialised conv_last and fusions do not hide a difference
    with torch.no_grad():
        backup = {k: v.clone() for k, v in model.state_dict().items()}
        for p in params:
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.02)
        rows = np.arange(2)
        _, _, lr, _, lm = te.get(rows)
        ref = model(lr, lm if a.variant == "c" else None)
        got, _ = forward(model, te, rows, a.train_blocks)
        print(json.dumps({"split_forward_max_abs_diff": float((got - ref).abs().max()),
                          "output_range": [float(ref.min()), float(ref.max())]}), flush=True)
        assert torch.allclose(got, ref, atol=2e-2), float((got - ref).abs().max())  # fp16 cache
        model.load_state_dict(backup)
    opt = torch.optim.Adam(params, lr=a.lr, betas=(0.9, 0.99))
    bic = float(psnr_y(te.bicubic_pil, te.hr, a.scale).mean())
    log_path = run / f"log-x{a.scale}-{a.name}.jsonl"
    log = open(log_path, "w")

    def record(step: int, cpu: float, wall: float, eval_s: float) -> None:
        t = time.perf_counter()
        p = evaluate(model, te, a.train_blocks)
        rec = {"variant": a.name, "scale": a.scale, "step": step, "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
               "psnr_y": round(p, 3), "bicubic": round(bic, 3), "gain_db": round(p - bic, 3),
               "steps_per_cpu_s": round(step / cpu, 4) if cpu else None, "eval_s": round(eval_s + time.perf_counter() - t, 1)}
        print(json.dumps(rec), flush=True)
        log.write(json.dumps(rec) + "\n")
        log.flush()
        return time.perf_counter() - t

    n_params = sum(p.numel() for p in params)
    print(json.dumps({"variant": a.name, "trainable_params": n_params, "train_faces": len(tr), "test_faces": len(te),
                      "bicubic_pil": bic, "threads": a.threads}), flush=True)
    model.train()
    g = torch.Generator().manual_seed(a.seed)
    budget = a.cpu_minutes * 60
    every = budget / a.evals
    eval_cpu, eval_wall = 0.0, 0.0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if a.eval0:  # variants b-d start at the torch-bicubic skip exactly: once is enough
        eval_wall += record(0, 0.0, 0.0, 0.0)
        eval_cpu = time.process_time() - cpu0
    step, next_eval, perm, pos = 0, every, torch.randperm(len(tr), generator=g).numpy(), 0
    while True:
        cpu = time.process_time() - cpu0 - eval_cpu
        if cpu >= next_eval or cpu >= budget:
            c0 = time.process_time()
            eval_wall += record(step, cpu, time.perf_counter() - wall0 - eval_wall, 0.0)
            eval_cpu += time.process_time() - c0
            next_eval += every
            if cpu >= budget:
                break
        if pos + a.batch > len(perm):
            perm, pos = torch.randperm(len(tr), generator=g).numpy(), 0
        rows = np.sort(perm[pos:pos + a.batch])
        pos += a.batch
        sr, hr = forward(model, tr, rows, a.train_blocks, a.crop, g)
        loss = (sr - hr).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
    log.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("features")
    f.add_argument("--scale", type=int, choices=(4, 8), required=True)
    f.add_argument("--out", required=True)
    f.add_argument("--n-train", type=int, default=1200)
    f.add_argument("--n-test", type=int, default=200)
    f.add_argument("--stop-before", type=int, default=2)
    t = sub.add_parser("train")
    t.add_argument("--run", required=True)
    t.add_argument("--scale", type=int, choices=(4, 8), required=True)
    t.add_argument("--variant", choices=("a", "b", "c", "d"), required=True)
    t.add_argument("--name", default=None, help="label in the log (default: the variant)")
    t.add_argument("--train-blocks", type=int, default=0, help="variant d: RRDB blocks trained at the end of the trunk")
    t.add_argument("--up3-init", choices=("default", "dirac"), default="dirac")
    t.add_argument("--cpu-minutes", type=float, default=12)
    t.add_argument("--evals", type=int, default=3, help="evaluations during the budget (the last one at its end)")
    t.add_argument("--eval0", action="store_true", help="also evaluate before the first step")
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--lr", type=float, default=2e-4)
    t.add_argument("--crop", type=int, default=0, help="train on random HR patches of this side (0: whole faces)")
    for q in (f, t):
        q.add_argument("--caches", nargs="+", default=CACHES)
        q.add_argument("--threads", type=int, default=1)
        q.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.cmd == "train" and a.crop and a.variant == "c":
        p.error("variant c trains on whole faces (the prior is drawn over the whole face): no --crop")
    if a.cmd == "features":
        features(a)
    else:
        if a.variant == "d" and not a.train_blocks:
            a.train_blocks = 1
        a.name = a.name or (a.variant + (str(a.train_blocks) if a.variant == "d" else ""))
        train(a)


if __name__ == "__main__":
    sys.exit(main())
