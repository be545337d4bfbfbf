"""affectsr.export: ONNX export of the shipped models, the onnxruntime backend, and `affectsr export` errors."""
from __future__ import annotations

import argparse
import hashlib
import sys

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.slow  # every test exports or runs an ONNX graph

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from affectsr.bench import bench_onnx
from affectsr.commands.export import add_parser
from affectsr.export import ATOL, ExportError, OnnxSRModel, export_onnx, onnx_for
from affectsr.images import resize
from affectsr.metrics import psnr_y, to_tensor
from affectsr.models import WeightsNotFoundError, count_params, create_model, load_model
from affectsr.models.presets import weights_path
from affectsr.pipeline import Upscaler

LITE = ["affectsr-x4-lite", "affectsr-x8-lite"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def exported(one_torch_thread, tmp_path_factory, landmark_detector):
    """Both shipped presets exported (with the full check) once for the module."""
    d = tmp_path_factory.mktemp("onnx")
    return {name: export_onnx(name, d / f"{name}.onnx", detector=landmark_detector) for name in LITE}


def _lm(b: int, gen: torch.Generator) -> torch.Tensor:
    lm = torch.rand(b, 478, 3, generator=gen)
    lm[..., :2] = 0.2 + 0.6 * lm[..., :2]
    return lm


@pytest.mark.parametrize("name", LITE)
def test_export_is_valid_and_checked(exported, name):
    rep = exported[name]
    onnx.checker.check_model(str(rep.path), full_check=True)
    assert rep.path.stat().st_size == rep.size_bytes
    assert rep.uses_landmarks and rep.scale == load_model(name).scale and rep.opset == 20
    s = rep.in_size
    assert set(rep.checks) == {"batch1", "batch3_nan_row", "no_landmarks", f"size_{s + 8}x{s + 4}", "real_face"}
    assert rep.max_abs_diff is not None and rep.max_abs_diff <= ATOL
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
              for i in onnx.load(str(rep.path)).graph.input}
    assert inputs == {"lr": ["batch", 3, "height", "width"], "landmarks": ["batch", 478, 3]}


@pytest.mark.parametrize("name", LITE)
def test_onnxruntime_matches_pytorch(exported, name):
    net, ort_net = load_model(name), OnnxSRModel(exported[name].path)
    s = net.config.in_size
    gen = torch.Generator().manual_seed(7)
    lr3, lm3 = torch.rand(3, 3, s, s, generator=gen), _lm(3, gen)
    lm3[0] = float("nan")
    cases = [
        (torch.rand(1, 3, s, s, generator=gen), _lm(1, gen)),  # batch 1
        (lr3, lm3),  # batch 3 (dynamic batch), first face without landmarks
        (torch.rand(2, 3, s, s, generator=gen), None),  # no landmarks at all
        (torch.rand(2, 3, s + 12, s + 6, generator=gen), _lm(2, gen)),  # another, non-square size
    ]
    with torch.no_grad():
        for lr, lm in cases:
            ref, got = net(lr, lm), ort_net(lr, lm)
            assert got.shape == ref.shape == (lr.shape[0], 3, lr.shape[2] * net.scale, lr.shape[3] * net.scale)
            assert (got - ref).abs().max().item() <= ATOL
        # the NaN row took the image path: the same as that face run without landmarks
        alone = ort_net(lr3[:1], None)
        assert (ort_net(lr3, lm3)[:1] - alone).abs().max().item() <= 1e-5
        assert (ort_net(lr3[1:2], lm3[1:2]) - alone).abs().max().item() > 1e-4  # ...and landmarks do matter


@pytest.mark.parametrize("name", LITE)
def test_metadata_round_trip(exported, name):
    m = OnnxSRModel(exported[name].path)
    net = load_model(name)
    assert m.config == net.config and type(m.config) is type(net.config)
    assert (m.name, m.scale, m.in_size, m.uses_landmarks, m.trained) == (name, net.scale, net.config.in_size, True, True)
    assert m.weights_sha256 == hashlib.sha256(weights_path(name).read_bytes()).hexdigest()
    assert list(m.parameters()) == [] and m.eval() is m


@pytest.mark.parametrize("name", LITE)
def test_upscaler_with_the_onnx_backend(exported, name, default_face, landmark_detector):
    scale = load_model(name).scale
    lr = resize(default_face, (128 // scale, 128 // scale))
    with Upscaler(model=OnnxSRModel(exported[name].path), detector=landmark_detector) as up:
        a = up(lr, aligned=True)
    with Upscaler(model=name, detector=landmark_detector) as up:
        b = up(lr, aligned=True)
    assert a.image.shape == b.image.shape == (128, 128, 3) and a.scale == scale
    assert a.model_name == name and a.trained
    assert a.faces[0].has_landmarks == b.faces[0].has_landmarks
    assert float(psnr_y(to_tensor(a.image), to_tensor(b.image), 0)[0]) > 40.0


@pytest.mark.parametrize("make", [lambda: create_model("srcnn-x4"),
                                  lambda: create_model("affectsr-x8-lite", prior="none")],
                         ids=["srcnn", "prior-none"])
def test_models_without_landmarks_export_one_input(tmp_path, make):
    net = make().eval()
    rep = export_onnx(net, tmp_path / "m.onnx")
    assert not rep.uses_landmarks and rep.max_abs_diff <= ATOL and "no_landmarks" not in rep.checks
    m = OnnxSRModel(rep.path)
    assert m.input_names == ["lr"] and not m.uses_landmarks
    lr = torch.rand(2, 3, 20, 24)
    with torch.no_grad():
        ref = net(lr)
    assert (m(lr, _lm(2, torch.Generator().manual_seed(0))) - ref).abs().max().item() <= ATOL  # landmarks ignored


class _BatchDependent(torch.nn.Module):
    """Python control flow the tracer freezes: the graph cannot reproduce it at other batch sizes."""

    scale = 4
    uses_landmarks = False

    def forward(self, lr, landmarks=None):
        up = F.interpolate(lr, scale_factor=4, mode="nearest")
        return up * 2 if lr.shape[0] > 1 else up


def test_check_catches_a_graph_that_differs(tmp_path):
    out = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_onnx(_BatchDependent(), out)
    assert not out.exists()
    assert export_onnx(_BatchDependent(), out, check=False).max_abs_diff is None  # unchecked: written as asked


def test_refuses_to_overwrite(tmp_path):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_onnx("affectsr-x8-lite", out, check=False)
    assert out.read_bytes() == b"keep me"
    export_onnx("affectsr-x8-lite", out, check=False, overwrite=True)
    assert OnnxSRModel(out).name == "affectsr-x8-lite"


def _cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="affectsr")
    add_parser(p.add_subparsers())
    args = p.parse_args(["export", *argv])
    return args.func(args)


def test_cli_export_and_its_errors(tmp_path, capsys):
    out = tmp_path / "sub" / "x8.onnx"
    assert _cli(["--model", "affectsr-x8-lite", "-o", str(out), "--no-check", "--opset", "17"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out and OnnxSRModel(out).scale == 8
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors")
    bad = {
        "neither a preset": ["--model", "no-such-model", "-o", str(tmp_path / "a.onnx")],
        "no trained weights": ["--model", "rrdb-x4", "-o", str(tmp_path / "a.onnx")],
        f"{junk}: not a readable safetensors file": ["--model", str(junk), "-o", str(tmp_path / "a.onnx")],
        "exists (use --overwrite": ["--model", "affectsr-x8-lite", "-o", str(out)],
        "cannot write there": ["--model", "affectsr-x8-lite", "-o", str(blocker / "a.onnx")],
        "ending in .onnx": ["--model", "affectsr-x8-lite", "-o", str(tmp_path / "a.png")],
        "--opset 10": ["--model", "affectsr-x8-lite", "-o", str(tmp_path / "a.onnx"), "--opset", "10"],
    }
    for needle, argv in bad.items():
        assert _cli(argv) == 2, needle
        err = capsys.readouterr().err
        assert needle in err and err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "a.onnx").exists()


def test_missing_onnxruntime_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    assert _cli(["--model", "affectsr-x8-lite", "-o", str(tmp_path / "a.onnx")]) == 2
    assert "pip install affectsr[onnx]" in capsys.readouterr().err
    with pytest.raises(ImportError, match=r"affectsr\[onnx\]"):
        OnnxSRModel(tmp_path / "a.onnx")


def test_onnx_for_caches_by_weights_hash(tmp_path, landmark_detector):
    first = onnx_for("affectsr-x8-lite", tmp_path, detector=landmark_detector)
    assert first.parent == tmp_path and first.name.startswith("affectsr-x8-lite-") and first.suffix == ".onnx"
    stamp = first.stat().st_mtime_ns
    assert onnx_for("affectsr-x8-lite", tmp_path) == first and first.stat().st_mtime_ns == stamp  # not re-exported
    assert onnx_for(first) == first  # a .onnx path is used as is
    with pytest.raises(FileNotFoundError, match="no such ONNX file"):
        onnx_for(tmp_path / "missing.onnx")
    with pytest.raises(WeightsNotFoundError):
        onnx_for("rrdb-x4", tmp_path)  # no trained weights ship for the full-size RRDB


def test_unreadable_or_foreign_onnx_files(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all")
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        OnnxSRModel(junk)
    h = onnx.helper
    graph = h.make_graph([h.make_node("Identity", ["lr"], ["sr"])], "g",
                         [h.make_tensor_value_info("lr", onnx.TensorProto.FLOAT, [1, 3, 4, 4])],
                         [h.make_tensor_value_info("sr", onnx.TensorProto.FLOAT, [1, 3, 4, 4])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), str(foreign))
    with pytest.raises(ValueError, match="not an affectsr ONNX export"):
        OnnxSRModel(foreign)


def test_bench_onnx_rows():
    rows = bench_onnx(["affectsr-x8-lite"], [1, 2], min_time=0.05)
    assert [(r.batch, r.stage, r.device, r.lr_size, r.scale) for r in rows] == [
        (1, "model", "cpu-onnxruntime", 16, 8), (2, "model", "cpu-onnxruntime", 16, 8)]
    assert all(r.params == count_params(create_model("affectsr-x8-lite")) and r.faces_per_s > 0 for r in rows)
    assert rows[1].faces_per_s == pytest.approx(2 / (rows[1].latency_ms / 1e3))


def test_cli_wiring_export_and_upscale_backend(tmp_path, monkeypatch, default_face):
    from PIL import Image

    from affectsr.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # onnx_for's first-use export lands here
    assert main(["export", "--model", "affectsr-x8-lite", "-o", str(tmp_path / "x8.onnx"), "--no-check"]) == 0
    Image.fromarray(resize(default_face, (16, 16))).save(tmp_path / "face.png")
    argv = ["upscale", str(tmp_path / "face.png"), "-o", str(tmp_path / "out"), "--aligned", "-q",
            "--model", "affectsr-x8-lite", "--backend", "onnxruntime"]
    assert main(argv) == 0
    assert Image.open(tmp_path / "out" / "face.png").size == (128, 128)
    assert [p.name[:17] for p in (tmp_path / "cache" / "affectsr" / "onnx").iterdir()] == ["affectsr-x8-lite-"]


# --- the prior inside the graph (issue 17) --------------------------------------------------------------


def _tensor_sizes(model) -> list[int]:
    """Element counts of every initializer and Constant in a graph."""
    sizes = [int(torch.tensor(list(t.dims)).prod()) for t in model.graph.initializer]
    for node in model.graph.node:
        sizes += [int(torch.tensor(list(a.t.dims)).prod()) for a in node.attribute if a.type == onnx.AttributeProto.TENSOR]
    return sizes


@pytest.mark.parametrize("name", LITE)
def test_no_dense_adjacency_in_the_graph(exported, name):
    """The graph holds the face graph once, as a 478 x 21 neighbour table and its 478 x 21 weights, for both GCN
    layers (not a 478 x 478 matrix per layer, nor a copy of the table per layer)."""
    model = onnx.load(str(exported[name].path))
    assert _tensor_sizes(model).count(478 * 478) == 0
    assert _tensor_sizes(model).count(478 * 21) == 2  # indices + weights, shared by the layers
    assert exported[name].size_bytes < 3_000_000  # 4.4 MB with an adjacency per layer


def _node_outputs(path, lr, lm) -> dict[str, list]:
    """Run ONNX Runtime with profiling: node name -> output shapes of that run."""
    import json

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(path.parent / "profile")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    sess.run(None, {"lr": lr.numpy(), "landmarks": lm.numpy()})
    events = json.loads(open(sess.end_profiling()).read())
    return {e["name"][:-len("_kernel_time")]: [list(s.values())[0] for s in e["args"].get("output_type_shape", [])]
            for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")}


def test_faces_without_landmarks_skip_the_prior_in_the_graph(tmp_path):
    torch.manual_seed(0)
    net = create_model("affectsr-x4", nf=16, nb=1, gc=8, gcn_dims=(8, 8)).eval()
    with torch.no_grad():
        for f in net.fusions:
            f.proj.weight.normal_(0, 0.1)
    path = export_onnx(net, tmp_path / "m.onnx", check=False).path
    gen = torch.Generator().manual_seed(0)
    lr = torch.rand(3, 3, 8, 8, generator=gen)
    prior_nodes = ("/net/prior/", "/fusions.")

    none = _node_outputs(path, lr, torch.full((3, 478, 3), float("nan")))
    ran = {k: v for k, v in none.items() if any(p in k for p in prior_nodes)}
    assert ran, "the profile names the prior's nodes"
    adjacency = [478, 1, 21]  # the GCN's Â weights, shaped once per run for both layers: no face data
    for k, shapes in ran.items():  # every map and node table the prior made was empty: 0 faces went in
        assert all(0 in s for s in shapes if len(s) >= 2 and s != adjacency), (k, shapes)

    lm = _lm(3, gen)
    lm[1] = float("nan")
    mixed = _node_outputs(path, lr, lm)
    heads = {k: v for k, v in mixed.items() if k.startswith("/net/prior/heads.")}
    assert heads and all(s[0][0] == 2 for s in heads.values())  # the two faces with landmarks, not three
    with torch.no_grad():
        ref = net(lr, lm)
    got = OnnxSRModel(path)(lr, lm)
    assert (got - ref).abs().max().item() <= ATOL
    assert (got[1:2] - net.backbone(lr[1:2])).abs().max().item() <= 1e-5


@pytest.mark.parametrize("scale", [4, 8])
def test_residual_bicubic_exports_without_a_cubic_resize(tmp_path, scale):
    """The full presets' bicubic skip: a Pad + Conv + DepthToSpace in the graph (ORT's cubic Resize took ~4 ms a
    face at x8), with the same output as PyTorch's F.interpolate on odd and even sizes."""
    torch.manual_seed(0)
    net = create_model(f"affectsr-x{scale}", nf=16, nb=1, gc=8, gcn_dims=(8, 8), residual=True).eval()
    with torch.no_grad():
        for p in net.backbone.conv_last.parameters():
            p.normal_(0, 0.01)
    path = export_onnx(net, tmp_path / "m.onnx", check=False).path
    assert not [n for n in onnx.load(str(path)).graph.node if n.op_type == "Resize"
                and any(a.name == "mode" and a.s == b"cubic" for a in n.attribute)]
    runtime = OnnxSRModel(path)
    gen = torch.Generator().manual_seed(1)
    for size in [(8, 8), (7, 10)]:
        lr, lm = torch.rand(2, 3, *size, generator=gen), _lm(2, gen)
        lm[1] = float("nan")
        with torch.no_grad():
            ref = net(lr, lm)
        assert (runtime(lr, lm) - ref).abs().max().item() < 1e-4
