"""Shared pytest fixtures: bundled test faces, awkward image files and one shared landmark detector."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from affectsr.assets import default_face as _bundled_face
from affectsr.landmarks import LandmarkDetector

# --- images -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _default_face_session() -> np.ndarray:
    face = _bundled_face(128)
    face.setflags(write=False)
    return face


@pytest.fixture
def default_face(_default_face_session: np.ndarray) -> np.ndarray:
    """128 x 128 x 3 uint8 crop of the astronaut's face (a fresh, writable copy per test)."""
    return _default_face_session.copy()


@pytest.fixture
def two_face_image(_default_face_session: np.ndarray) -> np.ndarray:
    """220 x 400 x 3 uint8: the default face and its mirror image side by side on plain grey."""
    canvas = np.full((220, 400, 3), 128, dtype=np.uint8)
    canvas[46:174, 40:168] = _default_face_session
    canvas[46:174, 232:360] = _default_face_session[:, ::-1]
    return canvas


@pytest.fixture
def no_face_image() -> np.ndarray:
    """240 x 320 x 3 uint8 smooth colour gradient: nothing a face detector could fire on."""
    ys, xs = np.mgrid[0:240, 0:320].astype(np.float32)
    rgb = np.stack([xs / 319.0, ys / 239.0, 1.0 - (xs + ys) / 558.0], axis=-1)
    return np.rint(rgb * 255.0).astype(np.uint8)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_claiming_size(width: int, height: int) -> bytes:
    """A few hundred bytes of PNG whose header claims width x height RGB; the pixel data is a stub."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


@pytest.fixture
def bad_files(tmp_path: Path, _default_face_session: np.ndarray) -> dict[str, Path]:
    """Awkward inputs for the reader, by name; see each entry for what read_image should do with it."""
    folder = tmp_path / "bad"
    folder.mkdir()
    files: dict[str, Path] = {}

    # Corrupt JPEG: real headers, then the scan data is cut short and followed by garbage.
    buffer = io.BytesIO()
    Image.fromarray(_default_face_session).save(buffer, format="JPEG", quality=90)
    jpeg = buffer.getvalue()
    start_of_scan = jpeg.index(b"\xff\xda")
    files["corrupt_jpeg"] = folder / "corrupt.jpg"
    files["corrupt_jpeg"].write_bytes(jpeg[: start_of_scan + 40] + b"\x13\x37" * 50)

    files["text_as_png"] = folder / "notes.png"
    files["text_as_png"].write_text("this is not an image\n")

    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (32, 1))  # 32 x 64, L
    files["grey_png"] = folder / "grey.png"
    Image.fromarray(grey).save(files["grey_png"])

    rgba = np.dstack([_default_face_session[:32, :48], np.tile(np.arange(48, dtype=np.uint8) * 5, (32, 1))])
    files["rgba_png"] = folder / "rgba.png"
    Image.fromarray(rgba).save(files["rgba_png"])

    grey16 = np.linspace(0, 65535, 32 * 64).round().astype(np.uint16).reshape(32, 64)
    files["grey16_png"] = folder / "grey16.png"
    Image.fromarray(grey16).save(files["grey16_png"])  # PIL mode I;16

    files["tiny_png"] = folder / "tiny.png"
    Image.fromarray(np.array([[[10, 20, 30]]], dtype=np.uint8)).save(files["tiny_png"])

    files["huge_png"] = folder / "huge.png"  # claims 60000 x 60000 (3.6 gigapixels)
    files["huge_png"].write_bytes(_png_claiming_size(60000, 60000))

    files["large_png"] = folder / "large.png"  # 48 Mpx: over MAX_INPUT_PIXELS, under PIL's own bomb limit
    files["large_png"].write_bytes(_png_claiming_size(8000, 6000))

    files["empty_png"] = folder / "empty.png"
    files["empty_png"].write_bytes(b"")

    files["empty_dir"] = folder / "empty_dir"
    files["empty_dir"].mkdir()
    return files


# --- landmarks --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def landmark_detector() -> Iterator[LandmarkDetector]:
    """One MediaPipe detector for the whole session (building the graphs is the slow part)."""
    with LandmarkDetector() as detector:
        yield detector


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a module of tiny-network tests (ONNX Runtime follows torch's count): on a
    2-core machine shared with other jobs, one thread is faster than two fighting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
