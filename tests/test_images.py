"""Image I/O: awkward files, every supported input layout, atomic saving and folder scanning."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from affectsr.images import (
    IMAGE_SUFFIXES,
    MAX_INPUT_PIXELS,
    ImageReadError,
    LoadedImage,
    iter_image_files,
    read_image,
    save_image,
    to_rgb_uint8,
)

# --- read_image on awkward files ---------------------------------------------------------


def test_grey_png_gives_three_equal_channels(bad_files: dict[str, Path]) -> None:
    loaded = read_image(bad_files["grey_png"])
    assert isinstance(loaded, LoadedImage)
    assert loaded.rgb.shape == (32, 64, 3) and loaded.rgb.dtype == np.uint8
    assert loaded.mode == "L" and loaded.alpha is None
    assert loaded.path == bad_files["grey_png"]
    assert np.array_equal(loaded.rgb[..., 0], loaded.rgb[..., 1])
    assert np.array_equal(loaded.rgb[..., 0], loaded.rgb[..., 2])
    assert loaded.rgb[0, 1, 0] == 4 and loaded.rgb[0, -1, 0] == 252


def test_rgba_png_keeps_alpha(bad_files: dict[str, Path], default_face: np.ndarray) -> None:
    loaded = read_image(bad_files["rgba_png"])
    assert loaded.mode == "RGBA"
    assert np.array_equal(loaded.rgb, default_face[:32, :48])
    assert loaded.alpha is not None and loaded.alpha.shape == (32, 48) and loaded.alpha.dtype == np.uint8
    assert np.array_equal(loaded.alpha[0], np.arange(48, dtype=np.uint8) * 5)


def test_16bit_grey_png_uses_full_range(bad_files: dict[str, Path]) -> None:
    loaded = read_image(bad_files["grey16_png"])
    assert loaded.mode.startswith("I;16")
    grey = loaded.rgb[..., 0].ravel()
    assert grey.min() == 0 and grey.max() == 255  # PIL's own convert("L") would clip most of it to 255
    assert np.all(np.diff(grey.astype(int)) >= 0)
    source = np.asarray(Image.open(bad_files["grey16_png"])).astype(np.int64).ravel()
    assert np.array_equal(grey, np.rint(source / 257.0).astype(np.uint8))


def test_1x1_png(bad_files: dict[str, Path]) -> None:
    loaded = read_image(bad_files["tiny_png"])
    assert loaded.rgb.shape == (1, 1, 3)
    assert loaded.rgb[0, 0].tolist() == [10, 20, 30]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("corrupt_jpeg", "not a readable image"),
        ("text_as_png", "not a readable image"),
        ("huge_png", "too large"),
        ("large_png", "too large"),
        ("empty_png", "empty"),
        ("empty_dir", "directory"),
    ],
)
def test_unreadable_files_raise_one_line_errors(bad_files: dict[str, Path], name: str, reason: str) -> None:
    path = bad_files[name]
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert path.name in message and reason in message
    assert "\n" not in message
    assert isinstance(info.value, ValueError)


def test_huge_header_is_refused_without_decoding(bad_files: dict[str, Path]) -> None:
    assert bad_files["huge_png"].stat().st_size < 1000
    start = time.perf_counter()
    with pytest.raises(ImageReadError):
        read_image(bad_files["huge_png"])
    with pytest.raises(ImageReadError, match="limit is"):
        read_image(bad_files["large_png"])  # our own check: PIL alone would try to decode this one
    assert time.perf_counter() - start < 1.0


def test_max_pixels_is_checked(bad_files: dict[str, Path]) -> None:
    assert MAX_INPUT_PIXELS == 40_000_000
    assert read_image(bad_files["grey_png"], max_pixels=32 * 64).rgb.shape == (32, 64, 3)
    with pytest.raises(ImageReadError, match="too large"):
        read_image(bad_files["grey_png"], max_pixels=32 * 64 - 1)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="nope.png"):
        read_image(tmp_path / "nope.png")


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    loaded = read_image(path)
    assert loaded.rgb.shape == (40, 20, 3)
    assert loaded.rgb[:20].mean() > 200 and loaded.rgb[20:].mean() < 50  # white half now on top


# --- to_rgb_uint8 -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I;16B", "I", "F", "CMYK"])
def test_to_rgb_uint8_accepts_every_pil_mode(mode: str, default_face: np.ndarray) -> None:
    image = Image.fromarray(default_face[:16, :24])
    if mode in ("I;16", "I;16B"):
        raw = np.full((16, 24), 65535, dtype=">u2" if mode == "I;16B" else "<u2")
        image = Image.frombytes(mode, (24, 16), raw.tobytes())
    elif mode == "I":
        image = Image.fromarray(np.full((16, 24), 65535, dtype=np.int32))
    elif mode == "F":
        image = Image.fromarray(np.full((16, 24), 1.0, dtype=np.float32))
    else:
        image = image.convert(mode)
    assert image.mode == mode
    loaded = to_rgb_uint8(image)
    assert loaded.rgb.shape == (16, 24, 3) and loaded.rgb.dtype == np.uint8
    assert loaded.mode == mode
    assert (loaded.alpha is not None) == (mode in ("LA", "RGBA"))
    if mode in ("I;16", "I;16B", "I", "F"):
        assert np.all(loaded.rgb == 255)
    if mode in ("RGB", "RGBA"):
        assert np.array_equal(loaded.rgb, default_face[:16, :24])


def test_palette_transparency_becomes_alpha() -> None:
    image = Image.new("P", (4, 3), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.putpixel((1, 1), 1)
    image.info["transparency"] = 0
    loaded = to_rgb_uint8(image)
    assert loaded.alpha is not None
    assert loaded.alpha[1, 1] == 255 and loaded.alpha[0, 0] == 0
    assert loaded.rgb[1, 1].tolist() == [255, 0, 0]


@pytest.mark.parametrize(
    ("array", "expected_grey"),
    [
        (np.array([[0, 128, 255]], dtype=np.uint8), [0, 128, 255]),
        (np.array([[[0], [128], [255]]], dtype=np.uint8), [0, 128, 255]),
        (np.array([[0, 128, 129, 257, 65535]], dtype=np.uint16), [0, 0, 1, 1, 255]),
        (np.array([[False, True]]), [0, 255]),
        (np.array([[-0.5, 0.0, 0.5, 1.0, 1.2, np.nan]], dtype=np.float64), [0, 0, 128, 255, 255, 0]),
        (np.array([[0.0, 1.0]], dtype=np.float32), [0, 255]),
    ],
)
def test_to_rgb_uint8_grey_arrays(array: np.ndarray, expected_grey: list[int]) -> None:
    loaded = to_rgb_uint8(array)
    assert loaded.rgb.dtype == np.uint8 and loaded.rgb.shape == (1, len(expected_grey), 3)
    assert loaded.alpha is None
    for channel in range(3):
        assert loaded.rgb[0, :, channel].tolist() == expected_grey


def test_to_rgb_uint8_colour_arrays(default_face: np.ndarray) -> None:
    rgb = to_rgb_uint8(default_face)
    assert rgb.mode == "RGB" and rgb.alpha is None and np.array_equal(rgb.rgb, default_face)
    rgb.rgb[0, 0] = 0
    assert not np.shares_memory(rgb.rgb, default_face)

    rgba = np.dstack([default_face, np.full(default_face.shape[:2], 7, np.uint8)])
    loaded = to_rgb_uint8(rgba)
    assert loaded.mode == "RGBA" and np.array_equal(loaded.rgb, default_face)
    assert loaded.alpha is not None and np.all(loaded.alpha == 7)

    wide = default_face.astype(np.uint16) * 257
    assert np.array_equal(to_rgb_uint8(wide).rgb, default_face)
    unit = default_face.astype(np.float32) / 255.0
    assert np.array_equal(to_rgb_uint8(unit).rgb, default_face)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4), dtype=np.int64),
        np.zeros((4, 4, 3), dtype=np.int16),
        np.zeros((4, 4, 5), dtype=np.uint8),
        np.zeros((4,), dtype=np.uint8),
        np.zeros((2, 4, 4, 3), dtype=np.uint8),
        np.zeros((0, 4, 3), dtype=np.uint8),
        [[0, 1], [2, 3]],
        "image.png",
    ],
)
def test_to_rgb_uint8_rejects_unusable_inputs(bad: object) -> None:
    with pytest.raises(ImageReadError):
        to_rgb_uint8(bad)


# --- save_image ---------------------------------------------------------------------------


def test_save_png_round_trips_exactly(tmp_path: Path, default_face: np.ndarray) -> None:
    path = save_image(tmp_path / "nested" / "out.png", default_face)
    assert path == tmp_path / "nested" / "out.png"
    loaded = read_image(path)
    assert np.array_equal(loaded.rgb, default_face) and loaded.alpha is None

    alpha = np.tile(np.arange(128, dtype=np.uint8) * 2, (128, 1))
    with_alpha = save_image(tmp_path / "alpha.png", default_face, alpha=alpha)
    loaded = read_image(with_alpha)
    assert np.array_equal(loaded.rgb, default_face)
    assert loaded.alpha is not None and np.array_equal(loaded.alpha, alpha)


def test_save_refuses_to_overwrite(tmp_path: Path, default_face: np.ndarray) -> None:
    path = save_image(tmp_path / "out.png", default_face)
    with pytest.raises(FileExistsError, match="out.png"):
        save_image(path, np.zeros_like(default_face))
    assert np.array_equal(read_image(path).rgb, default_face)  # untouched

    save_image(path, np.zeros_like(default_face), overwrite=True)
    assert not read_image(path).rgb.any()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no temp files left behind


def test_save_respects_umask(tmp_path: Path, default_face: np.ndarray) -> None:
    reference = tmp_path / "reference.txt"
    reference.write_text("created with the process umask")
    saved = save_image(tmp_path / "out.png", default_face)
    assert saved.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777


def test_save_formats_and_alpha(tmp_path: Path, default_face: np.ndarray) -> None:
    alpha = np.full(default_face.shape[:2], 100, dtype=np.uint8)
    formats = [(".jpg", False), (".jpeg", False), (".bmp", False), (".webp", True), (".tif", True)]
    for suffix, keeps_alpha in formats:
        loaded = read_image(save_image(tmp_path / f"out{suffix}", default_face, alpha=alpha))
        assert loaded.rgb.shape == default_face.shape
        assert np.abs(loaded.rgb.astype(int) - default_face).mean() < 4
        assert (loaded.alpha is not None) == keeps_alpha, suffix
        if keeps_alpha:
            assert np.all(loaded.alpha == 100)


def test_save_rejects_unknown_suffix_and_bad_alpha(tmp_path: Path, default_face: np.ndarray) -> None:
    with pytest.raises(ValueError, match="suffix"):
        save_image(tmp_path / "out.gifx", default_face)
    with pytest.raises(ValueError, match="alpha"):
        save_image(tmp_path / "out.png", default_face, alpha=np.zeros((3, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


# --- iter_image_files ---------------------------------------------------------------------


def test_iter_image_files_walks_folders(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for relative in [
        "b.png",
        "a.jpg",
        "notes.txt",
        ".hidden.png",
        "sub/c.PNG",
        "sub/deeper/e.webp",
        ".cache/d.png",
        "sub/.x.jpg",
    ]:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(b"")
    explicit = tmp_path / "readme.txt"
    explicit.write_text("not an image, but asked for explicitly")

    found = iter_image_files([root, explicit])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "photos/a.jpg",
        "photos/b.png",
        "photos/sub/c.PNG",
        "photos/sub/deeper/e.webp",
        "readme.txt",
    ]
    first_explicit = iter_image_files([root / "b.png", root])
    assert first_explicit[0] == root / "b.png" and len(first_explicit) == 4  # listed once
    assert {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif"} <= IMAGE_SUFFIXES


def test_iter_image_files_empty_and_missing(bad_files: dict[str, Path], tmp_path: Path) -> None:
    assert iter_image_files([bad_files["empty_dir"]]) == []
    assert iter_image_files([]) == []
    with pytest.raises(FileNotFoundError, match="missing_folder"):
        iter_image_files([tmp_path / "missing_folder"])


def test_float_arrays_in_0_255_are_refused() -> None:
    """A 0..255 float image would otherwise come out white: refuse it with the fix in the message."""
    with pytest.raises(ImageReadError, match="divide by 255"):
        to_rgb_uint8(np.full((4, 4, 3), 200.0, dtype=np.float32))


def test_grid_strength_sees_the_input_pixel_grid():
    """A nearest-neighbour x8 upscale steps only at the LR pixel borders; bicubic is smooth across them; a
    one-pixel shift of the blocks moves the steps off the grid (so the measure looks at the grid, not at edges)."""
    from affectsr.assets import default_face
    from affectsr.images import grid_strength, resize

    face = default_face(128)
    lr = resize(face, (16, 16))
    nearest = np.repeat(np.repeat(lr, 8, axis=0), 8, axis=1)
    smooth = resize(lr, (128, 128))
    assert grid_strength(nearest, 8) == float("inf")
    assert 0.8 < grid_strength(smooth, 8) < 1.4
    blocky = (0.7 * smooth + 0.3 * nearest).astype(np.uint8)
    assert grid_strength(blocky, 8) > 1.5 * grid_strength(smooth, 8)
    shifted = np.roll(blocky, 3, axis=(0, 1))
    assert grid_strength(shifted, 8) < grid_strength(blocky, 8) / 1.5
    assert grid_strength(np.zeros((16, 16, 3), np.uint8), 8) == 1.0
