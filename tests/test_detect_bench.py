"""affectsr.landmarks.detect_bench: scene building, matching and recall on hand-made cases; a tiny run on the astronaut."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from affectsr.landmarks import detect_bench as B
from affectsr.cli import main


def test_match_is_one_to_one_by_iou() -> None:
    truths = [(0, 0, 10, 10), (20, 0, 30, 10), (40, 0, 50, 10)]
    detections = [(1, 0, 11, 10),  # face 0 (IoU 0.82)
                  (0, 1, 10, 11),  # face 0 again: a duplicate counts as a false positive
                  (20, 0, 27, 10),  # face 1 (IoU 0.7)
                  (41, 4, 51, 14),  # face 2 only at IoU 0.4: below 0.5, found at 0.4
                  (70, 70, 80, 80)]  # nowhere near a face
    found, fp = B.match(detections, truths, 0.5)
    assert found == [True, True, False] and fp == 3
    found, fp = B.match(detections, truths, 0.35)
    assert found == [True, True, True] and fp == 2
    assert B.match([], truths) == ([False, False, False], 0)
    assert B.match(detections, []) == ([], 5)


def test_recall_by_size_bins() -> None:
    rows = B.recall_by_size([12, 15, 16, 23.9, 24, 100], [False, True, True, True, False, True],
                            ((12, 16), (16, 24), (24, 32), (32, 48)))
    assert [(r["bin"], r["faces"], r["found"], r["recall"]) for r in rows] == [
        ("12-16", 2, 1, 0.5), ("16-24", 2, 2, 1.0), ("24-32", 1, 0, 0.0), ("32-48", 0, 0, None)]


def test_build_scene_places_faces_of_the_asked_sizes(landmark_detector) -> None:
    sources = B.astronaut_sources(landmark_detector)
    bg = B.fill_frame(np.random.default_rng(0), B.backgrounds(("rocket",))[0][1], (640, 360))
    assert bg.shape == (360, 640, 3)
    sizes = [14.0, 20.0, 33.0, 60.0]
    a = B.build_scene(np.random.default_rng(3), bg, sources, sizes)
    b = B.build_scene(np.random.default_rng(3), bg, sources, sizes)
    np.testing.assert_array_equal(a.rgb, b.rgb)  # seeded: the same scene every run
    assert a.boxes == b.boxes and len(a.boxes) == 4 and a.rgb.shape == (360, 640, 3)
    assert sorted(a.sizes) == pytest.approx(sizes, rel=0.05)
    for x0, y0, x1, y1 in a.boxes:
        assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 360
    # the mapped box is where the face is: the detector finds the 60 px one there
    found = B._boxes(landmark_detector.detect_faces(a.rgb))
    largest = max(a.boxes, key=lambda b: b[2] - b[0])
    assert B.match(found, [largest])[0] == [True]
    assert B.scene_sizes(np.random.default_rng(0), ((10, 20), (20, 40)), 4, 1)[0] >= 20  # bins in turn from start


@pytest.mark.slow
def test_backgrounds_hold_no_face(landmark_detector) -> None:
    for name, photo in B.backgrounds():
        assert photo.ndim == 3 and photo.dtype == np.uint8
        assert landmark_detector.detect_faces(photo) == [], name


def test_tiny_run_on_the_astronaut(landmark_detector) -> None:
    cfg = B.BenchConfig(scenes=2, faces_per_scene=3, bins=((16, 24), (32, 48), (56, 72)), frame_sizes=((800, 600),),
                        backgrounds=("rocket", "coffee"), timing_frames=1)
    report = B.run_detect_bench(cfg, B.astronaut_sources(landmark_detector), landmark_detector, log=lambda m: None)
    assert report["faces"] == 6
    assert [r["faces"] for r in report["recall"]["colour"]] == [2, 2, 2]
    assert report["recall"]["colour"][2]["recall"] == 1.0  # large faces: always found
    assert report["false_positives"]["face_free_images"] == 4  # each photo alone and as a frame
    assert report["timing"][0]["size"] == "800x600" and report["timing"][0]["median_s"] > 0
    assert [t["crop_over_box"] for t in report["tight_crops"]] == list(B.TIGHT_CROPS)
    text = B.to_markdown(report)
    assert "| 56-72 | 2 | 100.0% |" in text and "False positives per face-free photo" in text
    assert "Command:" not in text
    assert "Command: `affectsr bench-detect --out x`" in B.to_markdown({**report, "command": "affectsr bench-detect --out x"})
    json.dumps(report)  # plain JSON types only


def test_timing_only_times_the_same_frames(landmark_detector, monkeypatch) -> None:
    cfg = B.BenchConfig(scenes=6, faces_per_scene=2, bins=((32, 48),), frame_sizes=((320, 240), (400, 300)),
                        backgrounds=("rocket",), timing_frames=2)
    sources = B.astronaut_sources(landmark_detector)
    timed = []
    monkeypatch.setattr(B, "time_frames", lambda det, frames, mf: timed.append([f.copy() for f in frames]) or
                        {"frames": len(frames), "size": "400x300", "min_face": mf, "fine_mpx": 0.1, "threads": 1,
                         "median_s": 0.1, "median_cpu_s": 0.1, "load_before_after": None})
    full = B.run_detect_bench(cfg, sources, landmark_detector, log=lambda m: None)
    only = B.run_detect_bench(replace(cfg, timing_only=True), sources, landmark_detector, log=lambda m: None,
                              timing_min_faces=[24])
    assert len(timed) == 3 and len(timed[0]) == 2 and all(f.shape == (300, 400, 3) for f in timed[0])
    assert all(np.array_equal(a, b) for a, b in zip(timed[0], timed[1]))  # the full run's frames, not others
    assert "recall" in full and "recall" not in only and [t["min_face"] for t in only["timing"]] == [16, 24]
    text = B.to_markdown(only)
    assert text.startswith("Detection timing") and "| 400x300 (2 frames) | 16 |" in text
    json.dumps(only)


def test_cli_says_when_the_data_is_missing(tmp_path, capsys) -> None:
    assert main(["bench-detect", "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "error: data root" in err and "not found" in err and "--data-root" in err
    assert not (tmp_path / "out").exists()
