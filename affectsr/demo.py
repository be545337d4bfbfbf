"""The no-argument demo: a bundled public-domain face, downscaled, then upscaled back.

Writes one PNG of two rows, the face in colour and a greyscale copy of it, each side by side: LR
(shown with nearest-neighbour) | bicubic | the landmarks the prior sees | affectsr | original. The grey
row shows that a grey face stays grey (the pipeline's rule, :func:`affectsr.pipeline.grey_out`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .assets import default_face
from .images import colour_tint, grey_copy, grid_strength, resize, save_image
from .pipeline import Upscaler


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """RGB PSNR in dB of two uint8 images (a quick figure for the demo caption)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def side_by_side(panels: list[tuple[str, np.ndarray]], label_height: int = 36) -> Image.Image:
    """Panels of equal size in a row, each with its label (up to two lines) above it."""
    h, w = panels[0][1].shape[:2]
    canvas = Image.new("RGB", (w * len(panels), h + label_height), "white")
    draw = ImageDraw.Draw(canvas)
    try:
        font = ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1 has no sized default font
        font = ImageFont.load_default()
    for i, (label, img) in enumerate(panels):
        canvas.paste(Image.fromarray(img), (i * w, label_height))
        draw.multiline_text((i * w + 4, 2), label, fill="black", font=font, spacing=2)
    return canvas


def draw_landmarks(rgb: np.ndarray, landmarks: np.ndarray | None, scale: float) -> np.ndarray:
    """The face graph's nodes drawn on ``rgb`` (landmarks in pixels of an image ``scale`` times smaller)."""
    img = Image.fromarray(rgb)
    if landmarks is not None:
        draw = ImageDraw.Draw(img)
        for x, y in landmarks[:, :2] * scale:
            draw.point((float(x), float(y)), fill=(0, 255, 80))
    return np.asarray(img)


def run_demo(out_dir: str | Path = "affectsr-demo", scale: int | None = None, model: str | None = None,
             size: int = 128, device: str | None = None, overwrite: bool = False) -> tuple[Path, dict]:
    """Make the demo picture ``out_dir/demo_x<scale>.png``; returns its path and a small report (model, trained,
    PSNRs, the grey row's colour tint, each row's grid strength and bicubic's).

    ``scale=None``: the model's scale, or 4 when no model is named. An existing picture is replaced
    only with ``overwrite`` (FileExistsError otherwise, before any upscaling), as ``upscale`` does.
    """
    out = Path(out_dir)
    face = default_face(size)
    rows, report = [], {}
    with Upscaler(scale, model, device) as up:
        scale = up.scale
        path = out / f"demo_x{scale}.png"
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists (use --overwrite to replace it)")
        for key, hr in (("", face), ("grey_", grey_copy(face))):  # report keys: psnr_bicubic, grey_psnr_bicubic, ...
            tag = key.replace("_", " ")
            lr = resize(hr, (size // scale, size // scale))
            result = up(lr, aligned=True)
            bicubic = resize(lr, (size, size))
            label = result.model_name + ("" if result.trained else "\n(untrained: random weights)")
            rows.append(side_by_side([
                (f"{tag}LR {size // scale}px\n(nearest)", resize(lr, (size, size), Image.NEAREST)),
                ("bicubic x" + str(scale), bicubic),
                ("landmarks (478)\nthe prior sees", draw_landmarks(bicubic, result.faces[0].landmarks, scale)),
                (label, result.image),
                (f"{tag}original {size}px", hr),
            ]))
            report.update({f"{key}landmarks_found": result.faces[0].has_landmarks, f"{key}tint": colour_tint(result.image),
                           f"{key}psnr_bicubic": psnr(bicubic, hr), f"{key}psnr_affectsr": psnr(result.image, hr),
                           f"{key}grid": grid_strength(result.image, scale), f"{key}grid_bicubic": grid_strength(bicubic, scale)})
        report.update(model=result.model_name, trained=result.trained)
    picture = np.concatenate([np.asarray(r) for r in rows], axis=0)
    save_image(path, picture, overwrite=overwrite)
    return path, report
