"""Robust image I/O for the pipeline and the CLI.

Everything that reads pixels goes through :func:`to_rgb_uint8` so the rest of
the package only ever sees ``H x W x 3`` uint8 RGB (plus an optional alpha
plane), whatever the user handed us. Reading refuses oversized and broken files
with one-line :class:`ImageReadError` messages instead of PIL tracebacks, and
writing is atomic so an interrupted run never leaves half-written outputs.
"""

from __future__ import annotations

import os
import re
import secrets
import struct
import warnings
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic import publish_new

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_INPUT_PIXELS",
    "WRITABLE_SUFFIXES",
    "ImageReadError",
    "LoadedImage",
    "bicubic_down",
    "colour_tint",
    "grey_copy",
    "grid_strength",
    "iter_image_files",
    "output_suffix",
    "read_image",
    "resize",
    "save_image",
    "to_rgb_uint8",
    "too_large_message",
]

def colour_tint(rgb: np.ndarray) -> float:
    """Mean |R - G| + |B - G| of an H x W x 3 image, in levels: 0 for a grey image."""
    c = rgb.astype(np.float64)
    return float(np.mean(np.abs(c[..., 0] - c[..., 1]) + np.abs(c[..., 2] - c[..., 1])))


def grid_strength(rgb: np.ndarray, period: int) -> float:
    """How much an upscaled image steps at every ``period``-th pixel border (the input's pixel grid) compared with
    its other borders: mean |luma step| across the grid lines over the mean elsewhere, both directions.

    A smooth upscale gives about 1 to 1.3 (bicubic x8 of the bundled 16 px face: 1.24), a blocky one more
    (nearest: infinite, the x8-lite of 2026-11-28: 1.71); issue 12's "no grid" on the demo face is
    ``grid_strength(sr) <= 1.1 * grid_strength(bicubic)``. Why by hand: no image library measures this.
    """
    y = rgb.astype(np.float64).mean(axis=2) if rgb.ndim == 3 else rgb.astype(np.float64)
    dx, dy = np.abs(np.diff(y, axis=1)), np.abs(np.diff(y, axis=0))
    on_x, on_y = np.arange(1, y.shape[1]) % period == 0, np.arange(1, y.shape[0]) % period == 0
    on = np.concatenate([dx[:, on_x].ravel(), dy[on_y, :].ravel()]).mean()
    off = np.concatenate([dx[:, ~on_x].ravel(), dy[~on_y, :].ravel()]).mean()
    return float(on / off) if off > 0 else float("inf") if on > 0 else 1.0


def grey_copy(rgb: np.ndarray) -> np.ndarray:
    """An H x W x 3 uint8 photo in greyscale (PIL's 'L', ITU-R 601 luma), kept H x W x 3."""
    return np.repeat(np.asarray(Image.fromarray(rgb).convert("L"))[..., None], 3, axis=2)


MAX_INPUT_PIXELS: int = 40_000_000
"""Inputs with more pixels are refused before decoding (about 120 MB as RGB)."""

# Suffix -> (PIL format, keeps alpha): the formats written (and read).
_FORMATS: dict[str, tuple[str, bool]] = {
    ".png": ("PNG", True),
    ".jpg": ("JPEG", False),
    ".jpeg": ("JPEG", False),
    ".webp": ("WEBP", True),
    ".bmp": ("BMP", False),
    ".tif": ("TIFF", True),
    ".tiff": ("TIFF", True),
}

WRITABLE_SUFFIXES: frozenset[str] = frozenset(_FORMATS)
"""Lower-case suffixes :func:`save_image` writes."""

IMAGE_SUFFIXES: frozenset[str] = WRITABLE_SUFFIXES | {".gif"}
"""Lower-case suffixes treated as images when scanning folders: the written ones, and GIF (read, written as PNG)."""

# Everything PIL raises for files it cannot parse or decode.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes UnidentifiedImageError and "image file is truncated"
    SyntaxError,  # some plugins signal malformed headers this way
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)


class ImageReadError(ValueError):
    """Raised for anything that is not a usable image; message names the file and the reason, one line."""


@dataclass
class LoadedImage:
    """Decoded pixels in the one layout the package works with, plus what we know of the source."""

    rgb: np.ndarray  # H x W x 3, uint8, RGB
    alpha: np.ndarray | None  # H x W uint8 if the source had an alpha channel / transparency, else None
    mode: str  # PIL mode of the source, e.g. "L", "RGBA", "I;16", "RGB"
    path: Path | None = None


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _channel_to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale one dtype's natural range onto 0..255, so 16-bit and float data keep their full contrast."""
    kind = values.dtype.kind
    if values.dtype == np.uint8:
        return values
    if kind == "b":
        return values.astype(np.uint8) * np.uint8(255)
    if kind == "u" and values.dtype.itemsize == 2:
        # x / 257 maps 0..65535 exactly onto 0..255; +128 // 257 rounds to nearest.
        return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if kind == "f":
        clean = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        if clean.size and clean.max() > 1.5:  # 0..255 floats would silently turn white; mild overshoot is clipped
            raise ImageReadError(f"float images must be in [0, 1]; got values up to {clean.max():.4g} "
                                 f"(divide by 255, or pass uint8)")
        return np.rint(np.clip(clean, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ImageReadError(
        f"unsupported pixel dtype {values.dtype}; expected uint8, uint16, bool or float in [0, 1]"
    )


_GREY_MODE_BY_KIND = {"b": "1", "u1": "L", "u2": "I;16", "f": "F"}


def _array_mode(array: np.ndarray, channels: int) -> str:
    """A PIL-like mode name for a numpy input, for messages and LoadedImage.mode."""
    kind = array.dtype.kind
    key = kind if kind in "bf" else f"{kind}{array.dtype.itemsize}"
    if channels == 1:
        return _GREY_MODE_BY_KIND.get(key, str(array.dtype))
    base = {2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    return base if key == "u1" else f"{base};{array.dtype.name}"


def _from_array(array: np.ndarray, mode: str | None = None) -> LoadedImage:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        channels = 1
    elif array.ndim == 3 and array.shape[2] in (2, 3, 4):
        channels = array.shape[2]
    else:
        raise ImageReadError(
            f"unsupported array shape {array.shape}; expected H x W, H x W x 1, H x W x 3 or H x W x 4"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageReadError(f"image has zero size ({array.shape[1]} x {array.shape[0]})")
    if mode is None:
        mode = _array_mode(array, channels)
    pixels = _channel_to_uint8(array)
    if channels == 1:
        rgb = np.repeat(pixels[:, :, None], 3, axis=2)
        alpha = None
    elif channels == 2:
        rgb = np.repeat(pixels[:, :, :1], 3, axis=2)
        alpha = pixels[:, :, 1]
    else:
        rgb = pixels[:, :, :3]
        alpha = pixels[:, :, 3] if channels == 4 else None
    # Never hand back (a view of) the caller's buffer: callers may modify the result.
    rgb = rgb.copy() if np.may_share_memory(rgb, array) else np.ascontiguousarray(rgb)
    if alpha is not None:
        alpha = alpha.copy() if np.may_share_memory(alpha, array) else np.ascontiguousarray(alpha)
    return LoadedImage(rgb=rgb, alpha=alpha, mode=mode)


def _from_pil(image: Image.Image) -> LoadedImage:
    mode = image.mode
    if image.width == 0 or image.height == 0:
        raise ImageReadError(f"image has zero size ({image.width} x {image.height})")
    if mode.startswith("I;16"):
        array = np.asarray(image).astype(np.uint16)  # I;16B arrives big-endian; normalise
    elif mode == "I":
        # 32-bit integer images nearly always come from 16-bit sources, so use that range.
        array = np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
    elif mode == "F":
        array = np.asarray(image, dtype=np.float32)  # same convention as float arrays: [0, 1]
    elif mode == "1":
        array = np.asarray(image.convert("L"))
    elif mode in ("L", "RGB") and image.info.get("transparency") is not None:
        array = np.asarray(image.convert("LA" if mode == "L" else "RGBA"))
    elif mode in ("L", "LA", "RGB", "RGBA"):
        array = np.asarray(image)
    elif mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info or (
            image.palette is not None and image.palette.mode == "RGBA"
        )
        array = np.asarray(image.convert("RGBA" if has_alpha else "RGB"))
    elif mode in ("La", "RGBa"):
        array = np.asarray(image.convert("RGBA"))
    else:  # CMYK, YCbCr, LAB, HSV, ...
        try:
            array = np.asarray(image.convert("RGB"))
        except (ValueError, OSError) as exc:
            raise ImageReadError(f"cannot convert PIL mode {mode!r} to RGB ({_one_line(exc)})") from exc
    return _from_array(array, mode=mode)


def to_rgb_uint8(image: Any) -> LoadedImage:
    """Normalise a PIL image (any mode) or a numpy array to H x W x 3 uint8 RGB plus optional alpha.

    uint16 data is scaled by 1/257 and floats are read as [0, 1], so 16-bit and
    HDR-ish inputs keep their contrast instead of being clipped.
    """
    if isinstance(image, Image.Image):
        return _from_pil(image)
    if isinstance(image, np.ndarray):
        return _from_array(image)
    raise ImageReadError(
        f"unsupported image type {type(image).__name__}; expected a PIL.Image.Image or numpy.ndarray"
    )


def too_large_message(name: str | os.PathLike[str], pixels: int, limit: int = MAX_INPUT_PIXELS,
                      size: tuple[int, int] | None = None) -> str:
    """The one message for an image over the pixel limit (the header check and Pillow's bomb check alike)."""
    dims = f"{size[0]} x {size[1]} = " if size else ""
    return f"{name}: image too large ({dims}{pixels} pixels; the limit is {limit})"


def read_image(path: str | os.PathLike[str], max_pixels: int = MAX_INPUT_PIXELS) -> LoadedImage:
    """Decode one file, refusing oversized or broken inputs with a one-line ImageReadError.

    The size check happens on the header only, so a file claiming enormous
    dimensions is refused without allocating its pixels.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a directory, not an image file")
    try:
        if path.stat().st_size == 0:
            raise ImageReadError(f"{path}: not a readable image (empty file)")
        with warnings.catch_warnings():
            # Pillow warns above ~89 MP and refuses above ~179 MP in its own words; our limit is checked below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            width, height = image.size
            if width <= 0 or height <= 0:
                raise ImageReadError(f"{path}: not a readable image (zero size {width} x {height})")
            if width * height > max_pixels:
                raise ImageReadError(too_large_message(path, width * height, max_pixels, (width, height)))
            if getattr(image, "is_animated", False):  # only the first frame would be read: say so instead
                hint = f" (an animated GIF plays through `affectsr video {path.name} -o OUT.mp4`)" \
                    if image.format == "GIF" else ""
                raise ImageReadError(f"{path}: an animated image ({image.n_frames} frames); still images only{hint}")
            image.load()
            loaded = to_rgb_uint8(_upright(image))
    except ImageReadError as exc:
        message = str(exc)
        if message.startswith(str(path)):
            raise
        raise ImageReadError(f"{path}: {message}") from exc
    except Image.DecompressionBombError as exc:  # over Pillow's own limit: said as ours
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = int(found.group(1)) if found else max_pixels + 1
        raise ImageReadError(too_large_message(path, pixels, max_pixels)) from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(f"{path}: not a readable image (unknown or corrupt format)") from exc
    except _DECODE_ERRORS as exc:
        reason = _one_line(exc) or type(exc).__name__
        raise ImageReadError(f"{path}: not a readable image ({reason})") from exc
    loaded.path = path
    return loaded


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a damaged EXIF block is ignored rather than failing the whole image."""
    try:
        transposed = ImageOps.exif_transpose(image)
    except _DECODE_ERRORS:
        return image
    return transposed if transposed is not None else image


def _to_pil(rgb: np.ndarray, alpha: np.ndarray | None) -> Image.Image:
    loaded = to_rgb_uint8(rgb)
    if alpha is None:
        alpha = loaded.alpha
    elif not isinstance(alpha, np.ndarray) or alpha.ndim != 2 or alpha.shape != loaded.rgb.shape[:2]:
        shape = getattr(alpha, "shape", None)
        raise ValueError(f"alpha must be an H x W array matching the image {loaded.rgb.shape[:2]}, got {shape}")
    else:
        alpha = _channel_to_uint8(alpha)
    if alpha is None:
        return Image.fromarray(loaded.rgb)
    return Image.fromarray(np.dstack([loaded.rgb, alpha]))


def _save_params(fmt: str) -> dict[str, Any]:
    if fmt == "JPEG":
        return {"quality": 95, "subsampling": 0}
    if fmt == "WEBP":
        return {"quality": 95, "method": 4}
    if fmt == "PNG":
        return {"compress_level": 6}
    if fmt == "TIFF":
        return {"compression": "tiff_deflate"}
    return {}


def save_image(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    alpha: np.ndarray | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an image atomically (temp file in the same folder, then rename) so readers never see a partial file.

    The format comes from the suffix; alpha is kept where the format supports it
    (png, webp, tif) and dropped otherwise. Existing files are only replaced with
    ``overwrite=True``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _FORMATS:
        raise ValueError(
            f"{path}: cannot tell the image format from suffix {path.suffix!r};"
            f" use one of {', '.join(sorted(_FORMATS))}"
        )
    fmt, keeps_alpha = _FORMATS[suffix]
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; cannot write an image there")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    image = _to_pil(rgb, alpha)
    if not keeps_alpha and image.mode == "RGBA":
        image = image.convert("RGB")

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # os.open with 0o666 honours the umask, unlike mkstemp's fixed 0o600.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            image.save(handle, format=fmt, **_save_params(fmt))
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            publish_new(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def output_suffix(src: str | os.PathLike[str], ext: str | None = None) -> tuple[str, str | None]:
    """The output format rule of every command that writes an image: (suffix, note or None).

    ``ext`` (``--ext``) wins. Otherwise the input's format is kept when it can be written as faithfully
    as it was read (PNG, JPEG, WebP, BMP, TIFF); GIF holds at most 256 colours, so an upscaled face
    would be dithered: it is written as PNG, and so is anything else; the note says so.
    """
    suffix = Path(src).suffix.lower()
    if ext:
        return "." + ext.lower().lstrip("."), None
    if suffix in WRITABLE_SUFFIXES:
        return suffix, None
    if suffix == ".gif":
        return ".png", "written as PNG (GIF holds only 256 colours)"
    return ".png", f"written as PNG ({suffix or 'no suffix'} is not a format affectsr writes)"


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def resize(rgb: np.ndarray, size: tuple[int, int], resample: int = Image.Resampling.BICUBIC) -> np.ndarray:
    """PIL resize of a uint8 H x W (x C) array to ``size`` = (width, height); returns a writable array.

    The one resize used across the project (bicubic by default, as the SR literature
    degrades and compares with PIL/MATLAB-style bicubic).
    """
    if rgb.shape[1] == size[0] and rgb.shape[0] == size[1]:
        return np.array(rgb)
    return np.array(Image.fromarray(rgb).resize(size, resample))


def bicubic_down(hr: np.ndarray, scale: int) -> np.ndarray:
    """PIL bicubic downscaling by an integer factor (the LR the paper and BasicSR's face sets use)."""
    h, w = hr.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"HR size {w}x{h} is not divisible by the scale {scale}")
    return resize(hr, (w // scale, h // scale))


def iter_image_files(paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str]) -> list[Path]:
    """Expand folders into their image files; keep explicit files as given so the reader reports bad ones.

    Folders are walked recursively and their files sorted by relative path,
    skipping hidden files and folders and anything whose suffix is not in
    IMAGE_SUFFIXES. Duplicates (same resolved file) are listed once, at their
    first position.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[Path] = []
    seen: set[Path] = set()

    def add(file: Path) -> None:
        key = file.resolve()
        if key not in seen:
            seen.add(key)
            found.append(file)

    for entry in paths:
        root = Path(entry)
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such file or folder")
        if not root.is_dir():
            add(root)
            continue
        in_folder: list[Path] = []
        for folder, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not _is_hidden(d)]
            for name in filenames:
                if _is_hidden(name) or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                file = Path(folder, name)
                if file.is_file():
                    in_folder.append(file)
        for file in sorted(in_folder, key=lambda f: f.relative_to(root).parts):
            add(file)
    return found
