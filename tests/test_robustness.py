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
