"""The command line, run as a user runs it: in a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import affectsr
from affectsr.models.presets import PACKAGE_WEIGHTS

FAST = ["--model", "affectsr-x4-lite"]  # untrained lite preset: same pipeline, a fraction of the time


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "affectsr", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_version_and_help():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"affectsr {affectsr.__version__}"
    r = run()
    assert r.returncode == 0 and "upscale" in r.stdout and "demo" in r.stdout


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("affectsr")
    if not script.exists():
        pytest.skip("package not installed in this environment (pip install -e .)")
    r = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "affectsr" in r.stdout


def test_models_lists_presets_with_training_state():
    r = run("models", "--json")
    assert r.returncode == 0, r.stderr
    rows = {m["name"]: m for m in json.loads(r.stdout)}
    assert {"affectsr-x4", "affectsr-x8", "affectsr-x4-lite", "affectsr-x8-lite"} <= set(rows)
    for name, row in rows.items():
        # trained = a shipped weights file, or (Real-ESRGAN) weights rebuilt from a pinned pip package
        shipped = (Path(affectsr.__file__).parent / "weights" / f"{name}.safetensors").is_file() or name in PACKAGE_WEIGHTS
        assert row["trained"] is shipped
    table = run("models").stdout
    assert "affectsr-x8-lite" in table and ("untrained" in table or "trained" in table)


def test_demo_without_arguments_writes_a_side_by_side(tmp_path):
    r = run("demo", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "affectsr-demo" / "demo_x4.png"
    assert out.is_file() and str(out.name) in r.stdout
    img = Image.open(out)
    assert img.width == 5 * 128 and img.height > 128  # five 128 px panels plus a label strip
    assert "landmarks found on the LR face: yes" in r.stdout


@pytest.mark.slow
def test_upscale_folder_with_bad_files(tmp_path, bad_files, two_face_image):
    src = bad_files["grey_png"].parent
    Image.fromarray(two_face_image).save(src / "two_faces.png")
    out = tmp_path / "out"
    r = run("upscale", str(src), "-o", str(out), "-q", *FAST)
    assert r.returncode == 1  # some inputs are broken
    err = r.stderr
    for name in ("corrupt.jpg", "notes.png", "huge.png", "empty.png"):
        assert sum(name in line and line.startswith("error:") for line in err.splitlines()) == 1, err
    assert "Traceback" not in err
    for good in ("two_faces.png", "grey.png", "rgba.png", "grey16.png", "tiny.png"):
        assert (out / good).is_file(), err
    assert Image.open(out / "two_faces.png").size == (1600, 880)
    assert Image.open(out / "rgba.png").mode == "RGBA"

    # a second run refuses to replace outputs, --overwrite replaces them
    before = (out / "two_faces.png").stat().st_mtime_ns
    r2 = run("upscale", str(src / "two_faces.png"), "-o", str(out), "-q", *FAST)
    assert r2.returncode == 1 and "--overwrite" in r2.stderr
    assert (out / "two_faces.png").stat().st_mtime_ns == before
    r3 = run("upscale", str(src / "two_faces.png"), "-o", str(out), "-q", "--overwrite", *FAST)
    assert r3.returncode == 0, r3.stderr


def test_upscale_never_writes_over_inputs(tmp_path, default_face):
    src = tmp_path / "faces"
    src.mkdir()
    Image.fromarray(default_face).save(src / "face.png")
    before = (src / "face.png").read_bytes()
    r = run("upscale", str(src), "-o", str(src), "--overwrite", "-q", *FAST)
    assert r.returncode != 0 and "input" in r.stderr
    assert (src / "face.png").read_bytes() == before


def test_upscale_empty_folder_and_missing_path(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run("upscale", str(empty), str(tmp_path / "nope.png"), "-o", str(tmp_path / "o"), *FAST)
    assert r.returncode == 1
    assert "no images" in r.stderr and "no such file" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_upscale_aligned_x8(tmp_path, default_face):
    lr = np.asarray(Image.fromarray(default_face).resize((16, 16), Image.BICUBIC))
    Image.fromarray(lr).save(tmp_path / "face16.png")
    r = run("upscale", str(tmp_path / "face16.png"), "-o", str(tmp_path / "o"), "--aligned", "--scale", "8",
            "--model", "affectsr-x8-lite", "-q")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "o" / "face16.png").size == (128, 128)


@pytest.mark.slow
def test_output_folder_inside_input_folder_and_clear_option_errors(tmp_path, default_face):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(default_face).resize((64, 64)).save(src / "a.png")
    out = src / "out"
    assert run("upscale", str(src), "-o", str(out), "-q", *FAST).returncode == 0
    r = run("upscale", str(src), str(src / "a.png"), "-o", str(out), "-q", "--overwrite", *FAST)
    assert r.returncode == 0, r.stderr  # its own outputs are not re-read; a file named twice is fine
    assert not (out / "out").exists()
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for args in (["-o", str(blocker)], ["-o", str(tmp_path / "o"), "--device", "nonsense"],
                 ["-o", str(tmp_path / "o"), "--model", str(tmp_path / "missing.safetensors")]):
        r = run("upscale", str(src / "a.png"), *args)
        assert r.returncode != 0 and r.stderr.startswith("error:") and "Traceback" not in r.stderr, r.stderr
    r = run("demo", "--model", "nope", "--out", str(tmp_path / "d"))
    assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr
