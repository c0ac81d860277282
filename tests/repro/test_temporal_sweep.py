"""The temporal metrics through the real sweep on the reference model's demo spec (configs/tiny.yaml, FBC)."""

from __future__ import annotations

import math

import pytest
import yaml

from experiments.spec import Spec
from repro.aggregate import tables
from repro.store import Store
from repro.sweep import run_sweep
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

NAMES = ["psnr_tdiff", "mae_tdiff", "vbench_temporal_flickering"]


@pytest.fixture(scope="module")
def points(tmp_path_factory):
    raw = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    fbc = [m for m in raw["methods"] if m["name"] == "first_block_cache"]
    assert fbc[0]["sweep"]["threshold"] == [0.0, 0.1, 0.3]  # the demo's FBC thresholds, as shipped
    raw.update(methods=fbc, metrics={"names": NAMES, "device": "cpu"}, timing={"warmup": 0, "repeats": 1},
               wandb={"mode": "disabled"}, output={"dir": str(tmp_path_factory.mktemp("tiny") / "run"), "mp4": False})
    spec = Spec.model_validate(raw)
    outcome = run_sweep(spec)
    store = Store.open_existing(spec.run_dir)
    try:
        pts, items = tables(store)
        stored = store.scores()
    finally:
        store.close()
    return pts.set_index("point_id"), items, stored, outcome


def test_temporal_metrics_order_the_fbc_points_as_their_thresholds(points):
    pts, items, _, _ = points
    fbc = pts[pts["method"] == "first_block_cache"].sort_values("key_value")
    assert list(fbc["key_value"]) == [0.0, 0.1, 0.3]
    psnr, mae = list(fbc["psnr_tdiff"]), list(fbc["mae_tdiff"])
    # threshold 0 reproduces the baseline bit for bit: the identity values (inf dB, 0)
    assert psnr[0] == math.inf and mae[0] == 0.0
    # more aggressive caching, more temporal error
    assert psnr[0] > psnr[1] > psnr[2], psnr
    assert mae[0] < mae[1] < mae[2], mae


def test_flickering_is_measured_for_the_baseline_too(points):
    pts, items, stored, _ = points
    base = pts.loc["baseline"]
    assert 0.0 < base["vbench_temporal_flickering"] <= 1.0  # the baseline's own, measured value
    zero = pts[(pts["method"] == "first_block_cache") & (pts["key_value"] == 0.0)].iloc[0]
    assert zero["vbench_temporal_flickering"] == base["vbench_temporal_flickering"]
    assert math.isnan(base["psnr_tdiff"])  # a reference metric of the baseline: the reference, not a score
    # VBench's set size: 4 videos per point, far below the 375 its prompt suite asks for, and said so
    assert base["vbench_temporal_flickering_n"] == 4
    assert "375" in base["vbench_temporal_flickering_sample_warning"]
    # per-frame (per-transition) values are stored for every video metric: 5 frames -> 4 transitions
    cached = items[(items["method"] == "first_block_cache")]
    for key in cached["key"]:
        for name in NAMES:
            assert len(stored[key][name]["per_frame"]) == 4, name
