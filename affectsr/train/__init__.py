"""Training: the config (:mod:`~affectsr.train.config`), the loop (:mod:`~affectsr.train.loop`), the losses
beyond L1 (:mod:`~affectsr.train.losses`) and the LR landmark predictor (:mod:`~affectsr.train.predictor`)."""
from .config import TrainConfig, load_config, parse_overrides
from .loop import check_init, plot_curves, train
from .predictor import train_predictor

__all__ = ["TrainConfig", "check_init", "load_config", "parse_overrides", "plot_curves", "train", "train_predictor"]
