"""Face-part keypoints, their heatmaps, the heatmap loss, part grouping and the hourglass."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from affectsr.models import mediapipe_topology as mpt
from affectsr.models.heatmaps import (
    KEYPOINTS,
    NUM_KEYPOINTS,
    PARTS,
    HeatmapEstimator,
    Hourglass,
    group_parts,
    heatmap_loss,
    landmarks_to_heatmaps,
)


def _nodes(*contours) -> set[int]:
    return {int(n) for c in contours for n in c}


def _landmarks(b: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lm = torch.rand(b, 478, 3, generator=g)
    lm[..., :2] = 0.2 + 0.6 * lm[..., :2]
    return lm


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------- keypoints
def test_keypoints_are_subsampled_named_contours():
    assert 40 <= NUM_KEYPOINTS <= 70
    assert KEYPOINTS.dtype == np.int64 and len(set(KEYPOINTS.tolist())) == NUM_KEYPOINTS
    assert set(PARTS) == {"right_eye", "left_eye", "brows", "nose", "mouth", "contour"}
    # parts are contiguous, disjoint and cover every keypoint, in order
    assert np.array_equal(np.concatenate(list(PARTS.values())), np.arange(NUM_KEYPOINTS))
    allowed = {
        "right_eye": _nodes(mpt.RIGHT_EYE, [468]),
        "left_eye": _nodes(mpt.LEFT_EYE, [473]),
        "brows": _nodes(mpt.RIGHT_EYEBROW, mpt.LEFT_EYEBROW),
        "nose": _nodes(mpt.NOSE),
        "mouth": _nodes(mpt.LIPS),
        "contour": _nodes(mpt.FACE_OVAL),
    }
    for name, idx in PARTS.items():
        chosen = set(KEYPOINTS[idx].tolist())
        assert chosen <= allowed[name], name
        assert len(chosen) < len(allowed[name]), f"{name} is not subsampled"
    assert len(PARTS["left_eye"]) == len(PARTS["right_eye"])
    # the points expressions move most are kept: eye and mouth corners, iris centres, lip mid points
    for must, part in [((33, 133, 468), "right_eye"), ((263, 362, 473), "left_eye"),
                       ((61, 291, 78, 308, 13, 14), "mouth")]:
        assert set(must) <= set(KEYPOINTS[PARTS[part]].tolist()), part


# -------------------------------------------------------------------------------- heatmaps
@pytest.mark.parametrize("size", [(16, 16), (12, 20)])
def test_heatmap_peaks_at_the_landmark_pixel(size):
    h, w = size
    lm = _landmarks(2)
    k = int(PARTS["mouth"][0])  # a keypoint; place it at the centre of pixel (row 5, col 9)
    lm[1, KEYPOINTS[k], 0] = (9 + 0.5) / w
    lm[1, KEYPOINTS[k], 1] = (5 + 0.5) / h
    maps, valid = landmarks_to_heatmaps(lm, size, sigma=1.5)
    assert maps.shape == (2, NUM_KEYPOINTS, h, w) and valid.tolist() == [True, True]
    m = maps[1, k]
    assert divmod(int(m.argmax()), w) == (5, 9)
    assert m[5, 9].item() == pytest.approx(1.0)
    assert m[5, 10].item() == pytest.approx(math.exp(-1 / (2 * 1.5**2)), rel=1e-5)
    assert maps.min() >= 0 and maps.max() <= 1
    # an int size is square
    assert landmarks_to_heatmaps(lm, 8)[0].shape == (2, NUM_KEYPOINTS, 8, 8)


def test_nan_rows_give_zero_maps_and_invalid():
    lm = _landmarks(3)
    lm[0] = float("nan")
    lm[2, 17, 0] = float("nan")  # one missing coordinate: the whole face has no landmarks
    maps, valid = landmarks_to_heatmaps(lm, 10)
    assert valid.tolist() == [False, True, False]
    assert torch.isfinite(maps).all()
    assert not maps[0].any() and not maps[2].any() and maps[1].amax() > 0.5


def test_wrong_landmark_shape_raises():
    for bad in (torch.rand(2, 68, 3), torch.rand(2, 478, 2), torch.rand(478, 3)):
        with pytest.raises(ValueError):
            landmarks_to_heatmaps(bad, 8)


# ------------------------------------------------------------------------------------ loss
def test_heatmap_loss_is_normalised_and_masks_missing_faces():
    lm = _landmarks(2)
    target, _ = landmarks_to_heatmaps(lm, 32, sigma=1.0)
    zero = heatmap_loss(torch.zeros(2, NUM_KEYPOINTS, 32, 32), lm, sigma=1.0)
    assert zero.item() == pytest.approx(1.0, abs=0.1)  # a zero prediction costs about 1
    assert heatmap_loss(target, lm, sigma=1.0).item() == pytest.approx(0.0, abs=1e-7)
    # a face without HR landmarks does not count, whatever is predicted for it
    lm_half = lm.clone()
    lm_half[1] = float("nan")
    pred = target.clone()
    pred[1] = 5.0
    assert heatmap_loss(pred, lm_half, sigma=1.0).item() == pytest.approx(0.0, abs=1e-7)


def test_heatmap_loss_without_any_landmarks_is_a_differentiable_zero():
    pred = torch.rand(2, NUM_KEYPOINTS, 8, 8, requires_grad=True)
    for lm in (torch.full((2, 478, 3), float("nan")), None):
        loss = heatmap_loss(pred, lm, sigma=1.0)
        assert loss.item() == 0 and loss.grad_fn is not None
        loss.backward()
        assert pred.grad is not None and not pred.grad.any()


# ----------------------------------------------------------------------------------- parts
def test_group_parts_max_normalised_per_part():
    heat = torch.zeros(1, NUM_KEYPOINTS, 6, 6)
    mouth, eye = int(PARTS["mouth"][2]), int(PARTS["left_eye"][0])
    heat[0, mouth, 2, 3] = 0.3  # predicted maps have any scale: each is divided by its peak
    heat[0, eye, 4, 1] = 7.0
    heat[0, int(PARTS["nose"][0])] = 0.01  # a flat, tiny map stays tiny (peak floor 0.05)
    parts = group_parts(heat)
    names = list(PARTS)
    assert parts.shape == (1, len(PARTS), 6, 6)
    assert parts[0, names.index("mouth"), 2, 3].item() == pytest.approx(1.0)
    assert parts[0, names.index("left_eye"), 4, 1].item() == pytest.approx(1.0)
    assert parts[0, names.index("nose")].max().item() == pytest.approx(0.2)
    assert parts[0, names.index("contour")].abs().max() == 0
    assert parts.min() >= 0 and parts.max() <= 1


# ---------------------------------------------------------------------------------- networks
@pytest.mark.parametrize("size", [(8, 8), (7, 9), (5, 12)])
def test_hourglass_keeps_any_size(size):
    torch.manual_seed(0)
    hg = Hourglass(8, depth=2)
    x = torch.rand(2, 8, *size)
    assert hg(x).shape == x.shape


def test_estimator_outputs_heatmaps_at_quarter_size_and_uses_feedback():
    torch.manual_seed(0)
    est = HeatmapEstimator(8, depth=2, feedback=True)
    img = torch.rand(2, 3, 32, 24)
    with torch.no_grad():
        heat, feats = est(img)
        assert heat.shape == (2, NUM_KEYPOINTS, 8, 6) and feats.shape == (2, 8, 8, 6)
        heat2, _ = est(img, feats)
    assert (heat2 - heat).abs().max() > 1e-6, "the previous step's features must feed back"
