"""affectsr bench --profile: per-stage timing rows of an AffectSRNet, and the CLI around them."""
from __future__ import annotations

import json

import pytest
import torch

from affectsr.cli import main
from affectsr.models import create_model
from affectsr.models.presets import FAST
from affectsr.models.profile import interleaved_medians, profile_markdown, profile_stages

SMALL = dict(nf=16, nb=1, gc=8, gcn_dims=(8, 8))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_profile_covers_every_stage(clock):
    # the cheap prior with two fusion stages (after the trunk and at 2x), so the profile shows a pooled scale too
    model = create_model("affectsr-x4", **SMALL, **{**FAST["affectsr-x4-lite"], "fusion_stages": 2})
    rows = profile_stages(model, batch=2, lr_size=8, min_time=0.05, name="tiny", clock=clock)
    stages = [r.stage for r in rows]
    assert stages[:2] == ["gcn", "prior splat 16x16"]  # splat once, at the largest fused scale
    for s in ["prior head 8x8", "prior head 16x16", "trunk", "fusion (MSAF) 8x8", "fusion (MSAF) 16x16",
              "upsample: conv 16x16", "upsample: conv 32x32", "tail (HRconv + conv_last)", "rest"]:
        assert s in stages, s
    assert "fusion (MSAF) 32x32" not in stages and "prior splat 8x8" not in stages
    assert stages[-2:] == ["total (landmarks)", "total (no landmarks)"]
    timed = [r for r in rows if not r.stage.startswith("total")]
    assert sum(r.share for r in timed) == pytest.approx(1.0)
    assert all(r.ms >= 0 for r in timed if r.stage != "rest") and all(r.batch == 2 and r.model == "tiny" for r in rows)
    assert next(r.calls for r in rows if r.stage == "tail (HRconv + conv_last)") == 2
    md = profile_markdown(rows)
    assert md.startswith("tiny, batch 2, 8 px input: prior + fusion = ") and "| gcn | 1 |" in md


def test_profile_refuses_other_models():
    with pytest.raises(ValueError, match="AffectSRNet"):
        profile_stages(create_model("srcnn-x4"))
    with pytest.raises(ValueError, match="clock"):
        profile_stages(create_model("affectsr-x4", **SMALL), clock="gpu")


def test_interleaved_medians():
    slow, fast = (lambda: sum(range(20000))), (lambda: None)
    t_slow, t_fast = interleaved_medians([slow, fast], 0.05)
    assert t_slow > t_fast >= 0


def test_bench_profile_cli(capsys, monkeypatch):
    import affectsr.models.presets as presets

    small = presets.ModelConfig(scale=8, in_size=4, **SMALL)  # keep the CLI test fast
    monkeypatch.setitem(presets.PRESETS, "affectsr-x8-lite", (small, "tiny"))
    monkeypatch.setattr(presets, "weights_path", lambda name: None)  # time the tiny config, not the shipped file's
    assert main(["bench", "--profile", "cpu", "--models", "affectsr-x8-lite", "--batch", "1", "--min-time", "0.02"]) == 0
    out = capsys.readouterr().out
    assert "affectsr-x8-lite, batch 1, 4 px input" in out and "| fusion (MSAF) 4x4 |" in out
    assert main(["bench", "--profile", "--models", "affectsr-x8-lite", "--batch", "1", "--min-time", "0.02",
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["stage"] for r in rows} >= {"gcn", "trunk", "total (landmarks)"}
    assert main(["bench", "--profile", "--models", "rrdb-x4", "--min-time", "0.01"]) == 2
    assert "no landmark prior" in capsys.readouterr().err
