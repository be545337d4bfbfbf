"""Video files through PyAV (FFmpeg bundled in its wheel, no system ffmpeg): open and decode, encode
H.264 with the input's time stamps and audio, and write test clips.

PyAV is imported inside the functions that use it (it loads FFmpeg's libraries), so importing
:mod:`affectsr.video` (and the command line) stays light.
"""
from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..atomic import atomic_write

__all__ = ["VIDEO_FORMATS", "VideoError", "check_paths", "open_input", "read_events", "upright", "write_video",
           "VideoWriter"]

VIDEO_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
"""Output suffix -> FFmpeg muxer; all of them hold H.264."""


class VideoError(ValueError):
    """A video that cannot be read or written, said in one line."""


def _one_line(e: BaseException) -> str:
    """An exception in plain words: FFmpeg's errno number and the repeated file name left out."""
    import av  # lazy (module docstring)

    if isinstance(e, av.InvalidDataError):
        return "invalid data: the file is damaged or not a video"
    text = getattr(e, "strerror", None) if isinstance(e, av.FFmpegError) else None
    text = " ".join(str(text or e).split())
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text)
    return (text[:1].lower() + text[1:]) if text else type(e).__name__


def open_input(src: Path):
    import av  # lazy (module docstring)

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


def read_events(inp, v, a, src: Path) -> Iterator[tuple[str, object]]:
    """("video", frame) and ("audio", packet) in file order; FFmpeg errors become one-line VideoErrors."""
    import av  # lazy (module docstring)

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


def upright(frame) -> tuple[np.ndarray, str | None]:
    """RGB of a decoded frame turned as it is displayed (phones store a rotation flag); and a note if odd."""
    rgb = frame.to_ndarray(format="rgb24")
    rot = frame.rotation or 0
    if rot % 90:
        return rgb, f"display rotation {rot} degrees is not a multiple of 90: ignored"
    k = (rot // 90) % 4
    return (np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb), None


class VideoWriter:
    """The output container: H.264 video plus the input's audio (copied, else re-encoded to AAC)."""

    def __init__(self, path: str, fmt: str, size: tuple[int, int], rate: Fraction, time_base: Fraction,
                 audio, crf: int, preset: str):
        import av  # lazy (module docstring)

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
        import av  # lazy (module docstring)

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
        import av  # lazy (module docstring)

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
    import av  # lazy (module docstring)

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


def check_paths(src: Path, dst: Path, overwrite: bool) -> str:
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
