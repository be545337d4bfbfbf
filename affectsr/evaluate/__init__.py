"""Evaluation: SR models against HR faces, with every metric the tables need.

- :mod:`~affectsr.evaluate.core`: faces from any folder or cache, models by name, and
  :func:`run_evaluation` through the pipeline (``affectsr evaluate``, the fairness report);
- :mod:`~affectsr.evaluate.cache`: the raw network on prepared caches (training's validation,
  ``affectsr evaluate-cache``) and the landmark predictor's NME (``affectsr evaluate-predictor``);
- :mod:`~affectsr.evaluate.report`: the files ``affectsr evaluate`` writes.

The FER classifier's own accuracy on labelled faces is :mod:`affectsr.emotion.evaluate`.
"""
from .cache import evaluate_cache, format_cache_eval, predictor_nme, score_cache
from .core import (
    HR_SIZE,
    LPIPS_NOTE,
    Face,
    ModelSkipped,
    bicubic_batch,
    bicubic_up,
    emotion_loss_classifier,
    fer_summary,
    load_faces,
    resolve_models,
    run_evaluation,
)
from .report import format_table, write_outputs

__all__ = ["HR_SIZE", "LPIPS_NOTE", "Face", "ModelSkipped", "bicubic_batch", "bicubic_up", "evaluate_cache",
           "emotion_loss_classifier", "fer_summary", "format_cache_eval", "format_table", "load_faces",  "predictor_nme", "resolve_models",
           "run_evaluation", "score_cache", "write_outputs"]
