"""Degradations and the stateless sampler."""
from __future__ import annotations

import numpy as np
import pytest

from affectsr.data.dataset import batch_indices
from affectsr.data.degrade import bicubic_down, degrade, sample_rng


def test_bicubic(default_face):
    lr = bicubic_down(default_face, 4)
    assert lr.shape == (32, 32, 3) and lr.dtype == np.uint8
    assert np.array_equal(lr, degrade(default_face, 4))
    with pytest.raises(ValueError):
        bicubic_down(default_face[:127], 4)


def test_blind_is_seeded(default_face):
    a = degrade(default_face, 8, "blind", sample_rng(0, 1, 5))
    b = degrade(default_face, 8, "blind", sample_rng(0, 1, 5))
    assert a.shape == (16, 16, 3)
    assert np.array_equal(a, b)
    others = [degrade(default_face, 8, "blind", sample_rng(0, 1, i)) for i in range(6, 10)]
    assert any(not np.array_equal(a, o) for o in others)
    with pytest.raises(ValueError):
        degrade(default_face, 4, "blind")
    with pytest.raises(ValueError):
        degrade(default_face, 4, "nope")


def test_batch_indices_stateless_and_sharded():
    a, e = batch_indices(10, 4, 3, seed=1)
    b, _ = batch_indices(10, 4, 3, seed=1)
    assert np.array_equal(a, b) and e == 1  # 2 batches per epoch
    epoch0 = np.concatenate([batch_indices(10, 4, s, 1)[0] for s in range(2)])
    assert len(set(epoch0.tolist())) == 8  # no repeats within an epoch
    r0, _ = batch_indices(10, 4, 3, 1, rank=0, world_size=2)
    r1, _ = batch_indices(10, 4, 3, 1, rank=1, world_size=2)
    assert sorted(np.concatenate([r0, r1]).tolist()) == sorted(a.tolist())
    with pytest.raises(ValueError):
        batch_indices(10, 3, 0, 1, world_size=2)
