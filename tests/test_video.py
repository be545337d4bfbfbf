"""affectsr.video: `affectsr video` on tiny synthetic clips (frame count, size, rate, audio, errors, no clobbering)."""
from __future__ import annotations

import argparse
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from affectsr.images import resize
from affectsr.pipeline import Upscaler
from affectsr.commands.video import add_parser
from affectsr.landmarks import FaceBox
from affectsr.video import KeyframeDetector, VideoError, upscale_video, write_video
from affectsr.video.tracking import FaceTracker

pytestmark = pytest.mark.slow  # every test encodes and decodes clips

FPS, N, SR = 10, 10, 16000  # 1 s clips: 10 frames at 10 fps, 16 kHz audio
W, H = 160, 120


def _face_frames(face: np.ndarray) -> list[np.ndarray]:
    """The bundled face (40 px) drifting right and down over a flat backdrop."""
    small = resize(face, (40, 40))
    frames = []
    for i in range(N):
        f = np.full((H, W, 3), (90, 110, 140), np.uint8)
        x, y = 30 + 4 * i, 30 + i
        f[y:y + 40, x:x + 40] = small
        frames.append(f)
    return frames


def _gradient_frames(n: int) -> list[np.ndarray]:
    ys, xs = np.mgrid[0:H, 0:W]
    return [np.dstack([(xs + 5 * i) % 256, ys * 2, np.full_like(xs, 128)]).astype(np.uint8) for i in range(n)]


def _tone(seconds: float) -> np.ndarray:
    return 0.3 * np.sin(2 * np.pi * 440 * np.arange(round(seconds * SR)) / SR)


def _streams(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = {"rate": v.average_rate, "size": (v.codec_context.width, v.codec_context.height),
                "frames": sum(1 for _ in c.decode(video=0))}
        c.seek(0)
        a = c.streams.audio[0] if c.streams.audio else None
        info["audio"] = None if a is None else {"codec": a.codec_context.name,
                                                "seconds": float(a.duration * a.time_base)}
    return info


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory, _default_face_session) -> Path:
    path = tmp_path_factory.mktemp("clips") / "face.mp4"
    return write_video(path, _face_frames(_default_face_session), rate=FPS, audio=_tone(N / FPS), sample_rate=SR)


@pytest.fixture(scope="module")
def plain_clip(tmp_path_factory) -> Path:
    """No face, no audio, 4 frames."""
    return write_video(tmp_path_factory.mktemp("clips") / "plain.mp4", _gradient_frames(4), rate=FPS)


@pytest.fixture(scope="module")
def upscaler(landmark_detector):
    return Upscaler(4, "affectsr-x4-lite", "cpu", detector=landmark_detector)


def test_face_clip_keeps_frames_size_rate_and_audio(face_clip, upscaler, tmp_path):
    src = _streams(face_clip)
    assert src["frames"] == N and src["audio"]["codec"] == "aac"
    out = tmp_path / "out.mp4"
    rep = upscale_video(face_clip, out, upscaler=upscaler, stats=True, progress=False)
    assert (rep.frames, rep.size_in, rep.size_out) == (N, (W, H), (4 * W, 4 * H))
    assert rep.rate == "10" and rep.fps == 10.0 and rep.audio_copied is True and rep.audio == "copied (aac)"
    assert rep.tracks == 1 and sum(rep.faces_per_frame) >= N - 1  # one face, one track
    assert 2 <= rep.keyframes < N and rep.detect_seconds_per_frame > 0  # frames 0 and 8, and after any miss
    dst = _streams(out)
    assert dst["frames"] == N and dst["size"] == (4 * W, 4 * H) and dst["rate"] == Fraction(FPS)
    assert dst["audio"]["codec"] == "aac" and abs(dst["audio"]["seconds"] - src["audio"]["seconds"]) <= 0.1
    # away from the face the output is the bicubic upscale (colours survive the RGB <-> YUV round trip)
    with av.open(str(face_clip)) as c:
        first_in = next(c.decode(video=0)).to_ndarray(format="rgb24")
    with av.open(str(out)) as c:
        first_out = next(c.decode(video=0)).to_ndarray(format="rgb24")
    background = resize(first_in, (4 * W, 4 * H))[:, 400:]
    assert np.abs(background.astype(int) - first_out[:, 400:]).mean() < 3.0
    st = rep.stability["overall"]
    assert st["pairs"] >= N - 2 and st["flicker_sr"] > 0 and st["flicker_bicubic"] > 0
    assert 0 <= st["fer_js_sr"] <= 1 and np.isfinite(st["jitter_raw"])
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


class _CountingDetector:
    """Stands in for LandmarkDetector: one face that moves right 2 px a frame; records which method ran."""

    def __init__(self, miss_at=()):
        self.calls, self.frame, self.miss_at = [], 0, set(miss_at)

    def _face(self):
        x = 20 + 2 * self.frame
        self.frame += 1
        return [] if self.frame - 1 in self.miss_at else [FaceBox(x, 30, x + 30, 60, 0.9)]

    def detect_faces(self, rgb, min_face=None):
        self.calls.append("whole")
        return self._face()

    def detect_near(self, rgb, boxes, min_face=None):
        self.calls.append(("near", len(boxes)))
        return self._face()


def test_keyframes_scan_the_whole_frame_and_track_in_between():
    frame = np.zeros((H, W, 3), np.uint8)
    det, tracker = _CountingDetector(), FaceTracker()
    keys = KeyframeDetector(det, interval=4)
    for i in range(9):
        tracker.update(keys(frame, tracker), i / FPS)
    assert det.calls == ["whole", ("near", 1), ("near", 1), ("near", 1)] * 2 + ["whole"]
    assert keys.keyframes == 3 and keys.frames == 9 and keys.seconds > 0
    # a frame where the face was lost makes the next one a keyframe
    det, tracker = _CountingDetector(miss_at={2}), FaceTracker()
    keys = KeyframeDetector(det, interval=4)
    for i in range(5):
        tracker.update(keys(frame, tracker), i / FPS)
    assert det.calls == ["whole", ("near", 1), ("near", 1), "whole", "whole"]
    # no face at all: nothing between keyframes
    det = _CountingDetector(miss_at=set(range(9)))
    keys, tracker = KeyframeDetector(det, interval=4), FaceTracker()
    for i in range(6):
        tracker.update(keys(frame, tracker), i / FPS)
    assert det.calls == ["whole", "whole"] and keys.keyframes == 2
    with pytest.raises(ValueError, match="interval"):
        KeyframeDetector(det, interval=0)


def test_no_face_video_is_bicubic_and_the_original_stays(plain_clip, upscaler, tmp_path):
    out = tmp_path / "plain_x4.mkv"
    before = plain_clip.read_bytes()
    rep = upscale_video(plain_clip, out, upscaler=upscaler, progress=False)
    assert rep.faces_per_frame == [0, 0, 0, 0] and rep.tracks == 0
    assert rep.audio == "none" and rep.audio_copied is None and rep.stability is None
    assert plain_clip.read_bytes() == before
    with av.open(str(plain_clip)) as c:
        frames_in = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(out)) as c:
        frames_out = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames_out) == 4
    for a, b in zip(frames_in, frames_out):
        assert np.abs(resize(a, (4 * W, 4 * H)).astype(int) - b).mean() < 3.0


def test_refuses_to_overwrite_or_to_write_over_the_input(plain_clip, upscaler, tmp_path):
    out = tmp_path / "exists.mp4"
    out.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="--overwrite"):
        upscale_video(plain_clip, out, upscaler=upscaler, progress=False)
    assert out.read_bytes() == b"keep me"
    with pytest.raises(ValueError, match="input file"):
        upscale_video(plain_clip, plain_clip, upscaler=upscaler, overwrite=True, progress=False)
    with pytest.raises(ValueError, match="format"):
        upscale_video(plain_clip, tmp_path / "out.gif", upscaler=upscaler, progress=False)
    rep = upscale_video(plain_clip, out, upscaler=upscaler, overwrite=True, progress=False, max_frames=2)
    assert rep.frames == 2 and _streams(out)["frames"] == 2


def test_unreadable_inputs_give_one_line_errors(plain_clip, upscaler, tmp_path, bad_files):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(plain_clip.read_bytes()[:300])
    audio_only = tmp_path / "tone.m4a"
    with av.open(str(audio_only), "w", format="mp4") as o:
        s = o.add_stream("aac", rate=SR, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = SR, 0
        o.mux(s.encode(frame))
        o.mux(s.encode(None))
    cases = {text: "not a readable video", truncated: "not a readable video", audio_only: "no video stream",
             tmp_path / "missing.mp4": "no such file", bad_files["grey_png"]: "is an image",
             bad_files["empty_png"]: "empty file"}
    for path, message in cases.items():
        with pytest.raises(VideoError, match=message) as e:
            upscale_video(path, tmp_path / "out.mp4", upscaler=upscaler, progress=False)
        assert "\n" not in str(e.value)
    assert not (tmp_path / "out.mp4").exists()


def test_audio_the_container_cannot_hold_is_reencoded_to_aac(upscaler, tmp_path):
    src = tmp_path / "u8.mkv"  # 8-bit PCM: fine in Matroska, not allowed in MP4
    with av.open(str(src), "w", format="matroska") as o:
        vs = o.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        a_s = o.add_stream("pcm_u8", rate=SR, layout="mono")
        for i, rgb in enumerate(_gradient_frames(3)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            o.mux(vs.encode(frame))
            tone = (128 + 60 * np.sin(np.arange(SR // FPS) / 3)).astype(np.uint8)[None]
            af = av.AudioFrame.from_ndarray(tone, format="u8", layout="mono")
            af.sample_rate, af.pts = SR, SR // FPS * i
            o.mux(a_s.encode(af))
        o.mux(vs.encode(None))
        o.mux(a_s.encode(None))
    out = tmp_path / "out.mp4"
    rep = upscale_video(src, out, upscaler=upscaler, progress=False)
    assert rep.audio_copied is False and rep.audio.startswith("re-encoded to aac (pcm_u8")
    info = _streams(out)
    with av.open(str(out)) as c:  # decoded samples: AAC's encoder delay is trimmed on decode
        samples = sum(f.samples for f in c.decode(audio=0))
    assert info["audio"]["codec"] == "aac" and abs(samples / SR - 0.3) <= 0.1
    assert info["frames"] == 3


def test_cli_subcommand(plain_clip, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))

    def run(*argv: str) -> int:
        args = parser.parse_args(["video", *argv])
        return args.func(args)

    assert run(str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "o.mp4"), "-q") == 2
    assert "no such file" in capsys.readouterr().err
    assert run(str(plain_clip), "-o", str(tmp_path / "o.mp4"), "--max-frames", "0") == 2
    stats = tmp_path / "stats.json"
    out = tmp_path / "o.mp4"
    assert run(str(plain_clip), "-o", str(out), "--model", "affectsr-x4-lite", "--device", "cpu",
               "--max-frames", "2", "--stats", str(stats), "-q") == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "2 frames" in printed
    report = json.loads(stats.read_text())
    assert report["frames"] == 2 and report["size_out"] == [4 * W, 4 * H] and report["stability"]["overall"]["pairs"] == 0
    assert run(str(plain_clip), "-o", str(out), "-q") == 2  # exists
    assert "--overwrite" in capsys.readouterr().err
