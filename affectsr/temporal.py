"""Temporal stability for video: One-Euro smoothing, face tracking, flicker metrics and a training loss.

A face upscaled frame by frame flickers: the detector's box moves by a pixel or two, the
landmarks jitter, and the SR network hallucinates slightly different detail every frame.
This module holds the pieces that fight and measure that, all testable without a video:

- :class:`OneEuroFilter` (Casiez, Roussel & Vogel, CHI 2012): an adaptive low-pass filter
  that smooths hard when a signal is still (no jitter) and lets it through when it moves fast
  (no lag), vectorised over an array of values (a box, 478 landmarks) and driven by timestamps.
- :class:`FaceTracker`: greedy IoU matching of each frame's detections to tracks, so a face keeps
  one id (and one filter state) across frames; tracks survive a few missed detections.
- Flicker metrics as pure functions: :func:`temporal_flicker` (mean absolute difference of
  consecutive frames after compensating motion, the "warping error" of Lai et al., ECCV 2018),
  :func:`landmark_jitter`, :func:`landmark_acceleration`, :func:`fer_change`.
- For training: :func:`affine_jitter_pair` makes two slightly different views of a still face
  (a stand-in for consecutive frames) and :func:`temporal_consistency_loss` penalises SR outputs
  that do not follow the known motion between them.

Affine conventions. *Pixel affines* (2 x 3, used by the metrics) map pixel coordinates of the
earlier frame to the later one, with pixel centres at integers. *Thetas* (B x 2 x 3, used by the
training helpers) are PyTorch ``affine_grid`` matrices in normalised coordinates
(``align_corners=False``): ``warp(x, theta)(p) = x(theta @ [p, 1])``; being normalised they hold
at every resolution, so one theta serves the HR, LR and SR versions of a pair.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .landmarks import FaceBox
from .landmarks.predictor import LEFT_EYE_OUTER, RIGHT_EYE_OUTER

__all__ = [
    "OneEuroConfig", "OneEuroFilter", "LandmarkSmoother", "TrackerConfig", "FaceTrack", "FaceTracker", "box_iou",
    "pixel_affine_to_theta", "warp_affine", "warp_image", "estimate_flow", "apply_affine",
    "temporal_flicker", "landmark_jitter", "landmark_acceleration", "inter_ocular", "js_divergence",
    "fer_change", "affine_jitter_pair", "move_landmarks", "temporal_consistency_loss",
]


# --- One-Euro filter ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OneEuroConfig:
    """One-Euro parameters. Cut-offs in Hz; ``beta`` in 1 / (signal unit), so it depends on the units.

    Tuning (Casiez et al.): with ``beta=0`` lower ``min_cutoff`` until a still signal stops
    jittering, then raise ``beta`` until fast motion stops lagging.
    """

    min_cutoff: float = 1.0
    beta: float = 0.0
    d_cutoff: float = 1.0


class OneEuroFilter:
    """Adaptive low-pass filter over an array of values (any shape), one cut-off per element.

    ``filter(x, t)`` returns the smoothed array. Non-finite elements of ``x`` come back NaN and
    leave that element's state alone (a landmark the detector lost); an element seen for the
    first time starts from its value. A repeated timestamp returns the previous estimate.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError(f"One-Euro needs min_cutoff > 0, d_cutoff > 0, beta >= 0; got {min_cutoff}, {d_cutoff}, {beta}")
        self.config = OneEuroConfig(float(min_cutoff), float(beta), float(d_cutoff))
        self.reset()

    @classmethod
    def from_config(cls, config: OneEuroConfig) -> OneEuroFilter:
        return cls(config.min_cutoff, config.beta, config.d_cutoff)

    def reset(self) -> None:
        self._x: np.ndarray | None = None  # last estimate
        self._dx: np.ndarray | None = None  # last smoothed derivative
        self._t: float | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        finite = np.isfinite(x)
        if self._x is None or self._t is None:
            self._x, self._dx, self._t = np.where(finite, x, np.nan), np.zeros_like(x), float(t)
            return self._x.copy()
        if x.shape != self._x.shape:
            raise ValueError(f"One-Euro filter got shape {x.shape} after {self._x.shape}; reset() it first")
        dt = float(t) - self._t
        if dt <= 0:
            return self._x.copy()
        fresh = finite & ~np.isfinite(self._x)  # first finite value of an element: start there
        prev = np.where(fresh, x, self._x)
        dx = np.where(finite, (np.where(finite, x, 0.0) - np.nan_to_num(prev)) / dt, 0.0)
        dx_hat = np.where(fresh, 0.0, self._dx + self._alpha(self.config.d_cutoff, dt) * (dx - self._dx))
        cutoff = self.config.min_cutoff + self.config.beta * np.abs(dx_hat)
        x_hat = prev + self._alpha(cutoff, dt) * (np.where(finite, x, 0.0) - np.nan_to_num(prev))
        self._x = np.where(finite, x_hat, self._x)
        self._dx = np.where(finite, dx_hat, self._dx)
        self._t = float(t)
        return np.where(finite, x_hat, np.nan)


class LandmarkSmoother:
    """One-Euro smoothing of a face's landmark *shape*, while its pose follows the detections at once.

    Each frame's N x 3 landmarks are split into a 2-D similarity pose (centroid, RMS scale and
    rotation against the first frame, fitted on all N points, so detector noise mostly averages
    out) and the shape in that pose's frame. Only the shape goes through the One-Euro filter:
    per-point detector jitter (most of it is not a rigid shift) is removed, while real motion of
    the whole face, camera shake included, is followed without lag, so the landmarks stay on the
    face. Shape units are pixels at the first frame's scale.
    """

    def __init__(self, config: OneEuroConfig = OneEuroConfig()):
        self.filter = OneEuroFilter.from_config(config)
        self._ref: np.ndarray | None = None  # first frame's centred x, y (N x 2)

    def reset(self) -> None:
        self.filter.reset()
        self._ref = None

    def __call__(self, landmarks: np.ndarray, t: float) -> np.ndarray:
        lm = np.asarray(landmarks, np.float64)
        ok = np.isfinite(lm).all(1)
        if ok.sum() < 3:
            return lm.astype(np.float32)
        xy = lm[:, :2]
        mu = xy[ok].mean(0)
        centred = xy - mu
        scale = np.sqrt((centred[ok] ** 2).sum(1).mean())
        if self._ref is None:
            self._ref, self._scale0 = centred.copy(), scale
        ref_ok = ok & np.isfinite(self._ref).all(1)
        # rotation that best maps the reference onto this frame (2-D Procrustes)
        a, b = self._ref[ref_ok], centred[ref_ok]
        ang = math.atan2((a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]).sum(), (a * b).sum())
        c, s_ = math.cos(ang), math.sin(ang)
        rot = np.array([[c, -s_], [s_, c]])
        k = self._scale0 / max(scale, 1e-9)
        shape = np.concatenate([centred @ rot * k, lm[:, 2:] * k], 1)  # rot.T applied to row vectors
        smooth = self.filter(np.where(ok[:, None], shape, np.nan), t)
        out = np.concatenate([smooth[:, :2] / k @ rot.T + mu, smooth[:, 2:] / k], 1)
        return np.where(ok[:, None], out, lm).astype(np.float32)


# --- tracking ----------------------------------------------------------------------------------------


def box_iou(a: FaceBox, b: FaceBox) -> float:
    """Intersection over union of two boxes (0 when they do not touch)."""
    iw = min(a.x1, b.x1) - max(a.x0, b.x0)
    ih = min(a.y1, b.y1) - max(a.y0, b.y0)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (a.width * a.height + b.width * b.height - inter)


@dataclass(frozen=True)
class TrackerConfig:
    """How detections become tracks and how tracks are smoothed.

    Box filter units: LR frame pixels (centre x, centre y, side); landmark filter: the
    :class:`LandmarkSmoother` shape filter, in LR pixels at the face's first-frame scale.
    Defaults looked at on the synthetic clip of ``tools/video_stability.py`` (docs/VIDEO.md).
    """

    iou_threshold: float = 0.3  # a detection continues a track when their IoU is at least this
    patience: int = 3  # frames a track survives without a detection (it keeps its last box meanwhile)
    box_filter: OneEuroConfig = OneEuroConfig(min_cutoff=1.0, beta=0.05)
    landmark_filter: OneEuroConfig = OneEuroConfig(min_cutoff=1.5, beta=0.05)

    def __post_init__(self) -> None:
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")


@dataclass
class FaceTrack:
    """One face across frames: its last raw detection, where it is now, and its smoothing filters.

    ``observed`` is the raw detection in frames where one matched, else the last one moved on by
    the track's velocity (a prediction); ``box`` is what to crop: ``observed`` through the
    One-Euro box filter, or ``observed`` itself when smoothing is off.
    """

    id: int
    detection: FaceBox  # the last detection matched to this track (raw)
    t_detection: float  # its time stamp (s)
    observed: FaceBox  # this frame's detection, or the prediction while the detector misses the face
    box: FaceBox
    matched: bool = True  # a detection was matched in the current frame
    hits: int = 1
    misses: int = 0
    smooth: bool = True
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))  # d(cx, cy, side)/dt, pixels per second
    landmark_box: np.ndarray | None = None  # detection box relative to the landmarks' extent (see calibrate)
    _box_filter: OneEuroFilter | None = field(default=None, repr=False)
    _lm_filter: LandmarkSmoother | None = field(default=None, repr=False)

    def predict(self, t: float) -> FaceBox:
        """The last detection moved on to time ``t`` at the track's (smoothed) velocity."""
        state = _box_state(self.detection) + self.velocity * (t - self.t_detection)
        return _state_box(state, self.detection.score)

    def smooth_landmarks(self, landmarks: np.ndarray | None, t: float) -> np.ndarray | None:
        """Landmarks (N x 3, frame pixels) through this track's One-Euro filter; as given when not smoothing."""
        if landmarks is None or not self.smooth or self._lm_filter is None:
            return landmarks
        return self._lm_filter(landmarks, t)

    def calibrate(self, landmarks: np.ndarray) -> None:
        """Learn where this face's detector box sits relative to its landmarks (frame pixels).

        Called on frames with both; lets :meth:`box_from_landmarks` stand in for the detector
        when it misses a face the landmark model still finds (landmark tracking).
        """
        lm = _landmark_state(landmarks)
        if lm is None:
            return
        det = _box_state(self.detection)
        rel = np.array([(det[0] - lm[0]) / lm[2], (det[1] - lm[1]) / lm[2], det[2] / lm[2]])
        self.landmark_box = rel if self.landmark_box is None else self.landmark_box + 0.3 * (rel - self.landmark_box)

    def box_from_landmarks(self, landmarks: np.ndarray) -> FaceBox | None:
        """The detector box this face would have, from its landmarks; None before any calibration."""
        lm = _landmark_state(landmarks)
        if lm is None or self.landmark_box is None:
            return None
        r = self.landmark_box
        return _state_box(np.array([lm[0] + r[0] * lm[2], lm[1] + r[1] * lm[2], r[2] * lm[2]]), self.detection.score)

    def _observe(self, box: FaceBox, t: float) -> None:
        self.observed = box
        self.box = _state_box(self._box_filter(_box_state(box), t), box.score) if self._box_filter else box


def _landmark_state(landmarks: np.ndarray) -> np.ndarray | None:
    """(centre x, centre y, side) of the landmarks' bounding box, or None without finite points."""
    xy = np.asarray(landmarks, np.float64)[:, :2]
    xy = xy[np.isfinite(xy).all(1)]
    if len(xy) < 3:
        return None
    lo, hi = xy.min(0), xy.max(0)
    side = float(max(hi - lo))
    return np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, side]) if side > 0 else None


def _box_state(b: FaceBox) -> np.ndarray:
    return np.array([(b.x0 + b.x1) / 2, (b.y0 + b.y1) / 2, max(b.width, b.height)])


def _state_box(s: np.ndarray, score: float) -> FaceBox:
    cx, cy, side = (float(v) for v in s)
    return FaceBox(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2, score)


class FaceTracker:
    """Greedy IoU tracker: each frame's detections continue the best-overlapping live tracks.

    ``update(detections, t)`` returns the live tracks sorted by id: those matched in this frame
    and those within ``patience`` missed frames (``matched=False``, box predicted from the track's
    velocity). Detections are matched against those predictions. Unmatched detections start new
    tracks (ids count up from 0 and are never reused).
    """

    VELOCITY_EMA = 0.5  # weight of the newest detection-to-detection velocity (damps detector jitter)

    def __init__(self, config: TrackerConfig | None = None, smooth: bool = True):
        self.config, self.smooth = config or TrackerConfig(), smooth
        self.tracks: list[FaceTrack] = []
        self._next_id = 0

    @property
    def started(self) -> int:
        """How many tracks have been started so far."""
        return self._next_id

    def update(self, detections: list[FaceBox], t: float) -> list[FaceTrack]:
        cfg = self.config
        predicted = [tr.predict(t) for tr in self.tracks]
        pairs = sorted(((box_iou(p, d), i, j) for i, p in enumerate(predicted) for j, d in enumerate(detections)),
                       reverse=True)
        used_t, used_d = set(), set()
        for iou, i, j in pairs:
            if iou < cfg.iou_threshold:
                break
            if i in used_t or j in used_d:
                continue
            used_t.add(i)
            used_d.add(j)
            self._continue(self.tracks[i], detections[j], t)
        for i, tr in enumerate(self.tracks):
            if i not in used_t:
                tr.matched, tr.misses = False, tr.misses + 1
                if tr.misses <= cfg.patience:
                    tr._observe(predicted[i], t)
        self.tracks = [tr for tr in self.tracks if tr.misses <= cfg.patience]
        for j, d in enumerate(detections):
            if j not in used_d:
                self.tracks.append(self._start(d, t))
        return sorted(self.tracks, key=lambda tr: tr.id)

    def confirm(self, track: FaceTrack, box: FaceBox, t: float) -> None:
        """Count ``box`` (e.g. from :meth:`FaceTrack.box_from_landmarks`) as this frame's detection of ``track``.

        Keeps a track alive through a run of detector misses while its face is still found.
        The crop of the current frame is already decided; the box feeds the velocity and later frames.
        """
        if track.matched:
            return
        self._continue(track, box, t, observe=False)

    def _start(self, d: FaceBox, t: float) -> FaceTrack:
        tr = FaceTrack(self._next_id, d, t, d, d, smooth=self.smooth)
        self._next_id += 1
        if self.smooth:
            tr._box_filter = OneEuroFilter.from_config(self.config.box_filter)
            tr._lm_filter = LandmarkSmoother(self.config.landmark_filter)
        tr._observe(d, t)
        return tr

    def _continue(self, tr: FaceTrack, d: FaceBox, t: float, observe: bool = True) -> None:
        dt = t - tr.t_detection
        if dt > 0:
            v = (_box_state(d) - _box_state(tr.detection)) / dt
            tr.velocity = v if tr.hits == 1 else tr.velocity + self.VELOCITY_EMA * (v - tr.velocity)
        tr.detection, tr.t_detection, tr.matched, tr.hits, tr.misses = d, t, True, tr.hits + 1, 0
        if observe:
            tr._observe(d, t)


# --- warping -----------------------------------------------------------------------------------------


def _pixel_to_norm(w: int, h: int) -> np.ndarray:
    """3 x 3 map from pixel coordinates (centres at integers) to align_corners=False normalised ones."""
    return np.array([[2.0 / w, 0, 1.0 / w - 1], [0, 2.0 / h, 1.0 / h - 1], [0, 0, 1]])


def _h(a: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(a, np.float64).reshape(2, 3), [0, 0, 1]])


def pixel_affine_to_theta(affine: np.ndarray, src_size: tuple[int, int], dst_size: tuple[int, int] | None = None
                          ) -> np.ndarray:
    """The ``affine_grid`` theta (2 x 3) that warps a ``src_size`` (w, h) image by a pixel affine (src -> dst)."""
    dst_size = dst_size or src_size
    m = _pixel_to_norm(*src_size) @ np.linalg.inv(_h(affine)) @ np.linalg.inv(_pixel_to_norm(*dst_size))
    return m[:2]


def warp_affine(x: torch.Tensor, theta: torch.Tensor, mode: str = "bilinear", padding_mode: str = "zeros",
                size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (B x C x H x W) sampled at ``theta`` @ p: (warped, valid B x 1 x H x W, 1 where p maps inside x).

    ``size`` = (H, W) of the output (default: the input's). Differentiable in ``x``.
    """
    b, c = x.shape[:2]
    h, w = size or x.shape[-2:]
    grid = F.affine_grid(theta.to(x.dtype), [b, c, h, w], align_corners=False)
    y = F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=False)
    # a pixel is valid when its sample point lies inside the image (half a pixel of tolerance at the edge)
    gx, gy = grid[..., 0], grid[..., 1]
    tol_x, tol_y = 1.0 / x.shape[-1], 1.0 / x.shape[-2]
    valid = (gx.abs() <= 1 - tol_x + 1e-6) & (gy.abs() <= 1 - tol_y + 1e-6)
    return y, valid[:, None].to(x.dtype)


def warp_image(image: np.ndarray, warp: np.ndarray | None, out_size: tuple[int, int] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Move an H x W (x C) image by ``warp`` into the next frame: (warped float32, valid bool mask).

    ``warp``: None (identity), a 2 x 3 pixel affine (this frame -> next), or an H' x W' x 2 flow
    giving, for each pixel (x, y) of the next frame, the displacement (dx, dy) to where it was in
    this one. ``out_size`` (w, h) defaults to the image's (a flow sets it).
    """
    img = np.asarray(image, np.float32)
    img3 = img[..., None] if img.ndim == 2 else img
    h, w = img3.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(img3)).permute(2, 0, 1)[None]
    if warp is None:
        return img.copy(), np.ones((h, w), bool)
    warp = np.asarray(warp, np.float64)
    if warp.shape == (2, 3):
        ow, oh = out_size or (w, h)
        theta = torch.from_numpy(pixel_affine_to_theta(warp, (w, h), (ow, oh))).float()[None]
        y, valid = warp_affine(x, theta, size=(oh, ow))
    elif warp.ndim == 3 and warp.shape[2] == 2:
        oh, ow = warp.shape[:2]
        ys, xs = np.mgrid[0:oh, 0:ow].astype(np.float64)
        sx, sy = xs + warp[..., 0], ys + warp[..., 1]
        grid = np.stack([(2 * sx + 1) / w - 1, (2 * sy + 1) / h - 1], -1)
        g = torch.from_numpy(grid).float()[None]
        y = F.grid_sample(x, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        valid = torch.from_numpy((sx >= -0.5) & (sx <= w - 0.5) & (sy >= -0.5) & (sy <= h - 0.5))[None, None]
    else:
        raise ValueError(f"warp must be None, a 2 x 3 affine or an H x W x 2 flow, got shape {warp.shape}")
    out = y[0].permute(1, 2, 0).numpy()
    return (out[..., 0] if img.ndim == 2 else out), valid[0, 0].numpy().astype(bool)


def _grey(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img, np.float32)
    return img @ np.array([0.299, 0.587, 0.114], np.float32) if img.ndim == 3 else img


def estimate_flow(prev: np.ndarray, cur: np.ndarray, radius: int = 7) -> np.ndarray:
    """Dense optical flow (scikit-image's iterative Lucas-Kanade) in the :func:`warp_image` convention.

    For each pixel of ``cur``, the (dx, dy) to where it was in ``prev``. Used when the true
    motion of a video is unknown; estimate it on a reference (e.g. the bicubic frames) and apply
    the same flow to every method compared, so none is favoured.
    """
    from skimage.registration import optical_flow_ilk

    v, u = optical_flow_ilk(_grey(cur), _grey(prev), radius=radius)  # moving(x + flow) ~ reference(x)
    return np.stack([u, v], -1).astype(np.float32)


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Move N x 2+ points (x, y first) by a 2 x 3 pixel affine; extra columns (z) are kept."""
    pts = np.array(points, np.float64)
    a = np.asarray(affine, np.float64)
    pts[:, :2] = pts[:, :2] @ a[:, :2].T + a[:, 2]
    return pts


# --- flicker metrics ---------------------------------------------------------------------------------


def temporal_flicker(prev: np.ndarray, cur: np.ndarray, warp: np.ndarray | None = None,
                     mask: np.ndarray | None = None) -> float:
    """Mean absolute difference between ``cur`` and ``prev`` moved by ``warp`` (see :func:`warp_image`).

    In the images' units (grey levels for uint8), over pixels that are valid after warping and
    inside ``mask`` (H x W bool, optional). 0 for a perfectly stable video; NaN if no pixel counts.
    """
    cur_f = np.asarray(cur, np.float32)
    h, w = cur_f.shape[:2]
    moved, valid = warp_image(prev, warp, out_size=(w, h))
    if moved.shape != cur_f.shape:
        raise ValueError(f"prev warped to {moved.shape} but cur is {cur_f.shape}")
    if mask is not None:
        valid &= np.asarray(mask, bool)
    if not valid.any():
        return float("nan")
    diff = np.abs(moved - cur_f)
    return float(diff[valid].mean())


def inter_ocular(landmarks: np.ndarray) -> float:
    """Distance between the outer eye corners of 478 face-mesh landmarks (the usual NME normaliser)."""
    return float(np.linalg.norm(landmarks[LEFT_EYE_OUTER, :2] - landmarks[RIGHT_EYE_OUTER, :2]))


def landmark_jitter(prev: np.ndarray, cur: np.ndarray, warp: np.ndarray | None = None,
                    norm: float | None = None) -> float:
    """Mean 2-D distance between ``cur`` landmarks and ``prev`` moved by the known motion ``warp``.

    ``warp``: 2 x 3 pixel affine (prev frame -> cur frame) or None (a still face). Divided by
    ``norm`` (e.g. :func:`inter_ocular`) when given. With the true motion compensated, what is
    left is detector noise: the jitter.
    """
    moved = apply_affine(warp, prev) if warp is not None else np.asarray(prev, np.float64)
    d = np.linalg.norm(np.asarray(cur, np.float64)[:, :2] - moved[:, :2], axis=1)
    return float(np.nanmean(d) / (norm if norm else 1.0))


def landmark_acceleration(a: np.ndarray, b: np.ndarray, c: np.ndarray, norm: float | None = None) -> float:
    """Mean 2-D norm of the second difference ``c - 2b + a`` of three consecutive landmark sets.

    The jitter measure when the motion is unknown: smooth motion (constant velocity) gives ~0,
    frame-to-frame detector noise does not.
    """
    d = np.asarray(c, np.float64)[:, :2] - 2 * np.asarray(b, np.float64)[:, :2] + np.asarray(a, np.float64)[:, :2]
    return float(np.nanmean(np.linalg.norm(d, axis=1)) / (norm if norm else 1.0))


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence (base 2, in [0, 1]) between probability vectors along the last axis."""
    p = np.asarray(p, np.float64)
    q = np.asarray(q, np.float64)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(a > 0, a * np.log2(a / np.where(b > 0, b, 1.0)), 0.0).sum(-1)

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def fer_change(probs: np.ndarray, metric: str = "js") -> float:
    """Mean change between consecutive FER distributions of a T x C sequence: 'js' divergence or 'l1' distance."""
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or len(probs) < 2:
        raise ValueError(f"fer_change needs a T x C array with T >= 2, got shape {probs.shape}")
    if metric == "js":
        d = js_divergence(probs[:-1], probs[1:])
    elif metric == "l1":
        d = np.abs(probs[1:] - probs[:-1]).sum(-1)
    else:
        raise ValueError(f"metric must be 'js' or 'l1', got {metric!r}")
    return float(d.mean())


# --- training ----------------------------------------------------------------------------------------


def affine_jitter_pair(hr: torch.Tensor, max_shift_px: float = 2.0, max_rot_deg: float = 2.0, max_scale: float = 0.02,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two views of each still face, like consecutive video frames: (hr_a, hr_b, theta), B x 2 x 3.

    ``hr_a`` is ``hr``; ``hr_b = warp(hr_a, theta)`` with a random shift (up to ``max_shift_px``
    pixels of ``hr``), rotation (degrees) and scale (1 +- ``max_scale``) about the centre,
    resampled bicubically with border replication (so ``hr_b`` looks like a real frame; the loss
    masks the replicated border). Degrade both to LR, super-resolve both, and feed the outputs
    and ``theta`` to :func:`temporal_consistency_loss`.
    """
    if hr.ndim != 4:
        raise ValueError(f"hr must be B x C x H x W, got shape {tuple(hr.shape)}")
    b, _, h, w = hr.shape

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(b, generator=generator, dtype=torch.float64) * 2 - 1) * limit

    ang = uniform(math.radians(max_rot_deg))
    s = 1 + uniform(max_scale)
    tx, ty = uniform(max_shift_px) * 2 / w, uniform(max_shift_px) * 2 / h  # pixels -> normalised units
    cos, sin = torch.cos(ang) * s, torch.sin(ang) * s
    # a rotation in pixel space is anisotropic in normalised coordinates when w != h
    theta = torch.stack([torch.stack([cos, -sin * h / w, tx], -1), torch.stack([sin * w / h, cos, ty], -1)], 1)
    theta = theta.to(hr.device, torch.float32)
    hr_b, _ = warp_affine(hr, theta, mode="bicubic", padding_mode="border")
    return hr, hr_b.clamp(0, 1), theta


def move_landmarks(landmarks: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Landmarks (B x N x 3, x and y normalised to [0, 1] of view a) as they sit in view b = warp(a, theta).

    So the second view of :func:`affine_jitter_pair` gets its landmark prior without running a
    detector; z is kept. NaN rows stay NaN.
    """
    u = landmarks[..., :2] * 2 - 1  # [0, 1] -> affine_grid's [-1, 1] (align_corners=False)
    a, t = theta[:, :, :2].to(u.dtype), theta[:, :, 2].to(u.dtype)
    # a point p_b of view b samples view a at a @ p_b + t, so p_b = a^-1 (p_a - t)
    moved = torch.linalg.solve(a, (u - t[:, None, :]).transpose(1, 2)).transpose(1, 2)
    return torch.cat([(moved + 1) / 2, landmarks[..., 2:]], -1)


def temporal_consistency_loss(sr_a: torch.Tensor, sr_b: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Mean L1 between ``warp(sr_a, theta)`` and ``sr_b`` over pixels whose source lies inside ``sr_a``.

    Zero when the two outputs follow the motion exactly; a network that hallucinates different
    detail for the two views pays for it. Differentiable in both outputs.
    """
    if sr_a.shape != sr_b.shape:
        raise ValueError(f"sr_a {tuple(sr_a.shape)} and sr_b {tuple(sr_b.shape)} differ in shape")
    moved, valid = warp_affine(sr_a, theta)
    per_pixel = (moved - sr_b).abs() * valid
    return per_pixel.sum() / (valid.sum() * sr_a.shape[1]).clamp_min(1.0)
