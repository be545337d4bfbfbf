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


# --- multi-scale detection -----------------------------------------------------------------------

from affectsr.landmarks.detector import DEFAULT_MIN_FACE, fine_pixels, is_greyscale, pyramid_sizes, skin_tint  # noqa: E402

FACE_SIZES = (20, 28, 40, 64)  # side of the detector's box, in frame pixels


@pytest.fixture(scope="module")
def astronaut_box() -> tuple[float, float, float, float]:
    """The astronaut's face box in the 512 px scene (the full-range detector's, see test_detect_faces_on_scene)."""
    return (173.66, 67.78, 277.59, 171.70)


@pytest.fixture(scope="module")
def small_faces_frame(astronaut_box) -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
    """960 x 540 frame: the astronaut photo shrunk so her face is 20, 28, 40 and 64 px, pasted on
    scikit-image's rocket photo (no face); returns the frame and the faces' boxes."""
    from skimage import data

    frame = np.asarray(Image.fromarray(data.rocket()).resize((960, 540), Image.Resampling.BICUBIC)).copy()
    scene, boxes = default_scene(), []
    x0, y0, x1, y1 = astronaut_box
    for i, size in enumerate(FACE_SIZES):
        k = size / (x1 - x0)
        # the face with about one face of surroundings, shrunk
        cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0)
        crop = scene[round(cy - half):round(cy + half), round(cx - half):round(cx + half)]
        side = round(crop.shape[0] * k)
        patch = np.asarray(Image.fromarray(crop).resize((side, side), Image.Resampling.BICUBIC))
        px, py = 60 + 220 * i, 200
        frame[py:py + side, px:px + side] = patch
        boxes.append((px + side / 2 - size / 2, py + side / 2 - size / 2, px + side / 2 + size / 2, py + side / 2 + size / 2))
    return frame, boxes


def _variants(rgb: np.ndarray) -> dict[str, object]:
    """The frame as a user might hand it over: colour, grey (L), grey16 (I;16), grey + alpha (LA), palette (P)."""
    image = Image.fromarray(rgb)
    grey = image.convert("L")
    return {"colour": rgb, "grey": grey, "grey16": Image.fromarray(np.asarray(grey).astype(np.uint16) * 257),
            "grey_alpha": grey.convert("LA"), "palette": image.convert("P", palette=Image.Palette.ADAPTIVE)}


@pytest.mark.parametrize("variant", ["colour", "grey", "grey16", "grey_alpha", "palette"])
def test_small_faces_in_a_large_frame(landmark_detector, small_faces_frame, variant) -> None:
    from affectsr.images import to_rgb_uint8

    frame, truths = small_faces_frame
    image = to_rgb_uint8(_variants(frame)[variant]).rgb
    boxes = landmark_detector.detect_faces(image)
    assert len(boxes) == len(truths), [(round(b.x0), round(b.width)) for b in boxes]  # every face, nothing else
    for box, truth in zip(boxes, truths):  # both left to right
        assert _iou((box.x0, box.y0, box.x1, box.y1), truth) > 0.4


def test_no_face_on_face_free_photos(landmark_detector) -> None:
    from skimage import data

    for name in ("coffee", "chelsea", "hubble_deep_field", "text"):
        rgb = getattr(data, name)()
        assert landmark_detector.detect_faces(rgb) == [], name
        grey = rgb if rgb.ndim == 2 else np.asarray(Image.fromarray(rgb).convert("L"))
        assert landmark_detector.detect_faces(grey) == [], f"{name} (grey)"


def test_coarse_boxes_unchanged_for_large_faces(landmark_detector, two_face_image) -> None:
    """Faces the single whole-image pass found keep exactly its boxes: prepare/evaluate crops must not move."""
    from mediapipe.python.solutions import face_detection

    with face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5) as single:
        for rgb in (default_scene(), two_face_image, default_scene()[:, ::-1]):
            h, w = rgb.shape[:2]
            expected = sorted(
                (d.location_data.relative_bounding_box.xmin * w, d.location_data.relative_bounding_box.ymin * h,
                 d.location_data.relative_bounding_box.width * w)
                for d in single.process(np.ascontiguousarray(rgb)).detections
            )
            boxes = [(b.x0, b.y0, b.width) for b in landmark_detector.detect_faces(rgb)]
            for x0, y0, w in expected:  # each one there, unchanged, and no other box on it
                near = [b for b in boxes if abs(b[0] - x0) < w and abs(b[1] - y0) < w]
                assert len(near) == 1 and np.allclose(near[0], (x0, y0, w), atol=1e-3)


def test_min_face_prunes_levels_and_drops_small_faces(landmark_detector, small_faces_frame) -> None:
    frame, truths = small_faces_frame
    assert fine_pixels(1920, 1080, 32) < fine_pixels(1920, 1080, 16) / 3  # a level fewer, 4x fewer pixels
    assert pyramid_sizes(1920, 1080, 32)[0] == pyramid_sizes(1920, 1080, 16)[1]
    assert len(pyramid_sizes(80, 60, 16)) == 1  # fits the model's 128 px input: one level
    sizes = sorted(max(b.width, b.height) for b in landmark_detector.detect_faces(frame, min_face=36))
    assert len(sizes) == 2 and sizes[0] > 0.8 * 36  # the 20 and 28 px faces are not looked for
    with LandmarkDetector(min_face=36) as det:
        assert len(det.detect_faces(frame)) == 2
        assert len(det.detect_faces(frame, min_face=DEFAULT_MIN_FACE)) == len(truths)
    with pytest.raises(ValueError, match="min_face"):
        landmark_detector.detect_faces(frame, min_face=2)
    with pytest.raises(ValueError, match="threads"):
        LandmarkDetector(threads=0)


def test_greyscale_is_detected_on_a_skin_tint() -> None:
    rgb = default_face(64)
    grey = np.repeat(np.asarray(Image.fromarray(rgb).convert("L"))[..., None], 3, 2)
    assert is_greyscale(grey) and not is_greyscale(rgb)
    tinted = skin_tint(grey)
    luma = tinted.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    unclipped = grey[..., 0] < 200
    assert np.abs(luma - grey[..., 0])[unclipped].max() <= 2.0  # same brightness, skin-coloured
    assert (tinted[..., 0] >= tinted[..., 1]).all() and (tinted[..., 1] >= tinted[..., 2]).all()


def test_tight_crop_found_on_a_padded_copy(landmark_detector, astronaut_box) -> None:
    x0, y0, x1, y1 = astronaut_box
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * 0.35  # 0.7 x the box: brows to mouth
    crop = _bicubic(default_scene()[round(cy - half):round(cy + half), round(cx - half):round(cx + half)], 128)
    # detect_faces may or may not find this crop (the chunked fine pass sometimes does, with a box clipped to the
    # crop); the padded retry must
    boxes = landmark_detector.detect_padded(crop)
    assert len(boxes) == 1 and boxes[0].width > 64  # in the crop's pixels: the face fills it
    assert landmark_detector.detect_padded(np.zeros((40, 200, 3), np.uint8)) == []  # not shaped like a face crop


def test_detect_near_finds_tracked_faces(landmark_detector, small_faces_frame) -> None:
    frame, truths = small_faces_frame
    near = [FaceBox(x0 + 3, y0 - 2, x1 + 3, y1 - 2, 1.0) for x0, y0, x1, y1 in truths[1:3]]  # moved a little
    boxes = landmark_detector.detect_near(frame, near + near[:1])  # a window twice: one face, once
    assert len(boxes) == 2
    for box, truth in zip(boxes, truths[1:3]):
        assert _iou((box.x0, box.y0, box.x1, box.y1), truth) > 0.4
    assert landmark_detector.detect_near(frame, []) == []


def test_small_candidates_pass_on_many_fair_views(monkeypatch) -> None:
    """A small candidate scoring 0.6-0.75 in most views (a 16-24 px face) is kept; a large one, or one that scores
    high in one view only (a texture), is not; two views >= 0.75 keep any candidate, as before."""
    from affectsr.landmarks import detector as D

    det = LandmarkDetector()
    box = FaceBox(100, 100, 120, 120, 0.4)

    def with_scores(scores, side=20):
        views = iter(scores)
        monkeypatch.setattr(det, "_seen_again", lambda *a: FaceBox(100, 100, 100 + side, 100 + side, next(views)))

    fair = [0.65, 0.7, 0.62, 0.5, 0.66, 0.7]
    with_scores(fair)
    assert det._verify(np.zeros((200, 200, 3), np.uint8), box, small=14.4) is not None
    with_scores(fair, side=13)  # views that shrink the box under the smallest face looked for
    assert det._verify(np.zeros((200, 200, 3), np.uint8), box, small=14.4) is None
    with_scores(fair)
    assert det._verify(np.zeros((200, 200, 3), np.uint8), box) is None
    with_scores([0.9, 0.3, 0.2, 0.4, 0.55, 0.3])
    assert det._verify(np.zeros((200, 200, 3), np.uint8), box, small=14.4) is None
    with_scores([0.8, 0.3, 0.9, 0.4, 0.5, 0.3])
    assert det._verify(np.zeros((200, 200, 3), np.uint8), box, small=False).score == 0.9
    assert len(D._VERIFY_CONTEXTS) == len(fair) and D._SMALL_VOTES[0] <= len(fair)


def test_low_scoring_boxes_are_a_separate_list() -> None:
    """The short-range decode's first list does not change when low-scoring boxes are asked for too."""
    from affectsr.landmarks.detector import _short_range_boxes

    det = LandmarkDetector()
    frame = np.asarray(Image.fromarray(default_scene()).resize((256, 256)))
    net = det._net("short0")
    sure, none = _short_range_boxes(net, frame, 0.5)
    sure_too, low = _short_range_boxes(net, frame, 0.5, 0.05)
    assert none == [] and sure == sure_too and sure
    assert all(b.score < 0.5 for b in low) and all(_iou_box(b, s) <= 0.3 for b in low for s in sure)


def _iou_box(a: FaceBox, b: FaceBox) -> float:
    return _iou((a.x0, a.y0, a.x1, a.y1), (b.x0, b.y0, b.x1, b.y1))
