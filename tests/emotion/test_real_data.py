"""Checks on the labelled datasets in ../shared/data (skipped where that folder is absent, e.g. in CI)."""
from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
from safetensors import safe_open

from affectsr.emotion import DEFAULT_CLASSIFIER, load_emotion_classifier
from affectsr.weights import WEIGHTS_DIR
from affectsr.commands.emotion import add_parser
from affectsr.emotion.data import (
    DATA_ENV,
    DatasetNotFoundError,
    default_data_root,
    load_aligned,
    read_labels,
    resolve_data_root,
)
from affectsr.emotion.evaluate import FaceSet, evaluate_faces


@pytest.fixture(scope="module")
def data_root():
    root = default_data_root()
    if root is None or not (root / "fer2013" / "labels.csv").is_file():
        pytest.skip(f"labelled data not found (set {DATA_ENV} or put it in ../shared/data)")
    return root


def test_data_root_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert default_data_root() == tmp_path
    assert resolve_data_root() == tmp_path
    with pytest.raises(DatasetNotFoundError, match="fer2013"):
        read_labels("fer2013", root=tmp_path)
    with pytest.raises(DatasetNotFoundError, match="not a folder"):
        resolve_data_root(tmp_path / "missing")


def test_ck_plus_contempt_is_left_out(data_root):
    faces = read_labels("ck_plus_48", "test", data_root)
    assert len(faces) == 78 and "contempt" not in {f.label for f in faces}


@pytest.mark.parametrize("dataset, step", [("fer2013", 10), ("ck_plus_48", 1)])
@pytest.mark.slow
def test_shipped_classifier_is_near_its_recorded_test_accuracy(data_root, dataset, step):
    """Real faces, read the way the study reads them, score near the accuracy written into the weights file.

    FER2013 uses every 10th test face (359, stratified by class since labels.csv is sorted by class)
    to keep the suite fast; +-5 points is about 2 standard errors at that size.
    """
    with safe_open(str(WEIGHTS_DIR / f"{DEFAULT_CLASSIFIER}.safetensors"), framework="pt") as f:
        recorded = json.loads(f.metadata()["test_accuracy"])[dataset]
    rows = read_labels(dataset, "test", data_root)
    assert len(rows) == recorded["n"]
    rows = rows[::step]
    faces = FaceSet(dataset, "test", load_aligned(rows), np.array([r.label_index for r in rows]), [str(r.path) for r in rows])
    report, _ = evaluate_faces(load_emotion_classifier(), faces)
    assert report.accuracy == pytest.approx(recorded["accuracy"], abs=0.05 if step > 1 else 1e-6)
    assert report.accuracy > 0.5  # far above chance (1/7)


@pytest.mark.slow
def test_study_command_on_real_faces(data_root, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="affectsr")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["study-resolution", "--data", str(data_root), "--out", str(tmp_path), "--limit", "16",
                              "--sizes", "32,16", "--models", "rrdb-x8", "-q"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "| taiwanese_expr | original | 128 |" in out and "| fer2013 | bicubic | 16 |" in out
    with open(tmp_path / "study_resolution.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["dataset"] for r in rows} == {"taiwanese_expr", "fer2013", "ck_plus_48"}
    assert len(rows) == 9
    assert (tmp_path / "study_resolution.png").stat().st_size > 10_000
    doc = json.loads((tmp_path / "study_resolution.json").read_text())
    assert doc["labels"][3] == "happy" and "fer2013" in doc["confusion_original_vs_labels"]
