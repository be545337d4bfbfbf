"""Whole-image face upscaling: detect faces, crop, super-resolve, paste back.

The background is upscaled bicubically; each face is cropped square with a margin from the
low-resolution image, its 478 landmarks are detected on the crop (upsampled to the
detector's size inside :class:`LandmarkDetector`), the crop is super-resolved with the
landmark prior, and pasted back with a feathered mask (:meth:`Upscaler.compose`, which video
calls with its tracked boxes and smoothed landmarks). ``aligned=True`` skips detection and
treats the whole input as one face crop (datasets, already-cropped faces).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .faces import crop_padded, feather_mask, paste
from .images import LoadedImage, read_image, resize, save_image, to_rgb_uint8
from .landmarks import FaceBox, LandmarkDetector
from .landmarks.detector import check_min_face, is_greyscale
from .landmarks.predictor import default_predictor_path, get_landmarks, load_predictor
from .metrics import luma
from .models import PRESETS, WeightsNotFoundError, create_model, load_model
from .models.presets import default_model
from .types import SCALES, SRModel, check_landmark_mode, check_scale

MAX_OUTPUT_PIXELS = 200_000_000  # ~600 MB of RGB: refuse rather than exhaust memory
SR_PAD = 2  # LR pixels of replicate padding around each face crop before super-resolution
MAX_SR_SIDE = 1024  # faces whose SR output would be larger stay bicubic: they need no hallucinated
# detail, and a 4096 px face would cost GBs of activations (the cap is on the output, so x8 gets 128 px inputs)


class UntrainedModelWarning(UserWarning):
    """The model in use has random weights: its faces are not meaningful."""


def broken_output(crop: np.ndarray, sr: torch.Tensor) -> str | None:
    """Why an SR output must not be pasted (NaN/inf, or flat where the LR crop is not), else None.

    Damaged weights or an overflow give NaN, which turns into a solid black face once cast to uint8;
    a dead network gives one flat colour. Either is worse than bicubic.
    """
    if not bool(torch.isfinite(sr).all()):
        return "non-finite values (NaN or inf)"
    if int(crop.max()) - int(crop.min()) > 2 and float(sr.amax() - sr.amin()) < 0.5 / 255:
        return "a flat output (one colour)"
    return None


def grey_out(sr: torch.Tensor) -> torch.Tensor:
    """B x 3 x H x W RGB -> the same with R = G = B = its luma (BT.601 weights, those of PSNR-Y's Y).

    :func:`affectsr.metrics.luma` has the weights of :func:`affectsr.metrics.rgb_to_y`, so the Y channel
    that PSNR/SSIM read is kept (up to rounding) and only the colour goes.
    """
    return luma(sr).expand_as(sr).contiguous()


@dataclass
class FaceResult:
    """One face: its square crop box in input pixels, the detection, and its landmarks."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the square crop (may extend past the image)
    detection: FaceBox | None  # the detector's box (None in aligned mode)
    landmarks: np.ndarray | None  # 478 x 3: x, y in input-image pixels, z as MediaPipe gives it

    @property
    def has_landmarks(self) -> bool:
        return self.landmarks is not None


@dataclass
class UpscaleResult:
    image: np.ndarray  # (H*scale) x (W*scale) x 3 uint8 RGB
    faces: list[FaceResult]
    scale: int
    model_name: str
    trained: bool  # False when the model has random weights
    alpha: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    def to_pil(self) -> Image.Image:
        if self.alpha is None:
            return Image.fromarray(self.image)
        return Image.fromarray(np.dstack([self.image, self.alpha]), "RGBA")

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        return save_image(path, self.image, self.alpha, overwrite=overwrite)


def resolve_model(model: SRModel | str | None, scale: int, device: torch.device) -> tuple[SRModel, str, bool]:
    """(model, name, trained). ``None`` picks the default preset for ``scale``; untrained presets warn.

    Any ``nn.Module`` that is an :class:`~affectsr.types.SRModel` works (AffectSRNet, baselines,
    the ONNX Runtime backend, test doubles).
    """
    if isinstance(model, torch.nn.Module):
        return model.to(device).eval(), getattr(model, "name", "custom"), getattr(model, "trained", True)
    name = model or default_model(check_scale(scale, SCALES))
    try:
        net, trained = load_model(name, pretrained=True, device=device), True
    except WeightsNotFoundError:
        if name not in PRESETS:  # a path that does not exist: say so, do not fall back
            raise
        warnings.warn(
            f"no trained weights ship for {name!r} yet: faces are upscaled by an UNTRAINED network "
            f"(random weights) and will not look right", UntrainedModelWarning, stacklevel=3)
        with torch.random.fork_rng(devices=[]):  # same random weights every run, global RNG untouched
            torch.manual_seed(0)
            net = create_model(name)
        net, trained = net.to(device).eval(), False
    net.name, net.trained = name, trained  # type: ignore[attr-defined]
    return net, name, trained


class Upscaler:
    """Holds one model and one landmark detector, for upscaling many images."""

    def __init__(self, scale: int | None = None, model: SRModel | str | None = None, device: str | None = None,
                 margin: float = 0.6, detector: LandmarkDetector | None = None, landmarks: str = "auto",
                 min_face: float | None = None):
        """``scale=None`` takes the model's scale (4 when no model is named either).

        ``landmarks``: 'detect' (MediaPipe on the LR crop), 'predict' (the learned LR landmark
        predictor shipped for the scale), 'auto' (detect, else predict; 'detect' when no predictor ships).
        ``min_face``: smallest face looked for, in input pixels (default: the detector's, 16).
        """
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model, self.model_name, self.trained = resolve_model(model, scale or 4, self.device)
        scale = scale or self.model.scale
        if self.model.scale != scale:
            raise ValueError(f"model {self.model_name!r} upscales x{self.model.scale}, but scale={scale} was asked")
        self.scale, self.margin = scale, margin
        self.min_face = None if min_face is None else check_min_face(min_face)
        self.broken_faces = 0  # faces whose SR output was broken and stayed bicubic (see super_resolve)
        self.detector = detector or LandmarkDetector()
        check_landmark_mode(landmarks)
        path = default_predictor_path(scale) if landmarks != "detect" else None
        if landmarks == "predict" and path is None:
            raise ValueError(f"no landmark predictor ships for x{scale}; use landmarks='detect'")
        self.predictor = load_predictor(path, self.device) if path is not None else None
        self.landmarks = landmarks if path is not None else "detect"

    def close(self) -> None:
        self.detector.close()

    def __enter__(self) -> "Upscaler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @torch.no_grad()
    def super_resolve(self, crop: np.ndarray, landmarks: np.ndarray | None, notes: list[str] | None = None
                      ) -> np.ndarray:
        """One RGB uint8 crop (h x w x 3) -> (h*s) x (w*s) x 3 uint8, with landmarks normalised to the crop.

        The one per-face SR call of every path (images, video, the web demo, evaluate). An output
        that is broken (:func:`broken_output`: NaN/inf, or flat where the crop is not) is never
        returned: the face is upscaled bicubically instead, :attr:`broken_faces` counts it and
        ``notes`` (when given) gets one line naming the model.

        A greyscale crop gives a greyscale face (:func:`grey_out`), as Real-ESRGAN's inference does for
        grey images: networks trained on colour faces paint colour fringes on grey ones.
        """
        h, w = crop.shape[:2]
        pad, s = SR_PAD, self.scale  # replicate-pad the LR crop: the -lite models are weak at the very border
        crop = crop if crop.flags.writeable else crop.copy()  # torch.from_numpy warns on read-only arrays
        x = torch.from_numpy(crop).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        x = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
        lm = None
        if landmarks is not None:
            lm = torch.from_numpy(landmarks[None]).to(self.device).float().clone()
            lm[..., 0] = (lm[..., 0] * w + pad) / (w + 2 * pad)
            lm[..., 1] = (lm[..., 1] * h + pad) / (h + 2 * pad)
        y = self.model(x, lm)[..., pad * s:(pad + h) * s, pad * s:(pad + w) * s]
        why = broken_output(crop, y)
        if why is not None:
            self.broken_faces += 1
            note = f"{self.model_name} gave {why} for a face: it was upscaled bicubically instead"
            if notes is not None and note not in notes:
                notes.append(note)
            return resize(crop, (w * s, h * s))
        y = y.clamp_(0, 1)
        if is_greyscale(crop):
            y = grey_out(y)
        return (y[0].permute(1, 2, 0) * 255.0 + 0.5).byte().cpu().numpy()

    def __call__(self, image, aligned: bool = False) -> UpscaleResult:
        src = read_image(image) if isinstance(image, (str, Path)) else to_rgb_uint8(image)
        return self.upscale_loaded(src, aligned)

    @property
    def max_face_side(self) -> int:
        """Largest LR face side that is super-resolved (``MAX_SR_SIDE / scale``)."""
        return MAX_SR_SIDE // self.scale

    def upscale_face(self, crop: np.ndarray, notes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """One face crop -> (SR at exactly ``scale`` x its size, landmarks normalised to the crop or None)."""
        lm, _route = get_landmarks(crop, self.landmarks, self.detector, self.predictor)
        return self.super_resolve(crop, lm, notes), lm

    def compose(self, rgb: np.ndarray, boxes: Sequence[tuple[int, int, int, int]],
                landmarks: Sequence[np.ndarray | None] | None = None, background: np.ndarray | None = None,
                notes: list[str] | None = None) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """Paste each face of ``rgb`` back super-resolved: the per-face loop of every whole-image path.

        ``boxes``: square crops (x0, y0, x1, y1) in ``rgb`` pixels, may leave the image (edges are
        replicated). ``landmarks``: one per box, normalised to its crop (None: no prior for that
        face), or None to find them by this upscaler's route. ``background``: the (scale x) image
        to paste into, in place (default: a bicubic upscale of ``rgb``). Faces whose side is over
        :attr:`max_face_side` stay bicubic, and so do faces whose SR output is broken (a line in
        ``notes``, see :meth:`super_resolve`). Returns the image and, per box, the landmarks used
        (None where there were none or the face stayed bicubic).
        """
        s = self.scale
        h, w = rgb.shape[:2]
        out = resize(rgb, (w * s, h * s)) if background is None else background
        used: list[np.ndarray | None] = []
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            side = x1 - x0
            if side > self.max_face_side:
                used.append(None)
                continue
            crop = crop_padded(rgb, (x0, y0, x1, y1))
            if landmarks is None:
                lm, _route = get_landmarks(crop, self.landmarks, self.detector, self.predictor)
            else:
                lm = landmarks[k]
            paste(out, self.super_resolve(crop, lm, notes), x0 * s, y0 * s, feather_mask(side * s, side * s))
            used.append(lm)
        return out, used

    def upscale_loaded(self, src: LoadedImage, aligned: bool = False) -> UpscaleResult:
        rgb, s = src.rgb, self.scale
        h, w = rgb.shape[:2]
        if h * w * s * s > MAX_OUTPUT_PIXELS:
            raise ValueError(f"output would be {w * s}x{h * s} pixels (over {MAX_OUTPUT_PIXELS:,}); "
                             f"downscale the input or use a smaller scale")
        alpha = resize(src.alpha, (w * s, h * s)) if src.alpha is not None else None
        notes: list[str] = []
        if aligned:
            if max(h, w) > self.max_face_side:
                notes.append(f"the face is {max(h, w)} px, over {self.max_face_side} px at x{s}: upscaled bicubically")
                return UpscaleResult(resize(rgb, (w * s, h * s)), [FaceResult((0, 0, w, h), None, None)], s,
                                     self.model_name, self.trained, alpha, notes)
            out, lm = self.upscale_face(rgb, notes)
            if lm is None:
                notes.append("no landmarks found on the aligned face: upscaled without the landmark prior")
            face = FaceResult((0, 0, w, h), None, None if lm is None else lm * [w, h, 1])
            return UpscaleResult(out, [face], s, self.model_name, self.trained, alpha, notes)

        detections = self.detector.detect_faces(rgb, min_face=self.min_face)
        if not detections:
            detections = self.detector.detect_padded(rgb, min_face=self.min_face)  # a face crop without aligned=True?
            if detections:
                notes.append("no face found in the image as it is, but on a padded copy (as for a tight face "
                             "crop); for face crops pass --aligned (aligned=True): no detection, the whole image is the face")
            else:
                notes.append("no face found: the whole image was upscaled bicubically"
                             + (" (if it is a face crop, pass --aligned)" if max(h, w) <= 2 * min(h, w) else ""))
        boxes = [fb.square(self.margin) for fb in detections]
        for x0, y0, x1, _ in boxes:
            if x1 - x0 > self.max_face_side:
                notes.append(f"face at ({x0}, {y0}) is {x1 - x0} px, over {self.max_face_side} px at x{s}: kept bicubic")
        out, used = self.compose(rgb, boxes, notes=notes)
        faces = [FaceResult(box, fb, None if lm is None else lm * [box[2] - box[0], box[2] - box[0], 1] + [box[0], box[1], 0])
                 for box, fb, lm in zip(boxes, detections, used)]
        return UpscaleResult(out, faces, s, self.model_name, self.trained, alpha, notes)


def upscale(image, scale: int | None = None, model: SRModel | str | None = None, aligned: bool = False,
            device: str | None = None, margin: float = 0.6) -> UpscaleResult:
    """Super-resolve every face in ``image`` (a path, PIL image or numpy array) and paste it back.

    ``model``: a preset name, a ``.safetensors`` path, an ``nn.Module`` (e.g. AffectSRNet), or None for the
    default preset of ``scale`` (x4 when neither is given; a named model sets the scale). ``aligned=True``: the image is one face crop (no detection, no
    paste-back). The result carries the upscaled image and per-face boxes and landmarks.
    """
    with Upscaler(scale, model, device, margin) as up:
        return up(image, aligned=aligned)
