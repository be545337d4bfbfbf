"""affectsr bench: rows, same-run ratios to plain RRDB and to bicubic, and CLI errors."""
from __future__ import annotations

import pytest

from affectsr.bench import (FRAME_STAGES, BenchRow, add_ratios, bench_frames, frames_markdown, rrdb_reference, run_bench,
                            synthetic_frame, to_markdown)
from affectsr.cli import main


def test_rrdb_reference():
    assert rrdb_reference("affectsr-x4") == "rrdb-x4"
    assert rrdb_reference("affectsr-x8-lite") == "rrdb-x8-lite"
    assert rrdb_reference("srcnn-x4") == "rrdb-x4-lite"
    assert rrdb_reference("rrdb-x4-lite") == "rrdb-x4-lite"


def test_ratios_are_computed_from_rows_of_the_same_run():
    rows = [BenchRow("affectsr-x8-lite", "model", "cpu", 1, 16, 8, 1, 20.0, 50.0),
            BenchRow("rrdb-x8-lite", "model", "cpu", 1, 16, 8, 1, 10.0, 100.0),
            BenchRow("affectsr-x8-lite", "model", "cpu", 8, 16, 8, 1, 80.0, 100.0),  # no rrdb at batch 8
            BenchRow("bicubic", "bicubic", "cpu", 1, 16, 8, 0, 0.5, 2000.0)]
    add_ratios(rows)
    assert rows[0].vs_rrdb == pytest.approx(0.5) and rows[1].vs_rrdb == pytest.approx(1.0)
    assert rows[2].vs_rrdb is None
    assert rows[0].slower_than_bicubic == pytest.approx(40.0) and rows[3].vs_rrdb is None


def test_run_bench_adds_the_reference_and_bicubic():
    rows = run_bench(["srcnn-x8"], [1, 2], min_time=0.01, landmarks=False)
    names = {(r.name, r.batch) for r in rows if r.stage == "model"}
    assert names == {("srcnn-x8", 1), ("srcnn-x8", 2), ("rrdb-x8-lite", 1), ("rrdb-x8-lite", 2)}
    assert [r.name for r in rows if r.stage == "bicubic"] == ["bicubic"]
    model_rows = [r for r in rows if r.stage == "model"]
    assert all(r.vs_rrdb is not None and r.slower_than_bicubic > 0 and r.faces_per_s > 0 for r in model_rows)
    md = to_markdown(rows)
    assert "vs RRDB" in md and "| srcnn-x8 | model | cpu | float32 | 2 | 16->128 |" in md


def test_bench_bfloat16_rows():
    rows = run_bench(["rrdb-x8-lite"], [1], min_time=0.01, dtypes=["float32", "bfloat16"], landmarks=False)
    assert {r.dtype for r in rows if r.stage == "model"} == {"float32", "bfloat16"}


@pytest.mark.parametrize("args,msg", [
    (["--batch", "0"], "--batch"), (["--batch", "x"], "--batch"), (["--dtype", "int8"], "--dtype int8"),
    (["--backend", "tensorrt"], "--backend tensorrt"), (["--models", "nope"], "unknown model"),
    (["--device", "cuda:7"], "CUDA"),
])
def test_bench_cli_errors(args, msg, capsys):
    assert main(["bench", "--min-time", "0.01", "--no-landmarks", *args]) == 2
    assert msg in capsys.readouterr().err


def test_synthetic_frame_places_the_faces_it_is_asked_for():
    ground = synthetic_frame(0, (640, 360))
    assert ground.shape == (360, 640, 3) and ground.dtype == "uint8"
    frame = synthetic_frame(4, (640, 360), (24, 32))
    changed = (frame != ground).any(-1)
    assert changed.any() and not changed[:5].any()  # scenes in their grid cells, not at the frame's edge
    with pytest.raises(ValueError, match="do not fit"):
        synthetic_frame(16, (320, 180), (24, 48))


@pytest.mark.slow  # MediaPipe detection + the shipped x4 model on a whole frame
def test_bench_frames_times_every_stage():
    (row,) = bench_frames(None, [1], ("torch",), min_time=0.0, size=(640, 360), face_px=(40, 48))
    assert row.frame == "640x360" and row.scale == 4 and row.frames_per_s > 0
    assert set(row.ms) == set(FRAME_STAGES) and row.ms["detect"] > 0 and row.ms["background"] > 0
    assert row.detected == row.super_resolved == 1  # one face, small enough to be super-resolved
    assert row.ms["sr"] > 0 and row.with_landmarks <= 1
    assert "| 1 (1, 1, " in frames_markdown([row])


def test_bench_times_the_network_that_ships():
    """The full presets' files carry the bicubic skip (residual) that the preset config lacks: timing the preset config
    would leave out a cost users pay (in ONNX Runtime it was ~4 ms per x8 face before issue 17's exact rewrite)."""
    from affectsr.models.presets import create_model, create_shipped, read_config, weights_path

    for name in ("affectsr-x4", "affectsr-x8", "affectsr-x4-lite"):
        if weights_path(name) is None:
            continue
        assert create_shipped(name).config == read_config(weights_path(name))
    assert create_shipped("rrdb-x8").config == create_model("rrdb-x8").config
