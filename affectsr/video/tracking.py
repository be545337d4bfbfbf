"""Face tracks across video frames, smoothed with One-Euro filters.

A face upscaled frame by frame flickers: the detector's box moves by a pixel or two and the
landmarks jitter. Tracking and smoothing take most of that out of the crops and the prior:

- :class:`OneEuroFilter` (Casiez, Roussel & Vogel, CHI 2012): an adaptive low-pass filter
  that smooths hard when a signal is still (no jitter) and lets it through when it moves fast
  (no lag), vectorised over an array of values (a box, 478 landmarks) and driven by timestamps.
- :class:`LandmarkSmoother`: One-Euro on the landmarks' shape while their pose follows at once.
- :class:`FaceTracker`: greedy IoU matching of each frame's detections to tracks, so a face keeps
  one id (and one filter state) across frames; tracks survive a few missed detections.
- :class:`KeyframeDetector`: the whole frame scanned for faces on keyframes only, the tracked
  faces' surroundings in between (a 1080p frame's full scan costs far more than a few windows).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..landmarks import FaceBox, LandmarkDetector
from ..landmarks.detector import box_iou

__all__ = ["FaceTrack", "FaceTracker", "KeyframeDetector", "LandmarkSmoother", "OneEuroConfig", "OneEuroFilter", "TrackerConfig", "box_iou"]


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


# --- keyframe detection ------------------------------------------------------------------------------


class KeyframeDetector:
    """Which faces a frame has: the full multi-scale detector on keyframes, the tracked faces' surroundings between.

    A keyframe is every ``interval``-th frame, the first, and any frame after one where a track went
    unmatched (a face lost or occluded). Between keyframes each live track is re-detected in a window
    around its last box (:meth:`~affectsr.landmarks.LandmarkDetector.detect_near`: a few tiles, not a
    1080p frame's many); a new face appears at the next keyframe. ``seconds`` adds up the time spent.
    """

    def __init__(self, detector: LandmarkDetector, interval: int = 8, min_face: float | None = None):
        if interval < 1:
            raise ValueError(f"keyframe interval must be at least 1, got {interval}")
        self.detector, self.interval, self.min_face = detector, interval, min_face
        self.frames = self.keyframes = 0
        self.seconds = 0.0

    def __call__(self, rgb: np.ndarray, tracker: FaceTracker) -> list[FaceBox]:
        start = time.perf_counter()
        live = tracker.tracks
        if self.frames % self.interval == 0 or any(not tr.matched for tr in live):
            boxes = self.detector.detect_faces(rgb, min_face=self.min_face)
            self.keyframes += 1
        elif live:
            boxes = self.detector.detect_near(rgb, [tr.observed for tr in live], min_face=self.min_face)
        else:  # no face until the next keyframe
            boxes = []
        self.frames += 1
        self.seconds += time.perf_counter() - start
        return boxes
