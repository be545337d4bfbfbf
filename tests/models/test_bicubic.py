"""affectsr.models.bicubic: the exported graph's bicubic upsample equals F.interpolate's."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from affectsr.models.bicubic import bicubic_conv, bicubic_phases, bicubic_upsample


@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 7), (16, 16), (17, 12)])
def test_conv_form_equals_interpolate(scale, size):
    gen = torch.Generator().manual_seed(scale)
    x = torch.rand(2, 3, *size, generator=gen) * 4 - 2  # overshoot and negatives: no clamping anywhere
    ref = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
    got = bicubic_conv(x, scale)
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() < 1e-5
    # in float64 the two are the same sums of the same products
    ref64 = F.interpolate(x.double(), scale_factor=scale, mode="bicubic", align_corners=False)
    assert (bicubic_conv(x.double(), scale) - ref64).abs().max().item() < 1e-12


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_phase_taps_sum_to_one(scale):
    taps = bicubic_phases(scale)
    assert torch.allclose(taps.sum(1), torch.ones(scale, dtype=torch.float64))
    assert torch.equal(taps, taps.flip(0, 1))  # phases mirror each other around the pixel centre


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.trace announces its deprecation
def test_eager_path_is_interpolate_and_traced_path_has_no_resize():
    x = torch.rand(1, 3, 6, 5)
    assert torch.equal(bicubic_upsample(x, 4), F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False))
    traced = torch.jit.trace(lambda t: bicubic_upsample(t, 4), x)
    kinds = {n.kind() for n in traced.graph.nodes()}
    assert "aten::upsample_bicubic2d" not in kinds and "aten::pixel_shuffle" in kinds
    y = torch.rand(2, 3, 9, 4)  # another batch and size through the same trace
    assert (traced(y) - F.interpolate(y, scale_factor=4, mode="bicubic", align_corners=False)).abs().max() < 1e-5
