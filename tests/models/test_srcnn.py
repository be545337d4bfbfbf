"""SRCNN baseline, the architecture table, config overrides and the 'no GCN' ablation."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from affectsr.models import ARCHITECTURES, SRCNN, SRCNNConfig, build_model, count_params, create_model, load_model
from affectsr.models.presets import parse_config_overrides, read_config, save_weights


def test_srcnn_is_9_1_5_with_64_32_channels():
    m = SRCNN(SRCNNConfig(scale=4))
    # 9x9x3x64 + 64, 1x1x64x32 + 32, 5x5x32x3 + 3
    assert count_params(m) == 9 * 9 * 3 * 64 + 64 + 64 * 32 + 32 + 5 * 5 * 32 * 3 + 3
    assert not m.uses_landmarks


@pytest.mark.parametrize("scale,size", [(4, 32), (8, 16), (4, 20)])
def test_srcnn_shapes_and_bicubic_start(scale, size):
    m = SRCNN(SRCNNConfig(scale=scale)).eval()
    lr = torch.rand(2, 3, size, size + 3)
    with torch.no_grad():
        m.body[-1].weight.zero_()
        m.body[-1].bias.zero_()
        out = m(lr, torch.rand(2, 478, 3))
    assert out.shape == (2, 3, size * scale, (size + 3) * scale)
    # with a silent residual branch SRCNN is exactly bicubic upsampling
    assert torch.equal(out, F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False))


def test_weights_file_records_the_architecture(tmp_path):
    torch.manual_seed(0)
    m = create_model("srcnn-x8").eval()
    path = save_weights(m, tmp_path / "s.safetensors", half=False)
    cfg = read_config(path)
    assert isinstance(cfg, SRCNNConfig) and cfg.scale == 8
    back = load_model(str(path))
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(back(x), m(x))


def test_every_architecture_builds_from_its_config():
    for name, (cfg_cls, net_cls) in ARCHITECTURES.items():
        net = build_model(cfg_cls(scale=4))
        assert isinstance(net, net_cls) and net.scale == 4 and cfg_cls.arch == name
    with pytest.raises(TypeError):
        build_model(object())


def test_parse_config_overrides_types_and_errors():
    o = parse_config_overrides("affectsr-x4-lite", "prior=pooled; fusion=concat;graph=false;gcn_dims=16,32;splat_sigma=0.05")
    assert o == {"prior": "pooled", "fusion": "concat", "graph": False, "gcn_dims": (16, 32), "splat_sigma": 0.05}
    assert parse_config_overrides("affectsr-x4-lite", "") == {}
    with pytest.raises(ValueError, match="bad model override"):
        parse_config_overrides("affectsr-x4-lite", "nope=1")
    with pytest.raises(ValueError, match="true/false"):
        parse_config_overrides("affectsr-x4-lite", "graph=maybe")
    with pytest.raises(ValueError, match="unknown model"):
        parse_config_overrides("nope", "prior=none")


def test_no_gcn_ablation_keeps_nodes_apart():
    """graph=False: moving one landmark changes only that node's GCN features; with the graph it spreads."""
    lm = torch.rand(1, 478, 3)
    moved = lm.clone()
    moved[0, 13] += 0.1
    for graph, spreads in ((False, False), (True, True)):
        torch.manual_seed(0)
        gcn = create_model("affectsr-x4-lite", graph=graph).prior.gcn
        with torch.no_grad():
            diff = (gcn(lm) - gcn(moved)).abs().sum(-1)[0]
        others = torch.cat([diff[:13], diff[14:]])
        assert diff[13] > 0
        assert bool((others > 0).any()) is spreads
    # same parameter count: the ablation removes message passing, not capacity
    assert count_params(create_model("affectsr-x4-lite", graph=False)) == count_params(create_model("affectsr-x4-lite"))
