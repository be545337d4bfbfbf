"""The training configuration: one dataclass, overridden from the command line as KEY=VALUE."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from ..overrides import apply_overrides

__all__ = ["TrainConfig", "load_config", "parse_overrides"]


@dataclass
class TrainConfig:
    model: str = "affectsr-x4-lite"  # preset name (affectsr/models/presets.py)
    model_args: str = ""  # config overrides of the preset, e.g. "prior=pooled;fusion=concat" (ablations)
    data: tuple[str, ...] = (".data/cache/utkface_aligned", ".data/cache/taiwanese_expr")
    out: str = "runs/affectsr-x4-lite"
    init: str = ""  # optional .safetensors to start from (full model, or an RRDB backbone of prior='none')
    init_partial: bool = False  # load only init's tensors whose name and shape fit (e.g. a FAST prior from a -lite file)
    init_skip: tuple[str, ...] = ()  # with init_partial: name prefixes left fresh anyway (e.g. fusions. for a new prior)
    steps: int = 2000
    batch_size: int = 16  # global batch (split across DDP processes)
    lr: float = 3e-4
    lr_min: float = 1e-6
    warmup: int = 50
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0  # 0 = off
    ema_decay: float = 0.995
    lambda_emo: float = 0.0  # Emotion Consistency Loss weight (0 = off)
    classifier: str = ""  # FER classifier for the loss and val ECM ('' = the shipped teacher, fer-teacher-vgg)
    lambda_lm: float = 0.0  # landmark loss weight (needs `predictor`)
    lambda_gan: float = 0.0  # relativistic GAN loss weight (ESRGAN uses 5e-3 after L1 pre-training)
    teacher: str = ""  # teacher outputs for distillation (.npz of `affectsr cache-teacher`; bicubic degradation only)
    lambda_kd: float = 0.0  # weight of L1(SR, teacher SR) on the rows that have a teacher output (needs `teacher`)
    kd_batch: int = 0  # rows per step drawn from the faces with a teacher output, on top of batch_size
    lambda_temporal: float = 0.0  # temporal consistency on jittered pairs of still faces (affectsr.train.losses); 0 = off
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


def parse_overrides(cfg: TrainConfig, items: list[str]) -> TrainConfig:
    """Apply ``key=value`` overrides (tuples as comma lists) to a config; unknown keys are an error."""
    return apply_overrides(cfg, items)


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
