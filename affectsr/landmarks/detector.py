"""Face boxes and 478-point face-mesh landmarks from the models bundled in the mediapipe wheel.

We use the legacy ``mediapipe.solutions`` API because mediapipe 0.10.21 ships
its .tflite files inside the wheel (the newer Tasks API wants model files
downloaded separately). mediapipe is imported lazily so ``import affectsr``
stays fast.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

from affectsr.images import ImageReadError, resize, to_rgb_uint8

__all__ = ["NUM_LANDMARKS", "FaceBox", "LandmarkDetector", "shared_detector"]

NUM_LANDMARKS = 478  # MediaPipe face mesh with refined iris points

_MIN_SHORT_SIDE = 8  # below this there is nothing a face detector can use
_DETECTION_LONG_SIDE = 256  # small images are upsampled to this long side before detection
# Extra edge padding (fraction of the crop side) tried in turn by detect_landmarks. The
# mesh's built-in short-range detector misses very blurry faces that fill the frame
# (crops under ~20 px); shrinking the face with padding rescues 16-18 px crops.
_RETRY_CONTEXT: tuple[float, ...] = (0.0, 0.25)


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


@contextlib.contextmanager
def _native_stderr_silenced(enabled: bool) -> Iterator[None]:
    """Point file descriptor 2 at /dev/null while MediaPipe builds and first runs a graph.

    MediaPipe's C++ side (TFLite, absl) prints "Created TensorFlow Lite XNNPACK
    delegate" and "inference_feedback_manager" warnings straight to fd 2, and no
    environment variable (GLOG_minloglevel, TF_CPP_MIN_LOG_LEVEL,
    ABSL_MIN_LOG_LEVEL) stops them in 0.10.21. They only appear while a graph is
    created and on its first runs, so only that window is silenced.
    """
    if not enabled:
        yield
        return
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:  # no fd 2 (e.g. some daemons): nothing to silence
        yield
        return
    try:
        os.dup2(devnull, 2)
        os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


_DUPLICATE_IOU = 0.25
_DUPLICATE_COVER = 0.5


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


class LandmarkDetector:
    """Face boxes and 478-point landmarks from MediaPipe models bundled in the mediapipe wheel (no download).

    The MediaPipe graphs are created on first use and released by :meth:`close`
    (or the ``with`` block). An instance is not thread-safe: use one per thread.
    """

    def __init__(
        self,
        min_detection_confidence: float = 0.5,
        detector_size: int = 256,
        quiet: bool = True,
    ) -> None:
        """``quiet`` hides MediaPipe's native start-up log lines (see ``_native_stderr_silenced``)."""
        if not 0.0 <= min_detection_confidence <= 1.0:
            raise ValueError(f"min_detection_confidence must be in [0, 1], got {min_detection_confidence}")
        if detector_size < 32:
            raise ValueError(f"detector_size must be at least 32, got {detector_size}")
        self.min_detection_confidence = float(min_detection_confidence)
        self.detector_size = int(detector_size)
        self.quiet = quiet
        self._face_detection: Any = None
        self._face_mesh: Any = None
        self._warm: set[str] = set()

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Release the MediaPipe graphs; the detector can still be used (graphs are rebuilt lazily)."""
        for name in ("_face_detection", "_face_mesh"):
            graph = getattr(self, name)
            if graph is not None:
                setattr(self, name, None)
                graph.close()
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
        if name == "detection":
            if self._face_detection is None:
                from mediapipe.python.solutions import face_detection  # lazy (module docstring)

                with _native_stderr_silenced(self.quiet):
                    self._face_detection = face_detection.FaceDetection(
                        model_selection=1,  # full-range model: faces anywhere in a photo
                        min_detection_confidence=self.min_detection_confidence,
                    )
            return self._face_detection
        if self._face_mesh is None:
            from mediapipe.python.solutions import face_mesh  # lazy (module docstring)

            with _native_stderr_silenced(self.quiet):
                self._face_mesh = face_mesh.FaceMesh(
                    static_image_mode=True,
                    max_num_faces=1,
                    refine_landmarks=True,
                    min_detection_confidence=self.min_detection_confidence,
                )
        return self._face_mesh

    def _process(self, name: str, rgb: np.ndarray) -> Any:
        graph = self._graph(name)
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        if name in self._warm:
            return graph.process(rgb)
        # Some start-up warnings only come the first time a graph finds a face, so keep
        # silencing until it has.
        with _native_stderr_silenced(self.quiet):
            result = graph.process(rgb)
        if result.detections if name == "detection" else result.multi_face_landmarks:
            self._warm.add(name)
        return result

    # -- detection ---------------------------------------------------------------------------

    def detect_faces(self, rgb: np.ndarray, max_faces: int = 32) -> list[FaceBox]:
        """Faces in a whole image, as boxes sorted left to right; no face is ``[]``, never an error.

        Small images are upsampled first because the full-range model works on a
        192 px letterboxed view and misses faces that fill only a few pixels of it.
        """
        if max_faces < 1:
            return []
        try:
            image = to_rgb_uint8(rgb).rgb
        except ImageReadError:
            if isinstance(rgb, np.ndarray) and 0 in rgb.shape[:2]:
                return []
            raise
        height, width = image.shape[:2]
        if min(height, width) < _MIN_SHORT_SIDE:
            return []
        long_side = max(height, width)
        if long_side < _DETECTION_LONG_SIDE:
            scale = _DETECTION_LONG_SIDE / long_side
            image = resize(image, (max(1, round(width * scale)), max(1, round(height * scale))))

        result = self._process("detection", image)
        boxes: list[FaceBox] = []
        for detection in result.detections or []:
            rel = detection.location_data.relative_bounding_box
            # Relative coordinates do not depend on the upsampling, so map straight to the input size.
            x0 = float(np.clip(rel.xmin * width, 0.0, width))
            y0 = float(np.clip(rel.ymin * height, 0.0, height))
            x1 = float(np.clip((rel.xmin + rel.width) * width, 0.0, width))
            y1 = float(np.clip((rel.ymin + rel.height) * height, 0.0, height))
            score = float(detection.score[0]) if detection.score else 0.0
            if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
                continue
            boxes.append(FaceBox(x0, y0, x1, y1, score))
        boxes = _suppress_duplicates(sorted(boxes, key=lambda box: -box.score))[:max_faces]
        boxes.sort(key=lambda box: (box.x0, box.y0))
        return boxes

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
