"""``affectsr video``: face super-resolution for video, stable over time, streamed frame by frame.

    affectsr video IN.mp4 -o OUT.mp4 [--scale 4] [--model NAME] [--stats stability.json]

PyAV (``import av``, FFmpeg bundled in its wheel: no system ffmpeg) decodes one frame at a time;
each frame goes through the pieces of :mod:`affectsr.pipeline` (bicubic background, faces cropped
square, super-resolved with the landmark prior, feathered paste-back) and is encoded at once with
libx264, so memory does not grow with the video's length. Between frames, a
:class:`~affectsr.temporal.FaceTracker` keeps one track per face (IoU matching) and One-Euro filters
smooth each track's crop box and landmarks, which reduces the frame-to-frame jitter the
detector would put into the crops and the landmark prior (``smooth=False`` / ``--no-smooth``
turns this off; docs/VIDEO.md has the numbers). When the detector misses a face for a few frames, its track goes on: the box
is predicted from the track's velocity and confirmed by the landmark model finding the face in
the predicted crop (landmark tracking), so a face keeps one track.

The output keeps the input's average frame rate and time stamps (exact rational time base), and
its first audio stream: packets are copied; a codec the output container cannot hold is
re-encoded to AAC and the report says so. The file is written beside ``dst`` under a temporary
name and renamed at the end; ``dst`` is never replaced without ``overwrite``.

``stats`` measures temporal stability per track (:class:`StabilityMeter`, :func:`measure_stability`):
flicker of the SR face next to the bicubic face (mean absolute difference of consecutive frames
after motion compensation), landmark jitter of the raw detections and of the smoothed landmarks,
and the frame-to-frame change of the FER distribution. See docs/VIDEO.md for numbers.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .atomic import publish_new
from .faces import crop_padded, feather_mask, paste
from .images import resize
from .landmarks import FaceBox
from .landmarks.predictor import get_landmarks
from .pipeline import MAX_OUTPUT_PIXELS, Upscaler
from .temporal import (
    FaceTracker,
    TrackerConfig,
    estimate_flow,
    inter_ocular,
    js_divergence,
    landmark_acceleration,
    landmark_jitter,
    temporal_flicker,
)

if TYPE_CHECKING:
    import torch

__all__ = ["VIDEO_FORMATS", "VideoError", "VideoReport", "FaceRecord", "FaceSample", "StabilityMeter",
           "measure_stability", "upsample_flow", "upscale_frame", "write_video", "upscale_video", "add_parser", "cmd_video"]

VIDEO_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
"""Output suffix -> FFmpeg muxer; all of them hold H.264."""

Motion = Callable[[int, tuple[float, float]], "np.ndarray | None"]
"""``motion(frame_index, (cx, cy))``: the 2 x 3 pixel affine moving the content near (cx, cy) of the
LR frame ``frame_index - 1`` to frame ``frame_index`` (known for synthetic clips), or None."""


class VideoError(ValueError):
    """A video that cannot be read or written, said in one line."""


@dataclass
class VideoReport:
    """What ``upscale_video`` did (``to_dict`` for JSON)."""

    src: str
    dst: str
    frames: int
    fps: float
    rate: str  # the exact average frame rate, e.g. "30000/1001"
    size_in: tuple[int, int]  # width, height (after any display rotation)
    size_out: tuple[int, int]
    audio: str  # "none", "copied (aac)", "re-encoded to aac (...)"
    audio_copied: bool | None  # None: the input has no audio
    faces_per_frame: list[int]
    tracks: int  # distinct face tracks over the video
    seconds: float  # wall-clock
    frames_per_second: float  # wall-clock; on a shared machine this depends on the other jobs
    cpu_seconds: float  # CPU time of this process (all its threads), a load-independent cost
    model: str
    scale: int
    smooth: bool
    stability: dict | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def mean_faces(self) -> float:
        return float(np.mean(self.faces_per_frame)) if self.faces_per_frame else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean_faces"] = round(self.mean_faces, 4)
        return d

    def summary(self) -> str:
        (wi, hi), (wo, ho) = self.size_in, self.size_out
        return (f"wrote {self.dst}: {self.frames} frames at {self.fps:.3f} fps, {wi}x{hi} -> {wo}x{ho}, "
                f"{self.tracks} face track(s), {self.mean_faces:.2f} faces/frame, audio {self.audio}, "
                f"{self.seconds:.1f} s ({self.frames_per_second:.2f} frames/s; {self.cpu_seconds:.1f} CPU s)")


# --- one frame ---------------------------------------------------------------------------------------


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


def upscale_frame(up: Upscaler, rgb: np.ndarray, tracker: FaceTracker, t: float
                  ) -> tuple[np.ndarray, np.ndarray, list[FaceRecord]]:
    """One LR frame -> (output, bicubic, records): each face detected, tracked, super-resolved, pasted back.

    The per-frame composition of :meth:`Upscaler.upscale_loaded`, with the crop box and the
    landmarks coming from the tracks (smoothed) instead of from this frame's detection alone.
    A track the detector missed but whose landmarks MediaPipe still finds in the predicted crop
    counts as detected (landmark tracking), so a face keeps one track through detector dropouts.
    """
    s = up.scale
    h, w = rgb.shape[:2]
    tracks = tracker.update(up.detector.detect_faces(rgb), t)
    bic = resize(rgb, (w * s, h * s))
    out = bic.copy()
    records = []
    for tr in tracks:
        x0, y0, x1, y1 = tr.box.square(up.margin)
        side = x1 - x0
        if side > up.max_face_side:
            records.append(FaceRecord(tr.id, tr.matched, tr.observed, (x0, y0, x1, y1), None, None, False))
            continue
        crop = crop_padded(rgb, (x0, y0, x1, y1))
        lm, route = get_landmarks(crop, up.landmarks, up.detector, up.predictor)
        to_px = np.array([side, side, side], np.float32)
        origin = np.array([x0, y0, 0], np.float32)
        raw = None if lm is None else lm * to_px + origin
        matched = tr.matched
        if raw is not None and route == "detect":  # MediaPipe found a face here, not the predictor's guess
            if tr.matched:
                tr.calibrate(raw)
            elif (box := tr.box_from_landmarks(raw)) is not None:
                tracker.confirm(tr, box, t)
        used = tr.smooth_landmarks(raw, t)
        lm_crop = None if used is None else ((used - origin) / to_px).astype(np.float32)
        paste(out, up.super_resolve(crop, lm_crop), x0 * s, y0 * s, feather_mask(side * s, side * s))
        records.append(FaceRecord(tr.id, matched, tr.observed, (x0, y0, x1, y1), raw, used, True))
    return out, bic, records


# --- stability ---------------------------------------------------------------------------------------


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
    import torch
    import torch.nn.functional as F

    f = torch.from_numpy(np.ascontiguousarray(flow, np.float32)).permute(2, 0, 1)[None]
    up = F.interpolate(f, scale_factor=s, mode="bilinear", align_corners=False)
    return (up[0].permute(1, 2, 0) * s).numpy()


def measure_stability(prev: FaceSample, cur: FaceSample, scale: int, margin: float = 0.6,
                      motion: np.ndarray | None = None, before: FaceSample | None = None) -> dict[str, float]:
    """Stability of one face between two consecutive frames, SR next to bicubic.

    Flicker: :func:`~affectsr.temporal.temporal_flicker` of the SR and of the bicubic output inside
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
        from .emotion import load_emotion_classifier

        self.scale, self.margin, self.motion = scale, margin, motion
        self.classifier = classifier or load_emotion_classifier(device=device)
        self._last: dict[int, FaceSample] = {}
        self._before: dict[int, FaceSample] = {}
        self._sums: dict[int, dict[str, list[float]]] = {}  # track -> key -> [sum, count]
        self._frames: dict[int, int] = {}
        self._detected: dict[int, int] = {}
        self._first: dict[int, dict] = {}  # track -> first frame and detection box, to tell tracks apart

    def add(self, index: int, lr_frame: np.ndarray, sr_frame: np.ndarray, bic_frame: np.ndarray,
            records: list[FaceRecord]) -> None:
        from .emotion.faces import classify_crops, fer_crop

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


# --- video I/O ---------------------------------------------------------------------------------------


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _open_input(src: Path):
    import av

    if not src.exists():
        raise VideoError(f"{src}: no such file")
    if src.is_dir():
        raise VideoError(f"{src}: is a folder, not a video file")
    if src.stat().st_size == 0:
        raise VideoError(f"{src}: not a readable video (empty file)")
    try:
        inp = av.open(str(src), metadata_errors="replace")
    except (av.FFmpegError, UnicodeDecodeError) as e:
        raise VideoError(f"{src}: not a readable video ({_one_line(e)})") from e
    fmt = inp.format.name
    if fmt == "image2" or fmt.endswith("_pipe"):
        inp.close()
        raise VideoError(f"{src}: is an image, not a video (use `affectsr upscale`)")
    if not inp.streams.video:
        inp.close()
        raise VideoError(f"{src}: has no video stream")
    v = inp.streams.video[0]
    rate = v.average_rate or v.guessed_rate or v.base_rate
    if not rate or rate <= 0:
        inp.close()
        raise VideoError(f"{src}: the video stream has no frame rate")
    v.thread_type = "AUTO"
    return inp, v, (inp.streams.audio[0] if inp.streams.audio else None), Fraction(rate)


def _events(inp, v, a, src: Path) -> Iterator[tuple[str, object]]:
    """("video", frame) and ("audio", packet) in file order; FFmpeg errors become one-line VideoErrors."""
    import av

    streams = [v] + ([a] if a is not None else [])
    n = 0
    try:
        for packet in inp.demux(*streams):
            if packet.stream.index == v.index:
                for frame in packet.decode():
                    n += 1
                    yield "video", frame
            elif packet.dts is not None:
                yield "audio", packet
    except av.FFmpegError as e:
        raise VideoError(f"{src}: decoding failed after {n} frame(s) ({_one_line(e)})") from e


def _upright(frame) -> tuple[np.ndarray, str | None]:
    """RGB of a decoded frame turned as it is displayed (phones store a rotation flag); and a note if odd."""
    rgb = frame.to_ndarray(format="rgb24")
    rot = frame.rotation or 0
    if rot % 90:
        return rgb, f"display rotation {rot} degrees is not a multiple of 90: ignored"
    k = (rot // 90) % 4
    return (np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb), None


class _Writer:
    """The output container: H.264 video plus the input's audio (copied, else re-encoded to AAC)."""

    def __init__(self, path: str, fmt: str, size: tuple[int, int], rate: Fraction, time_base: Fraction,
                 audio, crf: int, preset: str):
        import av

        self.audio_in, self.note = audio, None
        self.copy = audio is not None
        try:
            self._open(path, fmt, size, rate, time_base, crf, preset)
        except (av.FFmpegError, ValueError) as e:
            if not self.copy or getattr(self, "out", None) is None:
                raise
            self.out.close()  # the container would not take the codec as is: re-encode to AAC
            self.copy = False
            self.note = f"{audio.codec_context.name} cannot be stored in .{fmt} as is ({_one_line(e)})"
            self._open(path, fmt, size, rate, time_base, crf, preset)

    def _open(self, path, fmt, size, rate, time_base, crf, preset) -> None:
        import av

        self.out = out = av.open(path, "w", format=fmt)
        self.video = vs = out.add_stream("libx264", rate=rate)
        vs.width, vs.height = size
        vs.pix_fmt = "yuv420p"
        vs.codec_context.time_base = time_base  # keep the input's time stamps exactly
        vs.time_base = time_base
        vs.options = {"crf": str(crf), "preset": preset}
        self.audio = None
        a = self.audio_in
        if a is not None:
            if self.copy:
                if a.codec_context.name not in out.supported_codecs:
                    raise ValueError(f"codec {a.codec_context.name} not supported")
                self.audio = out.add_stream_from_template(a)
            else:
                self.audio = out.add_stream("aac", rate=a.codec_context.sample_rate or 48000)
                self.audio.layout = av.AudioLayout(f"{a.codec_context.layout.nb_channels}c")  # a native order
        out.start_encoding()

    @property
    def audio_desc(self) -> tuple[str, bool | None]:
        if self.audio_in is None:
            return "none", None
        name = self.audio_in.codec_context.name
        return (f"copied ({name})", True) if self.copy else (f"re-encoded to aac ({self.note})", False)

    def add_audio(self, packet) -> None:
        if self.copy:
            packet.stream = self.audio
            self.out.mux(packet)
            return
        for frame in packet.decode():
            frame.pts = None  # let the encoder count samples; the input's pts may not fit AAC's frame size
            self.out.mux(self.audio.encode(frame))

    def add_video(self, rgb: np.ndarray, pts: int, time_base: Fraction) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        self.out.mux(self.video.encode(frame))

    def finish(self) -> None:
        self.out.mux(self.video.encode(None))
        if self.audio is not None and not self.copy:
            self.out.mux(self.audio.encode(None))
        self.out.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # the file is deleted anyway
            self.out.close()


def write_video(path: str | Path, frames, rate: int | Fraction = 25, audio: np.ndarray | None = None,
                sample_rate: int = 44100, crf: int = 12) -> Path:
    """Encode RGB uint8 frames (an iterable, streamed) as H.264, with optional mono float audio as AAC.

    For making test and measurement clips (``tools/video_stability.py``, tests): bit-identical on
    every run, written atomically.
    """
    import av

    from .atomic import atomic_write

    path = Path(path)
    fmt = VIDEO_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: use one of {', '.join(VIDEO_FORMATS)}")

    def write(tmp: str) -> None:
        samples = None if audio is None else np.asarray(audio, np.float32).reshape(1, -1)
        done = 0  # audio samples written so far: interleave them with the frames they belong to

        def audio_until(n: int) -> None:
            nonlocal done
            while done < min(n, samples.shape[1]):
                chunk = np.ascontiguousarray(samples[:, done:min(done + 1024, n)])
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                af.sample_rate, af.pts = sample_rate, done
                out.mux(a_s.encode(af))
                done += chunk.shape[1]

        with av.open(tmp, "w", format=fmt) as out:
            vs = out.add_stream("libx264", rate=Fraction(rate))
            # one encoder thread: x264's frame threads make the bitstream differ from run to run
            vs.pix_fmt, vs.options = "yuv420p", {"crf": str(crf), "preset": "veryfast", "threads": "1"}
            a_s = out.add_stream("aac", rate=sample_rate, layout="mono") if samples is not None else None
            for i, rgb in enumerate(frames):
                if i == 0:
                    vs.height, vs.width = rgb.shape[:2]
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                frame.pts = i
                out.mux(vs.encode(frame))
                if a_s is not None:
                    audio_until(round((i + 1) * sample_rate / Fraction(rate)))
            out.mux(vs.encode(None))
            if a_s is not None:
                audio_until(samples.shape[1])
                out.mux(a_s.encode(None))

    return atomic_write(path, write)


def _check_paths(src: Path, dst: Path, overwrite: bool) -> str:
    if not src.exists():
        raise VideoError(f"{src}: no such file")
    fmt = VIDEO_FORMATS.get(dst.suffix.lower())
    if fmt is None:
        raise ValueError(f"{dst}: cannot tell the video format from {dst.suffix!r}; use one of {', '.join(VIDEO_FORMATS)}")
    if dst.resolve() == src.resolve() or (dst.exists() and src.exists() and os.path.samefile(dst, src)):
        raise ValueError(f"{dst}: is the input file; choose another output")
    if dst.is_dir():
        raise ValueError(f"{dst}: is a folder")
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} exists (use --overwrite to replace it)")
    return fmt


def upscale_video(src: str | Path, dst: str | Path, scale: int | None = None,
                  model: torch.nn.Module | str | None = None, device: str | None = None,
                  overwrite: bool = False, smooth: bool = True, stats: bool | str | Path | None = None,
                  progress: bool = True, max_frames: int | None = None, *, upscaler: Upscaler | None = None,
                  tracker: TrackerConfig | None = None, motion: Motion | None = None,
                  crf: int = 18, preset: str = "veryfast") -> VideoReport:
    """Super-resolve every face of every frame of ``src`` into ``dst`` (.mp4, .m4v, .mov or .mkv).

    ``scale``/``model``/``device`` as for :class:`~affectsr.pipeline.Upscaler` (or pass a ready
    ``upscaler``). ``smooth``: One-Euro smoothing of the tracks' boxes and landmarks.
    ``stats``: True (measure stability into ``report.stability``) or a .json path (also written
    there, never replacing a file without ``overwrite``); ``motion`` gives the true motion for it
    (synthetic clips). ``max_frames``: stop after that many frames (audio is cut near there).
    Raises VideoError (unreadable input), FileExistsError, ValueError (bad arguments).
    """
    from tqdm import tqdm

    src, dst = Path(src), Path(dst)
    fmt = _check_paths(src, dst, overwrite)
    stats_path = Path(stats) if isinstance(stats, (str, Path)) else None
    if stats_path is not None:
        if stats_path.suffix.lower() != ".json":
            raise ValueError(f"{stats_path}: the stability statistics are written as .json")
        if stats_path.exists() and not overwrite:
            raise FileExistsError(f"{stats_path} exists (use --overwrite to replace it)")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    inp, v, a, rate = _open_input(src)
    own = upscaler is None
    writer = tmp = up = None
    try:
        up = upscaler or Upscaler(scale, model, device)
        if scale is not None and up.scale != scale:
            raise ValueError(f"the upscaler works at x{up.scale}, but scale={scale} was asked")
        s = up.scale
        meter = StabilityMeter(s, up.margin, motion, device=str(up.device)) if stats else None
        tracks = FaceTracker(tracker, smooth=smooth)
        tb = Fraction(v.time_base) if v.time_base else 1 / rate
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.stem}.", suffix=dst.suffix)
        os.close(fd)
        total = v.frames or None
        if max_frames is not None:
            total = min(total, max_frames) if total else max_frames
        faces_per_frame: list[int] = []
        notes: list[str] = []
        pending_audio: list = []  # audio packets that arrive before the first frame opens the output
        last_pts, size_in, size_out, n_tracks = None, None, None, 0
        start, cpu_start = time.perf_counter(), time.process_time()
        bar = tqdm(total=total, desc=f"video x{s}", unit="frame", disable=not progress or None, file=sys.stderr)
        with bar:
            for kind, item in _events(inp, v, a, src):
                if kind == "audio":
                    if writer is None:
                        pending_audio.append(item)
                    else:
                        writer.add_audio(item)
                    continue
                rgb, note = _upright(item)
                if note and note not in notes:
                    notes.append(note)
                h, w = rgb.shape[:2]
                if size_in is None:
                    if h * w * s * s > MAX_OUTPUT_PIXELS:
                        raise ValueError(f"output frames would be {w * s}x{h * s} pixels (over {MAX_OUTPUT_PIXELS:,})")
                    size_in = (w, h)
                    size_out = (w * s - (w * s) % 2, h * s - (h * s) % 2)  # yuv420p needs even sides
                    writer = _Writer(tmp, fmt, size_out, rate, tb, a, crf, preset)
                    for p in pending_audio:
                        writer.add_audio(p)
                    pending_audio.clear()
                elif (w, h) != size_in:
                    rgb = resize(rgb, size_in)  # a mid-stream size change: keep one output size
                    msg = "the frame size changes mid-stream: later frames were resized to the first's"
                    if msg not in notes:
                        notes.append(msg)
                i = len(faces_per_frame)
                pts = item.pts if item.pts is not None else round(i / rate / tb)
                if last_pts is not None and pts <= last_pts:
                    pts = last_pts + 1  # repeated/broken time stamps would stop the encoder
                last_pts = pts
                t = float(pts * tb)
                out, bic, records = upscale_frame(up, rgb, tracks, t)
                n_tracks = tracks.started
                if meter is not None:
                    meter.add(i, rgb, out, bic, records)
                writer.add_video(out[: size_out[1], : size_out[0]], pts, tb)
                faces_per_frame.append(len(records))
                bar.update(1)
                bar.set_postfix(faces=len(records), refresh=False)
                if max_frames is not None and len(faces_per_frame) >= max_frames:
                    break
        if writer is None:
            raise VideoError(f"{src}: the video stream holds no frames")
        writer.finish()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        os.chmod(tmp, 0o644)
        if overwrite:
            os.replace(tmp, dst)
        else:
            publish_new(tmp, dst)
        audio, copied = writer.audio_desc
        writer = None
        if copied is False:
            notes.append(f"audio {audio}")
        frames = len(faces_per_frame)
        report = VideoReport(str(src), str(dst), frames, float(rate), str(rate), size_in, size_out, audio, copied,
                             faces_per_frame, n_tracks, round(seconds, 3), round(frames / max(seconds, 1e-9), 3),
                             round(cpu, 3), up.model_name, s, smooth, meter.summary() if meter is not None else None, notes)
        if stats_path is not None:
            from .atomic import atomic_write

            text = json.dumps(report.to_dict(), indent=2) + "\n"
            atomic_write(stats_path, lambda p: Path(p).write_text(text))
        return report
    finally:
        if writer is not None:
            writer.abort()
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        inp.close()
        if own and up is not None:
            up.close()


# --- command line ------------------------------------------------------------------------------------


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("video", help="super-resolve the faces of a video (tracked, smoothed, audio kept)",
                              description="Face super-resolution for video: faces tracked and smoothed over time, "
                                          "frame rate and audio kept, streamed frame by frame.")
    p.add_argument("input", metavar="IN", help="input video (anything FFmpeg reads: mp4, mov, mkv, avi, webm...)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help=f"output video ({', '.join(VIDEO_FORMATS)})")
    p.add_argument("--scale", type=int, choices=(4, 8), default=None, help="default: the model's (x4 if no model)")
    p.add_argument("--model", default=None, help="preset name or .safetensors path (default: the shipped one)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT (and the --stats file) if they exist")
    p.add_argument("--no-smooth", dest="smooth", action="store_false",
                   help="no One-Euro smoothing of face boxes and landmarks over time")
    p.add_argument("--stats", metavar="FILE.json", default=None,
                   help="measure temporal stability (flicker SR vs bicubic, landmark jitter, FER change) into FILE.json")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_video)
    return p


def cmd_video(args: argparse.Namespace) -> int:
    from .pipeline import UntrainedModelWarning

    if args.device is not None:
        import torch

        try:
            dev = torch.device(args.device)
        except RuntimeError:
            print(f"error: --device {args.device}: not a device (use cpu or cuda)", file=sys.stderr)
            return 2
        if dev.type == "cuda" and not torch.cuda.is_available():
            print(f"error: --device {args.device}: CUDA is not available on this machine", file=sys.stderr)
            return 2
    if args.max_frames is not None and args.max_frames < 1:
        print("error: --max-frames must be at least 1", file=sys.stderr)
        return 2
    src, dst = Path(args.input), Path(args.output)
    try:  # cheap checks before loading any model
        _check_paths(src, dst, args.overwrite)
        _open_input(src)[0].close()
    except (VideoError, ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UntrainedModelWarning)
        try:
            report = upscale_video(src, dst, args.scale, args.model, args.device, args.overwrite, args.smooth,
                                   args.stats, progress=not args.quiet, max_frames=args.max_frames)
        except (VideoError, ValueError, FileExistsError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"error: {dst}: {e.strerror or _one_line(e)}", file=sys.stderr)
            return 1
    for w in caught:
        if issubclass(w.category, UntrainedModelWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(report.summary())
    if report.stability is not None:
        o = report.stability["overall"]

        def f(key: str, spec: str = ".3f") -> str:
            return "n/a" if o.get(key) is None else format(o[key], spec)

        print(f"stability ({o['pairs']} frame pairs): flicker SR {f('flicker_sr', '.2f')} vs bicubic "
              f"{f('flicker_bicubic', '.2f')} levels; landmark jitter raw {f('jitter_raw', '.4f')} vs used "
              f"{f('jitter_used', '.4f')} IOD; FER change (JS) SR {f('fer_js_sr', '.4f')} vs bicubic "
              f"{f('fer_js_bicubic', '.4f')}; written to {args.stats}")
    return 0
