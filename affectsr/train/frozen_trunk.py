"""Frozen-trunk training: a full AffectSRNet initialised from Real-ESRGAN x4plus, trained on cached trunk features.

The RRDB trunk is ~93% of the full preset's compute. Frozen, its features are computed once per face
(:mod:`affectsr.data.trunk_cache`, ``affectsr cache-trunk``), ``stop_before`` blocks short of the end, and
each step runs only what is trained: the last ``train_blocks`` RRDB blocks, trunk_conv, the landmark prior
+ GCN, the MSAF fusions and the upsampling path. For x8 the x4 stages come from Real-ESRGAN and the third
x2 stage is new (``up3_init="dirac"``: it starts as an identity conv). ``residual=True`` adds a global
bicubic skip (conv_last zeroed, so training starts exactly at bicubic): the head learns only what
bicubic misses, which is what makes a GAN-trained frozen trunk pay on small faces (docs/TRAINING.md).

A step trains L1 on random ``crop``-px HR patches of ``batch`` faces (features, prior maps and the bicubic
skip cropped alike; the prior is drawn over the whole face first). Every ``emo_every``-th step instead takes
``emo_batch`` whole faces and adds ``lambda_emo`` x the emotion consistency loss of a frozen FER teacher.

Resumable: ``out/last.pt`` (the trained tensors, Adam, RNG, step, elapsed wall time) is written
atomically every ``checkpoint_minutes``; calling again with the same ``out`` continues until ``minutes``
of wall time (counted over all calls) or ``max_steps``. ``out/model.safetensors`` is the whole model at
the last checkpoint (an ``affectsr`` SR weights file that ``load_model(path)`` reads).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic import atomic_write
from ..data.dataset import FaceCache, make_batch
from ..data.trunk_cache import TrunkCache, finish_trunk
from ..emotion.classifier import load_emotion_classifier
from ..emotion.loss import EmotionConsistencyLoss
from ..images import resize
from ..metrics import psnr_y, to_tensor
from ..models.affectsrnet import AffectSRNet, ModelConfig
from ..models.presets import PRESETS, load_model, parse_config_overrides, read_config, read_state, save_weights
from ..models.realesrgan import base_metadata, rrdb_state_dict
from ..runinfo import machine
from ..weights import load_fitting, read_metadata, write_weights

__all__ = ["FrozenTrunkConfig", "TrunkData", "build_model", "export_weights", "forward_from_trunk", "train_frozen_trunk",
           "trainable_modules"]


@dataclass
class FrozenTrunkConfig:
    out: str
    trunk_cache: str  # train-split trunk cache (``affectsr cache-trunk``), made with stop_before >= train_blocks
    data: list[str] = field(default_factory=list)  # the prepared face caches the trunk cache was built from
    eval_cache: str = ""  # optional trunk cache (e.g. of the test split) evaluated at every checkpoint
    model: str = "affectsr-x4"  # the preset whose architecture is trained (nf64 nb23 for Real-ESRGAN's trunk)
    model_args: str = ""  # overrides of the preset's config, "key=value;..." (e.g. fusion_stages=3)
    # start from a trained SR model (a preset or weights file): its tensors that fit this network replace Real-ESRGAN's
    # and the fresh ones (a fine-tune, e.g. to a cheaper prior); the rest keeps the usual start
    init: str = ""
    residual: bool = True  # global bicubic skip
    train_blocks: int = 2  # the last RRDB blocks trained with trunk_conv (the rest stays Real-ESRGAN's)
    up3_init: str = "dirac"  # x8: the new third x2 stage starts as identity ('dirac') or PyTorch's default
    crop: int = 64  # HR patch side of the L1 steps; 0: whole faces
    batch: int = 16
    lr: float = 2e-4
    lambda_emo: float = 0.0
    emo_every: int = 4
    emo_batch: int = 8
    classifier: str = ""  # FER teacher for the emotion loss (preset name or .safetensors path)
    minutes: float = 75.0  # wall-time budget over all calls (evaluation not counted)
    max_steps: int = 0  # 0: no step limit
    checkpoint_minutes: float = 5.0
    eval_every_minutes: float = 20.0  # evaluate eval_cache at the first checkpoint after this much training
    eval_limit: int = 0  # evaluate only the first N faces of eval_cache (0: all)
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        if self.model not in PRESETS or not isinstance(PRESETS[self.model][0], ModelConfig):
            raise ValueError(f"model must be an AffectSRNet preset, got {self.model!r}")
        cfg = self.model_config()
        if (cfg.nf, cfg.nb, cfg.gc) != (64, 23, 32):
            raise ValueError(f"{self.model} is nf{cfg.nf} nb{cfg.nb} gc{cfg.gc}; Real-ESRGAN's trunk is nf64 nb23 gc32")
        if self.up3_init not in ("dirac", "default"):
            raise ValueError(f"up3_init must be 'dirac' or 'default', got {self.up3_init!r}")
        if self.lambda_emo and not self.classifier:
            raise ValueError("lambda_emo > 0 needs a classifier (the FER teacher)")
        if self.crop and self.crop % (cfg.scale * 4):
            raise ValueError(f"crop must be a multiple of {cfg.scale * 4} at x{cfg.scale}, got {self.crop}")

    def model_config(self) -> ModelConfig:
        """The trained network's config: the preset's, with ``residual`` and ``model_args`` applied."""
        return replace(PRESETS[self.model][0], residual=self.residual,
                       **parse_config_overrides(self.model, self.model_args))


def build_model(cfg: FrozenTrunkConfig) -> AffectSRNet:
    """The preset's AffectSRNet with Real-ESRGAN x4plus loaded into its RRDB (conv_last re-zeroed with the skip), then
    ``cfg.init``'s tensors where they fit."""
    model = AffectSRNet(cfg.model_config())
    model.load_backbone(rrdb_state_dict())
    bb = model.backbone
    if cfg.residual:  # load_backbone brought Real-ESRGAN's conv_last: zero it so training starts at bicubic
        torch.nn.init.zeros_(bb.conv_last.weight)
        torch.nn.init.zeros_(bb.conv_last.bias)
    if bb.num_up == 3 and cfg.up3_init == "dirac":
        torch.nn.init.dirac_(bb.upconv3.weight)
        torch.nn.init.zeros_(bb.upconv3.bias)
    if cfg.init:
        src = load_model(cfg.init)
        if getattr(src.config, "scale", None) != model.scale or getattr(src.config, "residual", None) != cfg.residual:
            raise ValueError(f"init {cfg.init} is x{getattr(src.config, 'scale', '?')} residual="
                             f"{getattr(src.config, 'residual', '?')}; this run is x{model.scale} residual={cfg.residual}")
        load_fitting(model, src.state_dict(), cfg.init)
    return model


def trainable_modules(model: AffectSRNet, train_blocks: int) -> dict[str, torch.nn.Module]:
    """name prefix -> module of everything frozen-trunk training updates (the rest is Real-ESRGAN's, unchanged)."""
    bb = model.backbone
    nb = len(bb.RRDB_trunk)
    mods = {f"backbone.RRDB_trunk.{i}": bb.RRDB_trunk[i] for i in range(nb - train_blocks, nb)}
    if train_blocks:
        mods["backbone.trunk_conv"] = bb.trunk_conv
    mods |= {f"backbone.upconv{i}": getattr(bb, f"upconv{i}") for i in range(1, bb.num_up + 1)}
    mods |= {"backbone.HRconv": bb.HRconv, "backbone.conv_last": bb.conv_last}
    if model.prior is not None:
        mods |= {"prior": model.prior, "fusions": model.fusions}
    return mods


class TrunkData:
    """One trunk cache in memory with what training needs of its faces: LR, HR, LR landmarks, PIL-bicubic PSNR."""

    def __init__(self, path: str | Path, data: list[str], train_blocks: int):
        self.tc = TrunkCache(path)
        if train_blocks > self.tc.stop_before:
            raise ValueError(f"{path}: made {self.tc.stop_before} blocks short of the end; train_blocks={train_blocks} "
                             f"needs a cache made with --stop-before >= {train_blocks}")
        if train_blocks < self.tc.stop_before:
            raise ValueError(f"{path}: made {self.tc.stop_before} blocks short of the end; train with "
                             f"train_blocks={self.tc.stop_before} or cache again")
        faces = FaceCache(data, split=self.tc.meta["split"])
        self.tc.check_faces(faces)
        self.scale, self.k = self.tc.scale, train_blocks
        b = make_batch(faces, self.tc.index, self.scale, "bicubic", landmarks="detect")
        self.lr, self.hr = b.lr, b.hr
        self.landmarks = b.landmarks if b.landmarks is not None else torch.full((len(b.lr), 478, 3), float("nan"))

    def __len__(self) -> int:
        return len(self.lr)

    def pil_bicubic_psnr(self, limit: int = 0) -> float:
        """Mean PSNR-Y of PIL bicubic (the evaluator's bicubic row) on these faces (the first ``limit``, if > 0)."""
        s, n = self.scale, (min(limit, len(self)) if limit else len(self))
        lr_u8 = (self.lr[:n] * 255).round().byte().permute(0, 2, 3, 1).numpy()
        up = to_tensor(np.stack([resize(x, (x.shape[1] * s, x.shape[0] * s)) for x in lr_u8]))
        return float(psnr_y(up, self.hr[:n], s).mean())


def forward_from_trunk(model: AffectSRNet, fea: torch.Tensor, base: torch.Tensor | None, lr: torch.Tensor,
                       landmarks: torch.Tensor | None, train_blocks: int,
                       crop: tuple[list[tuple[int, int]], int] | None = None) -> torch.Tensor:
    """``model(lr, landmarks)`` from cached trunk features (``train_blocks`` short of the trunk's end).

    ``crop=(offsets, c)``: the SR of the ``c x c`` LR-pixel windows at ``offsets`` (y, x) per face; the
    features, the prior maps (drawn over the whole face) and the bicubic skip are cut alike.
    """
    bb = model.backbone
    fea = finish_trunk(bb, fea, base, train_blocks)

    def cut(t: torch.Tensor, f: int) -> torch.Tensor:
        if crop is None:
            return t
        offs, c = crop
        return torch.stack([t[i, :, y * f:(y + c) * f, x * f:(x + c) * f] for i, (y, x) in enumerate(offs)])

    fuse = None
    if model.prior is not None and landmarks is not None:  # as AffectSRNet._forward: no fusion without landmarks
        valid = torch.isfinite(landmarks).flatten(1).all(1)
        lm = torch.where(valid[:, None, None], landmarks, torch.zeros_like(landmarks)).to(fea.dtype)
        h, w = lr.shape[-2:]
        priors = model.prior(lm, [(h * 2**k, w * 2**k) for k in range(len(model.fusions))])
        priors = [cut(p, 2**i) for i, p in enumerate(priors)]
        keep = valid.to(fea.dtype).view(-1, 1, 1, 1)

        def fuse(i: int, f: torch.Tensor) -> torch.Tensor:
            return f if i >= len(priors) else f + (model.fusions[i](f, priors[i]) - f) * keep

    out = bb.head(cut(fea, 1), fuse)
    if model.config.residual:
        up = F.interpolate(lr, scale_factor=model.scale, mode="bicubic", align_corners=False)
        out = out + cut(up, model.scale)
    return out


@torch.no_grad()
def evaluate_on_cache(model: AffectSRNet, d: TrunkData, limit: int = 0, batch: int = 20) -> float:
    """Mean PSNR-Y (clamped SR) over the faces of a trunk cache (the first ``limit`` of them, if > 0)."""
    was = model.training
    model.eval()
    out = []
    n = min(limit, len(d)) if limit else len(d)
    for j in range(0, n, batch):
        rows = np.arange(j, min(j + batch, n))
        fea, base = d.tc.batch(rows)
        sr = forward_from_trunk(model, fea, base, d.lr[rows], d.landmarks[rows], d.k)
        out.append(psnr_y(sr.clamp(0, 1), d.hr[rows], d.scale))
    model.train(was)
    return float(torch.cat(out).mean())


def _save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def train_frozen_trunk(cfg: FrozenTrunkConfig, log=print) -> dict:
    """Train (or resume) per ``cfg``; returns the last log record."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "config.json"
    if cfg_path.is_file():
        old = json.loads(cfg_path.read_text())
        keep = {"minutes", "max_steps", "checkpoint_minutes", "threads", "eval_cache", "eval_every_minutes", "eval_limit"}  # may change on resume
        diff = sorted(k for k in old if k not in keep and old[k] != asdict(cfg).get(k))
        if diff:
            raise ValueError(f"{out}: a run with other settings ({', '.join(diff)}); use another out")
    atomic_write(cfg_path, lambda tmp: Path(tmp).write_text(json.dumps(asdict(cfg), indent=1)))

    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    mods = trainable_modules(model, cfg.train_blocks)
    for p in model.parameters():
        p.requires_grad_(False)
    params = [p for m in mods.values() for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.99))
    g = torch.Generator().manual_seed(cfg.seed)
    step, elapsed, cpu = 0, 0.0, 0.0
    ckpt = out / "last.pt"
    if ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(state["trained"], strict=False)
        opt.load_state_dict(state["optimizer"])
        g.set_state(state["generator"])
        step, elapsed, cpu = state["step"], state["elapsed"], state.get("cpu", 0.0)
        log(json.dumps({"resumed": str(ckpt), "step": step, "elapsed_s": round(elapsed, 1)}))

    t0 = time.perf_counter()
    tr = TrunkData(cfg.trunk_cache, cfg.data, cfg.train_blocks)
    te = TrunkData(cfg.eval_cache, cfg.data, cfg.train_blocks) if cfg.eval_cache else None
    if tr.scale != model.scale:
        raise ValueError(f"{cfg.trunk_cache} is a x{tr.scale} cache; {cfg.model} is x{model.scale}")
    emo = None
    if cfg.lambda_emo:
        emo = EmotionConsistencyLoss(load_emotion_classifier(cfg.classifier))
    bic = te.pil_bicubic_psnr(cfg.eval_limit) if te is not None else None
    log(json.dumps({"model": cfg.model, "train_faces": len(tr), "eval_faces": len(te) if te else 0,
                    "trainable_params": sum(p.numel() for p in params), "load_s": round(time.perf_counter() - t0, 1),
                    "eval_bicubic_pil": bic, "machine": machine()}))

    log_f = open(out / "log.jsonl", "a")

    def checkpoint(final: bool = False, evaluate: bool = False) -> dict:
        trained = {k: v for k, v in model.state_dict().items() if k.startswith(tuple(mods))}
        _save_checkpoint(ckpt, {"trained": trained, "optimizer": opt.state_dict(), "generator": g.get_state(),
                                "step": step, "elapsed": elapsed, "cpu": cpu})
        save_weights(model, out / "model.safetensors", half=False,
                     metadata={"steps": str(step), "wall_s": f"{elapsed:.0f}", "cpu_s": f"{cpu:.0f}", "machine": machine(),
                               "init": "realesrgan-x4plus" + (f" + {cfg.init}" if cfg.init else ""), "trained": json.dumps(sorted(mods))})
        rec = {"step": step, "wall_s": round(elapsed, 1), "cpu_s": round(cpu, 1), "final": final}
        if te is not None and (evaluate or final):
            t = time.perf_counter()
            p = evaluate_on_cache(model, te, cfg.eval_limit)
            rec |= {"eval_psnr_y": round(p, 3), "eval_gain_db": round(p - bic, 3), "eval_s": round(time.perf_counter() - t, 1)}
        log(json.dumps(rec))
        log_f.write(json.dumps(rec) + "\n")
        log_f.flush()
        return rec

    model.train()
    s, c = tr.scale, cfg.crop // tr.scale
    perm, pos = torch.randperm(len(tr), generator=g).numpy(), 0
    last_ckpt, last_eval, rec, run_start = elapsed, elapsed, None, time.perf_counter() - elapsed
    cpu_start = time.process_time() - cpu
    running = []
    while elapsed < cfg.minutes * 60 and not (cfg.max_steps and step >= cfg.max_steps):
        whole = emo is not None and step % cfg.emo_every == 0
        n = cfg.emo_batch if whole else cfg.batch
        if pos + n > len(perm):
            perm, pos = torch.randperm(len(tr), generator=g).numpy(), 0
        rows = np.sort(perm[pos:pos + n])
        pos += n
        fea, base = tr.tc.batch(rows)
        lr, hr, lm = tr.lr[rows], tr.hr[rows], tr.landmarks[rows]
        crop = None
        if c and not whole:
            offs = torch.randint(0, lr.shape[-1] - c + 1, (n, 2), generator=g).tolist()
            crop = ([tuple(o) for o in offs], c)
            hr = torch.stack([hr[i, :, y * s:(y + c) * s, x * s:(x + c) * s] for i, (y, x) in enumerate(offs)])
        sr = forward_from_trunk(model, fea, base, lr, lm, cfg.train_blocks, crop)
        loss = (sr - hr).abs().mean()
        if whole:
            loss = loss + cfg.lambda_emo * emo(sr.clamp(0, 1), hr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        running.append(loss.item())
        elapsed, cpu = time.perf_counter() - run_start, time.process_time() - cpu_start
        if elapsed - last_ckpt >= cfg.checkpoint_minutes * 60:
            log(json.dumps({"step": step, "wall_s": round(elapsed, 1), "cpu_s": round(cpu, 1),
                            "loss": round(float(np.mean(running)), 5)}))
            running = []
            ev = elapsed - last_eval >= cfg.eval_every_minutes * 60
            rec = checkpoint(evaluate=ev)
            last_ckpt, last_eval = elapsed, (elapsed if ev else last_eval)
            # checkpoint and evaluation time do not count against the budget
            run_start, cpu_start = time.perf_counter() - elapsed, time.process_time() - cpu
    rec = checkpoint(final=True)
    log_f.close()
    return rec


def export_weights(src: str | Path, dest: str | Path, half: bool = True, metadata: dict[str, str] | None = None) -> dict:
    """Write a trained model (``out/model.safetensors`` of a run) as a small file to ship: only the tensors that
    differ from Real-ESRGAN x4plus (fp16 with ``half``); loading rebuilds the rest from the pinned wheel.

    Returns ``{"shipped": n tensors, "rebuilt": n tensors, "bytes": file size}``.
    """
    config, meta = read_config(src), read_metadata(src, "sr")
    state = read_state(src)
    base = {"backbone." + k: v for k, v in rrdb_state_dict().items()}
    changed = {k: v for k, v in state.items() if k not in base or not torch.equal(v, base[k])}
    keep = {k: v for k, v in meta.items() if k not in ("format", "config")}
    write_weights(changed, dest, "sr", config.to_dict(), {**keep, **base_metadata(), **(metadata or {})}, half=half)
    return {"shipped": len(changed), "rebuilt": len(state) - len(changed), "bytes": Path(dest).stat().st_size}
