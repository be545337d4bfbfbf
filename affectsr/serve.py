"""``affectsr serve``: a local Gradio web demo (upload a photo, compare LR / bicubic / SR / original).

The processing lives in :meth:`ServeApp.process`, a plain function that returns a
:class:`ServeResult` and never raises for bad input, so it is tested without a browser;
:meth:`ServeApp.build` only wires it to Gradio components. Gradio is imported lazily (it is the
optional ``affectsr[web]`` extra), analytics are switched off and no share link is made: the
app fetches nothing from the internet.

"Original" is the upload itself when "simulate low resolution" is ticked: it is then
downscaled by the scale to make the LR input, so bicubic and SR can be compared with the
truth. Unticked, the upload *is* the LR input and there is no original to compare with.
"""
from __future__ import annotations

import errno
import math
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import traceback
import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .assets import default_face
from .demo import side_by_side
from .emotion import EmotionClassifier, load_emotion_classifier
from .emotion.classifier import JUDGE_CLASSIFIER
from .emotion.faces import classify_crops, fer_crop
from .faces import crop_padded
from .images import IMAGE_SUFFIXES, ImageReadError, LoadedImage, output_suffix, read_image, resize, save_image
from .landmarks import FaceBox, LandmarkDetector
from .models import PRESETS
from .models.presets import default_model, weights_path
from .pipeline import Upscaler
from .types import SCALES
from .weights import WeightsError

if TYPE_CHECKING:
    import gradio
    from matplotlib.figure import Figure

__all__ = [
    "GRADIO_HINT",
    "FaceProbabilities",
    "ServeApp",
    "ServeConfig",
    "ServeResult",
    "build_app",
    "model_choices",
    "serve",
]

GRADIO_HINT = "the web demo needs Gradio: pip install 'affectsr[web]'"
BICUBIC = "bicubic"
FACE_MARGIN = 0.6  # the comparison shows the same square the pipeline super-resolves (Upscaler's default margin)


@dataclass
class ServeConfig:
    """Limits and look of the web demo."""

    max_upload_mb: float = 20.0  # uploads over this many MiB are refused (by Gradio and again here)
    max_output_pixels: int = 16_000_000  # larger outputs: the input is downscaled first, with a note
    device: str | None = None  # torch device for the SR model; None: cuda if available, else cpu
    panel_side: int = 320  # each comparison panel is shown at about this size (display only)
    max_faces: int = 4  # emotion bars for at most this many faces (the largest)
    keep_outputs: int = 8  # downloadable PNGs kept on disk; older ones are deleted

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


@dataclass
class FaceProbabilities:
    """One face: its detector box in LR pixels (None: the whole image) and class probabilities per column."""

    box: tuple[float, float, float, float] | None
    probabilities: dict[str, np.ndarray]  # column ("LR", "bicubic", model, "original") -> C probabilities


@dataclass
class ServeResult:
    """What one run shows. ``ok=False``: only ``message`` is set, and it is meant for the user."""

    ok: bool
    message: str
    comparison: Image.Image | None = None  # the side-by-side picture
    sr_path: Path | None = None  # the full-size SR result as PNG (the download)
    sr: np.ndarray | None = None
    columns: list[str] = field(default_factory=list)
    labels: tuple[str, ...] = ()
    faces: list[FaceProbabilities] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def figure(self) -> Figure | None:
        """Grouped emotion-probability bars, one row per face (matplotlib, rendered as a PNG by Gradio)."""
        if not self.faces:
            return None
        from matplotlib.figure import Figure  # lazy: matplotlib is slow to import; no pyplot: no global state in a server

        n = len(self.faces)
        fig = Figure(figsize=(7.5, 2.3 * n + 0.4), dpi=100, layout="constrained")
        fig.suptitle(f"Emotion probabilities per face (FER judge {JUDGE_CLASSIFIER})", fontsize=10)
        axes = fig.subplots(n, 1, squeeze=False)[:, 0]
        x = np.arange(len(self.labels))
        width = 0.8 / len(self.columns)
        for i, (ax, face) in enumerate(zip(axes, self.faces)):
            for j, col in enumerate(self.columns):
                ax.bar(x + (j - (len(self.columns) - 1) / 2) * width, face.probabilities[col], width, label=col)
            tops = ", ".join(f"{c}: {self.labels[int(np.argmax(face.probabilities[c]))]}" for c in self.columns)
            ax.set_title(f"face {i + 1}: {tops}", fontsize=9)
            ax.set_xticks(x, self.labels, fontsize=8)
            ax.set_ylim(0, 1)
            ax.set_ylabel("probability", fontsize=8)
            ax.grid(axis="y", alpha=0.3)
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside lower center", ncols=len(self.columns), fontsize=8)
        return fig


class InputError(ValueError):
    """Something about the user's input, said in one line."""


def model_choices() -> list[tuple[str, str]]:
    """(label, value) for the model menu: presets with trained weights, then bicubic at x4 and x8.

    The scale follows the model, so each entry carries its scale; bicubic is listed once per scale.
    "Trained" is what ``list_models()`` calls it (a shipped weights file), read without ``list_models``,
    which builds every network to count parameters (seconds on a busy CPU).
    """
    out = [(f"{name} (x{cfg.scale})", name) for name, (cfg, _) in PRESETS.items() if weights_path(name) is not None]
    out += [(f"bicubic (x{s})", f"{BICUBIC}-x{s}") for s in SCALES]
    return out


def parse_choice(choice: str) -> tuple[str | None, int]:
    """Menu value -> (preset name or None for bicubic, scale)."""
    if choice.startswith(f"{BICUBIC}-x") and choice[len(BICUBIC) + 2:] in ("4", "8"):
        return None, int(choice[len(BICUBIC) + 2:])
    if choice in PRESETS:
        return choice, PRESETS[choice][0].scale
    raise InputError(f"unknown model {choice!r}")


def _scaled_box(fb: FaceBox, s: float) -> FaceBox:
    return FaceBox(fb.x0 * s, fb.y0 * s, fb.x1 * s, fb.y1 * s, fb.score)


def _fit_to_pixels(rgb: np.ndarray, alpha: np.ndarray | None, max_pixels: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Shrink (bicubic, aspect kept) so that the image has at most ``max_pixels``; unchanged if it already does."""
    h, w = rgb.shape[:2]
    if h * w <= max_pixels:
        return rgb, alpha
    f = math.sqrt(max_pixels / (h * w))
    size = (max(1, int(w * f)), max(1, int(h * f)))
    return resize(rgb, size), None if alpha is None else resize(alpha, size)


def _panel(img: np.ndarray, side: int) -> np.ndarray:
    """A display copy near ``side`` px: larger images shrink (bicubic), smaller grow by whole pixels (nearest)."""
    h, w = img.shape[:2]
    if max(h, w) > side:
        f = side / max(h, w)
        return resize(img, (max(1, round(w * f)), max(1, round(h * f))))
    k = max(1, side // max(h, w))
    return resize(img, (w * k, h * k), Image.Resampling.NEAREST)


class ServeApp:
    """The demo's state: a small LRU of upscalers, one face detector and FER classifier, a temp folder.

    Nothing is global: two apps in one process do not share anything. ``process`` is serialised by
    a lock (MediaPipe graphs and the models are not meant for concurrent calls).
    """

    def __init__(self, config: ServeConfig | None = None, lru_size: int = 2):
        self.config = config or ServeConfig()
        self.lru_size = lru_size
        self._upscalers: OrderedDict[tuple[str, int], Upscaler] = OrderedDict()
        self._detector: LandmarkDetector | None = None
        self._classifier: EmotionClassifier | None = None
        self._lock = threading.Lock()
        self._outputs: list[Path] = []
        self.workdir = Path(tempfile.mkdtemp(prefix="affectsr-serve-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.workdir), True)

    # --- resources ------------------------------------------------------------------------------

    @property
    def detector(self) -> LandmarkDetector:
        if self._detector is None:
            self._detector = LandmarkDetector()
        return self._detector

    @property
    def classifier(self) -> EmotionClassifier:
        if self._classifier is None:
            # the judge reads the panels: the SR face must not be read by the classifier its loss trained against
            self._classifier = load_emotion_classifier(JUDGE_CLASSIFIER, device="cpu")
        return self._classifier

    def upscaler(self, model: str, scale: int) -> Upscaler:
        """The Upscaler for (model, scale), built on first use; the least recently used beyond ``lru_size`` is dropped."""
        key = (model, scale)
        if key in self._upscalers:
            self._upscalers.move_to_end(key)
            return self._upscalers[key]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # only trained presets are offered; nothing to warn about
            up = Upscaler(scale, model, self.config.device, margin=FACE_MARGIN, detector=self.detector)
        self._upscalers[key] = up
        while len(self._upscalers) > self.lru_size:
            self._upscalers.popitem(last=False)  # not closed: the detector is shared and closed by close()
        return up

    @property
    def cached_upscalers(self) -> list[tuple[str, int]]:
        """(model, scale) keys in the LRU, least recently used first."""
        return list(self._upscalers)

    def example_path(self) -> Path:
        """The bundled face (NASA astronaut, public domain) as a PNG in the app's folder, for the Examples row."""
        path = self.workdir / "astronaut-face-128.png"
        if not path.exists():
            save_image(path, default_face(128))
        return path

    def close(self) -> None:
        self._upscalers.clear()
        if self._detector is not None:
            self._detector.close()
            self._detector = None
        self._cleanup()

    # --- processing -----------------------------------------------------------------------------

    def process(self, path: str | os.PathLike | None, choice: str, simulate_lr: bool = False,
                aligned: bool = False, name: str | None = None) -> ServeResult:
        """One uploaded file -> comparison picture, SR PNG and per-face emotion probabilities.

        Bad input (no file, too big, not an image, unknown model) gives ``ok=False`` and a one-line
        message instead of an exception. ``name``: what to call the file in messages (default: its name).
        """
        try:
            with self._lock:
                return self._process(path, choice, simulate_lr, aligned, name)
        except (InputError, ImageReadError, WeightsError) as e:
            return ServeResult(False, str(e))

    def _read(self, path: str | os.PathLike | None, name: str | None) -> tuple[LoadedImage, str]:
        if path is None or str(path) == "":
            raise InputError("no image: upload one, or pick the bundled example")
        path = Path(path)
        name = name or path.name
        try:
            size = path.stat().st_size
        except OSError as e:
            raise InputError(f"{name}: cannot read the upload ({e.strerror or e})") from e
        limit = self.config.max_upload_bytes
        if size > limit:
            raise InputError(f"{name}: the file is {size / 2**20:.1f} MB, over the "
                             f"{self.config.max_upload_mb:g} MB upload limit")
        try:
            loaded = read_image(path)
        except ImageReadError as e:  # its message starts with the server-side temp path: show the upload's name
            msg = str(e)
            raise InputError(f"{name}{msg[len(str(path)):]}" if msg.startswith(str(path)) else msg) from e
        return loaded, name

    def _process(self, path, choice: str, simulate_lr: bool, aligned: bool, name: str | None) -> ServeResult:
        t0 = time.perf_counter()
        model, s = parse_choice(choice)
        loaded, name = self._read(path, name)
        rgb, alpha, notes = loaded.rgb, loaded.alpha, []
        max_px = self.config.max_output_pixels
        if simulate_lr:
            h, w = rgb.shape[:2]
            rgb, alpha = _fit_to_pixels(rgb, alpha, max_px)
            if rgb.shape[:2] != (h, w):
                notes.append(f"the upload ({w}x{h}) was shrunk to {rgb.shape[1]}x{rgb.shape[0]} "
                             f"to stay under {max_px / 1e6:g} MP")
            h, w = (rgb.shape[0] // s) * s, (rgb.shape[1] // s) * s
            if h == 0 or w == 0:
                raise InputError(f"{name}: {rgb.shape[1]}x{rgb.shape[0]} is too small to downscale by {s}")
            original = rgb[:h, :w]  # a multiple of the scale, so every column lines up pixel for pixel
            alpha = None if alpha is None else alpha[:h, :w]
            lr = resize(original, (w // s, h // s))
            lr_alpha = None if alpha is None else resize(alpha, (w // s, h // s))
        else:
            h, w = rgb.shape[:2]
            lr, lr_alpha = _fit_to_pixels(rgb, alpha, max_px // (s * s))
            if lr.shape[:2] != (h, w):
                notes.append(f"the upload ({w}x{h}) was shrunk to {lr.shape[1]}x{lr.shape[0]} so that the x{s} "
                             f"output stays under {max_px / 1e6:g} MP")
            original = None
        lh, lw = lr.shape[:2]
        bicubic = resize(lr, (lw * s, lh * s))

        if model is None:
            sr, sr_alpha, sr_name = bicubic, None if lr_alpha is None else resize(lr_alpha, (lw * s, lh * s)), BICUBIC
            boxes = [None] if aligned else self.detector.detect_faces(lr)
            if not boxes:
                notes.append("no face found")
        else:
            result = self.upscaler(model, s).upscale_loaded(LoadedImage(lr, lr_alpha, loaded.mode), aligned)
            sr, sr_alpha, sr_name = result.image, result.alpha, model
            notes += result.notes
            boxes = [None] if aligned else [f.detection for f in result.faces]

        columns = {"LR": lr, BICUBIC: bicubic}
        if model is not None:
            columns[sr_name] = sr
        if original is not None:
            columns["original"] = original
        faces = self._emotions(columns, boxes, s)
        # no face: the model column is the bicubic upscale, and is titled so
        sr_title = f"{BICUBIC} (no face found)" if model is not None and not boxes else sr_name
        comparison = self._comparison(columns, boxes, s, sr_name, lw, lh, sr_title)
        suffix, fmt_note = output_suffix(name)  # the download follows `affectsr upscale`'s format rule
        if fmt_note:
            notes.append(f"the download is {fmt_note}")
        sr_path = self._save(sr, sr_alpha, f"{Path(name).stem}_{sr_name}_x{s}{suffix}")
        took = time.perf_counter() - t0
        found = "one aligned face crop" if aligned else f"{len(boxes)} face(s) found"
        summary = f"**{sr_name}** x{s}: {lw}x{lh} → {lw * s}x{lh * s} px, {found}, {took:.1f} s"
        if len(boxes) > self.config.max_faces:
            notes.append(f"emotion bars for the {self.config.max_faces} largest of {len(boxes)} faces")
        if boxes and boxes[0] is not None and len(boxes) > 1:
            notes.append("the comparison shows the largest face")
        message = summary + "".join(f"\n- {n}" for n in notes)
        return ServeResult(True, message, comparison, sr_path, sr, list(columns), self.classifier.labels, faces, notes)

    def _emotions(self, columns: dict[str, np.ndarray], boxes: list, s: int) -> list[FaceProbabilities]:
        """FER probabilities of each face in every column, read from the same (scaled) box."""
        boxes = sorted(boxes, key=lambda b: 0 if b is None else -(b.width * b.height))[: self.config.max_faces]
        boxes.sort(key=lambda b: 0 if b is None else b.x0)  # left to right, as on the picture
        probs = {}
        for col, img in columns.items():
            f = 1 if col == "LR" else s
            crops = [img if b is None else fer_crop(img, b if f == 1 else _scaled_box(b, f))[0] for b in boxes]
            probs[col] = classify_crops(self.classifier, crops)
        return [FaceProbabilities(None if b is None else (b.x0, b.y0, b.x1, b.y1), {c: probs[c][i] for c in columns})
                for i, b in enumerate(boxes)]

    def _comparison(self, columns: dict[str, np.ndarray], boxes: list, s: int, sr_name: str, lw: int, lh: int,
                    sr_title: str | None = None) -> Image.Image:
        """Side-by-side panels of the whole image (aligned / no face) or of the largest face's square.

        ``sr_title``: the SR panel's title (default ``sr_name``; "bicubic (no face found)" when it is bicubic)."""
        big = [b for b in boxes if b is not None]
        box = None
        if big:
            x0, y0, x1, y1 = max(big, key=lambda b: b.width * b.height).square(FACE_MARGIN)
            box = (x0 * s, y0 * s, x1 * s, y1 * s)
        titles = {"LR": f"LR {lw}x{lh}\n(nearest)", BICUBIC: f"bicubic x{s}", sr_name: f"{sr_title or sr_name}\nx{s}",
                  "original": f"original {lw * s}x{lh * s}"}
        panels = []
        for col, img in columns.items():
            if col == "LR":
                img = resize(img, (lw * s, lh * s), Image.Resampling.NEAREST)
            if box is not None:
                img = crop_padded(img, box)
            panels.append((titles[col], _panel(img, self.config.panel_side)))
        return side_by_side(panels)

    def _save(self, rgb: np.ndarray, alpha: np.ndarray | None, filename: str) -> Path:
        """Write the download into its own folder (so it keeps a readable name); keep the last few only."""
        folder = Path(tempfile.mkdtemp(dir=self.workdir))
        path = save_image(folder / filename, rgb, alpha)
        self._outputs.append(folder)
        while len(self._outputs) > self.config.keep_outputs:
            shutil.rmtree(self._outputs.pop(0), ignore_errors=True)
        return path

    # --- user interface -------------------------------------------------------------------------

    def run_ui(self, path: str | None, choice: str, simulate_lr: bool, aligned: bool):
        """The Gradio callback: (status, comparison, emotion plot, download); errors become a warning toast."""
        gr = import_gradio()

        try:
            res = self.process(path, choice, simulate_lr, aligned)
        except Exception as e:  # noqa: BLE001 - a server must answer every request; the log keeps the traceback
            traceback.print_exc(file=sys.stderr)
            res = ServeResult(False, f"unexpected {type(e).__name__}: {e}")
        if not res.ok:
            gr.Warning(res.message)
            plain = "".join("\\" + c if c in "\\`*_[]<>#" else c for c in res.message)  # file names stay literal
            return f"**Error:** {plain}", None, None, None
        return res.message, res.comparison, res.figure(), str(res.sr_path)

    def build(self) -> gradio.Blocks:
        """The Gradio app (not launched)."""
        gr = import_gradio()

        choices = model_choices()
        default = default_model(4)
        value = default if default in [v for _, v in choices] else choices[0][1]
        suffixes = sorted(IMAGE_SUFFIXES)
        with gr.Blocks(title="affectsr: emotion-aware face super-resolution", analytics_enabled=False,
                       delete_cache=(3600, 3600)) as demo:
            gr.Markdown("## affectsr: emotion-aware face super-resolution\n"
                        "Upload a photo (or pick the bundled face below), choose a model and press **Upscale**. "
                        "Tick *simulate low resolution* to shrink the upload by the scale first, so that bicubic "
                        "and the model can be compared with the original.")
            with gr.Row():
                with gr.Column(scale=1):
                    upload = gr.File(label=f"Image ({', '.join(x.lstrip('.') for x in suffixes)}; "
                                           f"up to {self.config.max_upload_mb:g} MB)",
                                     file_types=suffixes, type="filepath", elem_id="upload")
                    model = gr.Dropdown(choices, value=value, label="Model (the scale follows the model)",
                                        elem_id="model")
                    simulate = gr.Checkbox(False, label="Simulate low resolution (downscale the upload by the scale, "
                                                        "compare with the upload as the original)", elem_id="simulate")
                    aligned = gr.Checkbox(False, label="The image is one face crop (no face detection)",
                                          elem_id="aligned")
                    run = gr.Button("Upscale", variant="primary", elem_id="run")
                    gr.Examples([[str(self.example_path()), True, True]], inputs=[upload, simulate, aligned],
                                label="Bundled example (NASA astronaut portrait, public domain)",
                                example_labels=["astronaut face, 128 px"], cache_examples=False, elem_id="examples")
                with gr.Column(scale=2):
                    status = gr.Markdown(elem_id="status")
                    # no label chips on the pictures: they would cover the panel titles drawn into them
                    comparison = gr.Image(label="Side by side", show_label=False, type="pil", format="png",
                                          interactive=False, elem_id="comparison")
                    plot = gr.Plot(label="Emotion probabilities per face", show_label=False, elem_id="emotions")
                    download = gr.File(label="Download the upscaled image (the upload's format; GIF as PNG)",
                                       elem_id="download")
            run.click(self.run_ui, [upload, model, simulate, aligned], [status, comparison, plot, download],
                      api_name="upscale", concurrency_limit=1)
        demo.affectsr_app = self  # keeps the state alive as long as the Blocks
        return demo


def import_gradio():
    """Gradio with analytics off (set before import: Gradio reads it at call time too); a clear error if missing."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio  # lazy: the optional [web] extra, and seconds to import
    except ImportError as e:
        raise ImportError(GRADIO_HINT) from e
    return gradio


def build_app(config: ServeConfig | None = None) -> gradio.Blocks:
    """The demo as a ``gradio.Blocks``, ready to ``launch()`` (tests launch it on a free port)."""
    return ServeApp(config).build()


def port_error(host: str, port: int) -> str | None:
    """A one-line reason why ``host:port`` cannot be served on, else None."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use (choose another with --port)"
            return f"cannot listen on {host}:{port} ({e.strerror or e})"
    return None


def serve(port: int = 7860, host: str = "127.0.0.1", config: ServeConfig | None = None,
          block: bool = True) -> gradio.Blocks:
    """Launch the demo on http://host:port (no share link, analytics off); blocks until Ctrl-C unless ``block=False``."""
    cfg = config or ServeConfig()
    if (err := port_error(host, port)) is not None:
        raise OSError(errno.EADDRINUSE, err)
    demo = build_app(cfg)
    # quiet: Gradio's own banner suggests share=True; a public tunnel is exactly what this app never makes
    demo.launch(server_name=host, server_port=port, share=False, max_file_size=cfg.max_upload_bytes,
                ssr_mode=False, mcp_server=False, footer_links=["api", "settings"], prevent_thread_lock=True,
                show_error=False, quiet=True)
    print(f"affectsr serve: {demo.local_url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    if block:
        demo.block_thread()
    return demo
