"""`affectsr emotion` and face-level reading on the bundled public-domain face (no dataset needed)."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from PIL import Image

from affectsr.emotion import EMOTIONS, detect_emotions, load_emotion_classifier
from affectsr.emotion.classifier import TEACHER_CLASSIFIER
from affectsr.commands.emotion import add_parser


@pytest.fixture(scope="module")
def clf():
    return load_emotion_classifier()


def cli(argv: list[str]) -> int:
    """Parse and run like the main CLI does."""
    parser = argparse.ArgumentParser(prog="affectsr")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_detected_faces_are_read_left_to_right(clf, landmark_detector, two_face_image, no_face_image):
    faces = detect_emotions(two_face_image, clf, landmark_detector)
    assert len(faces) == 2
    assert faces[0].box[0] < faces[1].box[0]
    assert [f.label for f in faces] == ["happy", "happy"]
    for f in faces:
        x0, y0, x1, y1 = f.box
        assert x1 - x0 == y1 - y0  # square crops
        assert f.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert detect_emotions(no_face_image, clf, landmark_detector) == []


def test_aligned_mode_reads_the_whole_image(clf, default_face):
    (face,) = detect_emotions(default_face, clf, aligned=True)
    assert face.detection is None and face.box == (0, 0, 128, 128) and face.label == "happy"


def test_emotion_command_json_on_the_bundled_face(tmp_path, capsys, default_face, no_face_image):
    Image.fromarray(default_face).save(tmp_path / "smile.png")
    Image.fromarray(no_face_image).save(tmp_path / "empty.png")
    assert cli(["emotion", "--json", str(tmp_path / "smile.png"), str(tmp_path / "empty.png")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["labels"] == list(EMOTIONS)
    assert doc["classifier"] == TEACHER_CLASSIFIER  # the most accurate shipped reader is the command's default
    smile, empty = doc["images"]
    assert len(smile["faces"]) == 1 and empty["faces"] == []
    face = smile["faces"][0]
    assert face["label"] == "happy"
    assert list(face["probabilities"]) == list(EMOTIONS)
    assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert len(face["box"]) == 4 and doc["errors"] == []


def test_emotion_command_text_and_errors(tmp_path, capsys, default_face):
    Image.fromarray(default_face).save(tmp_path / "smile.jpg")
    (tmp_path / "broken.png").write_text("not an image")
    code = cli(["emotion", str(tmp_path / "smile.jpg"), str(tmp_path / "broken.png"), str(tmp_path / "missing.png")])
    out, err = capsys.readouterr()
    assert code == 1
    assert "smile.jpg: face 1" in out and "happy" in out
    assert "broken.png" in err and "missing.png" in err
    assert cli(["emotion", "--classifier", "fer-nope", str(tmp_path / "smile.jpg")]) == 2


def test_emotion_command_handles_a_folder(tmp_path, capsys, default_face):
    Image.fromarray(np.ascontiguousarray(default_face[:, ::-1])).save(tmp_path / "mirror.png")
    assert cli(["emotion", "--aligned", str(tmp_path)]) == 0
    assert "mirror.png: face 1 (whole image): happy" in capsys.readouterr().out


def test_emotion_command_without_arguments_reads_the_bundled_photo(capsys):
    assert cli(["emotion"]) == 0
    out = capsys.readouterr().out
    assert out.count("face 1") == 1 and "<bundled astronaut photo>: face 1" in out and ": happy" in out
