"""Training AffectSRNet: ``affectsr train`` / ``python -m affectsr.train {train,evaluate}``.

Losses: L1 + ``lambda_emo`` x Emotion Consistency Loss (+ ``lambda_lm`` x landmark loss: a frozen
:class:`~affectsr.landmarks.predictor.LandmarkPredictor` reads the SR face, compared with the HR
landmarks) (+ ``lambda_gan`` x relativistic GAN loss with a small patch discriminator, ESRGAN-style,
optional). Adam, cosine learning rate with warm-up, gradient clipping, EMA weights (validation,
checkpoints and exports use the EMA), validation PSNR/SSIM (Y channel, border = scale cropped,
as BasicSR) and ECM every ``val_every`` steps, ``log.csv`` + ``curves.png``, atomic checkpoints
(``last.pt``) every ``ckpt_every`` steps / ``ckpt_minutes`` and exact resume (batches are a pure
function of (seed, step), see :mod:`affectsr.data.dataset`). On CUDA: bf16 autocast and
channels_last. Multi-GPU: launch with ``torchrun --nproc_per_node N -m affectsr.train train ...``
(DDP; ``batch_size`` is the global batch; gloo on CPU, nccl on GPU).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from affectsr.atomic import atomic_write
from affectsr.runinfo import machine
from affectsr.metrics import psnr_y, quantize, rgb_to_y, ssim_y
import torch.nn.functional as F
from torch import nn

__all__ = ["TrainConfig", "train", "evaluate", "psnr_y", "ssim_y", "rgb_to_y", "parse_overrides", "main"]


@dataclass
class TrainConfig:
    model: str = "affectsr-x4-lite"  # preset name (affectsr/models/presets.py)
    model_args: str = ""  # config overrides of the preset, e.g. "prior=pooled;fusion=concat" (ablations)
    data: tuple[str, ...] = (".data/cache/utkface_aligned", ".data/cache/taiwanese_expr")
    out: str = "runs/affectsr-x4-lite"
    init: str = ""  # optional .safetensors to start from (full model, or an RRDB backbone of prior='none')
    steps: int = 2000
    batch_size: int = 16  # global batch (split across DDP processes)
    lr: float = 3e-4
    lr_min: float = 1e-6
    warmup: int = 50
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0  # 0 = off
    ema_decay: float = 0.995
    lambda_emo: float = 0.0  # Emotion Consistency Loss weight (0 = off)
    classifier: str = ""  # FER classifier for the loss and val ECM ('' = affectsr.emotion's default)
    lambda_lm: float = 0.0  # landmark loss weight (needs `predictor`)
    lambda_gan: float = 0.0  # relativistic GAN loss weight (ESRGAN uses 5e-3 after L1 pre-training)
    lambda_temporal: float = 0.0  # temporal consistency on jittered pairs of still faces (affectsr.temporal); 0 = off
    degradation: str = "bicubic"  # 'bicubic' (paper) or 'blind'
    landmarks: str = "detect"  # LR landmarks fed to the prior: detect | predict | auto | hr | none
    predictor: str = ""  # LandmarkPredictor .safetensors for landmarks=predict/auto and lambda_lm
    val_every: int = 200
    val_max: int = 256  # validation images (the first ones of the val split)
    ckpt_every: int = 200
    ckpt_minutes: float = 3.0
    log_every: int = 20
    seed: int = 0
    threads: int = 0  # torch CPU threads (0 = leave torch's default)
    max_minutes: float = 0.0  # stop (with a checkpoint) after this wall time; 0 = no limit
    stop_after: int = 0  # stop (with a checkpoint) after this step, as if interrupted; 0 = run to `steps`
    device: str = "auto"
    amp: bool = True  # bf16 autocast (CUDA only)
    channels_last: bool = True  # (CUDA only)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --- metrics ---------------------------------------------------------------------------------------


def bicubic_up(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """PIL bicubic upscaling of a B x 3 x h x w batch (the baseline every table compares with)."""
    from affectsr.images import resize

    out = []
    for img in (lr.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy():
        h, w = img.shape[:2]
        out.append(resize(img, (w * scale, h * scale)))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0


# --- helpers ---------------------------------------------------------------------------------------


def _coerce(value: str, default, name: str):
    if isinstance(default, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name}: expected true/false, got {value!r}")
    if isinstance(default, tuple):
        items = [v for v in value.split(",") if v != ""]
        if default and not isinstance(default[0], str):
            return tuple(type(default[0])(v) for v in items)
        return tuple(items)
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    return value


def parse_overrides(cfg: TrainConfig, items: list[str]) -> TrainConfig:
    """Apply ``key=value`` overrides (tuples as comma lists) to a config; unknown keys are an error."""
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    changes = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        k, v = item.split("=", 1)
        k = k.strip().replace("-", "_")
        if k not in fields:
            raise ValueError(f"unknown config key {k!r}; known: {', '.join(fields)}")
        changes[k] = _coerce(v.strip(), getattr(cfg, k), k)
    return dataclasses.replace(cfg, **changes)


def load_config(path: str | Path) -> TrainConfig:
    d = json.loads(Path(path).read_text())
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"{path}: unknown config keys {sorted(unknown)}")
    for k, v in d.items():
        if isinstance(v, list):
            d[k] = tuple(v)
    return TrainConfig(**d)


def _atomic_torch_save(obj, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _lr_at(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * min(1.0, t)))


def _device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


class _Discriminator(nn.Module):
    """A small patch discriminator (VGG-style strided convs) for the optional GAN term."""

    def __init__(self, nf: int = 32):
        super().__init__()
        layers, c = [], 3
        for i, o in enumerate((nf, nf * 2, nf * 4, nf * 4)):
            layers += [nn.Conv2d(c, o, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            c = o
        layers.append(nn.Conv2d(c, 1, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


# --- training --------------------------------------------------------------------------------------


def _state_for(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _rng_state() -> dict:
    """All RNG states as tensors and plain Python values, so checkpoints load with weights_only=True."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate(s["python"])
    if s.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def _build_model(cfg: TrainConfig):
    from affectsr.models import create_model
    from affectsr.models.presets import read_config

    from affectsr.models.presets import parse_config_overrides

    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, **parse_config_overrides(cfg.model, cfg.model_args))
    if cfg.init:
        from safetensors.torch import load_file

        state = {k: v.float() for k, v in load_file(cfg.init).items()}
        init_cfg = read_config(cfg.init)
        if init_cfg.prior == "none" and model.config.prior != "none":
            model.load_backbone({k.removeprefix("backbone."): v for k, v in state.items()})
        else:
            model.load_state_dict(state, strict=True)
    return model


def _temporal_term(net, b, sr: torch.Tensor, scale: int, cfg: TrainConfig, step: int, device, cuda: bool) -> torch.Tensor:
    """Temporal consistency on a 'next frame' made from each still face by a small random affine.

    The second view's LR is a bicubic (antialiased) downscale of the warped HR, its landmarks the
    first view's moved by the same affine; the loss asks the two SR outputs to follow the motion
    (:func:`affectsr.temporal.temporal_consistency_loss`). The jitter is a pure function of
    (seed, step), so resumed runs see the same pairs.
    """
    from affectsr.temporal import affine_jitter_pair, move_landmarks, temporal_consistency_loss

    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    _, hr_b, theta = affine_jitter_pair(b.hr.cpu(), generator=gen)
    hr_b, theta = hr_b.to(device), theta.to(device)
    h, w = b.lr.shape[-2:]
    lr_b = F.interpolate(hr_b, size=(h, w), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    lm_b = None if b.landmarks is None else move_landmarks(b.landmarks, theta)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and cfg.amp):
        sr_b = net(lr_b, lm_b)
    return temporal_consistency_loss(sr, sr_b.float(), theta)


def _validate(model, val, cfg: TrainConfig, scale: int, device, clf, with_bicubic: bool = False) -> dict:
    from affectsr.data.dataset import make_batch

    model.eval()
    ps, ss, p_hr, p_sr, bp, bs, p_bic = [], [], [], [], [], [], []
    idx_all = np.arange(min(len(val), cfg.val_max))
    with torch.no_grad():
        for i in range(0, len(idx_all), 32):
            b = make_batch(val, idx_all[i:i + 32], scale, "bicubic", cfg.seed, 0, cfg.landmarks).to(device)
            sr = model(b.lr, b.landmarks).float().clamp(0, 1)
            ps.append(psnr_y(sr, b.hr, scale).cpu())
            ss.append(ssim_y(sr, b.hr, scale).cpu())
            if with_bicubic:
                bic = bicubic_up(b.lr, scale).to(device)
                bp.append(psnr_y(bic, b.hr, scale).cpu())
                bs.append(ssim_y(bic, b.hr, scale).cpu())
            if clf is not None:
                p_hr.append(F.softmax(clf(b.hr)[0], 1).cpu())
                p_sr.append(F.softmax(clf(quantize(sr))[0], 1).cpu())
                if with_bicubic:
                    p_bic.append(F.softmax(clf(bic)[0], 1).cpu())
    out = {"val_psnr": float(torch.cat(ps).mean()), "val_ssim": float(torch.cat(ss).mean())}
    if clf is not None:
        from affectsr.emotion import ecm

        out["val_ecm"] = float(ecm(torch.cat(p_hr).numpy(), torch.cat(p_sr).numpy()))
    if with_bicubic:
        out["bicubic_psnr"] = float(torch.cat(bp).mean())
        out["bicubic_ssim"] = float(torch.cat(bs).mean())
        if clf is not None:
            out["bicubic_ecm"] = float(ecm(torch.cat(p_hr).numpy(), torch.cat(p_bic).numpy()))
    model.train()
    return out


LOG_FIELDS = ["step", "epoch", "seconds", "lr", "loss", "l1", "prior", "emo", "lm", "gan", "tc", "val_psnr", "val_ssim",
              "val_ecm"]


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows after ``step`` (written after the checkpoint we resume from)."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, LOG_FIELDS)
        w.writeheader()
        w.writerows(rows)


def plot_curves(log_csv: Path, out_png: Path, title: str = "") -> Path | None:
    """Training loss and validation PSNR/ECM against step, from ``log.csv``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    with open(log_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    tr = [(int(r["step"]), float(r["loss"]), float(r["l1"])) for r in rows if r["loss"]]
    va = [(int(r["step"]), float(r["val_psnr"]), float(r["val_ssim"]), float(r["val_ecm"]) if r["val_ecm"] else math.nan)
          for r in rows if r["val_psnr"]]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    if tr:
        axes[0].plot([t[0] for t in tr], [t[1] for t in tr], label="total")
        axes[0].plot([t[0] for t in tr], [t[2] for t in tr], label="L1")
        axes[0].set_yscale("log")
        axes[0].legend()
    axes[0].set_title("training loss")
    if va:
        axes[1].plot([v[0] for v in va], [v[1] for v in va], "o-", label="model (EMA)")
        axes[2].plot([v[0] for v in va], [v[3] for v in va], "o-", label="model (EMA)")
    bic = log_csv.parent / "bicubic_val.json"
    if bic.is_file():  # the baseline on the same validation faces
        b = json.loads(bic.read_text())
        axes[1].axhline(b["bicubic_psnr"], color="grey", ls="--", label="bicubic")
        if "bicubic_ecm" in b:
            axes[2].axhline(b["bicubic_ecm"], color="grey", ls="--", label="bicubic")
        axes[1].legend()
        axes[2].legend()
    axes[1].set_title("val PSNR-Y (dB)")
    axes[2].set_title("val ECM (lower = better)")
    for a in axes:
        a.set_xlabel("step")
        a.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png


def train(cfg: TrainConfig, rank: int | None = None, world_size: int | None = None, log=print) -> dict:
    """Run (or resume, if ``out/last.pt`` exists) a training run; returns a summary dict.

    ``rank``/``world_size`` default to torchrun's environment; with world_size > 1 the process
    group must be initialised already or is initialised here from the environment.
    """
    import torch.distributed as dist

    from affectsr.data.dataset import FaceCache, batch_indices, make_batch

    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    device = _device(cfg)
    if world_size > 1 and cfg.lambda_temporal:
        raise ValueError("lambda_temporal runs the model twice per step, which DDP does not allow; train it on one device")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda" and world_size > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    main_proc = rank == 0
    out = Path(cfg.out)
    if main_proc:
        out.mkdir(parents=True, exist_ok=True)
    cuda = device.type == "cuda"

    train_set = FaceCache(list(cfg.data), split="train")
    val_set = FaceCache(list(cfg.data), split="val") if main_proc and cfg.val_every else None
    model = _build_model(cfg).to(device)
    scale = model.scale
    has_aux = callable(getattr(model, "aux_loss", None))
    hr_size = train_set.size
    if hr_size % scale:
        raise ValueError(f"cache HR size {hr_size} is not divisible by the scale {scale}")

    predictor = None
    if cfg.predictor:
        from affectsr.landmarks.predictor import load_predictor, predict_array

        predictor = load_predictor(cfg.predictor).to(device)
        if cfg.landmarks in ("predict", "auto"):
            for ds in (train_set, val_set):
                if ds is not None:
                    ds.predicted[scale] = predict_array(predictor, ds.hr, scale, device=device)
    elif cfg.landmarks in ("predict", "auto") or cfg.lambda_lm:
        raise ValueError(f"landmarks={cfg.landmarks!r} / lambda_lm need predictor=<LandmarkPredictor .safetensors>")

    if cuda and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = {k: v.detach().clone().float() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
    disc = disc_opt = None
    if cfg.lambda_gan:
        disc = _Discriminator().to(device)
        disc_opt = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
    emo = clf = None
    try:
        from affectsr.emotion import EmotionConsistencyLoss, load_emotion_classifier

        clf = load_emotion_classifier(cfg.classifier, device=device) if cfg.classifier else \
            load_emotion_classifier(device=device)
        if cfg.lambda_emo:
            emo = EmotionConsistencyLoss(clf)
    except Exception as e:  # noqa: BLE001 - emotion weights may not ship; ECM is then not reported
        if cfg.lambda_emo:
            raise RuntimeError(f"lambda_emo={cfg.lambda_emo} needs the emotion classifier: {e}") from e

    step, t_prev = 0, 0.0
    ckpt = out / "last.pt"
    if ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)  # no pickled code, even from our own runs
        if (state["config"]["model"], state["config"]["seed"], state["config"].get("model_args", "")) != \
                (cfg.model, cfg.seed, cfg.model_args):
            raise ValueError(f"{ckpt} belongs to another run (model/seed differ); use another out=")
        model.load_state_dict(state["model"])
        ema = {k: v.to(device) for k, v in state["ema"].items()}
        opt.load_state_dict(state["optimizer"])
        if disc is not None and "disc" in state:
            disc.load_state_dict(state["disc"])
            disc_opt.load_state_dict(state["disc_optimizer"])
        _set_rng_state(state["rng"])
        step, t_prev = state["step"], state["seconds"]
        if main_proc:
            log(f"resumed from {ckpt} at step {step}")
            _truncate_log(out / "log.csv", step)
    ddp_model = model
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp_model = DDP(model, device_ids=[device.index] if cuda else None)
    if main_proc:
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        new_log = not (out / "log.csv").is_file()
        log_f = open(out / "log.csv", "a", newline="")
        writer = csv.DictWriter(log_f, LOG_FIELDS)
        if new_log:
            writer.writeheader()

    def save_ckpt() -> None:
        if not main_proc:
            return
        state = {"model": model.state_dict(), "ema": ema, "optimizer": opt.state_dict(), "step": step,
                 "seconds": t_prev + time.time() - t0, "rng": _rng_state(), "config": cfg.to_dict()}
        if disc is not None:
            state["disc"], state["disc_optimizer"] = disc.state_dict(), disc_opt.state_dict()
        _atomic_torch_save(state, ckpt)

    def ema_model():
        m = _build_model(dataclasses.replace(cfg, init="")).to(device)
        m.load_state_dict({k: v.to(m.state_dict()[k].dtype) for k, v in ema.items()})
        return m.eval()

    t0 = time.time()
    last_ckpt = time.time()
    model.train()
    stop = cfg.stop_after or cfg.steps
    sums: dict[str, float] = {}
    nsum = 0
    if main_proc and step == 0 and val_set is not None and len(val_set):
        v = _validate(ema_model(), val_set, cfg, scale, device, clf, with_bicubic=True)
        log(f"step 0: bicubic val PSNR {v['bicubic_psnr']:.2f} SSIM {v['bicubic_ssim']:.4f}"
            + (f" ECM {v['bicubic_ecm']:.3f}" if "bicubic_ecm" in v else ""))
        (out / "bicubic_val.json").write_text(json.dumps(v, indent=2))
    while step < min(stop, cfg.steps):
        idx, epoch = batch_indices(len(train_set), cfg.batch_size, step, cfg.seed, rank, world_size)
        b = make_batch(train_set, idx, scale, cfg.degradation, cfg.seed, epoch, cfg.landmarks).to(device)
        if cuda and cfg.channels_last:
            b.lr = b.lr.contiguous(memory_format=torch.channels_last)
        lr_now = _lr_at(cfg, step)
        for g in opt.param_groups:
            g["lr"] = lr_now
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and cfg.amp):
            if has_aux:  # FSRNet/DIC-style baselines: supervise their own landmark-heatmap estimation too
                sr, aux = ddp_model(b.lr, b.landmarks, return_aux=True)
            else:
                sr = ddp_model(b.lr, b.landmarks)
        sr = sr.float()
        l1 = F.l1_loss(sr, b.hr)
        terms = {"l1": l1}
        if has_aux:
            terms["prior"] = model.aux_loss(aux, b.hr, b.lm_hr)
        if emo is not None:
            terms["emo"] = emo(sr.clamp(0, 1), b.hr)
        if cfg.lambda_temporal:
            terms["tc"] = _temporal_term(ddp_model, b, sr, scale, cfg, step, device, cuda)
        if cfg.lambda_lm:
            pred = predictor(sr.clamp(0, 1))
            ok = torch.isfinite(b.lm_hr).all(2).all(1)
            terms["lm"] = (F.l1_loss(pred[ok][..., :2], b.lm_hr[ok][..., :2]) if ok.any() else sr.sum() * 0)
        if disc is not None:
            real, fake = disc(b.hr), disc(sr)
            terms["gan"] = (F.binary_cross_entropy_with_logits(real - fake.mean(), torch.zeros_like(real))
                            + F.binary_cross_entropy_with_logits(fake - real.mean(), torch.ones_like(fake))) / 2
        loss = l1 + terms.get("prior", 0) + cfg.lambda_emo * terms.get("emo", 0) + cfg.lambda_lm * terms.get("lm", 0) \
            + cfg.lambda_gan * terms.get("gan", 0) + cfg.lambda_temporal * terms.get("tc", 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if disc is not None:
            real, fake = disc(b.hr), disc(sr.detach())
            d_loss = (F.binary_cross_entropy_with_logits(real - fake.mean(), torch.ones_like(real))
                      + F.binary_cross_entropy_with_logits(fake - real.mean(), torch.zeros_like(fake))) / 2
            disc_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            disc_opt.step()
        with torch.no_grad():
            d = min(cfg.ema_decay, (1 + step) / (10 + step))
            for k, v in model.state_dict().items():
                if v.is_floating_point():
                    ema[k].mul_(d).add_(v.float(), alpha=1 - d)
                else:
                    ema[k].copy_(v)
        step += 1
        sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        nsum += 1
        if not main_proc:
            continue
        row = None
        if step % cfg.log_every == 0 or step == cfg.steps:
            row = {"step": step, "epoch": epoch, "seconds": round(t_prev + time.time() - t0, 1), "lr": f"{lr_now:.3g}"}
            row.update({k: f"{v / nsum:.5f}" for k, v in sums.items()})
            sums, nsum = {}, 0
        if cfg.val_every and val_set is not None and len(val_set) and (step % cfg.val_every == 0 or step == cfg.steps):
            v = _validate(ema_model(), val_set, cfg, scale, device, clf)
            row = row or {"step": step, "epoch": epoch, "seconds": round(t_prev + time.time() - t0, 1),
                          "lr": f"{lr_now:.3g}"}
            row.update({k: f"{x:.4f}" for k, x in v.items()})
        if row:
            writer.writerow(row)
            log_f.flush()
            log(" ".join(f"{k}={v}" for k, v in row.items()))
        out_of_time = cfg.max_minutes and (time.time() - t0) / 60 >= cfg.max_minutes
        if step % cfg.ckpt_every == 0 or time.time() - last_ckpt > 60 * cfg.ckpt_minutes or out_of_time:
            save_ckpt()
            last_ckpt = time.time()
        if out_of_time:
            log(f"stopping at step {step}: max_minutes={cfg.max_minutes} reached (resume with the same command)")
            break
    if world_size > 1:
        # every rank must agree where we stopped (max_minutes is only checked on rank 0)
        flag = torch.tensor([step], device=device)
        dist.broadcast(flag, 0)
    summary = {"step": step, "seconds": None}
    if main_proc:
        save_ckpt()
        log_f.close()
        seconds = t_prev + time.time() - t0
        summary["seconds"] = round(seconds, 1)
        from affectsr.models import save_weights

        m = ema_model()
        meta = {"steps": str(step), "seed": str(cfg.seed), "train_seconds": f"{seconds:.0f}",
                "machine": machine(), "train_config": json.dumps(cfg.to_dict())}
        save_weights(m, out / "ema.safetensors", half=False, metadata=meta)
        plot_curves(out / "log.csv", out / "curves.png", f"{cfg.model}, {step} steps")
        summary["weights"] = str(out / "ema.safetensors")
    return summary


# --- evaluation ------------------------------------------------------------------------------------


def evaluate(weights: str, data: list[str], split: str = "test", landmarks: str = "detect", predictor: str = "",
             limit: int | None = None, device: str = "cpu", batch: int = 32, classifier: str | None = None) -> dict:
    """PSNR-Y/SSIM-Y (border = scale) and ECM / FER agreement of a model vs bicubic on a cache split."""
    from affectsr.data.dataset import FaceCache, make_batch
    from affectsr.emotion import load_emotion_classifier
    from affectsr.models import load_model

    dev = torch.device(device)
    model = load_model(weights, device=dev)
    scale = model.scale
    ds = FaceCache(data, split=split, limit=limit)
    if landmarks in ("predict", "auto"):
        from affectsr.landmarks.predictor import load_predictor, predict_array

        ds.predicted[scale] = predict_array(load_predictor(predictor or _default_predictor(scale)), ds.hr, scale)
    clf = load_emotion_classifier(classifier, device=dev) if classifier else load_emotion_classifier(device=dev)
    res = {k: [] for k in ("psnr", "ssim", "bpsnr", "bssim", "p_hr", "p_sr", "p_bic")}
    t0 = time.time()
    with torch.no_grad():
        for i in range(0, len(ds), batch):
            idx = np.arange(i, min(len(ds), i + batch))
            b = make_batch(ds, idx, scale, "bicubic", 0, 0, landmarks).to(dev)
            sr = quantize(model(b.lr, b.landmarks).clamp(0, 1))
            bic = bicubic_up(b.lr, scale).to(dev)
            res["psnr"].append(psnr_y(sr, b.hr, scale))
            res["ssim"].append(ssim_y(sr, b.hr, scale))
            res["bpsnr"].append(psnr_y(bic, b.hr, scale))
            res["bssim"].append(ssim_y(bic, b.hr, scale))
            res["p_hr"].append(F.softmax(clf(b.hr)[0], 1))
            res["p_sr"].append(F.softmax(clf(sr)[0], 1))
            res["p_bic"].append(F.softmax(clf(bic)[0], 1))
    cat = {k: torch.cat(v).cpu().numpy() for k, v in res.items()}
    lm_found = float(np.isfinite(ds.lr_landmarks(scale)).all(axis=(1, 2)).mean())
    out = _eval_summary(cat, np.ones(len(ds), bool))
    sources = np.array([p.split("/", 1)[0] for p in ds.path])
    per_source = {str(s): {"images": int((sources == s).sum()), **_eval_summary(cat, sources == s)}
                  for s in dict.fromkeys(sources)} if len(set(sources)) > 1 else {}
    return {
        "weights": str(weights), "scale": scale, "data": [str(d) for d in data], "split": split, "images": len(ds),
        "landmarks": landmarks, "lr_landmarks_detected": round(lm_found, 4), "classifier": clf.name,
        **out, "per_source": per_source,
        "seconds": round(time.time() - t0, 1),
    }


def _eval_summary(cat: dict, m: np.ndarray) -> dict:
    from affectsr.emotion import ecm, label_agreement, mean_kl

    def fer(p_sr):
        return {"ecm": float(ecm(cat["p_hr"][m], p_sr[m])), "agreement": float(label_agreement(cat["p_hr"][m], p_sr[m])),
                "kl": float(mean_kl(cat["p_hr"][m], p_sr[m]))}

    return {"model": {"psnr": float(cat["psnr"][m].mean()), "ssim": float(cat["ssim"][m].mean()), **fer(cat["p_sr"])},
            "bicubic": {"psnr": float(cat["bpsnr"][m].mean()), "ssim": float(cat["bssim"][m].mean()), **fer(cat["p_bic"])}}


def _default_predictor(scale: int) -> str:
    from affectsr.landmarks.predictor import default_predictor_path

    p = default_predictor_path(scale)
    if p is None:
        raise FileNotFoundError(f"no landmark predictor ships for x{scale}; pass --predictor")
    return str(p)


def format_eval(r: dict) -> str:
    lines = [f"{r['weights']} on {', '.join(Path(d).name for d in r['data'])} [{r['split']}], {r['images']} faces, "
             f"x{r['scale']}, LR landmarks: {r['landmarks']} (detected on {100 * r['lr_landmarks_detected']:.1f}% of LR faces)",
             "| method | PSNR-Y (dB) | SSIM-Y | ECM (lower better) | FER agreement with HR | KL(p_HR‖p_SR) |",
             "|---|---|---|---|---|---|"]
    for name, k in (("bicubic", "bicubic"), (Path(r["weights"]).stem, "model")):
        m = r[k]
        lines.append(f"| {name} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['ecm']:.3f} | {100 * m['agreement']:.1f}% | {m['kl']:.4f} |")
    return "\n".join(lines)


# --- command line ----------------------------------------------------------------------------------


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. model=affectsr-x8-lite steps=5000 lambda_emo=0.05 "
                        "data=.data/cache/a,.data/cache/b (see TrainConfig in affectsr/train.py)")
    p.add_argument("--config", help="JSON file with TrainConfig fields (overrides apply on top)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def cmd_train(args: argparse.Namespace) -> int:
    cfg = load_config(args.config) if args.config else TrainConfig()
    try:
        cfg = parse_overrides(cfg, args.overrides)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    rank = int(os.environ.get("RANK", 0))
    s = train(cfg, log=print if rank == 0 else (lambda *_: None))
    if rank == 0:
        print(f"done: {s['step']} steps, {s['seconds']} s; EMA weights {s.get('weights')}")
    return 0


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("weights", help="preset name or .safetensors path")
    p.add_argument("--data", nargs="+", required=True, help="cache folder(s) made by `affectsr prepare`")
    p.add_argument("--split", default="test")
    p.add_argument("--landmarks", default="detect", choices=("detect", "predict", "auto", "hr", "none"))
    p.add_argument("--predictor", default="", help="LandmarkPredictor weights for --landmarks predict/auto")
    p.add_argument("--limit", type=int)
    p.add_argument("--classifier", default=None, help="FER classifier for ECM/agreement (default: the package default)")
    p.add_argument("--json", help="also write the result as JSON here")


def cmd_evaluate(args: argparse.Namespace) -> int:
    r = evaluate(args.weights, args.data, args.split, args.landmarks, args.predictor, args.limit,
                 classifier=args.classifier)
    print(format_eval(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m affectsr.train", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    add_train_arguments(sub.add_parser("train", help="train (or resume) a model"))
    add_evaluate_arguments(sub.add_parser("evaluate", help="PSNR/SSIM/ECM of weights vs bicubic on a cache split"))
    args = p.parse_args(argv)
    return cmd_train(args) if args.cmd == "train" else cmd_evaluate(args)


if __name__ == "__main__":
    sys.exit(main())
