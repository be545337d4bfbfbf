"""Identity: dlib face descriptors of the same person stay close, of different people do not."""
from __future__ import annotations

import numpy as np
import pytest

from affectsr.identity import SAME_PERSON_DISTANCE, fallback_rect, identity_scores
from affectsr.images import resize

pytest.importorskip("dlib", reason="identity needs the [identity] extra (dlib-bin + face-recognition-models)")


@pytest.fixture(scope="module")
def encoder():
    from affectsr.identity import IdentityEncoder

    return IdentityEncoder()


def _lfw_faces(n: int) -> list[np.ndarray]:
    """The first ``n`` faces of scikit-image's bundled LFW subset (25 px grey), as 128 px RGB crops."""
    from skimage.data import lfw_subset

    faces = (lfw_subset()[:n] * 255).round().astype(np.uint8)
    return [resize(np.repeat(f[..., None], 3, 2), (128, 128)) for f in faces]


def test_same_person_close_different_people_far(encoder, default_face):
    degraded = resize(resize(default_face, (64, 64)), (128, 128))
    same = [np.ascontiguousarray(default_face[:, ::-1]), degraded]
    others = _lfw_faces(4)
    rect = encoder.face_rect(default_face)
    emb = encoder.embed([default_face] * 6, [rect] * 6)[0]
    emb_same = encoder.embed(same, [rect, rect])
    emb_other = encoder.embed(others)
    d_same = np.linalg.norm(emb_same - emb, axis=1)
    d_other = np.linalg.norm(emb_other - emb, axis=1)
    assert (d_same < SAME_PERSON_DISTANCE).all(), d_same
    assert (d_other > SAME_PERSON_DISTANCE).all(), d_other
    scores = identity_scores(np.concatenate([emb_same, emb_other]), np.repeat(emb[None], 6, 0))
    assert scores.same_person.tolist() == [True, True, False, False, False, False]
    assert scores.cosine[:2].min() > scores.cosine[2:].max()


def test_hog_box_found_on_the_bundled_face(encoder, default_face):
    x0, y0, x1, y1 = encoder.face_rect(default_face)
    assert 10 <= x0 < 50 and 10 <= y0 < 50 and 80 < x1 <= 127 and 80 < y1 <= 127


def test_fallback_rect_when_no_face(encoder):
    flat = np.full((128, 128, 3), 90, np.uint8)
    assert encoder.face_rect(flat) == fallback_rect(128) == (26, 28, 102, 104)


def test_scores_by_hand():
    a = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    b = np.array([[1.0, 0.0], [2.0, 0.0]], np.float32)
    s = identity_scores(a, b)
    np.testing.assert_allclose(s.cosine, [1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(s.distance, [0.0, np.sqrt(8)], atol=1e-6)
    assert s.summary() == pytest.approx({"identity_cosine": 0.5, "identity_distance": np.sqrt(8) / 2,
                                         "identity_kept": 0.5})
    with pytest.raises(ValueError, match="differ in shape"):
        identity_scores(a, b[:1])


def test_rejects_non_rgb(encoder):
    with pytest.raises(ValueError, match="uint8 RGB"):
        encoder.embed([np.zeros((32, 32), np.uint8)])
