"""Temporal pieces without a video: One-Euro filter and face tracker (affectsr.video.tracking), warping
(affectsr.warp), flicker metrics (affectsr.video.stability) and the temporal training loss (affectsr.train.losses)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from affectsr.landmarks import FaceBox
from affectsr.train.losses import affine_jitter_pair, move_landmarks, temporal_consistency_loss
from affectsr.video.stability import estimate_flow, fer_change, js_divergence, landmark_acceleration, landmark_jitter, temporal_flicker
from affectsr.video.tracking import FaceTracker, LandmarkSmoother, OneEuroConfig, OneEuroFilter, TrackerConfig
from affectsr.warp import apply_affine, pixel_affine_to_theta, warp_affine, warp_image

FPS = 25.0


# --- One-Euro ---------------------------------------------------------------------------------------


def test_one_euro_reduces_jitter_of_a_noisy_constant():
    rng = np.random.default_rng(0)
    noisy = 5.0 + rng.normal(0, 1.0, (200, 4))
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    out = np.array([f(x, i / FPS) for i, x in enumerate(noisy)])
    settled = out[50:]
    assert settled.std(0).max() < 0.4 * noisy[50:].std(0).min()  # an EMA with alpha ~0.2 keeps ~1/3 of the noise
    assert abs(settled.mean() - 5.0) < 0.15  # no bias
    # frame-to-frame jitter drops too
    assert np.abs(np.diff(settled, axis=0)).mean() < 0.3 * np.abs(np.diff(noisy[50:], axis=0)).mean()


def test_one_euro_follows_a_ramp_and_beta_cuts_the_lag():
    t = np.arange(100) / FPS
    ramp = 40.0 * t  # 40 units per second
    lag = {}
    for beta in (0.0, 0.5):
        f = OneEuroFilter(min_cutoff=1.0, beta=beta)
        out = np.array([f(np.array([x]), ti)[0] for x, ti in zip(ramp, t)])
        err = ramp[60:] - out[60:]
        assert np.all(err >= 0) and np.ptp(err) < 0.5  # a steady lag, not drift
        lag[beta] = err.mean()
    assert lag[0.0] < 40.0 * 0.2  # under 0.2 s behind even without the speed term
    assert lag[0.5] < 0.25 * lag[0.0]


def test_one_euro_nan_elements_and_bad_arguments():
    f = OneEuroFilter(1.0, 0.0)
    f(np.array([0.0, np.nan]), 0.0)
    out = f(np.array([1.0, 3.0]), 0.04)
    assert 0 < out[0] < 1.0  # smoothed
    assert out[1] == 3.0  # first finite value of that element starts there
    out = f(np.array([np.nan, 3.0]), 0.08)
    assert np.isnan(out[0]) and out[1] == 3.0
    assert np.array_equal(f(np.array([5.0, 5.0]), 0.08), f._x)  # repeated time stamp: previous estimate
    with pytest.raises(ValueError):
        f(np.zeros(3), 1.0)
    with pytest.raises(ValueError):
        OneEuroFilter(min_cutoff=0.0)


def _moving_shape(n_frames: int, noise: float, seed: int = 0):
    """A 40-point face-like shape translating, turning and zooming, with per-point noise; and the true motion."""
    rng = np.random.default_rng(seed)
    base = np.c_[rng.uniform(-10, 10, (40, 2)), np.zeros(40)]
    truth, noisy = [], []
    for i in range(n_frames):
        t = i / FPS
        ang, zoom = 0.1 * math.sin(2 * math.pi * 0.5 * t), 1 + 0.05 * math.sin(2 * math.pi * 0.3 * t)
        shift = (50 + 30 * t + 0.8 * math.sin(2 * math.pi * 6 * t), 60 + 0.8 * math.cos(2 * math.pi * 5 * t))
        c, s = zoom * math.cos(ang), zoom * math.sin(ang)
        a = np.array([[c, -s, shift[0]], [s, c, shift[1]]])
        truth.append(apply_affine(a, base))
        noisy.append(truth[-1] + np.c_[rng.normal(0, noise, (40, 2)), np.zeros(40)])
    return truth, noisy


def test_landmark_smoother_removes_point_jitter_without_lagging_fast_motion():
    truth, noisy = _moving_shape(80, noise=0.3)
    sm = LandmarkSmoother(OneEuroConfig(1.5, 0.05))
    out = [sm(x, i / FPS) for i, x in enumerate(noisy)]
    err_raw = np.mean([np.linalg.norm(n[:, :2] - g[:, :2], axis=1).mean() for n, g in zip(noisy[20:], truth[20:])])
    err_smooth = np.mean([np.linalg.norm(o[:, :2] - g[:, :2], axis=1).mean() for o, g in zip(out[20:], truth[20:])])
    assert err_smooth < 0.6 * err_raw  # closer to the truth, although the face shakes at 5-6 Hz
    # a plain per-coordinate One-Euro with the same settings lags the shake and ends up further off
    plain = OneEuroFilter(1.5, 0.05)
    out_plain = [plain(x, i / FPS) for i, x in enumerate(noisy)]
    err_plain = np.mean([np.linalg.norm(o[:, :2] - g[:, :2], axis=1).mean() for o, g in zip(out_plain[20:], truth[20:])])
    assert err_smooth < err_plain


# --- tracking ---------------------------------------------------------------------------------------


def _box(cx: float, cy: float, side: float = 30.0) -> FaceBox:
    return FaceBox(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2, 0.9)


def test_tracker_keeps_ids_for_two_moving_boxes_and_bridges_misses():
    tracker = FaceTracker(TrackerConfig(patience=2), smooth=True)
    ids = {}
    for i in range(20):
        a, b = _box(40 + 3 * i, 50), _box(200 - 2 * i, 80 + i)
        dets = [b, a] if i % 2 else [a, b]  # the detector's order must not matter
        if i in (10, 11):
            dets = [b]  # the detector misses face a for two frames
        tracks = tracker.update(dets, i / FPS)
        assert len(tracks) == 2
        for tr in tracks:
            cx = (tr.observed.x0 + tr.observed.x1) / 2
            ids.setdefault(tr.id, []).append(cx)
            if i in (10, 11) and tr.id == 0:
                assert not tr.matched
                assert abs(cx - (40 + 3 * i)) < 1.5  # predicted from its velocity, not held still
    assert sorted(ids) == [0, 1] and tracker.started == 2
    assert np.all(np.diff(ids[0]) > 0) and np.all(np.diff(ids[1]) < 0)  # a moves right, b left
    # smoothing: the crop box lags a little behind a moving face but stays on it
    tr0 = tracker.tracks[0]
    assert abs(tr0.box.x0 - tr0.detection.x0) < 3.0


def test_tracker_drops_a_track_after_patience_and_starts_a_new_id():
    tracker = FaceTracker(TrackerConfig(patience=1), smooth=False)
    tracker.update([_box(50, 50)], 0.0)
    assert tracker.update([], 0.04)[0].id == 0  # one miss: kept
    assert tracker.update([], 0.08) == []  # two: gone
    tracks = tracker.update([_box(50, 50)], 0.12)
    assert [t.id for t in tracks] == [1]
    assert tracks[0].box == tracks[0].detection  # no smoothing: the raw box
    with pytest.raises(ValueError):
        TrackerConfig(iou_threshold=0.0)


def test_landmark_tracking_keeps_a_track_alive_through_detector_misses():
    tracker = FaceTracker(TrackerConfig(patience=1), smooth=False)
    shape = np.c_[np.random.default_rng(0).uniform(-12, 12, (30, 2)), np.zeros(30)]  # landmarks around (0, 0)
    for i in range(3):
        (tr,) = tracker.update([_box(50 + 2 * i, 60)], i / FPS)
        tr.calibrate(shape + [50 + 2 * i, 62, 0])  # the box sits 2 px above the landmarks' centre
    for i in range(3, 8):  # the detector misses the face, the landmark model still finds it
        (tr,) = tracker.update([], i / FPS)
        assert not tr.matched and abs((tr.observed.x0 + tr.observed.x1) / 2 - (50 + 2 * i)) < 0.5
        box = tr.box_from_landmarks(shape + [50 + 2 * i, 62, 0])
        assert abs((box.y0 + box.y1) / 2 - 60) < 1e-6 and abs(box.width - 30) < 1e-6
        tracker.confirm(tr, box, i / FPS)
    assert [t.id for t in tracker.tracks] == [0] and tracker.tracks[0].hits == 8  # 3 detected + 5 confirmed
    assert tracker.update([], 8 / FPS)[0].misses == 1 and tracker.update([], 9 / FPS) == []  # then patience


# --- metrics ----------------------------------------------------------------------------------------


def test_temporal_flicker_is_zero_after_exact_motion_compensation(default_face):
    face = default_face[:64, :64]
    a = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]])  # 2 px right, 1 px up
    moved, valid = warp_image(face, a)
    assert valid.sum() == 62 * 63
    assert temporal_flicker(face, moved, a) < 1e-3
    assert temporal_flicker(face, moved) > 10.0  # without compensation it looks like flicker
    flow = np.zeros((64, 64, 2), np.float32)
    flow[..., 0], flow[..., 1] = -2.0, 1.0  # each pixel of the new frame was 2 left, 1 down before
    assert temporal_flicker(face, moved, flow) < 1e-3
    est = estimate_flow(face, moved)
    assert np.allclose(np.median(est[16:48, 16:48], axis=(0, 1)), [-2.0, 1.0], atol=0.1)  # same convention
    mask = np.zeros((64, 64), bool)
    assert math.isnan(temporal_flicker(face, moved, a, mask))


def test_landmark_jitter_and_acceleration():
    pts = np.random.default_rng(0).uniform(0, 50, (10, 3))
    a = np.array([[0.99, -0.05, 3.0], [0.05, 0.99, -2.0]])
    assert landmark_jitter(pts, apply_affine(a, pts), a) < 1e-9
    assert landmark_jitter(pts, pts + [1.0, 0, 0]) == pytest.approx(1.0)
    assert landmark_jitter(pts, pts + [0, 2.0, 0], norm=4.0) == pytest.approx(0.5)
    v = np.array([1.5, -0.5, 0.0])
    assert landmark_acceleration(pts, pts + v, pts + 2 * v) < 1e-9  # constant velocity: no jitter
    assert landmark_acceleration(pts, pts + v, pts) > 1.0


def test_fer_change():
    p = np.array([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1], [0.1, 0.2, 0.7]])
    assert fer_change(p[:2]) == 0.0
    assert fer_change(p, "l1") == pytest.approx((0 + 1.2) / 2)
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)  # base 2: disjoint distributions -> 1
    assert 0 < fer_change(p, "js") < 1
    with pytest.raises(ValueError):
        fer_change(p[:1])


# --- training helpers -------------------------------------------------------------------------------


def test_pixel_affine_matches_warp_affine(default_face):
    img = torch.from_numpy(default_face[:48, :64].astype(np.float32)).permute(2, 0, 1)[None]
    a = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, 2.0]])
    theta = torch.from_numpy(pixel_affine_to_theta(a, (64, 48))).float()[None]
    out, valid = warp_affine(img, theta)
    assert torch.allclose(out[0, :, 2:, 3:], img[0, :, :-2, :-3], atol=1e-3)
    assert valid[0, 0, 2:, 3:].all() and not valid[0, 0, :2].any()


def test_affine_jitter_pair_and_temporal_consistency_loss(default_face):
    hr = torch.from_numpy(default_face[:64, :64]).permute(2, 0, 1)[None].float().div(255).repeat(4, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    hr_a, hr_b, theta = affine_jitter_pair(hr, max_shift_px=3, max_rot_deg=3, max_scale=0.03, generator=g)
    assert hr_a.shape == hr_b.shape == hr.shape and theta.shape == (4, 2, 3)
    assert torch.equal(hr_a, hr) and 0 <= hr_b.min() and hr_b.max() <= 1
    eye = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    assert ((theta - eye).abs() > 0).any()
    assert (theta[:, :, 2].abs() <= 3 * 2 / 64 + 1e-6).all()  # shifts within 3 px
    assert (theta[:, :, :2] - eye[:, :2]).abs().max() < math.radians(3) + 0.03 + 1e-3
    g2 = torch.Generator().manual_seed(0)
    assert torch.equal(affine_jitter_pair(hr, 3, 3, 0.03, generator=g2)[2], theta)  # seeded: reproducible

    sr_a = hr_a.clone().requires_grad_(True)
    moved, _ = warp_affine(sr_a.detach(), theta)
    assert temporal_consistency_loss(sr_a, moved, theta).item() < 1e-6  # content that follows the motion: free
    loss = temporal_consistency_loss(sr_a, hr_b, theta)  # bicubic vs bilinear resampling: small but positive
    assert 0 < loss.item() < 0.05
    assert temporal_consistency_loss(sr_a, torch.rand_like(hr), theta).item() > 0.1
    loss.backward()
    assert sr_a.grad is not None and sr_a.grad.abs().sum() > 0


def test_move_landmarks_follows_the_warp():
    """A bright dot at a landmark of view a lands where move_landmarks puts it in view b."""
    img = torch.zeros(1, 1, 64, 64)
    img[0, 0, 20, 40] = 1.0  # pixel centre (40.5, 20.5) / 64 in [0, 1] coordinates
    lm = torch.tensor([[[40.5 / 64, 20.5 / 64, 0.3], [float("nan")] * 3]])
    theta = torch.tensor([[[0.98, -0.1, 0.05], [0.1, 0.98, -0.08]]])
    moved_img, _ = warp_affine(img, theta)
    y, x = divmod(int(moved_img[0, 0].argmax()), 64)
    got = move_landmarks(lm, theta)
    assert abs(got[0, 0, 0].item() * 64 - (x + 0.5)) < 1.0 and abs(got[0, 0, 1].item() * 64 - (y + 0.5)) < 1.0
    assert got[0, 0, 2].item() == pytest.approx(0.3) and torch.isnan(got[0, 1]).all()
