"""Expression geometry: region NME sees a mouth move that whole-face NME dilutes."""
from __future__ import annotations

import numpy as np
import pytest

from affectsr.landmarks.geometry import LEFT_EYE_OUTER, REGIONS, RIGHT_EYE_OUTER, inter_ocular, nme, region_nme


@pytest.fixture
def face() -> np.ndarray:
    rng = np.random.default_rng(0)
    lm = rng.uniform(0.2, 0.8, (1, 478, 3)).astype(np.float32)
    lm[0, RIGHT_EYE_OUTER, :2] = (0.3, 0.4)
    lm[0, LEFT_EYE_OUTER, :2] = (0.7, 0.4)  # inter-ocular distance 0.4
    return lm


def test_regions_are_disjoint_expressive_points():
    assert set(REGIONS) == {"mouth", "eyes", "brows"}
    mouth, eyes, brows = (set(REGIONS[k].tolist()) for k in ("mouth", "eyes", "brows"))
    assert len(mouth) == 40 and not (mouth & eyes) and not (mouth & brows) and not (eyes & brows)
    assert {468, 473} <= eyes  # iris centres (gaze) count as eyes


def test_identical_faces_have_zero_error(face):
    assert all(float(v[0]) == 0.0 for v in region_nme(face, face).values())


def test_mouth_shift_shows_in_mouth_only(face):
    moved = face.copy()
    moved[0, REGIONS["mouth"], 1] += 0.04  # lips drop by a tenth of the inter-ocular distance
    r = region_nme(moved, face)
    assert r["mouth"][0] == pytest.approx(0.1, rel=1e-5)
    assert r["eyes"][0] == 0.0 and r["brows"][0] == 0.0
    assert r["face"][0] == pytest.approx(0.1 * 40 / 478, rel=1e-5)  # diluted 12x over the whole face


def test_normalised_by_the_reference_face(face):
    scaled_pred, scaled_ref = face * 3, face * 3
    scaled_pred[0, :, 0] += 0.12
    assert inter_ocular(scaled_ref)[0] == pytest.approx(1.2)
    assert nme(scaled_pred, scaled_ref)[0] == pytest.approx(0.1, rel=1e-5)


def test_shape_mismatch_is_an_error(face):
    with pytest.raises(ValueError, match="N x 478"):
        nme(face[:, :68], face)
