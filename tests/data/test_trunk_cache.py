"""The frozen-trunk feature cache: split trunk == whole trunk, shard contents, resume, and refusals."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from affectsr.data.dataset import FaceCache, make_batch
from affectsr.data.trunk_cache import (
    TrunkCache,
    TrunkCacheConfig,
    build_trunk_cache,
    finish_trunk,
    sample_indices,
    trunk_features,
)
from affectsr.cli import main as cli
from affectsr.models.rrdb import RRDBNet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _fake_cache(root: Path, n: int = 7, size: int = 32) -> Path:
    """A prepared cache with only what FaceCache/make_batch read (random faces, no landmarks)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "shard-00000.npz",
             hr=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
             lm_hr=np.full((n, 478, 3), np.nan, np.float16), lm_lr4=np.full((n, 478, 3), np.nan, np.float16),
             soft=np.full((n, 7), np.nan, np.float16), label=np.full(n, -1, np.int8),
             path=np.array([f"f{i}.png" for i in range(n)]), split=np.array(["train"] * (n - 1) + ["test"]))
    return root


def _small_rrdb(seed: int = 0) -> RRDBNet:
    torch.manual_seed(seed)
    return RRDBNet(3, 3, nf=8, nb=3, gc=4, scale=4).eval()


def test_split_trunk_equals_the_whole_trunk():
    net = _small_rrdb()
    lr = torch.rand(2, 3, 6, 5)
    with torch.no_grad():
        whole, none = trunk_features(net, lr, 0)
        ref = net.conv_first(lr) + net.trunk_conv(net.RRDB_trunk(net.conv_first(lr)))
        assert none is None and torch.allclose(whole, ref, atol=1e-6)
        for k in (1, 2, 3):
            fea, base = trunk_features(net, lr, k)
            assert torch.allclose(finish_trunk(net, fea, base, k), whole, atol=1e-6)
    with pytest.raises(ValueError, match="0..3"):
        trunk_features(net, lr, 4)


def test_build_read_resume(tmp_path):
    caches = [str(_fake_cache(tmp_path / "faces"))]
    faces = FaceCache(caches, split="train")
    net = _small_rrdb()
    cfg = TrunkCacheConfig(caches, scale=4, split="train", stop_before=1, shard_size=2, batch_size=3)
    out = tmp_path / "trunk"
    stats = build_trunk_cache(cfg, out, backbone=net, progress=False)
    assert stats["faces"] == stats["computed"] == 6 and stats["faces_per_s"] > 0
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "meta.json", "shard-00000.npz", "shard-00001.npz",
                                                     "shard-00002.npz"]
    tc = TrunkCache(out)
    tc.check_faces(faces)
    assert len(tc) == 6 and tc.stop_before == 1 and tc.fea.dtype == np.float16 and tc.fea.shape == (6, 8, 8, 8)
    lr = make_batch(faces, np.arange(6), 4, "bicubic", landmarks="none").lr
    with torch.no_grad():
        fea, base = trunk_features(net, lr, 1)
    got_fea, got_base = tc.batch(np.arange(6))
    assert torch.allclose(got_fea, fea, atol=2e-3, rtol=2e-3) and torch.allclose(got_base, base, atol=2e-3, rtol=2e-3)

    # an interrupted build resumes at the missing shard and computes only its faces
    before = tc.fea.copy()
    (out / "shard-00001.npz").unlink()
    (out / "index.json").unlink()
    with pytest.raises(FileNotFoundError, match="index.json"):
        TrunkCache(out)
    assert build_trunk_cache(cfg, out, backbone=net, progress=False)["computed"] == 2
    assert np.array_equal(TrunkCache(out).fea, before)

    # other settings or other weights in the same folder are refused
    with pytest.raises(ValueError, match="stop_before"):
        build_trunk_cache(TrunkCacheConfig(caches, stop_before=2, shard_size=2), out, backbone=net, progress=False)
    with pytest.raises(ValueError, match="weights"):
        build_trunk_cache(cfg, out, backbone=_small_rrdb(seed=1), progress=False)
    with pytest.raises(ValueError, match="another face cache"):
        tc.check_faces(FaceCache(caches, split="test"))


def test_subset_and_cli(tmp_path, capsys):
    caches = [str(_fake_cache(tmp_path / "faces", n=4))]
    net = _small_rrdb()
    cfg = TrunkCacheConfig(caches, split=None, indices=[3, 1], shard_size=8)
    build_trunk_cache(cfg, tmp_path / "sub", backbone=net, progress=False)
    tc = TrunkCache(tmp_path / "sub")
    assert tc.index.tolist() == [3, 1] and tc.path.tolist() == ["faces/f3.png", "faces/f1.png"] and "base" not in tc.arrays
    with pytest.raises(ValueError, match="indices must lie"):
        build_trunk_cache(TrunkCacheConfig(caches, split=None, indices=[9]), tmp_path / "bad", backbone=net, progress=False)
    # the command line, with the default backbone (Real-ESRGAN from its pinned wheel) on 8 px LR faces
    args = ["cache-trunk", "--data", *caches, "--out", str(tmp_path / "cli"), "--split", "train", "--sample", "2", "-q"]
    assert cli(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["computed"] == 2
    tc = TrunkCache(tmp_path / "cli")
    assert tc.fea.shape == (2, 64, 8, 8) and tc.index.tolist() == sample_indices(3, 2, 0)
    assert cli(args) == 0 and json.loads(capsys.readouterr().out.strip().splitlines()[-1])["computed"] == 0  # resumed: done
    assert cli(["cache-trunk", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x"), "-q"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_sample_indices():
    assert sample_indices(5, None) is None and sample_indices(5, 9) is None
    idx = sample_indices(100, 10, seed=3)
    assert idx == sorted(idx) and len(set(idx)) == 10 and idx == sample_indices(100, 10, seed=3) != sample_indices(100, 10, 4)
