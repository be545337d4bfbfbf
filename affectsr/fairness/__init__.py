"""Fairness and occlusion (``affectsr fairness``): expression fidelity per demographic group and under
synthetic occluders, with Wilson and paired-bootstrap intervals.

- :mod:`~affectsr.fairness.occluders`: eye bar, mouth mask, sunglasses painted on face crops;
- :mod:`~affectsr.fairness.stats`: age bins, intervals and per-group tables;
- :mod:`~affectsr.fairness.report`: the run over datasets, occlusions and models, and its files.
"""
from .occluders import OCCLUSIONS, occlude, occluder_mask
from .report import DEFAULT_DATASETS, DEFAULT_GROUPS, default_models, run_report, summary_lines
from .stats import AGE_BINS, SMALL_GROUP, age_bin, group_metrics, paired_difference, paired_statistic, wilson_interval

__all__ = ["AGE_BINS", "DEFAULT_DATASETS", "DEFAULT_GROUPS", "OCCLUSIONS", "SMALL_GROUP", "age_bin", "default_models",
           "group_metrics", "occlude", "occluder_mask", "paired_difference", "paired_statistic", "run_report", "summary_lines",
           "wilson_interval"]
