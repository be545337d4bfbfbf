"""Training: exact resume, DDP on gloo (2 CPU processes), evaluation, metrics and the CLI."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as tmp_mp
from safetensors.torch import load_file

from affectsr.evaluate import evaluate_cache
from affectsr.metrics import psnr_y, ssim_y
from affectsr.train import TrainConfig, parse_overrides, train


def _cfg(cache: Path, out: Path, **kw) -> TrainConfig:
    base = dict(model="affectsr-x4-lite", data=(str(cache),), out=str(out), steps=4, batch_size=2, lr=1e-3, warmup=1,
                landmarks="hr", val_every=2, val_max=2, log_every=1, ckpt_every=100, threads=1, seed=3, lambda_emo=0.1)
    base.update(kw)
    return TrainConfig(**base)


def _weights(run: Path) -> dict:
    return load_file(str(run / "ema.safetensors"))


@pytest.mark.slow
def test_exact_resume(tiny_cache, tmp_path):
    straight = train(_cfg(tiny_cache, tmp_path / "a"), log=lambda *_: None)
    assert straight["step"] == 4
    first = train(_cfg(tiny_cache, tmp_path / "b", stop_after=2), log=lambda *_: None)
    assert first["step"] == 2
    msgs = []
    second = train(_cfg(tiny_cache, tmp_path / "b"), log=msgs.append)
    assert second["step"] == 4 and any("resumed" in m for m in msgs)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    sb = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    log = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in log[1:]] == ["1", "2", "3", "4"]  # no duplicated rows after resume
    assert (tmp_path / "b" / "curves.png").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, cfg: TrainConfig) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        train(cfg, rank=rank, world_size=world, log=lambda *_: None)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_gloo_matches_single_process(tiny_cache, tmp_path):
    kw = dict(steps=3, batch_size=4, val_every=0, ema_decay=0.0, lambda_emo=0.0)
    single = _cfg(tiny_cache, tmp_path / "single", **kw)
    train(single, log=lambda *_: None)
    ddp = dataclasses.replace(single, out=str(tmp_path / "ddp"))
    tmp_mp.spawn(_ddp_worker, args=(2, _free_port(), ddp), nprocs=2, join=True)
    a = torch.load(tmp_path / "single" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)["model"]
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k


@pytest.mark.slow
def test_evaluate_reports_model_and_bicubic(tiny_cache, tmp_path):
    train(_cfg(tiny_cache, tmp_path / "e", steps=1, val_every=0), log=lambda *_: None)
    r = evaluate_cache(str(tmp_path / "e" / "ema.safetensors"), [str(tiny_cache)], split="val", landmarks="hr")
    assert r["images"] == 2 and r["scale"] == 4
    for k in ("model", "bicubic"):
        assert set(r[k]) == {"psnr", "ssim", "ecm", "agreement", "kl"}
        assert np.isfinite(r[k]["psnr"])


def test_metrics():
    x = torch.rand(2, 3, 32, 32)
    assert torch.all(ssim_y(x, x, 4) > 0.999)
    y = (x + 4 / 255).clamp(0, 1)
    p = psnr_y(x, y, 0)
    assert torch.all(p > 30) and torch.all(p < 60)
    assert torch.all(psnr_y(x, x, 4) > 90)


@pytest.mark.slow
def test_overrides_and_cli(tiny_cache, tmp_path):
    cfg = parse_overrides(TrainConfig(), ["steps=7", "data=a,b", "amp=false", "lr=1e-3", "betas=0.8,0.9"])
    assert cfg.steps == 7 and cfg.data == ("a", "b") and cfg.amp is False and cfg.lr == 1e-3 and cfg.betas == (0.8, 0.9)
    with pytest.raises(ValueError):
        parse_overrides(TrainConfig(), ["nope=1"])
    from affectsr.commands.train import add_parser

    p = argparse.ArgumentParser()
    add_parser(p.add_subparsers(dest="command"))
    args = p.parse_args(["train", f"data={tiny_cache}", f"out={tmp_path / 'c'}", "steps=1", "batch_size=2",
                         "val_every=0", "threads=1", "landmarks=detect"])
    assert args.func(args) == 0
    assert (tmp_path / "c" / "ema.safetensors").is_file()
    assert p.parse_args(["train", "bogus=1"]).func(p.parse_args(["train", "bogus=1"])) == 2


@pytest.mark.slow
@pytest.mark.parametrize("model,model_args,other", [("fsrnet-x4", "", "nf=16"),
                                                    ("affectsr-x4-lite", "prior=pooled;fusion=concat", "fusion=msaf")])
def test_baselines_and_ablations_train_and_reload(tiny_cache, tmp_path, model, model_args, other):
    """Baselines with their own prior loss (aux_loss) and ablations (model_args) train and reload by arch."""
    from affectsr.models import load_model

    out = tmp_path / "run"
    train(_cfg(tiny_cache, out, model=model, model_args=model_args, steps=2, val_every=0, lambda_emo=0.0), log=lambda *_: None)
    log = (out / "log.csv").read_text()
    assert ("prior" in log.splitlines()[0]) and log.splitlines()[-1].split(",")[2] != ""
    net = load_model(str(out / "ema.safetensors"))
    assert type(net).__name__ == ("FSRNet" if model == "fsrnet-x4" else "AffectSRNet")
    if model_args:
        assert net.config.prior == "pooled" and net.config.fusion == "concat"
    with pytest.raises(ValueError, match="another run"):  # a resume with other model_args is refused
        train(_cfg(tiny_cache, out, model=model, model_args=other, steps=3, val_every=0), log=lambda *_: None)


def test_move_landmarks_follows_the_warp():
    """A bright dot at a landmark ends up where move_landmarks says after warp_affine with the same theta."""
    from affectsr.train.losses import affine_jitter_pair, move_landmarks
    from affectsr.warp import warp_affine

    img = torch.zeros(3, 1, 64, 64)
    pts = torch.tensor([[20.5, 30.5], [40.5, 22.5], [33.5, 44.5]])  # pixel centres (x, y)
    for i, (x, y) in enumerate(pts):
        img[i, 0, int(y), int(x)] = 1.0
    _, _, theta = affine_jitter_pair(img, max_shift_px=4, max_rot_deg=10, max_scale=0.05,
                                     generator=torch.Generator().manual_seed(1))
    warped, _ = warp_affine(img, theta, mode="bilinear")
    lm = torch.zeros(3, 1, 3)
    lm[:, 0, :2] = pts / 64
    moved = move_landmarks(lm, theta)[:, 0, :2] * 64 - 0.5  # back to pixel indices
    for i in range(3):
        w = warped[i, 0]
        ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
        centre = torch.stack([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])
        assert torch.allclose(centre, moved[i], atol=0.35), (centre, moved[i])
    nan = move_landmarks(torch.full((1, 2, 3), float("nan")), theta[:1])
    assert torch.isnan(nan).all()


@pytest.mark.slow
def test_temporal_term_trains(tiny_cache, tmp_path):
    out = tmp_path / "tc"
    train(_cfg(tiny_cache, out, steps=2, val_every=0, lambda_emo=0.0, lambda_temporal=0.5), log=lambda *_: None)
    rows = (out / "log.csv").read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    tc = float(last[header.index("tc")])
    assert 0 < tc < 1


@pytest.mark.parametrize("degradation", ["bicubic", "blind"])
def test_temporal_pair_is_degraded_like_the_first_view(tiny_cache, monkeypatch, degradation):
    """The second view goes through the same degradation (kind, seed rule) as the first: with no motion, the
    two LR views are identical, blind noise and JPEG included."""
    from affectsr.data.dataset import FaceCache, make_batch
    from affectsr.train import losses

    ds = FaceCache([str(tiny_cache)], split="train")
    idx = np.arange(4)
    b = make_batch(ds, idx, 4, degradation, seed=5, epoch=2, landmarks="hr")
    still = torch.eye(2, 3).repeat(4, 1, 1)
    monkeypatch.setattr(losses, "affine_jitter_pair", lambda hr, generator=None: (hr, hr.clone(), still))
    lr_b, lm_b, theta = losses.temporal_pair(b, 4, degradation, seed=5, epoch=2, step=7)
    assert torch.equal(lr_b, b.lr) and torch.equal(theta, still)
    assert torch.allclose(lm_b, b.landmarks, atol=1e-6, equal_nan=True)
    other, _, _ = losses.temporal_pair(b, 4, degradation, seed=5, epoch=3, step=7)
    assert torch.equal(other, b.lr) == (degradation == "bicubic")  # blind draws follow (seed, epoch, index)


@pytest.mark.slow
def test_cache_commands(tiny_cache, tmp_path, capsys):
    """train-predictor, evaluate-predictor and evaluate-cache (the former `python -m` entry points) as subcommands."""
    from affectsr.cli import main

    train(_cfg(tiny_cache, tmp_path / "e", steps=1, val_every=0), log=lambda *_: None)
    pred = tmp_path / "p.landmarks.safetensors"
    assert main(["train-predictor", "--data", str(tiny_cache), "--scale", "4", "--steps", "2", "--batch", "4",
                 "--threads", "1", "--out", str(pred)]) == 0 and pred.is_file()
    assert main(["evaluate-predictor", "--data", str(tiny_cache), "--scale", "4", "--predictor", str(pred),
                 "--split", "val", "--json", str(tmp_path / "nme.json")]) == 0
    assert json.loads((tmp_path / "nme.json").read_text())["faces"] == 2
    capsys.readouterr()
    assert main(["evaluate-cache", str(tmp_path / "e" / "ema.safetensors"), "--data", str(tiny_cache), "--split", "val",
                 "--landmarks", "predict", "--predictor", str(pred)]) == 0
    assert "| bicubic |" in capsys.readouterr().out
    assert main(["evaluate-cache", "affectsr-x4-lite", "--data", str(tmp_path / "nowhere")]) == 2
