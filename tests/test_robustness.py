"""Issue 15: damaged weights, broken SR outputs, closed pipes, one message per limit, no empty folders,
the demo's overwrite rule and help texts computed from the code.

The command line is run in-process through :func:`affectsr.cli.main` (the one entry point) where it
can be, and in a subprocess where the process itself is the subject (pipes, signals).
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from affectsr import weights
from affectsr.cli import main
from affectsr.images import ImageReadError, read_image, resize, save_image
from affectsr.models import create_model, save_weights
from affectsr.models.presets import default_model
from affectsr.pipeline import Upscaler
from affectsr.weights import WeightsError


# --- damaged weights files ---------------------------------------------------------------------------


def damaged_weights(folder: Path) -> dict[str, Path]:
    """A valid tiny SR file and the ways users have seen one break, each as its own .safetensors file."""
    torch.manual_seed(0)
    net = create_model("srcnn-x4")
    good = save_weights(net, folder / "good.safetensors", half=False)
    raw = good.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    cfg = net.config.to_dict()
    meta = {"format": "affectsr", "arch": "srcnn"}
    state = {k: v.float().clone() for k, v in net.state_dict().items()}
    nan_state = {k: v.clone() for k, v in state.items()}
    first = next(iter(nan_state))
    nan_state[first].view(-1)[0] = float("nan")
    files = {
        "truncated": raw[: len(raw) // 2],
        "flipped_header": raw[:9] + bytes([raw[9] ^ 0xFF]) + raw[10:],
        "header_len_1e12": struct.pack("<Q", 10**12) + raw[8:],
        "header_len_short": struct.pack("<Q", n - 7) + raw[8:],
        "text": b"these are not the weights you are looking for\n" * 20,
        "empty": b"",
        "eight_bytes": raw[:8],
    }
    out = {"good": good}
    for name, data in files.items():
        (folder / f"{name}.safetensors").write_bytes(data)
        out[name] = folder / f"{name}.safetensors"
    save_file({"w": torch.zeros(2)}, str(folder / "wrong_tensors.safetensors"),
              metadata={**meta, "config": json.dumps(cfg)})
    save_file(state, str(folder / "bad_config_json.safetensors"), metadata={**meta, "config": "{nope"})
    save_file(state, str(folder / "bad_config_keys.safetensors"), metadata={**meta, "config": json.dumps({"zz": 1})})
    save_file(state, str(folder / "no_config.safetensors"), metadata={"format": "affectsr"})
    save_file(state, str(folder / "classifier_tag.safetensors"), metadata={"format": "affectsr-fer", "config": "{}"})
    save_file(nan_state, str(folder / "nan_tensor.safetensors"), metadata={**meta, "config": json.dumps(cfg)})
    for name in ("wrong_tensors", "bad_config_json", "bad_config_keys", "no_config", "classifier_tag", "nan_tensor"):
        out[name] = folder / f"{name}.safetensors"
    return out


@pytest.fixture(scope="module")
def broken_weights(tmp_path_factory) -> dict[str, Path]:
    return damaged_weights(tmp_path_factory.mktemp("weights"))


def test_every_damaged_file_is_one_weights_error_naming_it(broken_weights):
    from affectsr.emotion import load_emotion_classifier
    from affectsr.landmarks.predictor import load_predictor
    from affectsr.models import load_model

    for name, path in broken_weights.items():
        if name == "good":
            continue
        for load in (load_model, load_emotion_classifier, load_predictor):
            with pytest.raises(WeightsError) as e:
                load(str(path))
            msg = str(e.value)
            assert msg.startswith(f"{path}: ") and "\n" not in msg and len(msg) < 400, (name, msg)
    with pytest.raises(WeightsError, match=r"tensor '.*' holds 1 NaN"):
        weights.read_weights(broken_weights["nan_tensor"], "sr")
    with pytest.raises(WeightsError, match="do not fit"):
        load_model(str(broken_weights["wrong_tensors"]))


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err: str, path: Path) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err
    assert any(ln.startswith("error: ") and str(path) in ln for ln in lines), err


@pytest.fixture(scope="module")
def small_face_png(tmp_path_factory, _default_face_session) -> Path:
    return save_image(tmp_path_factory.mktemp("img") / "face.png", resize(_default_face_session, (32, 32)))


def test_damaged_weights_exit_2_from_every_command_that_takes_weights(broken_weights, small_face_png, tmp_path,
                                                                     capsys):
    from affectsr.video.io import write_video

    clip = write_video(tmp_path / "clip.mp4", [np.full((32, 32, 3), 100, np.uint8)] * 2, rate=5)
    for name in ("truncated", "header_len_1e12", "text", "wrong_tensors", "nan_tensor"):
        p = broken_weights[name]
        commands = [
            ["upscale", str(small_face_png), "-o", str(tmp_path / "up"), "--model", str(p)],
            ["demo", "--out", str(tmp_path / "demo"), "--model", str(p)],
            ["video", str(clip), "-o", str(tmp_path / "v" / "out.mp4"), "--model", str(p)],
            ["emotion", str(small_face_png), "--classifier", str(p)],
            ["evaluate", "--model", f"bicubic,{p}", "--data", str(small_face_png.parent), "--scale", "4",
             "--out", str(tmp_path / "ev")],
            ["evaluate-cache", str(p), "--data", str(tmp_path)],
            ["train", f"init={p}", f"out={tmp_path / 'run'}", "steps=1"],
        ]
        for argv in commands:
            code, _out, err = _cli(capsys, *argv)
            assert code == 2, (name, argv[0], err)
            _one_error_line(err, p)
        for folder in ("up", "demo", "v", "ev", "run"):
            assert not (tmp_path / folder).exists(), (name, folder)


def test_export_names_a_damaged_file(broken_weights, tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    for name in ("flipped_header", "bad_config_keys", "nan_tensor"):
        code, _, err = _cli(capsys, "export", "--model", str(broken_weights[name]), "-o", str(tmp_path / "x" / "m.onnx"))
        assert code == 2, err
        _one_error_line(err, broken_weights[name])
        assert not (tmp_path / "x").exists()


# --- broken SR outputs ---------------------------------------------------------------------------------


class Broken(torch.nn.Module):
    """Stand-in SR model whose output is NaN (damaged weights) or one flat colour (a dead network)."""

    scale = 4

    def __init__(self, kind: str):
        super().__init__()
        self.kind, self.name, self.trained = kind, f"broken-{kind}", True

    def forward(self, x, landmarks=None):
        y = torch.nn.functional.interpolate(x, scale_factor=4, mode="nearest")
        return torch.full_like(y, float("nan")) if self.kind == "nan" else torch.zeros_like(y)


@pytest.mark.parametrize("kind", ["nan", "flat"])
def test_a_broken_face_is_never_pasted_it_stays_bicubic_with_a_note(kind, default_face, two_face_image,
                                                                    landmark_detector):
    up = Upscaler(4, Broken(kind), "cpu", detector=landmark_detector)
    res = up(default_face, aligned=True)
    assert np.array_equal(res.image, resize(default_face, (512, 512)))
    assert any(f"broken-{kind} gave" in n and "bicubic" in n for n in res.notes), res.notes
    res = up(two_face_image)
    h, w = two_face_image.shape[:2]
    assert len(res.faces) == 2 and up.broken_faces == 3
    assert np.array_equal(res.image, resize(two_face_image, (w * 4, h * 4)))
    assert sum("gave" in n for n in res.notes) == 1  # one note per image, not per face


def test_broken_outputs_fall_back_in_video_serve_and_evaluate(default_face, landmark_detector, tmp_path):
    from affectsr.video.io import write_video
    from affectsr.video.upscale import upscale_video

    frames = []
    for i in range(3):
        f = np.full((96, 128, 3), (90, 110, 140), np.uint8)
        f[20:76, 30 + 4 * i:86 + 4 * i] = resize(default_face, (56, 56))
        frames.append(f)
    clip = write_video(tmp_path / "face.mp4", frames, rate=5)
    up = Upscaler(4, Broken("nan"), "cpu", detector=landmark_detector)
    rep = upscale_video(clip, tmp_path / "out.mp4", upscaler=up, progress=False)
    assert up.broken_faces >= 1 and any("broken-nan gave" in n for n in rep.notes), rep.notes

    from affectsr.evaluate import run_evaluation
    from affectsr.evaluate import Face

    faces = [Face(id="f0", hr=default_face)]
    r = run_evaluation(faces, {"nan": Broken("nan")}, 4, landmarks="none", progress=False)
    assert r["models"]["nan"]["broken_faces"] == 1 and any("broken-nan gave" in n for n in r["notes"])
    assert np.isfinite(r["models"]["nan"]["psnr"])


def test_serve_shows_a_broken_model_as_bicubic_with_a_note(default_face, tmp_path, monkeypatch):
    from affectsr import serve

    app = serve.ServeApp()
    try:
        monkeypatch.setattr(app, "upscaler", lambda model, s: Upscaler(s, Broken("flat"), "cpu", detector=app.detector))
        path = save_image(tmp_path / "face.png", default_face)
        res = app.process(str(path), serve.model_choices()[0][1], simulate_lr=True, aligned=True)
        assert res.ok and any("broken-flat gave" in n for n in res.notes), res.message
    finally:
        app.close()


# --- closed pipes ------------------------------------------------------------------------------------------


def test_stdout_closed_by_its_reader_is_a_quiet_exit_141():
    """`affectsr models --json | head -c 600`: the reader closed first; no traceback, 128 + SIGPIPE."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    p = subprocess.Popen([sys.executable, "-m", "affectsr", "models", "--json"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    p.stdout.close()  # before the child writes anything: the write must fail with EPIPE
    err = p.stderr.read().decode()
    assert p.wait(timeout=300) == 141
    assert err == "", err


# --- one message per limit --------------------------------------------------------------------------------


def _png_claiming(path: Path, width: int, height: int) -> Path:
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [8000, 10000, 20000, 60000])  # ours; Pillow's warning; Pillow's error (twice)
def test_oversized_images_get_the_projects_one_message(side, tmp_path, recwarn):
    path = _png_claiming(tmp_path / f"big{side}.png", side, side)
    with pytest.raises(ImageReadError) as e:
        read_image(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: image too large (") and f"{side * side} pixels; the limit is 40000000)" in msg
    assert "decompression" not in msg.lower() and "DOS" not in msg
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_oversized_image_message_in_the_cli_and_the_web_demo(tmp_path, capsys):
    from affectsr import serve

    big = _png_claiming(tmp_path / "big.png", 20000, 20000)
    code, _, err = _cli(capsys, "upscale", str(big), "-o", str(tmp_path / "out"), "--model", "affectsr-x4-lite", "-q")
    assert code == 1 and f"error: {big}: image too large (400000000 pixels; the limit is 40000000)" in err, err
    app = serve.ServeApp()
    try:
        res = app.process(str(big), serve.model_choices()[-1][1], name="big.png")
    finally:
        app.close()
    assert not res.ok and res.message == "big.png: image too large (400000000 pixels; the limit is 40000000)"


# --- no empty output folders; the demo's overwrite rule; help from the code --------------------------------


def test_a_failed_input_does_not_create_the_output_folder(tmp_path, capsys, bad_files):
    out = tmp_path / "new" / "deeper"
    code, _, err = _cli(capsys, "upscale", str(bad_files["text_as_png"]), "-o", str(out), "--model",
                        "affectsr-x4-lite", "-q")
    assert code == 1 and "Traceback" not in err
    assert not (tmp_path / "new").exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _cli(capsys, "upscale", str(bad_files["text_as_png"]), "-o", str(blocker / "sub"))
    assert code == 2 and "cannot write there" in err


def test_demo_keeps_an_existing_picture_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "demo"
    code, stdout, err = _cli(capsys, "demo", "--out", str(out), "--model", "affectsr-x4-lite")
    assert code == 0, err
    pic = out / "demo_x4.png"
    before = pic.stat().st_mtime_ns
    code, _, err = _cli(capsys, "demo", "--out", str(out), "--model", "affectsr-x4-lite")
    assert code == 2 and f"error: {pic} exists (use --overwrite to replace it)" in err
    assert pic.stat().st_mtime_ns == before
    code, _, err = _cli(capsys, "demo", "--out", str(out), "--model", "affectsr-x4-lite", "--overwrite")
    assert code == 0 and pic.stat().st_mtime_ns != before
    assert [p.name for p in out.iterdir()] == ["demo_x4.png"]  # no temp file left


def test_help_names_the_real_default_models(capsys):
    for command in ("upscale", "demo", "video"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for s in (4, 8):
            assert f"{default_model(s)} at x{s}" in text, (command, text)
        assert "affectsr-x<scale>" not in text


# --- video: signals, plain errors, the no-face note ----------------------------------------------------------


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory, _default_face_session) -> Path:
    from affectsr.video.io import write_video

    small = resize(_default_face_session, (48, 48))
    frames = []
    for i in range(6):
        f = np.full((96, 128, 3), (90, 110, 140), np.uint8)
        f[20:68, 30 + 3 * i:78 + 3 * i] = small
        frames.append(f)
    return write_video(tmp_path_factory.mktemp("clip") / "face.mp4", frames, rate=6)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


@pytest.mark.parametrize("where", ["model loading", "first frame", "encoder flush"])
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_video_stops_on_a_signal_at_any_point_and_removes_its_files(where, sig, face_clip, tmp_path, capsys,
                                                                   monkeypatch):
    """The signal is sent to this process from inside the phase, so the test knows where it lands."""
    import signal

    from affectsr.video import io, upscale

    signum = getattr(signal, sig)

    owner, name = {"model loading": (upscale, "Upscaler"), "first frame": (upscale, "upscale_frame"),
                   "encoder flush": (io.VideoWriter, "finish")}[where]
    real = getattr(owner, name)

    def signal_then_call(*a, **k):  # a plain function: on VideoWriter it binds as the method, self in a
        os.kill(os.getpid(), signum)
        return real(*a, **k)

    monkeypatch.setattr(owner, name, signal_then_call)
    out = tmp_path / "new" / "out.mp4"
    before = signal.getsignal(signum)
    code, _, err = _cli(capsys, "video", str(face_clip), "-o", str(out), "--model", "affectsr-x4-lite", "-q")
    assert code == 128 + signum, err
    assert "interrupted" in err and "Traceback" not in err
    assert not (tmp_path / "new").exists(), _leftovers(tmp_path)  # no hidden .mp4, no folder
    assert signal.getsignal(signum) is before  # the handlers are put back


def test_video_in_a_real_process_stops_within_2_s_of_sigterm(face_clip, tmp_path):
    """Sent once the hidden output exists (frames are being encoded); 2 s, stretched by the machine's load."""
    import signal
    import time

    out = tmp_path / "o" / "out.mp4"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    p = subprocess.Popen([sys.executable, "-m", "affectsr", "video", str(face_clip), "-o", str(out), "--model",
                          "affectsr-x4-lite", "--no-smooth"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 600
    while not list((tmp_path / "o").glob(".out.*")) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if p.poll() is not None:
        pytest.skip("the run finished before the signal could be sent (a fast machine)")
    sent = time.monotonic()
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    took = time.monotonic() - sent
    allowed = 2.0 * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))  # a shared CPU delays any process
    assert p.returncode == 143, err
    assert took < allowed, f"{took:.2f} s (allowed {allowed:.1f} s at load {os.getloadavg()[0]:.1f})"
    assert "Traceback" not in err.decode()
    assert not (tmp_path / "o").exists(), _leftovers(tmp_path)


def test_a_command_that_swallows_the_interrupt_is_still_ended_by_the_watcher(tmp_path):
    """Native code (or code catching KeyboardInterrupt) that does not return: the grace period ends the process."""
    import signal
    import time

    script = (
        "import os, sys, time, signal\n"
        "from pathlib import Path\n"
        "from affectsr.commands.common import prompt_signals\n"
        f"marker = Path({str(tmp_path / 'cleaned')!r})\n"
        "with prompt_signals(lambda: marker.write_text('x'), grace=0.5):\n"
        "    while True:\n"
        "        try:\n"  # 'ready' from inside the try: a signal right after it is swallowed too (no race)
        "            print('ready', flush=True)\n"
        "            time.sleep(10)\n"
        "        except KeyboardInterrupt:\n"
        "            pass\n"
    )
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline().strip() == b"ready"
    sent = time.monotonic()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and (tmp_path / "cleaned").exists(), err
    assert time.monotonic() - sent < 0.5 + 2.0 * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


def test_video_errors_are_plain_words(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    code, _, err = _cli(capsys, "video", str(bad), "-o", str(tmp_path / "o.mp4"))
    assert code == 2 and err.startswith(f"error: {bad}: not a readable video (")
    assert "Errno" not in err and "1094995529" not in err and "Traceback" not in err
    assert "damaged or not a video" in err


def test_a_video_with_no_face_gets_a_note(tmp_path, capsys):
    from affectsr.video.io import write_video

    ys, xs = np.mgrid[0:48, 0:64]
    clip = write_video(tmp_path / "plain.mp4", [np.dstack([xs * 4, ys * 5, np.full_like(xs, 128)]).astype(np.uint8)] * 3,
                       rate=5)
    code, out, err = _cli(capsys, "video", str(clip), "-o", str(tmp_path / "out.mp4"), "--model", "affectsr-x4-lite",
                          "-q")
    assert code == 0, err
    assert "note: no face found in any frame: the whole video was upscaled bicubically" in err
    assert "0 face track(s)" in out


# --- GIFs: one output rule ---------------------------------------------------------------------------------------


def test_gif_rule_folders_include_gifs_written_as_png_with_a_note(tmp_path, capsys, _default_face_session):
    from affectsr.images import IMAGE_SUFFIXES, WRITABLE_SUFFIXES, iter_image_files, output_suffix

    folder = tmp_path / "in"
    folder.mkdir()
    face = Image.fromarray(resize(_default_face_session, (32, 32)))
    face.save(folder / "still.gif")
    face.save(folder / "photo.jpg")
    frames = [face, face.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert ".gif" in IMAGE_SUFFIXES and ".gif" not in WRITABLE_SUFFIXES
    assert [p.name for p in iter_image_files(folder)] == ["anim.gif", "photo.jpg", "still.gif"]
    assert output_suffix("a.GIF") == (".png", "written as PNG (GIF holds only 256 colours)")
    assert output_suffix("a.jpg") == (".jpg", None) and output_suffix("a.gif", "webp") == (".webp", None)
    assert output_suffix("a.heic")[0] == ".png" and "heic" in output_suffix("a.heic")[1]

    out = tmp_path / "out"
    code, _, err = _cli(capsys, "upscale", str(folder), "-o", str(out), "--model", "affectsr-x4-lite", "-q")
    assert code == 1, err  # the animated GIF is refused, the other two are written
    assert sorted(p.name for p in out.iterdir()) == ["photo.jpg", "still.png"]
    assert f"note: {folder / 'still.gif'}: written as PNG (GIF holds only 256 colours): {out / 'still.png'}" in err
    assert f"error: {folder / 'anim.gif'}: an animated image (2 frames); still images only" in err
    assert "affectsr video anim.gif -o OUT.mp4" in err
    assert Image.open(out / "still.png").size == (128, 128)


def test_serve_download_follows_the_same_rule(tmp_path, _default_face_session):
    from affectsr import serve

    path = tmp_path / "face.gif"
    Image.fromarray(_default_face_session).save(path)
    jpg = tmp_path / "face.jpg"
    Image.fromarray(_default_face_session).save(jpg)
    app = serve.ServeApp()
    try:
        bicubic = serve.model_choices()[-2][1]
        res = app.process(str(path), bicubic, simulate_lr=True)
        assert res.ok and res.sr_path.suffix == ".png"
        assert any("the download is written as PNG (GIF holds only 256 colours)" in n for n in res.notes)
        res = app.process(str(jpg), bicubic, simulate_lr=True)
        assert res.ok and res.sr_path.suffix == ".jpg" and not any("written as" in n for n in res.notes)
    finally:
        app.close()


# --- the web demo's no-face panel ----------------------------------------------------------------------------


def test_web_demo_titles_the_sr_panel_bicubic_when_no_face_is_found(no_face_image, tmp_path, monkeypatch):
    from affectsr import serve

    titles = []
    real = serve.side_by_side
    monkeypatch.setattr(serve, "side_by_side", lambda panels, *a, **k: titles.append([t for t, _ in panels])
                        or real(panels, *a, **k))
    path = save_image(tmp_path / "plain.png", no_face_image)
    app = serve.ServeApp()
    try:
        model = next(v for _, v in serve.model_choices() if not v.startswith("bicubic"))
        res = app.process(str(path), model)
        assert res.ok
        assert titles[-1][2] == "bicubic (no face found)\nx4", titles
        res = app.process(str(save_image(tmp_path / "face.png", resize(_face_scene(), (160, 120)))), model)
        assert res.ok and titles[-1][2] == f"{model}\nx4", (titles, res.message)
    finally:
        app.close()


def _face_scene() -> np.ndarray:
    from affectsr.assets import default_scene

    return default_scene()


# --- progress in logs ---------------------------------------------------------------------------------------------


def test_progress_in_a_log_is_one_line_every_interval_with_rate_and_eta():
    import io
    import time

    from affectsr.progress import LogProgress, progress

    log = io.StringIO()
    bar = progress(range(4), desc="upscale x4", unit="img", file=log, every=0.0)
    assert isinstance(bar, LogProgress)
    with bar:
        for _ in bar:
            time.sleep(0.01)
            bar.set_postfix(faces=2, failed=0)
    lines = log.getvalue().splitlines()
    assert len(lines) == 5  # one per item (every=0) and the totals
    assert lines[1].startswith("upscale x4: 2/4 img (50%), ") and " img/s, " in lines[1] and ", ETA 0:0" in lines[1]
    assert lines[1].endswith("[faces=2, failed=0]") and "ETA" not in lines[-1]
    quiet = io.StringIO()
    with progress(range(3), desc="x", file=quiet, enabled=False) as bar:
        for _ in bar:
            pass
    assert quiet.getvalue() == ""
    slow = io.StringIO()
    with progress(range(3), desc="x", file=slow, every=3600) as bar:
        list(bar)
    assert slow.getvalue() == ""  # short runs print nothing extra


def test_upscale_prints_progress_lines_into_a_log_and_q_silences_them(tmp_path, capsys, monkeypatch,
                                                                      _default_face_session):
    from affectsr import progress

    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    folder = tmp_path / "in"
    for i in range(3):
        save_image(folder / f"{i}.png", resize(_default_face_session, (24, 24)))
    code, _, err = _cli(capsys, "upscale", str(folder), "-o", str(tmp_path / "a"), "--model", "affectsr-x4-lite",
                        "--aligned")
    assert code == 0, err
    assert "upscale x4: 1/3 img (33%)" in err and "upscale x4: 3/3 img (100%)" in err
    code, _, err = _cli(capsys, "upscale", str(folder), "-o", str(tmp_path / "b"), "--model", "affectsr-x4-lite",
                        "--aligned", "-q")
    assert code == 0 and "img/s" not in err


def test_serve_turns_a_weights_error_into_a_message(default_face, tmp_path, monkeypatch):
    from affectsr import serve

    app = serve.ServeApp()
    try:
        def broken(model, s):
            raise WeightsError("/x/affectsr-x4-lite.safetensors", "not a readable safetensors file (header too large)")

        monkeypatch.setattr(app, "upscaler", broken)
        res = app.process(str(save_image(tmp_path / "f.png", default_face)), "affectsr-x4-lite")
        assert not res.ok and res.message == ("/x/affectsr-x4-lite.safetensors: not a readable safetensors file "
                                              "(header too large)")
    finally:
        app.close()
