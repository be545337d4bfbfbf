"""The cheap prior (issue 17): exact rewrites equal the code they replaced, shipped weights keep their
output, and the opt-in config fields do what they say."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

from affectsr.models import AffectSRNet, ModelConfig, create_model, load_model
from affectsr.models.face_graph import mediapipe_face_graph
from affectsr.models.gcn import GCN, ell_adjacency, propagate
from affectsr.models.msaf import MSAF, FusionBlock
from affectsr.models.presets import FAST, OLD_PRIOR, PRESETS, weights_path
from affectsr.models.prior import gaussian_splat

from .test_affectsrnet import SMALL, _landmarks, _perturb_fusion

N = 478
# Each preset's entry is its distilled file with the cheap prior (issue 12 item 4), made when it shipped (x4 and x8
# 2026-11-29). tools/make_lite_reference.py rewrites one preset's entry, only when its file changes.
REFERENCE = "tests/models/shipped_lite_reference.npz"
NEW_FIELDS = {"fusion_stages": 0, "prior_kernel": 3, "splat_once": False}  # and their defaults = the old network

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def adjacency():
    return mediapipe_face_graph().normalized_adjacency()


# ------------------------------------------------------------------------- shipped weights
@pytest.mark.parametrize("name", ["affectsr-x4-lite", "affectsr-x8-lite"])
def test_shipped_weights_keep_their_output(name):
    if weights_path(name) is None:
        pytest.skip(f"{name} weights are not shipped")
    ref = np.load(REFERENCE)
    key = name.replace("-", "_")
    with torch.no_grad():  # load_model loads with strict=True
        sr = load_model(name)(torch.from_numpy(ref[f"{key}_lr"]), torch.from_numpy(ref[f"{key}_landmarks"]))
    np.testing.assert_allclose(sr.numpy(), ref[f"{key}_sr"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["affectsr-x4-lite", "affectsr-x8-lite"])
def test_shipped_lite_files_have_the_cheap_prior(name):
    """Both -lite presets ship distilled and retrained with the cheap prior (tools/train_lite_distill.sh)."""
    if weights_path(name) is None:
        pytest.skip(f"{name} weights are not shipped")
    with safe_open(str(weights_path(name)), framework="pt") as f:
        stored = json.loads(f.metadata()["config"])
    as_json = lambda d: json.loads(json.dumps(d))  # noqa: E731  (tuples are stored as lists)
    assert as_json({k: stored[k] for k in FAST[name]}) == as_json(FAST[name])
    assert set(AffectSRNet(ModelConfig(**stored)).state_dict()) == set(load_file(str(weights_path(name))))


def test_new_field_defaults_build_the_old_network():
    old = ModelConfig(**SMALL)
    assert {k: getattr(old, k) for k in NEW_FIELDS} == NEW_FIELDS
    m = AffectSRNet(old)
    assert len(m.fusions) == len(m.prior.heads) == len(m.prior.to_splat) == 3
    assert all(h[0].kernel_size == (3, 3) for h in m.prior.heads)


# ------------------------------------------------------------------- exact rewrites vs the old code
def test_ell_propagation_equals_the_dense_adjacency(adjacency):
    index, weight = ell_adjacency(adjacency)
    assert index.shape == weight.shape == (N, int((adjacency != 0).sum(1).max()))
    for b, c in [(1, 3), (3, 16), (0, 4)]:
        x = torch.randn(b, N, c, dtype=torch.float64)
        out = propagate(x, index, weight.double())
        assert out.shape == (b, N, c)
        torch.testing.assert_close(out, torch.matmul(adjacency.double(), x), atol=1e-12, rtol=0)
    index, weight = ell_adjacency(torch.eye(5))  # the 'no GCN' ablation: each node its own neighbour
    assert index.tolist() == [[0], [1], [2], [3], [4]] and weight.tolist() == [[1.0]] * 5


def test_gcn_equals_the_dense_stack_and_holds_one_adjacency(adjacency):
    torch.manual_seed(0)
    gcn = GCN((3, 8, 16, 4), adjacency)
    assert len(list(gcn.buffers())) == 3 and all(layer.adj_index is None for layer in gcn.layers)  # index, weight, offsets
    x = torch.randn(2, N, 3)
    h = x
    for i, layer in enumerate(gcn.layers):  # the code of b9a1f0b: Â (X W) + b with a dense Â per layer
        h = adjacency @ layer.lin(h) + layer.bias
        h = F.leaky_relu(h, 0.2) if i < len(gcn.layers) - 1 else h
    torch.testing.assert_close(gcn(x), h, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="needs one"):
        gcn.layers[0](x)


def _msaf_before(m: MSAF, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """MSAF.forward of b9a1f0b: stack, sum over modalities and groups, pool, attend, weighted sum."""
    b, c, h, w = x.shape
    stacked = torch.stack([x, p], 1)
    joint = stacked.view(b, 2, m.groups, c // m.groups, h, w).sum((1, 2)).mean((-2, -1))
    attn = m.excite(m.squeeze(joint)).view(b, 2, c).softmax(1)
    return (stacked * attn[..., None, None]).sum(1)


def _random_msaf(groups: int) -> tuple[MSAF, torch.Tensor, torch.Tensor]:
    """An MSAF with non-trivial random weights (seed 0) and an image / prior map pair for it."""
    torch.manual_seed(0)
    m = MSAF(16, 2, groups)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
    return m, torch.randn(3, 16, 5, 7), torch.rand(3, 16, 5, 7)


@pytest.mark.parametrize("groups", [1, 4])
def test_msaf_equals_the_stacked_formulation(groups):
    m, x, p = _random_msaf(groups)
    torch.testing.assert_close(m(x, p), _msaf_before(m, x, p), atol=1e-6, rtol=1e-6)


def _splat_before(nodes, xy, size, sigma):
    """gaussian_splat of b9a1f0b (no floor on the exponent)."""
    b, n, c = nodes.shape
    h, w = size
    ys = (torch.arange(h, dtype=xy.dtype) + 0.5) / h
    xs = (torch.arange(w, dtype=xy.dtype) + 0.5) / w
    gy = torch.exp(-((ys[None, None, :] - xy[..., 1:2]) ** 2) / (2 * sigma**2))
    gx = torch.exp(-((xs[None, None, :] - xy[..., 0:1]) ** 2) / (2 * sigma**2))
    feats = torch.cat([nodes, torch.ones_like(nodes[..., :1])], -1)
    left = (feats.unsqueeze(-1) * gy.unsqueeze(2)).reshape(b, n, (c + 1) * h)
    return torch.bmm(left.transpose(1, 2), gx).view(b, c + 1, h, w)


def test_splat_rewrite_and_floored_exponent_change_only_rounding():
    g = torch.Generator().manual_seed(0)
    nodes = torch.randn(2, N, 8, generator=g)
    xy = torch.rand(2, N, 2, generator=g) * 1.4 - 0.2  # some landmarks outside the crop, as happens
    for size in [(16, 16), (64, 48)]:
        new, old = gaussian_splat(nodes, xy, size, 0.02), _splat_before(nodes, xy, size, 0.02)
        torch.testing.assert_close(new, old, atol=1e-6, rtol=1e-5)  # features are O(1): float32 rounding
    far = gaussian_splat(torch.ones(1, 1, 1), torch.tensor([[[5.0, 5.0]]]), (8, 8), 0.02)
    assert far.abs().max() < 1e-60 ** 0.5  # a node far off the grid adds exp(-80)^2 at most


# ---------------------------------------------------------------------------- faces without landmarks
def test_prior_runs_on_the_faces_with_landmarks_only(monkeypatch):
    model = create_model("affectsr-x4", **SMALL).eval()
    _perturb_fusion(model)
    calls = []
    model.prior.gcn.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    lr, lm = torch.rand(3, 3, 8, 8), _landmarks(3)
    lm[1] = float("nan")
    with torch.no_grad():
        out = model(lr, lm)
        assert calls == [2]  # the face without landmarks never reached the prior
        torch.testing.assert_close(out[1:2], model.backbone(lr[1:2]), atol=1e-6, rtol=0)
        full = model(lr, _landmarks(3))  # every face has landmarks: no gather/scatter in eager mode
        # what an exported graph does, since it cannot branch: always gather (all 3 faces here) ...
        monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)
        torch.testing.assert_close(model(lr, _landmarks(3)), full, atol=1e-6, rtol=0)
        # ... and for a batch without landmarks, the prior on 0 faces
        out = model(lr, torch.full_like(lm, float("nan")))
    assert calls[-3:] == [3, 3, 0]
    torch.testing.assert_close(out, model.backbone(lr), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------ the new config fields
def test_fusion_stages():
    with pytest.raises(ValueError, match="fusion_stages"):
        ModelConfig(scale=4, fusion_stages=4)
    model = create_model("affectsr-x8", **{**SMALL, "fusion_stages": 2}).eval()
    assert len(model.fusions) == len(model.prior.heads) == 2
    assert not any(k.startswith("fusions.2") for k in model.state_dict())
    _perturb_fusion(model)
    seen = []
    for i, f in enumerate(model.fusions):
        f.register_forward_hook(lambda m, args, out, i=i: seen.append((i, tuple(args[0].shape[-2:]))))
    lr, lm = torch.rand(2, 3, 4, 6), _landmarks(2)
    with torch.no_grad():
        out = model(lr, lm)
    assert seen == [(0, (4, 6)), (1, (8, 12))]  # after the trunk and the first x2 upsampling only
    assert (out - model.backbone(lr)).abs().max() > 1e-4


def test_prior_kernel():
    with pytest.raises(ValueError, match="prior_kernel"):
        ModelConfig(prior_kernel=5)
    model = create_model("affectsr-x4", **{**SMALL, "prior_kernel": 1})
    assert all(h[0].kernel_size == (1, 1) for h in model.prior.heads)


def test_splat_once_splats_the_largest_scale_and_pools_it():
    model = create_model("affectsr-x8", **{**SMALL, "splat_once": True, "fusion_stages": 3}).eval()
    assert len(model.prior.to_splat) == 1 and len(model.prior.heads) == 3
    model.prior.heads = torch.nn.ModuleList(torch.nn.Identity() for _ in range(3))  # see the splatted maps
    splats = []
    model.prior.splat.register_forward_hook(lambda m, args, out: splats.append(tuple(out.shape[-2:])))
    with torch.no_grad():
        maps = model.prior(_landmarks(2), [(4, 4), (8, 8), (16, 16)])
    assert splats == [(16, 16)]
    torch.testing.assert_close(maps[1], F.avg_pool2d(maps[2], 2))
    torch.testing.assert_close(maps[0], F.avg_pool2d(maps[1], 2))


def test_presets_build_the_trained_networks_and_fast_is_opt_in():
    for name in ("affectsr-x4", "affectsr-x8"):  # the networks their weights are trained as
        cfg = PRESETS[name][0]
        assert {k: getattr(cfg, k) for k in NEW_FIELDS} == NEW_FIELDS
    for name in ("affectsr-x4-lite", "affectsr-x8-lite"):  # shipped retrained with the cheap prior: they build it
        assert {k: getattr(PRESETS[name][0], k) for k in FAST[name]} == FAST[name]
    # OLD_PRIOR (the old arm of tools/train_speed_ab.sh) is the prior the -lite presets had before
    assert set(NEW_FIELDS) <= set(OLD_PRIOR) and {k: OLD_PRIOR[k] for k in NEW_FIELDS} == NEW_FIELDS
    for name, fast in FAST.items():  # the cheap prior builds and runs on every -lite preset
        cfg = PRESETS[name][0]
        assert set(fast) <= {f.name for f in dataclasses.fields(ModelConfig)}
        model = create_model(name, **fast).eval()
        lr = torch.rand(1, 3, cfg.in_size, cfg.in_size)
        with torch.no_grad():
            assert model(lr, _landmarks(1)).shape == (1, 3, 128, 128)


def test_eager_and_traced_propagation_agree(adjacency, monkeypatch):
    index, weight = ell_adjacency(adjacency)
    x = torch.randn(3, N, 5)
    eager = propagate(x, index, weight)
    monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)  # the gather + matmul an ONNX export records
    torch.testing.assert_close(propagate(x, index, weight), eager, atol=1e-6, rtol=1e-6)


# ----------------------------------------------------------- the exact speedups of the eager CPU pass
def _reference_forward(model: AffectSRNet, lr: torch.Tensor, lm: torch.Tensor) -> torch.Tensor:
    """AffectSRNet's forward as main computed it at 2cbb514 (every face with landmarks): NCHW throughout, the GCN
    then one projection per splat, the splat of :func:`_splat_before` with its density channel, and MSAF's
    weighted sum followed by the fusion's 1x1 conv."""
    prior, bb = model.prior, model.backbone
    h, w = lr.shape[-2:]
    sizes = [(h * 2**k, w * 2**k) for k in range(len(model.fusions))]
    nodes, xy = prior.gcn(lm), lm[..., :2]
    if prior.splat_once:
        maps = [_splat_before(prior.to_splat[0](nodes), xy, sizes[-1], prior.sigma)]
        for _ in sizes[:-1]:
            maps.insert(0, F.avg_pool2d(maps[0], 2))
    else:
        maps = [_splat_before(proj(nodes), xy, s, prior.sigma) for proj, s in zip(prior.to_splat, sizes)]
    priors = [head(m) for head, m in zip(prior.heads, maps)]

    def fuse(i: int, fea: torch.Tensor) -> torch.Tensor:
        f = model.fusions[i] if i < len(priors) else None
        return fea if f is None else fea + f.proj(f.fuse(fea, priors[i]))

    out = bb.head(bb.trunk(lr), fuse)  # trunk() and head() directly: the NCHW pass
    if model.config.residual:
        out = out + F.interpolate(lr, scale_factor=model.scale, mode="bicubic", align_corners=False)
    return out


def _random_full(name: str) -> AffectSRNet:
    model = create_model(name).eval()
    _perturb_fusion(model)  # fresh fusions are zero: make the prior count
    return model


@pytest.mark.parametrize("name", ["affectsr-x4-lite", "affectsr-x8-lite", "affectsr-x8", "random affectsr-x8",
                                  "random affectsr-x4"])
def test_optimised_pass_equals_the_reference_pass(name):
    """The CPU inference pass (channels-last RRDB, channels-last splat, GCN-folded projections, MSAF folded into
    the fusion conv) gives the old NCHW pass's output on the shipped weights and on a random full preset."""
    if name.startswith("random "):
        model = _random_full(name.split()[1])
    elif weights_path(name) is None:
        pytest.skip(f"{name} weights are not shipped")
    else:
        model = load_model(name)
    s = model.config.in_size
    lr, lm = torch.rand(2, 3, s, s, generator=torch.Generator().manual_seed(3)), _landmarks(2)
    with torch.inference_mode():
        ref = _reference_forward(model, lr, lm)
        fast = model(lr, lm)
        assert fast.is_contiguous()  # NCHW out, whatever layout ran inside
        torch.testing.assert_close(fast, ref, atol=2e-5, rtol=0)
        torch.testing.assert_close(model(lr[:1], lm[:1]), ref[:1], atol=2e-5, rtol=0)  # batch 1, as benched
        lm[1] = float("nan")  # a face without landmarks takes the (channels-last) image path alone
        torch.testing.assert_close(model(lr, lm)[1], model.backbone.head(model.backbone.trunk(lr[1:]))[0]
                                   + (F.interpolate(lr[1:], scale_factor=model.scale, mode="bicubic")[0]
                                      if model.config.residual else 0), atol=2e-5, rtol=0)


def test_channels_last_only_for_cpu_inference():
    model = create_model("affectsr-x4", **SMALL).eval()
    layouts = []
    model.backbone.conv_first.register_forward_hook(
        lambda m, args, out: layouts.append(out.is_contiguous(memory_format=torch.channels_last)))
    lr = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        model(lr, _landmarks(1))
    model(lr, _landmarks(1))  # autograd on: training keeps NCHW
    assert layouts == [True, False]


def test_gcn_folds_a_following_linear_map(adjacency):
    torch.manual_seed(0)
    for dims in [(3, 8, 16), (3, 16, 4)]:  # the last layer propagates its input, then its output
        gcn, then = GCN(dims, adjacency), torch.nn.Linear(dims[-1], 5)
        x = torch.randn(2, N, 3)
        torch.testing.assert_close(gcn(x, (then.weight, then.bias)), then(gcn(x)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [(5, 7), (33, 35)])  # below SMALL_MAP pixels: MSAF.pair + conv; above: folded
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_folded_fusion_equals_msaf_then_conv(layout, size, monkeypatch):
    import affectsr.models.msaf as msaf

    torch.manual_seed(0)
    f = FusionBlock(16, "msaf", 4).eval()
    calls = []
    monkeypatch.setattr(f, "_folded", lambda *a: calls.append(1) or FusionBlock._folded(f, *a))
    with torch.no_grad():
        for p in f.parameters():
            p.normal_(0, 0.3)
        x, p = (torch.randn(3, 16, *size).contiguous(memory_format=layout) for _ in range(2))
        out = f(x, p)
        torch.testing.assert_close(out, x + f.proj(f.fuse(x, p)), atol=1e-5, rtol=1e-5)
        assert out.is_contiguous(memory_format=layout)
        torch.testing.assert_close(f(x, p.contiguous()), out, atol=1e-6, rtol=0)  # a prior in the other layout
    assert bool(calls) == (size[0] * size[1] >= msaf.SMALL_MAP)


def test_optimised_pass_under_autocast_and_autograd():
    """bf16 autocast (`affectsr bench --dtype bfloat16`, training on CUDA) and autograd take the plain fusion."""
    model = create_model("affectsr-x4", **SMALL).eval()
    _perturb_fusion(model)
    lr, lm = torch.rand(2, 3, 8, 8), _landmarks(2)
    with torch.inference_mode():
        ref = model(lr, lm)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(lr, lm)
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0)
    model(lr, lm).sum().backward()  # autograd through the plain form
    assert model.fusions[0].proj.weight.grad is not None


# --------------------------------------------------- the exported graph's rewrites (torch.jit.is_tracing branches)
@pytest.mark.parametrize("groups", [1, 4])
def test_traced_msaf_equals_the_eager_one(groups, monkeypatch):
    m, x, p = _random_msaf(groups)
    eager = m(x, p)
    monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)  # pooled sum, tiled squeeze, sigmoid of l0 - l1
    torch.testing.assert_close(m(x, p), eager, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(m(x, p), _msaf_before(m, x, p), atol=1e-6, rtol=1e-6)
    assert m(x[:0], p[:0]).shape == (0, 16, 5, 7)  # a graph may run with 0 faces


def test_traced_landmark_test_equals_isfinite(monkeypatch):
    from affectsr.models.affectsrnet import has_landmarks

    lm = _landmarks(6)
    lm[1, 3, 0] = float("nan")
    lm[2, 0, 2] = float("inf")
    lm[3, 477, 1] = -float("inf")
    lm[4] = float("nan")
    lm[5, 10, 0] = 3e38  # finite, however absurd
    eager = has_landmarks(lm)
    assert eager.tolist() == [True, False, False, False, False, True]
    monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)
    assert torch.equal(has_landmarks(lm), eager)


def test_traced_forward_equals_eager_with_the_bicubic_skip(monkeypatch):
    """Every traced branch at once (bicubic conv, MSAF, landmark test, gather/scatter) on a residual network."""
    torch.manual_seed(0)
    model = create_model("affectsr-x8", **{**SMALL, "residual": True}).eval()
    _perturb_fusion(model)
    with torch.no_grad():
        for p in model.backbone.conv_last.parameters():
            p.normal_(0, 0.01)
    lr, lm = torch.rand(3, 3, 7, 6), _landmarks(3)
    lm[1, 5] = float("inf")
    with torch.no_grad():
        eager = model(lr, lm)
        monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)
        torch.testing.assert_close(model(lr, lm), eager, atol=1e-5, rtol=0)


def test_fold_cache_is_exact_and_follows_weight_changes():
    """Inference keeps the GCN's folded last layer between calls (SpatialPrior._folded_last_layer); it must give what
    a fresh fold gives, be rebuilt when a weight changes in place or is loaded, and never serve a training step."""
    net = create_model("affectsr-x8-lite").eval()
    prior = net.prior
    lm = _landmarks(2, seed=3)
    fresh = lambda: prior.gcn(lm, then=prior.splat_map())  # noqa: E731  (no cache)
    with torch.no_grad():
        torch.testing.assert_close(prior.gcn(lm, folded=prior._folded_last_layer()), fresh(), rtol=0, atol=0)
        first = prior.__dict__["_fold_cache"][1]
        assert prior._folded_last_layer() is first  # kept
        prior.to_splat[0].weight.mul_(2)  # in place: the version counter moves
        torch.testing.assert_close(prior.gcn(lm, folded=prior._folded_last_layer()), fresh(), rtol=0, atol=0)
        assert prior.__dict__["_fold_cache"][1] is not first
        net.load_state_dict(create_model("affectsr-x8-lite").state_dict())
        torch.testing.assert_close(prior.gcn(lm, folded=prior._folded_last_layer()), fresh(), rtol=0, atol=0)
    prior.__dict__.pop("_fold_cache")
    out = prior.splat_features(lm)[0]  # grad enabled: folded afresh, differentiable, nothing kept
    assert out.requires_grad and "_fold_cache" not in prior.__dict__


def test_splat_of_a_square_grid_equals_the_per_axis_splat():
    """The square-grid path (both axes' Gaussians in one chain of ops) gives the same numbers as per-axis ones."""
    gen = torch.Generator().manual_seed(5)
    nodes, xy = torch.randn(2, N, 9, generator=gen), torch.rand(2, N, 2, generator=gen)
    sq = gaussian_splat(nodes, xy, (16, 16), 0.02, density=False)
    # a 16 x 17 grid goes per axis; its first 16 columns' Gaussians differ (other pixel centres), so compare a
    # 16 x 16 grid against the per-axis formula directly
    from affectsr.models.prior import gaussian_1d
    gy, gx = gaussian_1d(xy[..., 1], 16, 0.02), gaussian_1d(xy[..., 0], 16, 0.02)
    ref = torch.einsum("bnh,bnw,bnc->bchw", gy, gx, nodes)
    torch.testing.assert_close(sq, ref, rtol=1e-5, atol=1e-5)
    assert gaussian_splat(nodes, xy, (16, 24), 0.02, density=False).shape == (2, 9, 16, 24)
