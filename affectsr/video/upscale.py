"""Face super-resolution for video, stable over time, streamed frame by frame (``affectsr video``).

    affectsr video IN.mp4 -o OUT.mp4 [--scale 4] [--model NAME] [--stats stability.json]

PyAV (:mod:`affectsr.video.io`) decodes one frame at a time; each frame is composed by
:meth:`affectsr.pipeline.Upscaler.compose` (bicubic background, faces cropped square,
super-resolved with the landmark prior, feathered paste-back) and encoded at once with libx264,
so memory does not grow with the video's length. Between frames, a
:class:`~affectsr.video.tracking.FaceTracker` keeps one track per face (IoU matching) and One-Euro
filters smooth each track's crop box and landmarks, which reduces the frame-to-frame jitter the
detector would put into the crops and the landmark prior (``smooth=False`` / ``--no-smooth``
turns this off; docs/VIDEO.md has the numbers). When the detector misses a face for a few frames,
its track goes on: the box is predicted from the track's velocity and confirmed by the landmark
model finding the face in the predicted crop (landmark tracking), so a face keeps one track.

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

import glob
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..atomic import atomic_write, make_folder, publish_new, remove_folders
from ..faces import crop_padded
from ..images import resize
from ..landmarks.predictor import get_landmarks
from ..pipeline import MAX_OUTPUT_PIXELS, Upscaler
from ..progress import progress as progress_bar
from ..types import SRModel
from .io import VideoError, VideoWriter, check_paths, open_input, read_events, upright
from .stability import FaceRecord, Motion, StabilityMeter
from .tracking import FaceTracker, KeyframeDetector, TrackerConfig

__all__ = ["VideoReport", "remove_temp_files", "temp_prefix", "upscale_frame", "upscale_video"]


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
    keyframes: int = 0  # frames scanned whole by the face detector (the others: around the tracked faces)
    detect_seconds_per_frame: float = 0.0  # wall-clock face detection per frame, keyframes and between

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
                f"{self.seconds:.1f} s ({self.frames_per_second:.2f} frames/s; {self.cpu_seconds:.1f} CPU s; "
                f"face detection {1000 * self.detect_seconds_per_frame:.0f} ms/frame, {self.keyframes} keyframes)")


def temp_prefix(dst: Path) -> str:
    """Name prefix of the hidden temporary file a run writes beside ``dst`` (this process's own: the pid is in it)."""
    return f".{dst.stem}.{os.getpid()}."


def remove_temp_files(dst: str | Path) -> None:
    """Remove this process's temporary files for ``dst`` (a run stopped by force, before its ``finally``)."""
    dst = Path(dst)
    for f in dst.parent.glob(f"{glob.escape(temp_prefix(dst))}*{glob.escape(dst.suffix)}"):
        f.unlink(missing_ok=True)


# --- one frame ---------------------------------------------------------------------------------------


def upscale_frame(up: Upscaler, rgb: np.ndarray, tracker: FaceTracker, t: float,
                  detect: KeyframeDetector | None = None, notes: list[str] | None = None
                  ) -> tuple[np.ndarray, np.ndarray, list[FaceRecord]]:
    """One LR frame -> (output, bicubic, records): each face detected, tracked, super-resolved, pasted back.

    :meth:`Upscaler.compose` does the pasting, given the crop boxes and landmarks of the tracks
    (smoothed) instead of this frame's detection alone. A track the detector missed but whose
    landmarks MediaPipe still finds in the predicted crop counts as detected (landmark tracking),
    so a face keeps one track through detector dropouts.
    ``detect``: keyframe detection (default: the whole detector on every frame).
    """
    s = up.scale
    h, w = rgb.shape[:2]
    boxes = detect(rgb, tracker) if detect is not None else up.detector.detect_faces(rgb, min_face=up.min_face)
    tracks = tracker.update(boxes, t)
    bic = resize(rgb, (w * s, h * s))
    records, boxes, landmarks = [], [], []
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
        boxes.append((x0, y0, x1, y1))
        landmarks.append(None if used is None else ((used - origin) / to_px).astype(np.float32))
        records.append(FaceRecord(tr.id, matched, tr.observed, (x0, y0, x1, y1), raw, used, True))
    out, _ = up.compose(rgb, boxes, landmarks, background=bic.copy(), notes=notes)
    return out, bic, records


def upscale_video(src: str | Path, dst: str | Path, scale: int | None = None,
                  model: SRModel | str | None = None, device: str | None = None,
                  overwrite: bool = False, smooth: bool = True, stats: bool | str | Path | None = None,
                  progress: bool = True, max_frames: int | None = None, *, upscaler: Upscaler | None = None,
                  tracker: TrackerConfig | None = None, motion: Motion | None = None,
                  crf: int = 18, preset: str = "veryfast", keyframe_interval: int = 8,
                  min_face: float | None = None) -> VideoReport:
    """Super-resolve every face of every frame of ``src`` into ``dst`` (.mp4, .m4v, .mov or .mkv).

    ``scale``/``model``/``device`` as for :class:`~affectsr.pipeline.Upscaler` (or pass a ready
    ``upscaler``). ``smooth``: One-Euro smoothing of the tracks' boxes and landmarks.
    ``stats``: True (measure stability into ``report.stability``) or a .json path (also written
    there, never replacing a file without ``overwrite``); ``motion`` gives the true motion for it
    (synthetic clips). ``max_frames``: stop after that many frames (audio is cut near there).
    ``keyframe_interval``: the whole frame is scanned for faces every that many frames (and after a
    lost track); in between, only around the tracked faces (:class:`KeyframeDetector`).
    ``min_face``: smallest face looked for, in input pixels (default: the upscaler's).
    Raises VideoError (unreadable input), FileExistsError, ValueError (bad arguments).
    """
    src, dst = Path(src), Path(dst)
    fmt = check_paths(src, dst, overwrite)
    stats_path = Path(stats) if isinstance(stats, (str, Path)) else None
    if stats_path is not None:
        if stats_path.suffix.lower() != ".json":
            raise ValueError(f"{stats_path}: the stability statistics are written as .json")
        if stats_path.exists() and not overwrite:
            raise FileExistsError(f"{stats_path} exists (use --overwrite to replace it)")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    inp, v, a, rate = open_input(src)
    own = upscaler is None
    writer = tmp = up = None
    made: list[Path] = []  # output folders this run created: removed again unless the video is written
    done = False
    try:
        up = upscaler or Upscaler(scale, model, device)
        if scale is not None and up.scale != scale:
            raise ValueError(f"the upscaler works at x{up.scale}, but scale={scale} was asked")
        s = up.scale
        meter = StabilityMeter(s, up.margin, motion, device=str(up.device)) if stats else None
        tracks = FaceTracker(tracker, smooth=smooth)
        detect = KeyframeDetector(up.detector, keyframe_interval, up.min_face if min_face is None else min_face)
        tb = Fraction(v.time_base) if v.time_base else 1 / rate
        made = make_folder(dst.parent)
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=temp_prefix(dst), suffix=dst.suffix)
        os.close(fd)
        total = v.frames or None
        if max_frames is not None:
            total = min(total, max_frames) if total else max_frames
        faces_per_frame: list[int] = []
        notes: list[str] = []
        pending_audio: list = []  # audio packets that arrive before the first frame opens the output
        last_pts, size_in, size_out, n_tracks = None, None, None, 0
        start, cpu_start = time.perf_counter(), time.process_time()
        bar = progress_bar(total=total, desc=f"video x{s}", unit="frame", enabled=progress)
        with bar:
            for kind, item in read_events(inp, v, a, src):
                if kind == "audio":
                    if writer is None:
                        pending_audio.append(item)
                    else:
                        writer.add_audio(item)
                    continue
                rgb, note = upright(item)
                if note and note not in notes:
                    notes.append(note)
                h, w = rgb.shape[:2]
                if size_in is None:
                    if h * w * s * s > MAX_OUTPUT_PIXELS:
                        raise ValueError(f"output frames would be {w * s}x{h * s} pixels (over {MAX_OUTPUT_PIXELS:,})")
                    size_in = (w, h)
                    size_out = (w * s - (w * s) % 2, h * s - (h * s) % 2)  # yuv420p needs even sides
                    writer = VideoWriter(tmp, fmt, size_out, rate, tb, a, crf, preset)
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
                out, bic, records = upscale_frame(up, rgb, tracks, t, detect, notes)
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
        if not any(faces_per_frame):
            notes.append("no face found in any frame: the whole video was upscaled bicubically")
        report = VideoReport(str(src), str(dst), frames, float(rate), str(rate), size_in, size_out, audio, copied,
                             faces_per_frame, n_tracks, round(seconds, 3), round(frames / max(seconds, 1e-9), 3),
                             round(cpu, 3), up.model_name, s, smooth, meter.summary() if meter is not None else None, notes,
                             detect.keyframes, round(detect.seconds / max(frames, 1), 4))
        done = True
        if stats_path is not None:
            text = json.dumps(report.to_dict(), indent=2) + "\n"
            atomic_write(stats_path, lambda p: Path(p).write_text(text))
        return report
    finally:
        if writer is not None:
            writer.abort()
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        if not done:
            remove_folders(made)
        inp.close()
        if own and up is not None:
            up.close()
