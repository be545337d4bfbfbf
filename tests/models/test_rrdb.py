"""RRDBNet against an independent re-implementation of ESRGAN's published ``RRDBNet_arch.py``.

``ESRGANRRDBNet`` below is written from xinntao/ESRGAN's ``models/RRDBNet_arch.py`` (current
naming). Checkpoints of it, and of the two other namings in circulation (ESRGAN's old
sequential arch and BasicSR's), must load into :class:`affectsr.models.RRDBNet` with
``strict=True`` and give the same output.
"""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from affectsr.models import AffectSRNet, ModelConfig, RRDBNet, esrgan_state_dict
from affectsr.models.rrdb import infer_rrdb_config

NF, NB, GC = 16, 2, 8


# ---------------------------------------------------------------------------------------------
# Reference: ESRGAN RRDBNet_arch.py (Wang et al. 2018), x4 only, as published.
class _RDB5C(nn.Module):
    def __init__(self, nf=64, gc=32, bias=True):
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1, bias=bias)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1, bias=bias)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1, bias=bias)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1, bias=bias)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1, bias=bias)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x):
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class _RRDB(nn.Module):
    def __init__(self, nf, gc=32):
        super().__init__()
        self.RDB1 = _RDB5C(nf, gc)
        self.RDB2 = _RDB5C(nf, gc)
        self.RDB3 = _RDB5C(nf, gc)

    def forward(self, x):
        out = self.RDB1(x)
        out = self.RDB2(out)
        out = self.RDB3(out)
        return out * 0.2 + x


class ESRGANRRDBNet(nn.Module):
    def __init__(self, in_nc=3, out_nc=3, nf=64, nb=23, gc=32):
        super().__init__()
        rrdb_block_f = functools.partial(_RRDB, nf=nf, gc=gc)
        self.conv_first = nn.Conv2d(in_nc, nf, 3, 1, 1, bias=True)
        self.RRDB_trunk = nn.Sequential(*[rrdb_block_f() for _ in range(nb)])
        self.trunk_conv = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
        self.upconv1 = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
        self.upconv2 = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
        self.HRconv = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
        self.conv_last = nn.Conv2d(nf, out_nc, 3, 1, 1, bias=True)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x):
        fea = self.conv_first(x)
        trunk = self.trunk_conv(self.RRDB_trunk(fea))
        fea = fea + trunk
        fea = self.lrelu(self.upconv1(F.interpolate(fea, scale_factor=2, mode="nearest")))
        fea = self.lrelu(self.upconv2(F.interpolate(fea, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.HRconv(fea)))


# ---------------------------------------------------------------------------------------------
# Key conversions from the current ESRGAN naming to the other two, written from the spec.
def to_old_arch(sd: dict, nb: int) -> dict:
    top = {"conv_first.": "model.0.", "trunk_conv.": f"model.1.sub.{nb}.", "upconv1.": "model.3.",
           "upconv2.": "model.6.", "HRconv.": "model.8.", "conv_last.": "model.10."}
    out = {}
    for k, v in sd.items():
        if k.startswith("RRDB_trunk."):
            _, i, rdb, conv, param = k.split(".")  # RRDB_trunk.{i}.RDBk.convj.{weight,bias}
            out[f"model.1.sub.{i}.{rdb}.{conv}.0.{param}"] = v
        else:
            (prefix,) = [p for p in top if k.startswith(p)]
            out[top[prefix] + k[len(prefix):]] = v
    return out


def to_basicsr(sd: dict) -> dict:
    top = {"conv_first.": "conv_first.", "trunk_conv.": "conv_body.", "upconv1.": "conv_up1.",
           "upconv2.": "conv_up2.", "upconv3.": "conv_up3.", "HRconv.": "conv_hr.", "conv_last.": "conv_last."}
    out = {}
    for k, v in sd.items():
        if k.startswith("RRDB_trunk."):
            _, i, rdb, conv, param = k.split(".")
            out[f"body.{i}.rdb{rdb[-1]}.{conv}.{param}"] = v
        else:
            (prefix,) = [p for p in top if k.startswith(p)]
            out[top[prefix] + k[len(prefix):]] = v
    return out


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(1234)
    ref = ESRGANRRDBNet(3, 3, NF, NB, GC).eval()
    with torch.no_grad():  # non-trivial biases everywhere so they are checked too
        for name, p in ref.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.05)
    return ref


@pytest.fixture(scope="module")
def lr():
    torch.manual_seed(7)
    return torch.rand(2, 3, 12, 10)


def _check_loads_and_matches(sd, reference, lr):
    model = RRDBNet(3, 3, NF, NB, GC, scale=4).eval()
    model.load_state_dict(esrgan_state_dict(sd), strict=True)
    with torch.no_grad():
        ours, theirs = model(lr), reference(lr)
    assert ours.shape == (2, 3, 48, 40)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    return model


def test_reference_keys_are_current_esrgan_naming(reference):
    keys = set(reference.state_dict())
    assert "RRDB_trunk.0.RDB1.conv1.weight" in keys and f"RRDB_trunk.{NB - 1}.RDB3.conv5.bias" in keys
    assert {"conv_first.weight", "trunk_conv.weight", "upconv1.weight", "upconv2.weight",
            "HRconv.weight", "conv_last.weight"} <= keys


def test_current_naming_loads_and_matches(reference, lr):
    sd = reference.state_dict()
    mapped = esrgan_state_dict(sd)
    assert set(mapped) == set(sd)
    _check_loads_and_matches(sd, reference, lr)


def test_old_sequential_naming_loads_and_matches(reference, lr):
    old = to_old_arch(reference.state_dict(), NB)
    assert "model.1.sub.0.RDB1.conv1.0.weight" in old and f"model.1.sub.{NB}.weight" in old
    _check_loads_and_matches(old, reference, lr)


def test_basicsr_naming_loads_and_matches(reference, lr):
    bsr = {"params_ema": to_basicsr(reference.state_dict())}
    _check_loads_and_matches(bsr, reference, lr)
    # "params_ema" wins over "params" when both are present (BasicSR saves both)
    decoy = {k: torch.zeros_like(v) for k, v in bsr["params_ema"].items()}
    _check_loads_and_matches({"params": decoy, "params_ema": bsr["params_ema"]}, reference, lr)
    _check_loads_and_matches({"params": bsr["params_ema"]}, reference, lr)


@pytest.mark.parametrize("convert", ["current", "basicsr"])
def test_dataparallel_prefix(reference, lr, convert):
    sd = reference.state_dict()
    if convert == "basicsr":
        sd = to_basicsr(sd)
    _check_loads_and_matches({f"module.{k}": v for k, v in sd.items()}, reference, lr)


def test_dataparallel_prefix_old_arch(reference, lr):
    old = to_old_arch(reference.state_dict(), NB)
    _check_loads_and_matches({f"module.{k}": v for k, v in old.items()}, reference, lr)


@pytest.mark.parametrize("scale,naming", [(2, "current"), (4, "current"), (8, "current"), (4, "old"),
                                           (4, "basicsr"), (8, "basicsr")])
def test_infer_rrdb_config(scale, naming):
    nf, nb, gc = 24, 3, 12
    sd = RRDBNet(3, 3, nf, nb, gc, scale).state_dict()
    if naming == "old":  # the old sequential arch only exists for x4
        sd = to_old_arch(sd, nb)
    elif naming == "basicsr":
        sd = to_basicsr(sd)
        assert ("conv_up3.weight" in sd) == (scale == 8)
    cfg = infer_rrdb_config(esrgan_state_dict(sd))
    assert cfg == {"nf": nf, "nb": nb, "gc": gc, "scale": scale}
    RRDBNet(3, 3, **cfg).load_state_dict(esrgan_state_dict(sd), strict=True)


def test_affectsrnet_backbone_round_trip_from_reference(reference, lr):
    """The backbone of an AffectSRNet is an RRDBNet, parameter for parameter."""
    model = AffectSRNet(ModelConfig(scale=4, nf=NF, nb=NB, gc=GC, prior="none")).eval()
    model.backbone.load_state_dict(esrgan_state_dict(reference.state_dict()), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model(lr), reference(lr), atol=1e-6, rtol=0)


@pytest.mark.parametrize("prior", ["spatial", "pooled"])
@pytest.mark.parametrize("fusion", ["msaf", "concat"])
def test_zero_init_equivalence(reference, lr, prior, fusion):
    """A fresh AffectSRNet with a trained x4 RRDB backbone outputs exactly what the RRDB outputs."""
    torch.manual_seed(3)
    rrdb = RRDBNet(3, 3, NF, NB, GC, scale=4).eval()
    with torch.no_grad():
        for p in rrdb.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    cfg = ModelConfig(scale=4, nf=NF, nb=NB, gc=GC, prior=prior, fusion=fusion, gcn_dims=(8, 8),
                      pooled_map=(4, 8))
    model = AffectSRNet(cfg).eval()
    model.backbone.load_state_dict(rrdb.state_dict(), strict=True)
    landmarks = torch.rand(lr.shape[0], 478, 3)
    landmarks[..., 2] -= 0.5  # MediaPipe z is signed
    with torch.no_grad():
        out, ref = model(lr, landmarks), rrdb(lr)
    assert out.shape == ref.shape == (2, 3, 48, 40)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    # and with the published ESRGAN weights layout as source
    model.backbone.load_state_dict(esrgan_state_dict(to_old_arch(reference.state_dict(), NB)), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model(lr, landmarks), reference(lr), atol=1e-6, rtol=0)


def test_scale8_has_upconv3_and_scale_checks():
    m8 = RRDBNet(3, 3, 8, 1, 4, scale=8)
    assert hasattr(m8, "upconv3") and not hasattr(m8, "upconv4")
    assert {"upconv1.weight", "upconv2.weight", "upconv3.weight"} <= set(m8.state_dict())
    with torch.no_grad():
        assert m8(torch.rand(1, 3, 5, 7)).shape == (1, 3, 40, 56)
    m2 = RRDBNet(3, 3, 8, 1, 4, scale=2)
    assert not hasattr(m2, "upconv2")
    with torch.no_grad():
        assert m2(torch.rand(1, 3, 5, 7)).shape == (1, 3, 10, 14)
    # an x4 checkpoint does not load into x8 strictly (upconv3 missing)
    with pytest.raises(RuntimeError, match="upconv3"):
        m8.load_state_dict(RRDBNet(3, 3, 8, 1, 4, scale=4).state_dict(), strict=True)
    for bad in (1, 3, 16):
        with pytest.raises(ValueError):
            RRDBNet(3, 3, 8, 1, 4, scale=bad)
        with pytest.raises(ValueError):
            ModelConfig(scale=bad)


def test_rrdbnet_published_x4_parameter_count():
    """ESRGAN's RRDB_ESRGAN_x4 (nf64 nb23 gc32) has 16,697,987 parameters; ours matches the reference."""
    with torch.device("meta"):
        ref = ESRGANRRDBNet(3, 3, 64, 23, 32)
        ours = RRDBNet(3, 3, 64, 23, 32, scale=4)
    n_ref = sum(p.numel() for p in ref.parameters())
    assert n_ref == 16_697_987
    assert sum(p.numel() for p in ours.parameters()) == n_ref
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {
        k: tuple(v.shape) for k, v in ref.state_dict().items()
    }


def test_load_esrgan_checkpoint_from_pth_and_into_affectsrnet(reference, lr, tmp_path):
    """A user's .pth (old naming) goes through torch.load(weights_only=True) into AffectSRNet."""
    from affectsr.models import create_model, load_esrgan_checkpoint

    path = tmp_path / "RRDB_ESRGAN_x4_old_arch.pth"
    torch.save(to_old_arch(reference.state_dict(), NB), path)
    cfg = infer_rrdb_config(load_esrgan_checkpoint(str(path)))
    model = create_model("affectsr-x4", nf=cfg["nf"], nb=cfg["nb"], gc=cfg["gc"]).eval()
    model.load_backbone(load_esrgan_checkpoint(str(path)))
    landmarks = torch.rand(lr.shape[0], 478, 3)
    with torch.no_grad():
        torch.testing.assert_close(model(lr, landmarks), reference(lr), atol=1e-6, rtol=0)
    wrong = create_model("affectsr-x4", nf=cfg["nf"] * 2, nb=cfg["nb"], gc=cfg["gc"])
    with pytest.raises(ValueError, match="does not match"):
        wrong.load_backbone(load_esrgan_checkpoint(str(path)))


def test_traced_rrdb_scales_by_a_depthwise_conv():
    """An exported RRDB scales its residual by a constant depthwise 1x1 conv, not a Mul (a Mul by a scalar breaks
    ONNX Runtime's NCHWc layout), and the graph computes what the eager module does."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import io
    import warnings

    torch.manual_seed(0)
    net = RRDBNet(3, 3, nf=8, nb=2, gc=4, scale=2).eval()
    x = torch.rand(1, 3, 6, 5)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), buf, dynamo=False, opset_version=17, input_names=["x"],
                          dynamic_axes={"x": {2: "h", 3: "w"}})
    graph = onnx.load_from_string(buf.getvalue()).graph
    rrdb_level = [n for n in graph.node if n.name.startswith("/RRDB_trunk/RRDB_trunk.") and "/RDB" not in n.name]
    assert {n.op_type for n in rrdb_level} == {"Constant", "Conv", "Add"}, [n.op_type for n in rrdb_level]
    out = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), net(x), atol=1e-5, rtol=0)
