"""affectsr.serve: the processing behind the web demo, its limits and messages, and a real headless-browser run."""
from __future__ import annotations

import argparse
import importlib.util
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from affectsr.emotion import EMOTIONS
from affectsr.emotion.faces import classify_crops
from affectsr.images import read_image, resize
from affectsr.models import PRESETS
from affectsr.models.presets import weights_path
from affectsr.commands.serve import add_parser
from affectsr.commands.serve import run as cmd_serve
from affectsr.serve import GRADIO_HINT, ServeApp, ServeConfig, model_choices, serve

TOOL = Path(__file__).resolve().parents[1] / "tools" / "serve_screenshot.py"


def _load_tool():
    spec = importlib.util.spec_from_file_location("serve_screenshot", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def app():
    a = ServeApp()
    yield a
    a.close()


@pytest.fixture
def face_png(tmp_path: Path, default_face: np.ndarray) -> Path:
    """The bundled face at 64 px (a quarter of the SR work of 128 px; MediaPipe still finds it)."""
    path = tmp_path / "bundled-face.png"
    Image.fromarray(resize(default_face, (64, 64))).save(path)
    return path


# --- processing ------------------------------------------------------------------------------


def test_bundled_face_simulated_gives_every_column_and_probabilities(app: ServeApp, default_face: np.ndarray):
    res = app.process(app.example_path(), "affectsr-x4-lite", simulate_lr=True, aligned=True)
    assert res.ok, res.message
    assert res.columns == ["LR", "bicubic", "affectsr-x4-lite", "original"]
    assert res.labels == EMOTIONS
    assert res.sr.shape == (128, 128, 3)
    saved = read_image(res.sr_path).rgb  # the download is the SR image itself, as PNG (lossless)
    assert res.sr_path.suffix == ".png" and np.array_equal(saved, res.sr)
    assert res.comparison.width == 4 * (res.comparison.width // 4) and res.comparison.height > 128
    (face,) = res.faces
    for col in res.columns:
        p = face.probabilities[col]
        assert p.shape == (len(EMOTIONS),) and abs(float(p.sum()) - 1) < 1e-4
    # "original" is the upload, "LR" the upload shrunk by the scale: the same probabilities as classifying those
    want = classify_crops(app.classifier, [default_face, resize(default_face, (32, 32))])
    np.testing.assert_allclose(face.probabilities["original"], want[0], atol=1e-5)
    np.testing.assert_allclose(face.probabilities["LR"], want[1], atol=1e-5)
    fig = res.figure()
    assert len([ax for ax in fig.axes if ax.patches]) == 1  # one face, one bar chart


def test_upload_is_the_lr_input_without_simulation(app: ServeApp, face_png: Path):
    res = app.process(face_png, "affectsr-x4-lite", simulate_lr=False, aligned=False)
    assert res.ok, res.message
    assert res.sr.shape == (256, 256, 3)
    assert "original" not in res.columns
    assert len(res.faces) >= 1 and res.faces[0].box is not None  # the face was detected on the 64 px upload
    assert "face(s) found" in res.message


def test_bicubic_choice_follows_its_scale(app: ServeApp, default_face: np.ndarray, face_png: Path):
    res = app.process(face_png, "bicubic-x8", simulate_lr=True, aligned=True)
    assert res.ok, res.message
    assert res.columns == ["LR", "bicubic", "original"]
    original = read_image(face_png).rgb
    assert np.array_equal(res.sr, resize(resize(original, (8, 8)), (64, 64)))


def test_upscalers_are_kept_in_a_small_lru(app: ServeApp, face_png: Path, monkeypatch):
    monkeypatch.setattr(app, "lru_size", 1)
    assert app.process(face_png, "affectsr-x4-lite", True, True).ok
    assert app.process(face_png, "affectsr-x8-lite", True, True).ok
    assert app.cached_upscalers == [("affectsr-x8-lite", 8)]


def test_close_removes_the_temporary_folder():
    other = ServeApp()
    path = other.example_path()
    assert path.is_file() and other.workdir in path.parents
    other.close()
    assert not other.workdir.exists()


@pytest.mark.parametrize("kind", ["corrupt_jpeg", "text_as_png", "empty_png", "huge_png"])
def test_bad_files_give_a_one_line_message(app: ServeApp, bad_files: dict, kind: str):
    res = app.process(bad_files[kind], "affectsr-x4-lite", simulate_lr=True)
    assert not res.ok and res.sr_path is None
    assert res.message.startswith(bad_files[kind].name + ":") and "\n" not in res.message
    assert str(bad_files[kind].parent) not in res.message  # the server's temp path is not shown


def test_missing_file_and_unknown_model_give_messages(app: ServeApp, face_png: Path):
    assert "upload one" in app.process(None, "affectsr-x4-lite").message
    assert "unknown model" in app.process(face_png, "no-such-model").message


def test_upload_size_limit(app: ServeApp, face_png: Path, monkeypatch):
    monkeypatch.setattr(app, "config", ServeConfig(max_upload_mb=0.001))  # 1 KiB; the PNG is several
    res = app.process(face_png, "bicubic-x4")
    assert not res.ok and "over the 0.001 MB upload limit" in res.message


def test_large_output_is_shrunk_with_a_note(app: ServeApp, face_png: Path, monkeypatch):
    monkeypatch.setattr(app, "config", ServeConfig(max_output_pixels=128 * 128))
    res = app.process(face_png, "bicubic-x4", simulate_lr=False, aligned=True)  # 64 px x4 = 256 px: over
    assert res.ok and res.sr.shape[:2] == (128, 128)
    assert any("shrunk" in n for n in res.notes)
    sim = app.process(face_png, "bicubic-x4", simulate_lr=True, aligned=True)  # the output is the 64 px original
    assert sim.ok and sim.sr.shape[:2] == (64, 64) and not sim.notes


def test_ui_callback_turns_errors_into_a_status(app: ServeApp, bad_files: dict):
    with pytest.warns(UserWarning, match="not a readable image"):  # gr.Warning outside a request is a warning
        status, picture, plot, download = app.run_ui(str(bad_files["text_as_png"]), "affectsr-x4-lite", False, False)
    assert status.startswith("**Error:**") and picture is None and plot is None and download is None


def test_model_menu_lists_trained_presets_and_bicubic():
    values = [v for _, v in model_choices()]
    assert {"affectsr-x4-lite", "affectsr-x8-lite", "bicubic-x4", "bicubic-x8"} <= set(values)
    for name in PRESETS:  # untrained presets (random weights) are never offered
        assert (name in values) == (weights_path(name) is not None)


# --- command line ----------------------------------------------------------------------------


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_parser(p.add_subparsers(dest="command"))
    return p.parse_args(["serve", *argv])


def test_parser_defaults():
    args = _args()
    assert (args.port, args.host, args.max_upload_mb, args.func) == (7860, "127.0.0.1", 20.0, cmd_serve)


def test_busy_port_is_a_clear_error(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert cmd_serve(_args("--port", str(port))) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "already in use" in err and err.count("\n") == 1


def test_bad_limits_and_missing_gradio(capsys, monkeypatch):
    assert cmd_serve(_args("--max-upload-mb", "0")) == 2
    assert cmd_serve(_args("--port", "70000")) == 2
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    assert cmd_serve(_args("--port", "1")) == 2
    assert GRADIO_HINT in capsys.readouterr().err


# --- in a real browser -----------------------------------------------------------------------


@pytest.mark.slow
def test_browser_upload_and_result(tmp_path: Path, face_png: Path, monkeypatch):
    tool = _load_tool()
    if (why := tool.browser_missing()) is not None:
        pytest.skip(why)
    monkeypatch.delenv("GRADIO_ANALYTICS_ENABLED", raising=False)
    port = tool.free_port()
    demo = serve(port, block=False)
    try:
        assert demo.analytics_enabled is False and not demo.share
        driver = tool.chrome(tmp_path / "profile")
        try:
            src = tool.upscale_in_browser(driver, f"http://127.0.0.1:{port}/", face_png, timeout=60)
            status = driver.find_element("css selector", "#status").text
            fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
            driver.save_screenshot(str(tmp_path / "serve.png"))
        finally:
            driver.quit()
    finally:
        demo.close()
    assert src.startswith(("http://", "data:image/")) and len(src) > 20
    assert "face(s) found" in status and "Error" not in status
    assert (tmp_path / "serve.png").stat().st_size > 10_000
    local = f"http://127.0.0.1:{port}/"
    assert fetched and [u for u in fetched if not u.startswith((local, "data:", "blob:"))] == []  # nothing off-machine
