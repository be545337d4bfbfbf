"""The resolution study: rows, files and the SR-model hook, on bundled faces (no dataset needed)."""
from __future__ import annotations

import argparse
import csv

import numpy as np
import pytest

from affectsr.emotion import EMOTIONS, load_emotion_classifier
from affectsr.commands.emotion import add_parser
from affectsr.emotion.evaluate import FaceSet
from affectsr.emotion.study import (
    bicubic_roundtrip,
    load_sr_models,
    plot_study,
    run_study,
    to_markdown,
    write_csv,
)
from affectsr.models import PRESETS, create_model, save_weights
from affectsr.models.presets import weights_path

HAPPY = EMOTIONS.index("happy")


@pytest.fixture(scope="module")
def clf():
    return load_emotion_classifier()


@pytest.fixture
def smiles(default_face) -> FaceSet:
    faces = np.stack([default_face, default_face[:, ::-1]])
    return FaceSet("bundled", "test", faces, np.array([HAPPY, HAPPY]), ["astronaut", "astronaut-mirrored"])


def test_bicubic_roundtrip_keeps_size_and_loses_detail(default_face):
    out = bicubic_roundtrip(default_face[None], 16)
    assert out.shape == (1, 128, 128, 3) and out.dtype == np.uint8
    assert np.abs(out[0].astype(int) - default_face).mean() > 3


def test_study_rows_and_files(clf, smiles, tmp_path):
    result = run_study(clf, datasets=("bundled",), sizes=(128, 32, 16), face_sets={"bundled": smiles})
    rows = {(r.method, r.lr_px): r for r in result.rows}
    assert set(rows) == {("original", 128), ("bicubic", 32), ("bicubic", 16)}  # 128 is not below the original
    orig = rows[("original", 128)]
    assert orig.accuracy == 1.0 and orig.agreement == 1.0 and orig.mean_kl == pytest.approx(0, abs=1e-6)
    assert np.isnan(orig.ecm)
    assert rows[("bicubic", 16)].mean_kl > rows[("bicubic", 32)].mean_kl  # less resolution, more expression lost
    assert any("128 px is not below" in n for n in result.notes)
    assert result.confusion["bundled"][HAPPY, HAPPY] == 2

    csv_path = write_csv(result.rows, tmp_path / "s.csv")
    with open(csv_path) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 3 and table[0]["ecm"] == "" and float(table[1]["ecm"]) == pytest.approx(rows[("bicubic", 32)].ecm, rel=1e-5)
    png = plot_study(result.rows, tmp_path / "s.png")
    assert png.stat().st_size > 10_000
    assert "| bundled | bicubic | 16 |" in to_markdown(result.rows)


def test_sr_models_hook_runs_trained_files_and_skips_untrained_presets(clf, smiles, tmp_path):
    path = save_weights(create_model("affectsr-x4-lite"), tmp_path / "lite-x4.safetensors")  # random weights, as a file
    untrained = [n for n in PRESETS if weights_path(n) is None]
    models, messages = load_sr_models([str(path), *untrained[:1]])
    assert [m.name for m in models] == ["lite-x4"] and (models[0].in_size, models[0].scale) == (32, 4)
    if untrained:
        assert len(messages) == 1 and untrained[0] in messages[0] and "no trained weights" in messages[0]
    result = run_study(clf, datasets=("bundled",), sizes=(16,), models=models, face_sets={"bundled": smiles})
    row = [r for r in result.rows if r.method == "lite-x4"]
    assert len(row) == 1 and row[0].lr_px == 32 and row[0].note == "x4" and row[0].n == 2


def test_study_command_without_data_fails_clearly(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="affectsr")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["study-resolution", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path)])
    assert args.func(args) == 2
    assert "nowhere" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["study-resolution", "--sizes", "32,x"])
