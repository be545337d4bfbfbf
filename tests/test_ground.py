"""The ground floor: one weights reader/writer, the shared vocabulary (types), KEY=VALUE overrides, run info."""
from __future__ import annotations

import dataclasses
import shlex

import pytest
import torch
from safetensors.torch import save_file

from affectsr import weights
from affectsr.emotion import load_emotion_classifier
from affectsr.landmarks.predictor import LandmarkPredictor, PredictorConfig, load_predictor, save_predictor
from affectsr.models import PRESETS, create_model, load_model, save_weights
from affectsr.overrides import apply_overrides, parse_overrides
from affectsr.runinfo import command_line, machine, now
from affectsr.types import SCALES, SRModel, check_landmark_mode, check_scale, uses_landmarks


def test_every_shipped_file_keeps_its_format_tag_and_reads():
    """The tags of the files shipped so far are the scheme: sr 'affectsr', classifier 'affectsr-fer',
    landmarks 'affectsr-landmarks'."""
    names = weights.shipped_names()
    assert names, "no shipped weights found"
    for name in names:
        kind = "classifier" if name.startswith("fer-") else "landmarks" if name.endswith(".landmarks") else "sr"
        path = weights.shipped(name)
        assert weights.read_metadata(path, kind)["format"] == weights.FORMATS[kind]
        state, meta = weights.read_weights(path, kind)
        assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
        other = "sr" if kind != "sr" else "classifier"
        with pytest.raises(ValueError, match="it holds"):
            weights.read_metadata(path, other)


def test_foreign_and_broken_files_are_one_line_errors(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors")
    for kind in ("sr", "classifier", "landmarks"):
        for path in (foreign, junk):
            with pytest.raises(ValueError) as e:
                weights.read_weights(path, kind)
            assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_the_three_kinds_round_trip_through_one_writer(tmp_path):
    torch.manual_seed(0)
    sr = create_model("srcnn-x4")
    p = save_weights(sr, tmp_path / "sr.safetensors", half=False, metadata={"steps": "3"})
    meta = weights.read_metadata(p, "sr")
    assert (meta["arch"], meta["steps"], meta["format"]) == ("srcnn", "3", "affectsr")
    assert all(torch.equal(a, b) for a, b in zip(load_model(str(p)).state_dict().values(), sr.state_dict().values()))
    lp = save_predictor(LandmarkPredictor(PredictorConfig(in_size=16, width=8, hidden=16)), tmp_path / "p.safetensors")
    assert weights.read_metadata(lp, "landmarks")["format"] == "affectsr-landmarks"
    assert load_predictor(lp).config.in_size == 16
    clf = load_emotion_classifier()
    cp = weights.write_weights(clf.net.state_dict(), tmp_path / "c.safetensors", "classifier", clf.config.to_dict())
    assert load_emotion_classifier(str(cp)).config == clf.config


def test_every_preset_is_an_sr_model():
    for name in PRESETS:
        with torch.device("meta"):
            net = create_model(name)
        assert isinstance(net, SRModel), name
        assert net.scale in SCALES and net.num_landmarks == 478
        assert uses_landmarks(net) == (getattr(net.config, "prior", "none") != "none"), name


def test_checks_say_what_is_allowed():
    assert check_scale(8) == 8 and check_landmark_mode("auto") == "auto"
    with pytest.raises(ValueError, match="scale must be 4 or 8, got 3"):
        check_scale(3)
    with pytest.raises(ValueError, match="auto, detect or predict, got 'hr'"):
        check_landmark_mode("hr")
    assert check_landmark_mode("hr", ("hr", "none")) == "hr"


@dataclasses.dataclass(frozen=True)
class _Cfg:
    steps: int = 1
    lr: float = 0.1
    amp: bool = True
    data: tuple[str, ...] = ("a",)
    betas: tuple[float, float] = (0.9, 0.99)
    name: str = ""


def test_one_override_parser():
    cfg = apply_overrides(_Cfg(), ["steps=7", "lr=1e-3", "amp=off", "data=x,y", "betas=0.8,0.9", "name=run-1"])
    assert cfg == _Cfg(7, 1e-3, False, ("x", "y"), (0.8, 0.9), "run-1")
    assert parse_overrides({"dim_x": 1}, ["dim-x=2"]) == {"dim_x": 2}
    for bad, msg in [("steps", "expected KEY=VALUE"), ("nope=1", "unknown key 'nope'"), ("amp=maybe", "true/false"),
                     ("steps=1.5", "expected int")]:
        with pytest.raises(ValueError, match=msg):
            apply_overrides(_Cfg(), [bad])


def test_run_info():
    argv = ["evaluate", "--model", "a b", "--classifier", "fer-mini-xception"]
    assert command_line(argv) == "affectsr evaluate --model 'a b' --classifier fer-mini-xception"
    assert shlex.split(command_line(argv))[1:] == argv
    assert "torch" in machine() and now()[:2] == "20"
