"""Quality against frame index from tidy tables (synthetic: no store, no model)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from paper_figures.frame_curves import frame_curves, frame_table

ITEMS = [{"key": f"{p}-{s}", "point_id": p, "label": lab} for p, lab in (("fbc-a", "FBC 0.1"), ("fbc-b", "FBC 0.3"))
         for s in (0, 1)]


def scores():
    out = {}
    for it in ITEMS:
        worse = 2.0 if it["point_id"] == "fbc-b" else 1.0
        seed = int(it["key"][-1])
        out[it["key"]] = {
            "mae_tdiff": {"per_frame": [0.0, 0.01 * worse * (1 + seed), 0.02 * worse]},
            "psnr_tdiff": {"per_frame": [math.inf, 40.0 / worse, 30.0 / worse]},
            "psnr": {"per_frame": [math.inf, 50.0, 40.0, 35.0]},
        }
    return out


def test_table_places_transitions_between_frames_and_frames_on_them():
    t = frame_table(ITEMS, scores())
    assert list(t.columns) == ["key", "point_id", "label", "metric", "frame", "value"]
    assert sorted(set(t.loc[t["metric"] == "mae_tdiff", "frame"])) == [0.5, 1.5, 2.5]
    assert sorted(set(t.loc[t["metric"] == "psnr", "frame"])) == [0.0, 1.0, 2.0, 3.0]
    assert len(frame_table(ITEMS, scores(), metrics=["psnr"])) == 4 * 4
    assert frame_table([{"key": "x", "point_id": "baseline"}], {}).empty  # a baseline has no reference scores


def test_curves_are_means_over_items_and_the_figure_is_written(tmp_path):
    t = frame_table(ITEMS, scores())
    steps = pd.DataFrame({"point_id": ["fbc-a", "fbc-b"], "step_computed": ["[1, 1, 0.5, 1]", "[1, 0, 0, 1]"]})
    fig = frame_curves(t, tmp_path, points=steps, formats=("png", "svg"))
    assert fig is not None and fig.file("png").stat().st_size > 0 and fig.file("svg") is not None
    assert "skip pattern" in fig.caption and "100 dB" in fig.caption  # inf drawn at the cap, and said
    # the mean the curve draws: point fbc-a, transition 1.5 -> (0.01 + 0.02) / 2
    sel = t[(t["point_id"] == "fbc-a") & (t["metric"] == "mae_tdiff") & (t["frame"] == 1.5)]
    assert sel["value"].mean() == pytest.approx(0.015)
    svg = fig.file("svg").read_text()
    assert "FBC 0.1" in svg and "FBC 0.3" in svg and "denoising step" in svg


def test_random_weight_labels_are_carried_into_the_caption(tmp_path):
    t = frame_table(ITEMS, {k: {"vbench_subject_consistency": {"per_frame": [0.9, 0.8]}} for k in scores()})
    pts = pd.DataFrame({"point_id": ["fbc-a"]})
    pts.attrs["metric_labels"] = {"vbench_subject_consistency": "VBench subject consistency [random weights]"}
    fig = frame_curves(t, tmp_path, points=pts, formats=("png",))
    assert "RANDOM" in fig.caption


def test_nothing_to_draw_gives_none(tmp_path):
    assert frame_curves(frame_table([], {}), tmp_path) is None
    assert not list(tmp_path.iterdir())
    t = frame_table(ITEMS, scores())
    assert frame_curves(t, tmp_path, metrics=["ssim"]) is None
    assert np.isinf(t["value"]).any()  # the table keeps inf; only the drawing caps it
