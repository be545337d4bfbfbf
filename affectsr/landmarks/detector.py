"""Face boxes and 478-point face-mesh landmarks from the models bundled in the mediapipe wheel.

We use the legacy ``mediapipe.solutions`` API because mediapipe 0.10.21 ships
its .tflite files inside the wheel (the newer Tasks API wants model files
downloaded separately). mediapipe is imported lazily so ``import affectsr``
stays fast.

Face detection is multi-scale (:meth:`LandmarkDetector.detect_faces`): MediaPipe's detectors see a
fixed 128 px (short-range) or 192 px (full-range) view and find faces from about 16 px *of that
view*, so a 1080p frame seen whole loses every face under about 150 px. Two passes are merged:

1. the *coarse* pass, unchanged from the single-pass detector: the full-range model on the whole
   image (small images upsampled first). Its boxes are kept as they are, so the crops that
   ``prepare``/``evaluate`` cut from large faces do not move;
2. the *fine* pass: the short-range model on a pyramid. Level 0 is scaled so a ``min_face`` face is 20 px
   of it; each next level halves the image until it fits the model's 128 px input. The model is fully
   convolutional, so it runs (through OpenCV's DNN module, which reads the wheel's .tflite) on chunks of
   about 512 px of each level rather than on 128 px tiles: a chunk shares 48 px with each neighbour
   instead of a tile's 40 of 128, so the model sees about 1.2x each level's pixels instead of 2.1x.
   A face is kept from the one chunk whose core holds its centre, and only when no coarse box (or
   better-scoring fine box) overlaps it and two of a few enlarged views of it score it high (``_verify``).

Greyscale images are detected on a skin-tinted copy: both models were trained on colour photos and
score grey faces lower (the bundled face at 64 px: 0.66 grey vs 0.84 colour, full-range), so small
grey faces fell under the threshold. The README's "Face detection" section has the measurements (``affectsr bench-detect``).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from PIL import Image

from affectsr.images import ImageReadError, colour_tint, resize, to_rgb_uint8

__all__ = ["DEFAULT_MIN_FACE", "NUM_LANDMARKS", "FaceBox", "LandmarkDetector", "TILE", "box_iou", "is_greyscale", "pyramid_sizes",
           "shared_detector", "skin_tint", "fine_pixels"]

NUM_LANDMARKS = 478  # MediaPipe face mesh with refined iris points

_MIN_SHORT_SIDE = 8  # below this there is nothing a face detector can use
_DETECTION_LONG_SIDE = 256  # small images are upsampled to this long side before detection
# Extra edge padding (fraction of the crop side) tried in turn by detect_landmarks. The
# mesh's built-in short-range detector misses very blurry faces that fill the frame
# (crops under ~20 px); shrinking the face with padding rescues 16-18 px crops.
_RETRY_CONTEXT: tuple[float, ...] = (0.0, 0.25)

DEFAULT_MIN_FACE = 16
"""Smallest face (side of the detector's box, in input pixels) ``detect_faces`` looks for by default."""
TILE = 128  # the short-range model's input side (the verification views are cut at this size)
_TILE_FACE = 20  # a min_face face is this many pixels of the pyramid's first level (the short-range model's floor)
# The fine pass runs the short-range model (a fully convolutional net) on chunks of about this side of each level,
# through OpenCV's DNN module (cv2 comes with mediapipe) instead of MediaPipe's graph, which squeezes every input to
# 128 px: 128 px tiles had to share 40 px with each neighbour (2.1x the level's pixels), these chunks about 1.3x.
_CHUNK = 512
_CHUNK_OVERLAP = 48  # chunk pixels shared by neighbours: a face up to this size lies whole in one chunk
_MODEL_STRIDE = 16  # the short-range model's coarsest anchor grid; chunk sides are multiples of it
_COARSE_KEEP = 0.1  # coarse boxes at least this fraction of the long side are kept as the whole-image pass gave them
# A candidate face is seen again by the short-range model, centred in windows this many times its side (in this
# order) ... and kept when at least _VERIFY_VOTES of the views score it >= _VERIFY_SCORE. Chosen on candidates
# from scenes of another seed than the benchmark's: six views and 0.75 kept more 48-64 px faces than the three
# short-range views plus a full-range one at 0.7 (which never saw the faces the short-range views missed),
# with fewer false positives.
_VERIFY_CONTEXTS = (1.6, 2.2, 3.0, 1.9, 2.6, 4.0)
_VERIFY_SCORE = 0.75
_VERIFY_VOTES = 2
_VERIFY_IOU = 0.3
# Small candidates (side from min_face up to _SMALL_FACE px): faces of 16-24 px hold little detail; they often score
# 0.3-0.5 in the pyramid and 0.6-0.75 in every verification view, where textures score high in one or two views only.
# So they are candidates from _SMALL_SCORE and also kept when at least _SMALL_VOTES[0] of the views score them
# >= _SMALL_VOTES[1] with a box of at least _SMALL_VIEW_SIDE x min_face (views of a texture in the astronaut's
# suit scored 0.6-0.71 with boxes of 12-13 px). In pixels, not in units of min_face: for larger boxes textures
# pass that rule too. Chosen on scenes of seeds other than the benchmark's (no false positive more on their
# face-free frames).
_SMALL_FACE = 32.0
_SMALL_SCORE = 0.3
_SMALL_VOTES = (4, 0.6)
_SMALL_VIEW_SIDE = 0.9
_MIN_FACE_SLACK = 0.8  # boxes under this fraction of min_face are dropped (box sides scatter around the face's)
# The short-range model's box is larger and lower on the face than the full-range one's; mapped onto the
# full-range convention (centre shift and size, in units of the box side) so crops do not depend on which
# model found a face. Measured by ``affectsr bench-detect`` ("short_box_calibration" in its results.json).
_SHORT_TO_FULL = (0.015, -0.06, 0.97)  # (dx, dy, scale)
# Skin-tone gains for greyscale images (luma-preserving: 0.299 R + 0.587 G + 0.114 B = 1).
_SKIN_GAINS = (1.2, 0.947, 0.75)
_GREY_TOLERANCE = 2.0  # mean |R - G| + |G - B| (levels) under which an image counts as greyscale
# Tight crops: the face fills the frame and neither model finds it; edge padding (fraction of the
# side, on every edge) makes it smaller in the frame. Only for images whose shape could be a face crop.
_CROP_PAD: tuple[float, ...] = (0.25, 0.5)
_CROP_ASPECT = 2.0


@dataclass(frozen=True)
class FaceBox:
    """A detected face in pixel coordinates of the image given to ``detect_faces``."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def square(self, margin: float = 0.5) -> tuple[int, int, int, int]:
        """An integer square (x0, y0, x1, y1) centred on this box, side max(w, h) * (1 + margin).

        Detector boxes are tight (brows to mouth), so the margin brings in the
        forehead and chin. The square may extend past the image; callers pad.
        """
        side = max(1, math.floor(max(self.width, self.height) * (1.0 + margin) + 0.5))
        cx = (self.x0 + self.x1) / 2.0
        cy = (self.y0 + self.y1) / 2.0
        x0 = math.floor(cx - side / 2.0 + 0.5)
        y0 = math.floor(cy - side / 2.0 + 0.5)
        return x0, y0, x0 + side, y0 + side


_SILENCE_LOCK = threading.Lock()
_silence_depth = 0  # fd 2 is one per process, so nested or concurrent silencing shares one redirect
_saved_stderr: int | None = None


@contextlib.contextmanager
def _native_stderr_silenced(enabled: bool) -> Iterator[None]:
    """Point file descriptor 2 at /dev/null while MediaPipe builds and first runs a graph.

    MediaPipe's C++ side (TFLite, absl) prints "Created TensorFlow Lite XNNPACK
    delegate" and "inference_feedback_manager" warnings straight to fd 2, and no
    environment variable (GLOG_minloglevel, TF_CPP_MIN_LOG_LEVEL,
    ABSL_MIN_LOG_LEVEL) stops them in 0.10.21. They only appear while a graph is
    created and on its first runs, so only that window is silenced. Tiles run in
    threads, so the redirect is counted: the first one in redirects, the last one out restores.
    """
    global _silence_depth, _saved_stderr
    if not enabled:
        yield
        return
    with _SILENCE_LOCK:
        if _silence_depth == 0:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            try:
                saved = os.dup(2)
                devnull = os.open(os.devnull, os.O_WRONLY)
            except OSError:  # no fd 2 (e.g. some daemons): nothing to silence
                saved = None
            if saved is not None:
                os.dup2(devnull, 2)
                os.close(devnull)
                _saved_stderr = saved
        if _saved_stderr is not None:
            _silence_depth += 1
        counted = _saved_stderr is not None
    try:
        yield
    finally:
        if counted:
            with _SILENCE_LOCK:
                _silence_depth -= 1
                if _silence_depth == 0 and _saved_stderr is not None:
                    os.dup2(_saved_stderr, 2)
                    os.close(_saved_stderr)
                    _saved_stderr = None


_DUPLICATE_IOU = 0.25
_DUPLICATE_COVER = 0.5


def check_min_face(min_face: float) -> float:
    """``min_face`` as a float, or a one-line ValueError."""
    if not (isinstance(min_face, (int, float)) and math.isfinite(min_face) and min_face >= 4):
        raise ValueError(f"min_face must be a number of pixels, at least 4; got {min_face!r}")
    return float(min_face)


def box_iou(a: FaceBox, b: FaceBox) -> float:
    """Intersection over union of two boxes (0 when they do not touch); video tracking matches with it too."""
    iw = min(a.x1, b.x1) - max(a.x0, b.x0)
    ih = min(a.y1, b.y1) - max(a.y0, b.y0)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (a.width * a.height + b.width * b.height - inter)


def _suppress_duplicates(boxes: list[FaceBox]) -> list[FaceBox]:
    """Drop boxes that overlap a better-scoring one.

    The full-range model sometimes returns two shifted boxes for one small face
    (IoU ~0.3-0.4) that its own NMS keeps; tight brow-to-mouth boxes of
    different people barely overlap, so these thresholds only merge duplicates.
    """
    kept: list[FaceBox] = []
    for box in boxes:  # best score first
        area = box.width * box.height
        duplicate = False
        for other in kept:
            iw = min(box.x1, other.x1) - max(box.x0, other.x0)
            ih = min(box.y1, other.y1) - max(box.y0, other.y0)
            if iw <= 0 or ih <= 0:
                continue
            inter = iw * ih
            other_area = other.width * other.height
            iou = inter / (area + other_area - inter)
            if iou > _DUPLICATE_IOU or inter / min(area, other_area) > _DUPLICATE_COVER:
                duplicate = True
                break
        if not duplicate:
            kept.append(box)
    return kept


def _as_crop_list(crops: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(crops, np.ndarray):
        if crops.ndim != 4:
            raise ValueError(
                f"crops array must be B x H x W x C, got shape {crops.shape};"
                " wrap a single crop in a list"
            )
        return list(crops)
    return list(crops)


def is_greyscale(rgb: np.ndarray) -> bool:
    """True when an H x W x 3 uint8 image carries (almost) no colour: grey, grey16, grey+alpha, grey palettes.

    Looks at every 4th pixel of every 4th row (a 1080p frame costs about a millisecond).
    """
    sample = rgb[::4, ::4]
    return sample.size > 0 and colour_tint(sample) < _GREY_TOLERANCE


def skin_tint(rgb: np.ndarray) -> np.ndarray:
    """A greyscale image as a skin-toned one of the same luma, for the face detectors.

    MediaPipe's detectors were trained on colour photos and use skin colour: a grey face scores
    lower than the same face in colour and small grey faces fall under the threshold. Tinting
    brings their recall back to that of colour faces (``affectsr bench-detect``).
    """
    levels = np.arange(256, dtype=np.float32)[:, None] * np.asarray(_SKIN_GAINS, np.float32) + 0.5
    table = np.clip(levels, 0, 255).astype(np.uint8)  # 256 x 3: a lookup costs a tenth of the arithmetic on 1080p
    return table[rgb[..., 1]]  # the channels are equal (is_greyscale)


def _chunk_spans(length: int) -> tuple[list[int], int]:
    """Start offsets and the common size of the chunks covering ``length`` (a multiple of _MODEL_STRIDE, at most
    about _CHUNK), spread evenly so neighbours share >= _CHUNK_OVERLAP; one chunk when the level is short."""
    if length <= _CHUNK:
        return [0], length
    count = math.ceil((length - _CHUNK_OVERLAP) / (_CHUNK - _CHUNK_OVERLAP))
    size = -(-(length + (count - 1) * _CHUNK_OVERLAP) // (count * _MODEL_STRIDE)) * _MODEL_STRIDE
    return [round(i * (length - size) / (count - 1)) for i in range(count)], size


def _nearest(starts: list[int], span: int, centre: float) -> int:
    """Index of the chunk whose centre is nearest ``centre``: each point belongs to exactly one chunk's core."""
    return int(np.argmin([abs(start + span / 2.0 - centre) for start in starts]))


def pyramid_sizes(width: int, height: int, min_face: float) -> list[tuple[int, int]]:
    """The fine pass's pyramid, as (width, height) per level: level 0 puts a ``min_face`` face at
    _TILE_FACE tile pixels; each next level is half the previous one (2 x 2 pixel means); the last
    one is the first that fits in one tile."""
    scale = _TILE_FACE / min_face
    sizes = [(max(1, round(width * scale)), max(1, round(height * scale)))]
    while max(sizes[-1]) > TILE:
        lw, lh = sizes[-1]
        sizes.append(((lw + 1) // 2, (lh + 1) // 2))  # PIL's reduce(2) rounds up
    return sizes


def fine_pixels(width: int, height: int, min_face: float = DEFAULT_MIN_FACE) -> int:
    """How many pixels the fine pass runs the short-range model on, over all chunks of all levels (its cost)."""
    total = 0
    for lw, lh in pyramid_sizes(width, height, min_face):
        (xs, cw), (ys, ch) = _chunk_spans(lw), _chunk_spans(lh)
        padded_w, padded_h = -(-cw // _MODEL_STRIDE) * _MODEL_STRIDE, -(-ch // _MODEL_STRIDE) * _MODEL_STRIDE
        total += len(xs) * len(ys) * padded_w * padded_h
    return total


def _level_zero(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The pyramid's first level: OpenCV's bicubic when enlarging (a 1080p frame is enlarged 1.25x at the default
    min_face), its pixel-area mean when shrinking; PIL's bicubic took about 0.1 s of the frame's single-threaded time."""
    import cv2  # lazy, like mediapipe (which brings it)

    if (image.shape[1], image.shape[0]) == size:
        return image
    enlarge = size[0] * size[1] > image.shape[0] * image.shape[1]
    return cv2.resize(image, size, interpolation=cv2.INTER_CUBIC if enlarge else cv2.INTER_AREA)


def _to_full_range(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
    """A short-range box in the full-range model's convention (see _SHORT_TO_FULL)."""
    dx, dy, scale = _SHORT_TO_FULL
    w, h = x1 - x0, y1 - y0
    side = max(w, h)
    cx, cy = (x0 + x1) / 2.0 + dx * side, (y0 + y1) / 2.0 + dy * side
    return cx - w * scale / 2.0, cy - h * scale / 2.0, cx + w * scale / 2.0, cy + h * scale / 2.0


def _boxes_from(result: Any, width: float, height: float, x: float = 0.0, y: float = 0.0,
                scale: float = 1.0) -> list[FaceBox]:
    """MediaPipe detections (relative to a ``width`` x ``height`` view at (x, y) of an image shrunk by
    ``scale``) as boxes in the image's pixels; degenerate boxes are dropped."""
    boxes = []
    for detection in result.detections or []:
        rel = detection.location_data.relative_bounding_box
        x0 = (x + rel.xmin * width) / scale
        y0 = (y + rel.ymin * height) / scale
        x1 = (x + (rel.xmin + rel.width) * width) / scale
        y1 = (y + (rel.ymin + rel.height) * height) / scale
        score = float(detection.score[0]) if detection.score else 0.0
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
            continue
        boxes.append(FaceBox(x0, y0, x1, y1, score))
    return boxes


_SHORT_RANGE_OUTPUTS = ("classificator_8", "classificator_16", "regressor_8", "regressor_16")  # the model's heads


def _short_range_boxes(net: Any, rgb: np.ndarray, min_score: float, low_score: float | None = None
                       ) -> tuple[list[FaceBox], list[FaceBox]]:
    """The short-range model run fully convolutionally on an RGB uint8 image of any size, its boxes scoring at
    least ``min_score`` in the image's pixels, in the model's own convention (not yet _to_full_range).

    Decoded as MediaPipe's graph does for a 128 px input: an anchor at the centre of every cell of the 8 px
    (2 anchors) and 16 px (6 anchors) grids, the box's centre offset and size in input pixels, the score a
    sigmoid of the logit, overlapping boxes blended (_weighted_nms). Sides that are not multiples of 16 are
    padded with black, as MediaPipe letterboxes. Second list: the boxes scoring from ``low_score`` (when given) up
    to ``min_score`` that overlap none of the first list, blended among themselves (the first list is as without).
    """
    h, w = rgb.shape[:2]
    x = rgb.astype(np.float32) * np.float32(1 / 127.5) - np.float32(1.0)  # the model's [-1, 1] input
    if h % _MODEL_STRIDE or w % _MODEL_STRIDE:
        x = np.pad(x, ((0, -h % _MODEL_STRIDE), (0, -w % _MODEL_STRIDE), (0, 0)), constant_values=-1.0)
    net.setInput(np.ascontiguousarray(x.transpose(2, 0, 1))[None])
    floor = min_score if low_score is None else min(low_score, min_score)
    logit = math.log(max(floor, 1e-6) / max(1.0 - floor, 1e-6))
    boxes = []
    c8, c16, r8, r16 = net.forward(_SHORT_RANGE_OUTPUTS)
    for scores, offsets, stride in ((c8[0], r8[0], 8), (c16[0], r16[0], 16)):
        anchor, gy, gx = np.nonzero(scores >= logit)
        if not len(anchor):
            continue
        reg = offsets.reshape(scores.shape[0], -1, *scores.shape[1:])[anchor, :4, gy, gx]  # (n, 4): dx, dy, w, h
        cx = (gx + 0.5) * stride + reg[:, 0]
        cy = (gy + 0.5) * stride + reg[:, 1]
        prob = 1.0 / (1.0 + np.exp(-np.clip(scores[anchor, gy, gx], -100.0, 100.0)))
        for bx, by, bw, bh, p in zip(cx, cy, reg[:, 2], reg[:, 3], prob):
            if bw > 0 and bh > 0 and math.isfinite(bx) and math.isfinite(by):
                boxes.append(FaceBox(float(bx - bw / 2), float(by - bh / 2), float(bx + bw / 2), float(by + bh / 2),
                                     float(p)))
    sure = _weighted_nms([b for b in boxes if b.score >= min_score])
    low = _weighted_nms([b for b in boxes if b.score < min_score])
    return sure, [b for b in low if all(box_iou(b, s) <= 0.3 for s in sure)]


def _weighted_nms(boxes: list[FaceBox], threshold: float = 0.3) -> list[FaceBox]:
    """MediaPipe's blending NMS: best first, the boxes overlapping a box by IoU > ``threshold`` are merged into
    it (coordinates averaged, weighted by score; the best score kept). A face fires several neighbouring anchors."""
    left = sorted(boxes, key=lambda b: -b.score)
    out = []
    while left:
        best = left[0]
        group = [b for b in left if b is best or box_iou(b, best) > threshold]
        left = [b for b in left if b is not best and box_iou(b, best) <= threshold]
        weights = np.array([b.score for b in group])
        corners = np.array([(b.x0, b.y0, b.x1, b.y1) for b in group]).T @ weights / weights.sum()
        out.append(FaceBox(*(float(v) for v in corners), best.score))
    return out


def _clipped(box: FaceBox, width: int, height: int) -> FaceBox | None:
    x0, y0 = float(np.clip(box.x0, 0.0, width)), float(np.clip(box.y0, 0.0, height))
    x1, y1 = float(np.clip(box.x1, 0.0, width)), float(np.clip(box.y1, 0.0, height))
    return FaceBox(x0, y0, x1, y1, box.score) if x1 > x0 and y1 > y0 else None


class LandmarkDetector:
    """Face boxes and 478-point landmarks from MediaPipe models bundled in the mediapipe wheel (no download).

    The MediaPipe graphs are created on first use and released by :meth:`close`
    (or the ``with`` block). An instance is not thread-safe: use one per thread
    (it runs its own ``threads`` short-range graphs in parallel for the tiles of one image).
    """

    def __init__(
        self,
        min_detection_confidence: float = 0.5,
        detector_size: int = 256,
        quiet: bool = True,
        min_face: float = DEFAULT_MIN_FACE,
        threads: int = 2,
    ) -> None:
        """``quiet`` hides MediaPipe's native start-up log lines (see ``_native_stderr_silenced``).

        ``min_face``: the smallest face (box side, input pixels) :meth:`detect_faces` looks for by
        default; smaller values cost more tiles (4x for half the size). ``threads``: short-range
        graphs run side by side on the tiles (MediaPipe releases the GIL while a graph runs).
        """
        if not 0.0 <= min_detection_confidence <= 1.0:
            raise ValueError(f"min_detection_confidence must be in [0, 1], got {min_detection_confidence}")
        if detector_size < 32:
            raise ValueError(f"detector_size must be at least 32, got {detector_size}")
        check_min_face(min_face)
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.min_detection_confidence = float(min_detection_confidence)
        self.detector_size = int(detector_size)
        self.quiet = quiet
        self.min_face = float(min_face)
        self.threads = int(threads)
        self._graphs: dict[str, Any] = {}
        self._warm: set[str] = set()
        self._pool: ThreadPoolExecutor | None = None
        self._nets: dict[str, Any] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Release the MediaPipe graphs and OpenCV nets; the detector can still be used (they are rebuilt lazily)."""
        graphs, self._graphs = self._graphs, {}
        self._nets = {}
        for graph in graphs.values():
            graph.close()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self._warm.clear()

    def __enter__(self) -> LandmarkDetector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _graph(self, name: str) -> Any:
        """The graph ``name``: 'detection' (full-range), 'short0', 'short1', ... (short-range), 'mesh'."""
        graph = self._graphs.get(name)
        if graph is not None:
            return graph
        with _native_stderr_silenced(self.quiet):
            if name == "mesh":
                from mediapipe.python.solutions import face_mesh  # lazy (module docstring)

                graph = face_mesh.FaceMesh(
                    static_image_mode=True,
                    max_num_faces=1,
                    refine_landmarks=True,
                    min_detection_confidence=self.min_detection_confidence,
                )
            else:
                from mediapipe.python.solutions import face_detection  # lazy (module docstring)

                graph = face_detection.FaceDetection(
                    model_selection=1 if name == "detection" else 0,  # 1: full-range, 0: short-range
                    min_detection_confidence=self.min_detection_confidence,
                )
        self._graphs[name] = graph
        return graph

    def short_range_boxes(self, view: np.ndarray) -> list[FaceBox]:
        """The short-range model's raw boxes on one view (ideally TILE x TILE), in the view's pixels:
        no tiling, no verification, no mapping to the full-range convention (for calibrating that mapping)."""
        view = to_rgb_uint8(view).rgb
        return _boxes_from(self._process("short0", view), view.shape[1], view.shape[0])

    def _process(self, name: str, rgb: np.ndarray) -> Any:
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        if name in self._warm:
            return self._graphs[name].process(rgb)
        # Some start-up warnings only come the first time a graph finds a face, and MediaPipe's
        # own threads print them, so one window covers building the graph up to then.
        with _native_stderr_silenced(self.quiet):
            result = self._graph(name).process(rgb)
        if result.detections if name != "mesh" else result.multi_face_landmarks:
            self._warm.add(name)
        return result

    # -- detection ---------------------------------------------------------------------------

    def detect_faces(self, rgb: np.ndarray, max_faces: int = 32, min_face: float | None = None) -> list[FaceBox]:
        """Faces in a whole image, as boxes sorted left to right; no face is ``[]``, never an error.

        Multi-scale (see the module docstring): the coarse full-range pass on the whole image,
        whose boxes are kept as they are, plus the short-range tile pyramid for faces from
        ``min_face`` pixels (default: the detector's ``min_face``); boxes under
        0.8 x ``min_face`` are dropped. Greyscale images are detected on a skin-tinted copy.
        """
        if max_faces < 1:
            return []
        min_face = self.min_face if min_face is None else check_min_face(min_face)
        image = self._prepared(rgb)
        if image is None:
            return []
        return self._detect(image, max_faces, min_face)

    def detect_padded(self, rgb: np.ndarray, max_faces: int = 32, min_face: float | None = None) -> list[FaceBox]:
        """Faces in a tight face crop, which :meth:`detect_faces` often misses: the face fills the frame,
        and both models were trained on faces with some surroundings. The crop is edge-padded
        (25%, then 50% of its side on every edge) so the face is smaller in the frame; boxes come
        back in the crop's pixels. Only images shaped like a face crop (sides within 2:1) are tried;
        ``min_face`` drops small boxes as in :meth:`detect_faces`.
        """
        min_face = self.min_face if min_face is None else check_min_face(min_face)
        image = self._prepared(rgb)
        if image is None:
            return []
        height, width = image.shape[:2]
        if max(height, width) > _CROP_ASPECT * min(height, width):
            return []
        for pad_frac in _CROP_PAD:
            pad = max(1, round(max(height, width) * pad_frac))
            padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
            # the face is at least a third of the padded frame: one coarse pass and one short-range view
            side = max(padded.shape[:2])
            # one view seeing the face again is enough here (a face crop is what callers hand over);
            # with none, 16 of 234 square crops of face-free photos gave a face, with one none did
            boxes = self._detect(padded, max_faces, min_face=side / 4.0, votes=1)
            boxes = [b for b in (_clipped(FaceBox(b.x0 - pad, b.y0 - pad, b.x1 - pad, b.y1 - pad, b.score),
                                          width, height) for b in boxes)
                     if b is not None and max(b.width, b.height) >= _MIN_FACE_SLACK * min_face]
            if boxes:
                return boxes
        return []

    def detect_near(self, rgb: np.ndarray, boxes: Sequence[FaceBox], context: float = 2.0,
                    min_face: float | None = None) -> list[FaceBox]:
        """Faces inside windows around known boxes (video: where the tracked faces were in the last frame).

        Each window is the box's square with ``context`` x its side around it (room for the face to
        move), detected like a whole image (one or a few tiles instead of a whole frame's pyramid);
        boxes come back in ``rgb``'s pixels, a face seen by two windows once.
        """
        image = self._prepared(rgb)
        if image is None or not boxes:
            return []
        min_face = self.min_face if min_face is None else check_min_face(min_face)
        height, width = image.shape[:2]
        found: list[FaceBox] = []
        for box in boxes:
            x0, y0, x1, y1 = box.square(context)
            x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
            if min(x1 - x0, y1 - y0) < _MIN_SHORT_SIDE:
                continue
            for b in self._detect(image[y0:y1, x0:x1], 32, min_face):
                found.append(FaceBox(b.x0 + x0, b.y0 + y0, b.x1 + x0, b.y1 + y0, b.score))
        found = _suppress_duplicates(sorted(found, key=lambda box: -box.score))
        return sorted(found, key=lambda box: (box.x0, box.y0))

    def _prepared(self, rgb: np.ndarray) -> np.ndarray | None:
        """The image as RGB uint8 (skin-tinted when grey), or None when it is too small to hold a face."""
        try:
            image = to_rgb_uint8(rgb).rgb
        except ImageReadError:
            if isinstance(rgb, np.ndarray) and 0 in rgb.shape[:2]:
                return None
            raise
        if min(image.shape[:2]) < _MIN_SHORT_SIDE:
            return None
        return skin_tint(image) if is_greyscale(image) else image

    def _detect(self, image: np.ndarray, max_faces: int, min_face: float, votes: int = _VERIFY_VOTES) -> list[FaceBox]:
        height, width = image.shape[:2]

        def clipped(boxes: list[FaceBox]) -> list[FaceBox]:
            return [b for b in (_clipped(b, width, height) for b in sorted(boxes, key=lambda b: -b.score)) if b]

        # Coarse boxes of faces the whole-image view sees large enough are kept as they are and come
        # first (a fine box never displaces one); smaller ones are placed loosely (a 30 px face in a
        # 1280 px frame is 4 px of the 192 px view) and compete with the tiles' boxes instead.
        keep = _COARSE_KEEP * max(height, width)
        coarse_all = clipped(self._coarse_boxes(image))
        coarse = [b for b in coarse_all if max(b.width, b.height) >= keep]
        loose = [b for b in coarse_all if max(b.width, b.height) < keep]
        boxes = _suppress_duplicates(coarse)
        # Best first, each candidate not yet covered by a kept box is looked at again; one that fails
        # does not hide the others (a face's second box, from another level, may pass). The candidates
        # the coarse boxes leave are verified side by side first (the threads' graphs), then taken in turn.
        candidates = [c for c in clipped(self._fine_boxes(image, min_face) + loose)
                      if len(_suppress_duplicates(boxes + [c])) > len(boxes)]
        def small(c: FaceBox) -> float:  # the smallest view box the rule for small candidates counts (0: not small)
            return _SMALL_VIEW_SIDE * min_face if max(c.width, c.height) < _SMALL_FACE else 0.0

        checked = self._parallel(lambda graph, c: self._verify(image, c, votes, graph, small(c)), candidates)
        for candidate, verified in zip(candidates, checked):
            if len(_suppress_duplicates(boxes + [candidate])) > len(boxes):
                if verified is not None and (verified := _clipped(verified, width, height)) is not None:
                    boxes = _suppress_duplicates(boxes + [verified])
        boxes = [b for b in boxes if max(b.width, b.height) >= _MIN_FACE_SLACK * min_face]
        boxes = sorted(boxes, key=lambda box: -box.score)[:max_faces]
        boxes.sort(key=lambda box: (box.x0, box.y0))
        return boxes

    def _verify(self, image: np.ndarray, box: FaceBox, votes: int = _VERIFY_VOTES, graph: str = "short0",
                small: float = 0.0) -> FaceBox | None:
        """A candidate face seen again, centred in windows a few times its side: its box there, or None.

        Textures that fire the short-range model in one tile (star fields, print, grass, a rocket's
        nose cone) rarely do again once centred at other scales, while faces do. A candidate is kept
        when at least ``votes`` (0: always) of these views score it >= _VERIFY_SCORE: the short-range model
        on windows of _VERIFY_CONTEXTS x its side (looked at in turn until the votes are in or cannot be).
        ``affectsr bench-detect`` measures the result (README, "Face detection"). ``graph``: the
        short-range graph to use (one per thread). ``small`` (a side, > 0 for a small candidate): also kept
        when _SMALL_VOTES[0] views score it >= _SMALL_VOTES[1] with a box of at least that side (a small face
        scores lower in every view, a texture high in few).
        """
        if votes <= 0:
            return box
        passed: list[FaceBox] = []
        fair: list[FaceBox] = []
        need, fair_score = _SMALL_VOTES if small else (len(_VERIFY_CONTEXTS) + 1, 1.0)
        for tried, context in enumerate(_VERIFY_CONTEXTS, 1):
            found = self._seen_again(image, box, context, graph, TILE)
            if found is not None and found.score >= _VERIFY_SCORE:
                passed.append(found)
            if found is not None and found.score >= fair_score and max(found.width, found.height) >= small:
                fair.append(found)
            if len(passed) >= votes or len(fair) >= need:
                return max(passed or fair, key=lambda b: b.score)
            left = len(_VERIFY_CONTEXTS) - tried
            if len(passed) + left < votes and len(fair) + left < need:
                return None  # the remaining views cannot make up the votes
        return None

    def _seen_again(self, image: np.ndarray, box: FaceBox, context: float, graph: str, side: int) -> FaceBox | None:
        """The best detection overlapping ``box`` in a square window ``context`` x its side around it,
        resized to ``side`` x ``side``."""
        height, width = image.shape[:2]
        x0, y0, x1, y1 = box.square(context - 1.0)
        # edge pixels repeated past the image: the candidate stays centred (a face at the border, a tight crop)
        ys = np.clip(np.arange(y0, y1), 0, height - 1)
        xs = np.clip(np.arange(x0, x1), 0, width - 1)
        scale = side / (x1 - x0)
        window = resize(image[ys[:, None], xs[None, :]], (side, side))
        best = None
        for b in _boxes_from(self._process(graph, window), window.shape[1], window.shape[0]):
            corners = (x0 + b.x0 / scale, y0 + b.y0 / scale, x0 + b.x1 / scale, y0 + b.y1 / scale)
            b = FaceBox(*(_to_full_range(*corners) if graph != "detection" else corners), b.score)
            if box_iou(b, box) > _VERIFY_IOU and (best is None or b.score > best.score):
                best = b
        return best

    def _coarse_boxes(self, image: np.ndarray) -> list[FaceBox]:
        """The full-range model on the whole image (the single-pass detector's boxes, unchanged).

        Small images are upsampled first because the full-range model works on a 192 px
        letterboxed view and misses faces that fill only a few pixels of it.
        """
        height, width = image.shape[:2]
        long_side = max(height, width)
        if long_side < _DETECTION_LONG_SIDE:
            scale = _DETECTION_LONG_SIDE / long_side
            image = resize(image, (max(1, round(width * scale)), max(1, round(height * scale))))
        # Relative coordinates do not depend on the upsampling, so map straight to the input size.
        return _boxes_from(self._process("detection", image), width, height)

    def _fine_boxes(self, image: np.ndarray, min_face: float) -> list[FaceBox]:
        """The short-range model on every chunk of the pyramid; each face comes from the chunk whose core holds it."""
        height, width = image.shape[:2]
        jobs = []
        level = None
        for lw, lh in pyramid_sizes(width, height, min_face):
            if level is None:
                level = _level_zero(image, (lw, lh))
            else:  # halving by 2 x 2 means: cheaper than a resize from the full image, and anti-aliased
                level = np.asarray(Image.fromarray(level).reduce(2))
            (xs, cw), (ys, ch) = _chunk_spans(lw), _chunk_spans(lh)
            for y in ys:
                for x in xs:
                    jobs.append((level[y:y + ch, x:x + cw], x, y, lw / width, lh / height, xs, ys))
        for worker in range(min(self.threads, len(jobs))):
            self._net(f"short{worker}")  # made here, not in the threads, which share the dict

        def run(graph: str, job: tuple) -> list[FaceBox]:
            chunk, x, y, sx, sy, xs, ys = job
            th, tw = chunk.shape[:2]
            found = []
            sure, low = _short_range_boxes(self._nets[graph], chunk, self.min_detection_confidence, _SMALL_SCORE)
            for b in sure + [b for b in low if min_face <= max(b.x1 - b.x0, b.y1 - b.y0) / sx < _SMALL_FACE]:
                cx, cy = (b.x0 + b.x1) / 2.0, (b.y0 + b.y1) / 2.0
                if xs[_nearest(xs, tw, x + cx)] != x or ys[_nearest(ys, th, y + cy)] != y:
                    continue  # a neighbouring chunk holds this face's centre in its core
                x0, y0, x1, y1 = _to_full_range((x + b.x0) / sx, (y + b.y0) / sy, (x + b.x1) / sx, (y + b.y1) / sy)
                found.append(FaceBox(x0, y0, x1, y1, b.score))
            return found

        return [box for part in self._parallel(run, jobs) for box in part]

    def _net(self, name: str) -> Any:
        """The short-range model as an OpenCV DNN net (one per thread: a net is not thread-safe), made on first use."""
        net = self._nets.get(name)
        if net is None:
            import cv2  # lazy, like mediapipe (which brings it)
            import mediapipe

            model = Path(mediapipe.__file__).parent / "modules" / "face_detection" / "face_detection_short_range.tflite"
            net = self._nets[name] = cv2.dnn.readNetFromTFLite(str(model))
        return net

    def _parallel(self, work: Callable[[str, Any], Any], jobs: Sequence[Any]) -> list[Any]:
        """``work(graph, job)`` for every job, in the jobs' order; the jobs are dealt out to ``threads``
        short-range graphs ('short0', 'short1', ...) that run side by side (MediaPipe releases the GIL)."""
        workers = min(self.threads, len(jobs))
        if workers == 0:
            return []

        def run(worker: int) -> list[Any]:
            return [work(f"short{worker}", job) for job in jobs[worker::workers]]

        cold = any(f"short{worker}" not in self._warm for worker in range(workers))
        with _native_stderr_silenced(self.quiet and cold):  # one window over the threads' first runs
            if workers == 1:
                return run(0)
            for worker in range(workers):
                self._graph(f"short{worker}")  # built here, not in the threads, which share the dict
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="affectsr-detect")
            parts = list(self._pool.map(run, range(workers)))
        out: list[Any] = [None] * len(jobs)
        for worker, part in enumerate(parts):
            out[worker::workers] = part
        return out

    def detect_landmarks(self, crops: np.ndarray | Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """478 landmarks per face crop: (B x 478 x 3 float32, found B bool); rows without a face are NaN.

        x and y are normalised to the crop (x right, y down), z is MediaPipe's
        relative depth. Crops are upsampled to ``detector_size`` first because the
        mesh model's own face detector needs a face of a few dozen pixels; in
        practice faces down to a ~20 px crop are found (accuracy drops below ~32 px).
        Non-square crops are edge-padded to a square so the face is not stretched.
        """
        crop_list = _as_crop_list(crops)
        count = len(crop_list)
        landmarks = np.full((count, NUM_LANDMARKS, 3), np.nan, dtype=np.float32)
        found = np.zeros(count, dtype=bool)
        for index, crop in enumerate(crop_list):
            crop = np.asarray(crop)
            if crop.ndim < 2 or 0 in crop.shape[:2]:
                continue
            points = self._landmarks_one(to_rgb_uint8(crop).rgb)
            if points is not None:
                landmarks[index] = points
                found[index] = True
        return landmarks, found

    def _landmarks_one(self, rgb: np.ndarray) -> np.ndarray | None:
        for context in _RETRY_CONTEXT:
            points = self._landmarks_padded(rgb, context)
            if points is not None:
                return points
        return None

    def _landmarks_padded(self, rgb: np.ndarray, context: float) -> np.ndarray | None:
        """Run the mesh on the crop edge-padded to a square plus ``context`` * side on every edge."""
        height, width = rgb.shape[:2]
        extra = round(max(height, width) * context)
        side = max(height, width) + 2 * extra
        pad_x = (side - width) // 2
        pad_y = (side - height) // 2
        if side != width or side != height:
            rgb = np.pad(
                rgb,
                ((pad_y, side - height - pad_y), (pad_x, side - width - pad_x), (0, 0)),
                mode="edge",
            )
        size = self.detector_size
        result = self._process("mesh", resize(rgb, (size, size)))
        if not result.multi_face_landmarks:
            return None
        mesh = result.multi_face_landmarks[0].landmark
        if len(mesh) != NUM_LANDMARKS:
            return None
        points = np.array([(p.x, p.y, p.z) for p in mesh], dtype=np.float32)
        if side != width or side != height:
            points[:, 0] = (points[:, 0] * side - pad_x) / width
            points[:, 1] = (points[:, 1] * side - pad_y) / height
            points[:, 2] *= side / width
        return points


_SHARED: LandmarkDetector | None = None


def shared_detector() -> LandmarkDetector:
    """This process's one long-lived detector, for code that cannot hold one itself.

    ``affectsr prepare`` runs images in spawned worker processes, and each worker needs its own
    MediaPipe graphs (building them takes about a second); evaluation and reports reuse the same one.
    Never closed explicitly: the graphs go with the process. Anything that can own a detector
    (``Upscaler``, ``detect_emotions``, the web demo) should make and close its own instead.
    """
    global _SHARED
    if _SHARED is None:
        _SHARED = LandmarkDetector()
    return _SHARED
