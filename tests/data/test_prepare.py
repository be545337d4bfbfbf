"""affectsr prepare: layouts, crops, landmarks, splits, shards, skip list and resume."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from affectsr.data.prepare import PrepareConfig, discover, hash_split, load_index, prepare

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(scope="module")
def cache(face_folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cache")
    prepare(face_folder, out, PrepareConfig(size=64, lr_scales=(4,), shard_size=4, workers=2), progress=False,
            log=lambda *_: None)
    return out


def test_discover_labels_csv(face_folder):
    recs, layout = discover(face_folder)
    assert layout == "labels.csv"
    assert len(recs) == 7
    by = {Path(r.rel).name: r for r in recs}
    assert by["face00.png"].label == "happy" and by["face00.png"].split == "train" and by["face00.png"].subject == "S0"
    assert by["face05.png"].split == hash_split("S2")  # empty split -> hash of the subject


def test_discover_plain_folder_and_celeba(tmp_path):
    from PIL import Image

    img = Image.new("RGB", (8, 8))
    for rel in ["test/happy/a.png", "train/sad/b.jpg", "misc/c.png"]:
        (tmp_path / "f" / rel).parent.mkdir(parents=True, exist_ok=True)
        img.save(tmp_path / "f" / rel)
    recs, layout = discover(tmp_path / "f")
    assert layout == "folder"
    got = {r.rel: (r.split, r.label) for r in recs}
    assert got["test/happy/a.png"] == ("test", "happy")
    assert got["train/sad/b.jpg"] == ("train", "sad")
    assert got["misc/c.png"] == (hash_split("misc/c.png"), "")
    c = tmp_path / "celeba"
    (c / "img_align_celeba").mkdir(parents=True)
    for name in ("000001.jpg", "000002.jpg"):
        img.save(c / "img_align_celeba" / name)
    (c / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 2\n")
    (c / "identity_CelebA.txt").write_text("000001.jpg 17\n000002.jpg 99\n")
    recs, layout = discover(c)
    assert layout == "celeba"
    assert [(r.split, r.subject) for r in recs] == [("train", "17"), ("test", "99")]


def test_cache_contents(cache):
    index = load_index(cache)
    assert index["inputs"] == 7 and index["images"] == 6 and index["skipped"] == 1
    assert len(index["shards"]) == 2
    skipped = (cache / "skipped.csv").read_text()
    assert "gradient.png" in skipped and "no face" in skipped
    from affectsr.data.dataset import FaceCache

    ds = FaceCache(cache)
    assert ds.hr.shape == (6, 64, 64, 3) and ds.hr.dtype == np.uint8
    assert ds.lm_hr.shape == (6, 478, 3)
    assert np.isfinite(ds.lm_hr).all()  # the face is found on every 64 px HR crop
    assert ds.lr_landmarks(4).shape == (6, 478, 3)
    assert ds.soft.shape == (6, 7)
    if np.isfinite(ds.soft).all():  # the FER classifier ships: rows are probabilities
        assert np.allclose(ds.soft.sum(1), 1, atol=1e-2)
    assert set(ds.split) <= {"train", "val", "test"}
    assert list(ds.label[:2]) == [3, 4]  # happy, sad
    # landmarks are normalised to the crop: the face sits in the middle
    assert 0.2 < float(np.nanmean(ds.lm_hr[..., 0])) < 0.8
    train = FaceCache(cache, split="train")
    assert len(train) == int((ds.split == "train").sum())


def test_resume_skips_finished_shards(cache, face_folder):
    shards = sorted(cache.glob("shard-*.npz"))
    before = {p: os.stat(p).st_mtime_ns for p in shards}
    shards[1].unlink()  # as if interrupted before the last shard was written
    msgs = []
    prepare(face_folder, cache, PrepareConfig(size=64, lr_scales=(4,), shard_size=4, workers=1), progress=False,
            log=msgs.append)
    assert os.stat(shards[0]).st_mtime_ns == before[shards[0]]  # not redone
    assert shards[1].is_file()
    assert any("resuming" in m for m in msgs)
    assert load_index(cache)["images"] == 6


def test_prepare_cli(face_folder, tmp_path):
    import argparse

    from affectsr.commands.prepare import add_parser

    p = argparse.ArgumentParser()
    add_parser(p.add_subparsers(dest="command"))
    args = p.parse_args(["prepare", str(face_folder), "--out", str(tmp_path / "c"), "--size", "32",
                         "--lr-scales", "4", "--workers", "1", "--limit", "2", "--quiet"])
    assert args.func(args) == 0
    assert json.loads((tmp_path / "c" / "index.json").read_text())["images"] == 2
    args = p.parse_args(["prepare", str(tmp_path / "missing"), "--out", str(tmp_path / "d")])
    assert args.func(args) == 2


@pytest.mark.skipif(not (SHARED / "taiwanese_expr" / "labels.csv").is_file(), reason="shared data not present")
def test_discover_shared_taiwanese():
    recs, layout = discover(SHARED / "taiwanese_expr")
    assert layout == "labels.csv" and len(recs) == 1232
    assert {r.split for r in recs} == {"train", "val", "test"}
    subjects = {s: {r.subject for r in recs if r.split == s} for s in ("train", "val", "test")}
    assert not (subjects["train"] & subjects["test"])
