"""Temporal stability of upscaled video: flicker, landmark jitter and FER change, per face track.

Flicker metrics are pure functions: :func:`temporal_flicker` (mean absolute difference of
consecutive frames after compensating motion, the "warping error" of Lai et al., ECCV 2018),
:func:`landmark_jitter`, :func:`landmark_acceleration`, :func:`fer_change`. :class:`StabilityMeter`
feeds them one frame at a time while ``affectsr video --stats`` runs (SR next to bicubic, the
known motion of a synthetic clip or optical flow estimated on the LR input).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..emotion import load_emotion_classifier
from ..emotion.classifier import JUDGE_CLASSIFIER
from ..emotion.faces import classify_crops, fer_crop
from ..faces import crop_padded
from ..landmarks import FaceBox
from ..landmarks.predictor import LEFT_EYE_OUTER, RIGHT_EYE_OUTER
from ..metrics import LUMA
from ..warp import apply_affine, warp_image

__all__ = ["FaceRecord", "FaceSample", "Motion", "StabilityMeter", "estimate_flow", "fer_change", "inter_ocular", "js_divergence",
           "landmark_acceleration", "landmark_jitter", "measure_stability", "temporal_flicker", "upsample_flow"]

Motion = Callable[[int, tuple[float, float]], "np.ndarray | None"]
"""``motion(frame_index, (cx, cy))``: the 2 x 3 pixel affine moving the content near (cx, cy) of the
LR frame ``frame_index - 1`` to frame ``frame_index`` (known for synthetic clips), or None."""


@dataclass
class FaceRecord:
    """One tracked face in one frame, as upscaled: what the stability measurements need."""

    track: int
    matched: bool  # detected in this frame (False: the detector missed it; the box is predicted)
    detection: FaceBox  # the raw detection, or the track's prediction when not matched
    box: tuple[int, int, int, int]  # the square crop that was super-resolved (LR pixels)
    landmarks_raw: np.ndarray | None  # 478 x 3 in LR frame pixels (z scaled by the crop side), as detected
    landmarks_used: np.ndarray | None  # what the SR network got: smoothed, or raw when not smoothing
    super_resolved: bool  # False: the face was too large and stayed bicubic


def _grey(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img, np.float32)
    return img @ np.array(LUMA, np.float32) if img.ndim == 3 else img


def estimate_flow(prev: np.ndarray, cur: np.ndarray, radius: int = 7) -> np.ndarray:
    """Dense optical flow (scikit-image's iterative Lucas-Kanade) in the :func:`warp_image` convention.

    For each pixel of ``cur``, the (dx, dy) to where it was in ``prev``. Used when the true
    motion of a video is unknown; estimate it on a reference (e.g. the bicubic frames) and apply
    the same flow to every method compared, so none is favoured.
    """
    from skimage.registration import optical_flow_ilk  # lazy: scikit-image's registration costs ~0.5 s to import

    v, u = optical_flow_ilk(_grey(cur), _grey(prev), radius=radius)  # moving(x + flow) ~ reference(x)
    return np.stack([u, v], -1).astype(np.float32)


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


# --- per-face measurements ------------------------------------------------------------------------


@dataclass
class FaceSample:
    """One track in one frame for the stability measurements (frames are shared, not copied)."""

    frame: int
    detection: FaceBox
    lr_frame: np.ndarray  # the whole input frame (motion is estimated on it when not given)
    sr_frame: np.ndarray  # the whole output frame
    bic_frame: np.ndarray  # the whole bicubic frame
    landmarks_raw: np.ndarray | None
    landmarks_used: np.ndarray | None
    p_sr: np.ndarray  # FER probabilities of the SR face
    p_bic: np.ndarray  # ... and of the bicubic face


def _scaled(box: FaceBox, s: int) -> FaceBox:
    return FaceBox(box.x0 * s, box.y0 * s, box.x1 * s, box.y1 * s, box.score)


def _to_window(affine: np.ndarray, s: int, origin: tuple[int, int]) -> np.ndarray:
    """An LR-frame pixel affine as the same motion in SR pixels of a window starting at ``origin`` (SR px)."""
    c = (s - 1) / 2.0  # LR pixel centre x sits at SR x = s * x + (s - 1) / 2
    to_sr = np.array([[s, 0, c - origin[0]], [0, s, c - origin[1]], [0, 0, 1.0]])
    a = np.vstack([np.asarray(affine, np.float64).reshape(2, 3), [0, 0, 1]])
    return (to_sr @ a @ np.linalg.inv(to_sr))[:2]


def _nan_if_none(v: float | None) -> float:
    return float("nan") if v is None else float(v)


def upsample_flow(flow: np.ndarray, s: int) -> np.ndarray:
    """An h x w x 2 flow in LR pixels as the (h*s) x (w*s) x 2 flow in SR pixels (bilinear, pixel centres aligned)."""
    f = torch.from_numpy(np.ascontiguousarray(flow, np.float32)).permute(2, 0, 1)[None]
    up = F.interpolate(f, scale_factor=s, mode="bilinear", align_corners=False)
    return (up[0].permute(1, 2, 0) * s).numpy()


def measure_stability(prev: FaceSample, cur: FaceSample, scale: int, margin: float = 0.6,
                      motion: np.ndarray | None = None, before: FaceSample | None = None) -> dict[str, float]:
    """Stability of one face between two consecutive frames, SR next to bicubic.

    Flicker: :func:`temporal_flicker` of the SR and of the bicubic output inside
    the face's detection box (window: the detection's square crop in ``cur``), with the known
    ``motion`` (2 x 3, LR pixels, prev -> cur) or else optical flow estimated on the LR input
    (cheap: s^2 fewer pixels), upsampled, and applied to both. Landmark jitter (raw detections and the landmarks the SR got, as a
    fraction of the inter-ocular distance): the residual after the known motion, or else the second
    difference over ``before, prev, cur``. FER change: Jensen-Shannon divergence, L1 distance and
    label flips between the two frames' distributions.
    """
    s = scale
    x0, y0, x1, y1 = (v * s for v in cur.detection.square(margin))
    win = (x0, y0, x1, y1)
    d = _scaled(cur.detection, s)
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    mask[max(0, round(d.y0) - y0): max(0, round(d.y1) - y0), max(0, round(d.x0) - x0): max(0, round(d.x1) - x0)] = True
    prev_sr, prev_bic = crop_padded(prev.sr_frame, win), crop_padded(prev.bic_frame, win)
    cur_sr, cur_bic = crop_padded(cur.sr_frame, win), crop_padded(cur.bic_frame, win)
    if motion is not None:
        warp = _to_window(motion, s, (x0, y0))
    else:
        lr_win = cur.detection.square(margin)
        warp = upsample_flow(estimate_flow(crop_padded(prev.lr_frame, lr_win), crop_padded(cur.lr_frame, lr_win)), s)
    out = {"flicker_sr": temporal_flicker(prev_sr, cur_sr, warp, mask),
           "flicker_bicubic": temporal_flicker(prev_bic, cur_bic, warp, mask)}
    for kind in ("raw", "used"):
        a, b = getattr(prev, f"landmarks_{kind}"), getattr(cur, f"landmarks_{kind}")
        val = None
        if a is not None and b is not None:
            iod = inter_ocular(b)
            if motion is not None:
                val = landmark_jitter(a, b, motion, norm=iod)
            elif before is not None and getattr(before, f"landmarks_{kind}") is not None:
                val = landmark_acceleration(getattr(before, f"landmarks_{kind}"), a, b, norm=iod)
        out[f"jitter_{kind}"] = _nan_if_none(val)
    for kind, (p, q) in (("sr", (prev.p_sr, cur.p_sr)), ("bicubic", (prev.p_bic, cur.p_bic))):
        out[f"fer_js_{kind}"] = float(js_divergence(p, q))
        out[f"fer_l1_{kind}"] = float(np.abs(p - q).sum())
        out[f"fer_flip_{kind}"] = float(np.argmax(p) != np.argmax(q))
    return out


class StabilityMeter:
    """Feeds consecutive frames' faces to :func:`measure_stability` and keeps running means per track.

    Holds only the previous frame (and the landmarks of the one before), so memory stays bounded.
    Frames where the detector missed a face but its track went on (predicted box) count: the
    viewer sees them too. A track's chain restarts after a frame where it was not super-resolved.
    """

    KEYS = ("flicker_sr", "flicker_bicubic", "jitter_raw", "jitter_used", "fer_js_sr", "fer_js_bicubic",
            "fer_l1_sr", "fer_l1_bicubic", "fer_flip_sr", "fer_flip_bicubic")

    def __init__(self, scale: int, margin: float = 0.6, motion: Motion | None = None, classifier=None,
                 device: str = "cpu"):
        self.scale, self.margin, self.motion = scale, margin, motion
        self.classifier = classifier or load_emotion_classifier(JUDGE_CLASSIFIER, device=device)  # scores SR: the judge
        self._last: dict[int, FaceSample] = {}
        self._before: dict[int, FaceSample] = {}
        self._sums: dict[int, dict[str, list[float]]] = {}  # track -> key -> [sum, count]
        self._frames: dict[int, int] = {}
        self._detected: dict[int, int] = {}
        self._first: dict[int, dict] = {}  # track -> first frame and detection box, to tell tracks apart

    def add(self, index: int, lr_frame: np.ndarray, sr_frame: np.ndarray, bic_frame: np.ndarray,
            records: list[FaceRecord]) -> None:
        live = [r for r in records if r.super_resolved]
        for r in records:
            if r not in live:  # break the chain: the next comparison must be between super-resolved faces
                self._last.pop(r.track, None)
                self._before.pop(r.track, None)
        if not live:
            return
        crops = []
        for r in live:
            crops += [fer_crop(sr_frame, _scaled(r.detection, self.scale))[0],
                      fer_crop(bic_frame, _scaled(r.detection, self.scale))[0]]
        probs = classify_crops(self.classifier, crops)
        for k, r in enumerate(live):
            cur = FaceSample(index, r.detection, lr_frame, sr_frame, bic_frame, r.landmarks_raw, r.landmarks_used,
                             probs[2 * k], probs[2 * k + 1])
            self._frames[r.track] = self._frames.get(r.track, 0) + 1
            self._detected[r.track] = self._detected.get(r.track, 0) + int(r.matched)
            d = r.detection
            self._first.setdefault(r.track, {"first_frame": index, "first_box": [round(v, 1) for v in
                                                                                 (d.x0, d.y0, d.x1, d.y1)]})
            prev = self._last.get(r.track)
            if prev is not None and prev.frame == index - 1:
                d = cur.detection
                motion = self.motion(index, ((d.x0 + d.x1) / 2, (d.y0 + d.y1) / 2)) if self.motion else None
                before = self._before.get(r.track)
                before = before if before is not None and before.frame == index - 2 else None
                sums = self._sums.setdefault(r.track, {key: [0.0, 0] for key in self.KEYS})
                for key, v in measure_stability(prev, cur, self.scale, self.margin, motion, before).items():
                    if np.isfinite(v):
                        sums[key][0] += v
                        sums[key][1] += 1
                self._before[r.track] = prev
            self._last[r.track] = cur
        for track in [t for t in self._last if t not in {r.track for r in live}]:
            self._last.pop(track)

    @staticmethod
    def _means(sums: dict[str, list[float]]) -> dict[str, float | None]:
        m = {k: (v[0] / v[1] if v[1] else None) for k, v in sums.items()}
        fs, fb = m.get("flicker_sr"), m.get("flicker_bicubic")
        m["flicker_ratio"] = fs / fb if fs is not None and fb else None
        m["pairs"] = max((v[1] for v in sums.values()), default=0)
        return m

    def summary(self) -> dict:
        """Per-track and pooled (pair-weighted) means, with the units and methods spelled out."""
        pooled = {k: [sum(s[k][0] for s in self._sums.values()), sum(s[k][1] for s in self._sums.values())]
                  for k in self.KEYS}
        return {
            "motion": "known (given)" if self.motion else "estimated (optical flow on the LR input)",
            "flicker_units": "mean |frame t - motion-compensated frame t-1| in 8-bit levels, RGB, inside the face box",
            "jitter_units": "fraction of the inter-ocular distance; "
                            + ("residual after the known motion" if self.motion else "second difference (acceleration)"),
            "fer": f"classifier {self.classifier.name}; js = Jensen-Shannon divergence (base 2), "
                   "l1 = L1 distance, flip = share of frame pairs whose top label changes",
            "overall": self._means(pooled),
            "tracks": {str(t): {"frames": self._frames.get(t, 0), "detected": self._detected.get(t, 0),
                                **self._first.get(t, {}), **self._means(s)}
                       for t, s in sorted(self._sums.items())},
        }
