"""MediaPipe wrapper: face boxes on real and synthetic images, landmarks on big and tiny crops."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from affectsr.assets import DEFAULT_FACE_BOX, default_face, default_scene
from affectsr.landmarks import NUM_LANDMARKS, FaceBox, LandmarkDetector

NOSE_TIP = 1
FOREHEAD = 10
CHIN = 152


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


def _bicubic(rgb: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BICUBIC))


def _assert_plausible_face(points: np.ndarray) -> None:
    assert points.shape == (NUM_LANDMARKS, 3) and points.dtype == np.float32
    assert np.isfinite(points).all()
    inside = ((points[:, :2] >= 0.0) & (points[:, :2] <= 1.0)).all(axis=1)
    assert inside.mean() > 0.95
    assert 0.35 < points[NOSE_TIP, 0] < 0.65 and 0.35 < points[NOSE_TIP, 1] < 0.7
    assert points[FOREHEAD, 1] < points[NOSE_TIP, 1] < points[CHIN, 1]  # y grows downwards


def test_face_box_square() -> None:
    box = FaceBox(10.0, 20.0, 30.0, 60.0, score=0.9)
    assert box.square(margin=0.5) == (-10, 10, 50, 70)  # side 40 * 1.5 = 60, centre (20, 40)
    assert box.square(margin=0.0) == (0, 20, 40, 60)
    assert FaceBox(5.0, 5.0, 5.2, 5.1, 0.5).square() == (5, 5, 6, 6)  # never empty


def test_default_assets() -> None:
    scene = default_scene()
    assert scene.shape == (512, 512, 3) and scene.dtype == np.uint8
    face = default_face(64)
    assert face.shape == (64, 64, 3) and face.dtype == np.uint8
    x0, y0, x1, y1 = DEFAULT_FACE_BOX
    assert x1 - x0 == y1 - y0


def test_detect_faces_on_scene(landmark_detector: LandmarkDetector) -> None:
    boxes = landmark_detector.detect_faces(default_scene())
    assert len(boxes) == 1
    known = (0.339 * 512, 0.132 * 512, (0.339 + 0.203) * 512, (0.132 + 0.203) * 512)
    box = boxes[0]
    assert _iou((box.x0, box.y0, box.x1, box.y1), known) > 0.8
    assert 0.5 < box.score <= 1.0
    # The bundled crop really is centred on the detected face.
    cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    x0, y0, x1, y1 = DEFAULT_FACE_BOX
    assert abs(cx - (x0 + x1) / 2) < 8 and abs(cy - (y0 + y1) / 2) < 8


def test_detect_faces_two_faces(landmark_detector: LandmarkDetector, two_face_image: np.ndarray) -> None:
    boxes = landmark_detector.detect_faces(two_face_image)
    assert len(boxes) == 2
    assert boxes[0].x1 < 200 < boxes[1].x0  # sorted left to right, one per half
    assert landmark_detector.detect_faces(two_face_image, max_faces=1)[0].score >= min(b.score for b in boxes)


def test_no_face(landmark_detector: LandmarkDetector, no_face_image: np.ndarray) -> None:
    assert landmark_detector.detect_faces(no_face_image) == []
    landmarks, found = landmark_detector.detect_landmarks([no_face_image])
    assert landmarks.shape == (1, NUM_LANDMARKS, 3) and found.tolist() == [False]
    assert np.isnan(landmarks).all()


@pytest.mark.parametrize("shape", [(1, 1, 3), (5, 5, 3), (5, 5), (7, 300, 3), (0, 0, 3)])
def test_tiny_images_give_no_faces(landmark_detector: LandmarkDetector, shape: tuple[int, ...]) -> None:
    assert landmark_detector.detect_faces(np.full(shape, 127, dtype=np.uint8)) == []


def test_greyscale_and_small_images(landmark_detector: LandmarkDetector, default_face: np.ndarray) -> None:
    grey = default_scene().mean(axis=2).astype(np.uint8)
    assert len(landmark_detector.detect_faces(grey)) == 1
    small = _bicubic(default_face, 32)  # upsampled internally; box comes back in 32 px coordinates
    boxes = landmark_detector.detect_faces(small)
    assert len(boxes) == 1
    assert 0 <= boxes[0].x0 < 16 < boxes[0].x1 <= 32


@pytest.mark.parametrize("size", [128, 32])
def test_landmarks_on_default_face(
    landmark_detector: LandmarkDetector, default_face: np.ndarray, size: int
) -> None:
    crop = default_face if size == 128 else _bicubic(default_face, size)
    landmarks, found = landmark_detector.detect_landmarks(crop[None])
    assert landmarks.shape == (1, NUM_LANDMARKS, 3) and landmarks.dtype == np.float32
    assert found.tolist() == [True]
    _assert_plausible_face(landmarks[0])


def test_landmarks_small_crops_agree_with_large(
    landmark_detector: LandmarkDetector, default_face: np.ndarray
) -> None:
    crops = [default_face, _bicubic(default_face, 32), _bicubic(default_face, 16)]
    landmarks, found = landmark_detector.detect_landmarks(crops)
    assert found.tolist() == [True, True, True]
    error_32 = np.abs(landmarks[1, :, :2] - landmarks[0, :, :2]).mean()
    error_16 = np.abs(landmarks[2, :, :2] - landmarks[0, :, :2]).mean()
    assert error_32 < 0.02  # about 1 px at 32 px
    assert error_16 < 0.08  # 16 px crops are only rescued by the padded retry and are rough


def test_landmarks_batch_and_mirror(landmark_detector: LandmarkDetector, default_face: np.ndarray) -> None:
    batch = np.stack([default_face, default_face[:, ::-1]])
    landmarks, found = landmark_detector.detect_landmarks(batch)
    assert found.tolist() == [True, True]
    # x grows to the right: mirroring the crop mirrors the nose tip about x = 0.5.
    assert abs(landmarks[1, NOSE_TIP, 0] - (1.0 - landmarks[0, NOSE_TIP, 0])) < 0.02


def test_landmarks_mixed_list(landmark_detector: LandmarkDetector, default_face: np.ndarray) -> None:
    tall = default_scene()[20:228, 145:305]  # 208 x 160: padded to a square internally
    crops = [np.zeros((1, 1, 3), np.uint8), tall, np.zeros((0, 4, 3), np.uint8), default_face[..., 0]]
    landmarks, found = landmark_detector.detect_landmarks(crops)
    assert found.tolist() == [False, True, False, True]
    assert np.isnan(landmarks[[0, 2]]).all()
    _assert_plausible_face(landmarks[1])
    _assert_plausible_face(landmarks[3])
    empty, none_found = landmark_detector.detect_landmarks([])
    assert empty.shape == (0, NUM_LANDMARKS, 3) and none_found.shape == (0,)
    with pytest.raises(ValueError, match="list"):
        landmark_detector.detect_landmarks(default_face)  # one H x W x 3 crop must be wrapped in a list


def test_fresh_detector_is_quiet_and_reusable(capfd: pytest.CaptureFixture[str], default_face: np.ndarray) -> None:
    detector = LandmarkDetector()
    with detector:
        assert len(detector.detect_faces(default_face)) == 1
        assert detector.detect_landmarks([default_face])[1].all()
    assert detector.detect_landmarks([default_face])[1].all()  # graphs are rebuilt after close()
    detector.close()
    detector.close()  # idempotent
    err = capfd.readouterr().err
    assert "inference_feedback_manager" not in err and "XNNPACK" not in err


def test_constructor_validates() -> None:
    with pytest.raises(ValueError):
        LandmarkDetector(min_detection_confidence=1.5)
    with pytest.raises(ValueError):
        LandmarkDetector(detector_size=8)
