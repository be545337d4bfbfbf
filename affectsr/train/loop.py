"""The training loop: ``affectsr train`` (and ``torchrun ... -m affectsr train`` for DDP).

Losses: L1 + ``lambda_emo`` x Emotion Consistency Loss (+ ``lambda_lm`` x landmark loss: a frozen
:class:`~affectsr.landmarks.predictor.LandmarkPredictor` reads the SR face, compared with the HR
landmarks) (+ ``lambda_gan`` x relativistic GAN loss with a small patch discriminator, ESRGAN-style,
optional) (+ ``lambda_temporal`` x temporal consistency on jittered pairs, :mod:`affectsr.train.losses`)
(+ ``lambda_kd`` x L1 to a teacher's stored SR on the rows that have one, :mod:`affectsr.train.teacher`;
``kd_batch`` adds that many such rows to every step).
Adam, cosine learning rate with warm-up, gradient clipping, EMA weights (validation,
checkpoints and exports use the EMA), validation PSNR/SSIM (Y channel, border = scale cropped,
as BasicSR) and ECM every ``val_every`` steps (:func:`affectsr.evaluate.score_cache`), ``log.csv`` +
``curves.png``, atomic checkpoints (``last.pt``) every ``ckpt_every`` steps / ``ckpt_minutes`` and
exact resume (batches are a pure function of (seed, step), see :mod:`affectsr.data.dataset`). On CUDA:
bf16 autocast and channels_last. Multi-GPU: launch with ``torchrun --nproc_per_node N -m affectsr train ...``
(DDP; ``batch_size`` is the global batch; gloo on CPU, nccl on GPU).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..atomic import atomic_write
from ..data.dataset import FaceCache, batch_indices, make_batch
from ..emotion import EmotionConsistencyLoss, ecm, load_emotion_classifier
from ..emotion.classifier import TEACHER_CLASSIFIER
from ..evaluate import score_cache
from ..landmarks.predictor import load_predictor, predict_array
from ..models import create_model, save_weights
from ..models.presets import parse_config_overrides, read_config, read_state
from ..plots import pyplot
from ..runinfo import machine
from ..weights import WeightsError, load_fitting, load_state
from .config import TrainConfig
from .losses import PatchDiscriminator, discriminator_loss, generator_gan_loss, temporal_consistency_loss, temporal_pair
from .teacher import TeacherOutputs

__all__ = ["LOG_FIELDS", "check_init", "plot_curves", "train"]


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


# --- training --------------------------------------------------------------------------------------


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


def _build_model(cfg: TrainConfig, log=None) -> nn.Module:
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, **parse_config_overrides(cfg.model, cfg.model_args))
    if cfg.init:
        state = read_state(cfg.init)
        init_cfg = read_config(cfg.init)
        if cfg.init_partial:
            fresh = load_fitting(model, state, cfg.init, cfg.init_skip, hint="init_partial=true")
            if log is not None:
                log(f"init {cfg.init}: {len(model.state_dict()) - len(fresh)} tensors loaded, {len(fresh)} left fresh"
                    + (f" ({', '.join(fresh[:6])}{' ...' if len(fresh) > 6 else ''})" if fresh else ""))
        elif getattr(init_cfg, "prior", None) == "none" and getattr(model.config, "prior", None) != "none":
            try:
                model.load_backbone({k.removeprefix("backbone."): v for k, v in state.items()})
            except (RuntimeError, KeyError) as e:
                raise WeightsError(cfg.init, f"its tensors do not fit the backbone ({' '.join(str(e).split())[:200]})") from e
        else:
            load_state(model, state, cfg.init)
    return model


def _load_teacher(cfg: TrainConfig, train_set: FaceCache, scale: int
                  ) -> tuple[TeacherOutputs | None, np.ndarray | None, np.ndarray | None]:
    """(teacher outputs, each train face's row in them or -1, the train faces that have one) for distillation."""
    if not cfg.teacher:
        if cfg.lambda_kd or cfg.kd_batch:
            raise ValueError("lambda_kd / kd_batch need teacher=<teacher outputs .npz of `affectsr cache-teacher`>")
        return None, None, None
    if cfg.degradation != "bicubic":
        raise ValueError(f"teacher outputs are made from bicubic LR faces; degradation={cfg.degradation!r} differs")
    teacher = TeacherOutputs(cfg.teacher)
    rows = teacher.rows_for(train_set, scale)
    pool = np.flatnonzero(rows >= 0)
    if cfg.kd_batch and len(pool) < cfg.kd_batch:
        raise ValueError(f"kd_batch={cfg.kd_batch} is more than the {len(pool)} train faces with a teacher output")
    return teacher, rows, pool


def check_init(cfg: TrainConfig) -> None:
    """Raise the WeightsError a damaged or unfitting ``init=`` file would raise, before any data is read."""
    if cfg.init:
        with torch.random.fork_rng(devices=[]):  # _build_model seeds; training's own RNG stays untouched
            _build_model(cfg)


def _temporal_term(net, b, sr: torch.Tensor, scale: int, cfg: TrainConfig, epoch: int, step: int, cuda: bool
                   ) -> torch.Tensor:
    """Temporal consistency: the SR of each face's 'next frame' (:func:`~affectsr.train.losses.temporal_pair`)
    should be the SR of the face moved by the same affine (:func:`~affectsr.train.losses.temporal_consistency_loss`)."""
    lr_b, lm_b, theta = temporal_pair(b, scale, cfg.degradation, cfg.seed, epoch, step)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and cfg.amp):
        sr_b = net(lr_b, lm_b)
    return temporal_consistency_loss(sr, sr_b.float(), theta)


def _validate(model, val: FaceCache, cfg: TrainConfig, scale: int, device, clf, with_bicubic: bool = False) -> dict:
    """PSNR/SSIM (and ECM with a classifier) of ``model`` on the first ``val_max`` validation faces; with
    ``with_bicubic`` also bicubic's (logged once, at step 0)."""
    model.eval()
    s = score_cache(model, val, np.arange(min(len(val), cfg.val_max)), scale, cfg.landmarks, device, clf,
                    bicubic=with_bicubic)
    out = {"val_psnr": float(s["psnr"].mean()), "val_ssim": float(s["ssim"].mean())}
    if clf is not None:
        out["val_ecm"] = float(ecm(s["p_hr"].numpy(), s["p_sr"].numpy()))
    if with_bicubic:
        out["bicubic_psnr"] = float(s["bpsnr"].mean())
        out["bicubic_ssim"] = float(s["bssim"].mean())
        if clf is not None:
            out["bicubic_ecm"] = float(ecm(s["p_hr"].numpy(), s["p_bic"].numpy()))
    model.train()
    return out


LOG_FIELDS = ["step", "epoch", "seconds", "lr", "loss", "l1", "prior", "emo", "lm", "gan", "tc", "kd", "val_psnr",
              "val_ssim", "val_ecm"]


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
    with open(log_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    tr = [(int(r["step"]), float(r["loss"]), float(r["l1"])) for r in rows if r["loss"]]
    va = [(int(r["step"]), float(r["val_psnr"]), float(r["val_ssim"]), float(r["val_ecm"]) if r["val_ecm"] else math.nan)
          for r in rows if r["val_psnr"]]
    plt = pyplot()
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
    model = _build_model(cfg, log if main_proc else None).to(device)
    scale = model.scale
    has_aux = callable(getattr(model, "aux_loss", None))
    hr_size = train_set.size
    if hr_size % scale:
        raise ValueError(f"cache HR size {hr_size} is not divisible by the scale {scale}")

    teacher, teacher_rows, kd_pool = _load_teacher(cfg, train_set, scale)
    predictor = None
    if cfg.predictor:
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
        disc = PatchDiscriminator().to(device)
        disc_opt = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
    emo = clf = None
    # the file records the classifier by name, so that evaluate can refuse it as the judge of this model
    cfg = dataclasses.replace(cfg, classifier=cfg.classifier or TEACHER_CLASSIFIER)
    try:
        clf = load_emotion_classifier(cfg.classifier or TEACHER_CLASSIFIER, device=device)
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
        ddp_model = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
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
        if cfg.kd_batch:  # extra rows with a teacher output, drawn as statelessly as the batch itself
            extra, _ = batch_indices(len(kd_pool), cfg.kd_batch, step, cfg.seed + 1, rank, world_size)
            idx = np.concatenate([idx, kd_pool[extra]])
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
            terms["tc"] = _temporal_term(ddp_model, b, sr, scale, cfg, epoch, step, cuda)
        if cfg.lambda_lm:
            pred = predictor(sr.clamp(0, 1))
            ok = torch.isfinite(b.lm_hr).all(2).all(1)
            terms["lm"] = (F.l1_loss(pred[ok][..., :2], b.lm_hr[ok][..., :2]) if ok.any() else sr.sum() * 0)
        if disc is not None:
            terms["gan"] = generator_gan_loss(disc(b.hr), disc(sr))
        if teacher is not None:
            rows = teacher_rows[b.index]
            has = torch.from_numpy(rows >= 0).to(device)
            terms["kd"] = (F.l1_loss(sr[has], teacher.target(rows[rows >= 0]).to(device)) if has.any()
                           else sr.sum() * 0)
        loss = l1 + terms.get("prior", 0) + cfg.lambda_emo * terms.get("emo", 0) + cfg.lambda_lm * terms.get("lm", 0) \
            + cfg.lambda_gan * terms.get("gan", 0) + cfg.lambda_temporal * terms.get("tc", 0) \
            + cfg.lambda_kd * terms.get("kd", 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if disc is not None:
            d_loss = discriminator_loss(disc(b.hr), disc(sr.detach()))
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
        m = ema_model()
        meta = {"steps": str(step), "seed": str(cfg.seed), "train_seconds": f"{seconds:.0f}",
                "machine": machine(), "train_config": json.dumps(cfg.to_dict())}
        save_weights(m, out / "ema.safetensors", half=False, metadata=meta)
        plot_curves(out / "log.csv", out / "curves.png", f"{cfg.model}, {step} steps")
        summary["weights"] = str(out / "ema.safetensors")
    return summary
