"""The points table says which columns were made with random-weight networks, and "ref" only where a metric
compares with the baseline: a metric of each output alone is the baseline's own measurement."""

from __future__ import annotations

import math

import pandas as pd

from metrics.registry import METRICS, RANDOM_WEIGHTS_TAG, REFERENCE
from repro.aggregate import metric_labels
from repro.report import format_points
from repro.store import Store


def test_every_random_weight_network_metric_is_labelled(tmp_path):
    names = [n for n, m in METRICS.items() if m.scored and m.needs_weights]
    store = Store(tmp_path)
    try:
        store.set_meta(spec={"metrics": {"names": names}})
        store.put_scores("g", {n: {"label": f"{n} {RANDOM_WEIGHTS_TAG}", "value": 0.5, "per_frame": [0.5],
                                   "random_weights": True} for n in names}, None)
        labels = metric_labels(store)
    finally:
        store.close()
    assert set(names) <= set(labels)
    assert all(RANDOM_WEIGHTS_TAG in labels[n] for n in names), labels


def test_ref_marks_only_metrics_against_the_baseline():
    alone = "vbench_motion_smoothness"  # not applicable (too small) on the baseline too: no value, not "ref"
    assert alone not in REFERENCE and "psnr" in REFERENCE
    points = pd.DataFrame([{"point_id": "baseline", "method": "baseline", "label": "baseline", "reference": True,
                            "status": "ok", "psnr": math.nan, alone: math.nan}])
    row = format_points(points).splitlines()[1].split()
    head = format_points(points).splitlines()[0].split()
    assert row[head.index("psnr")] == "ref" and row[head.index(alone)] == "-"


def test_a_metric_is_tagged_when_any_of_its_scores_used_random_weights(tmp_path):
    """Mixed runs (a node without the checkpoint, weights fetched between sessions): the first score read must
    not decide the column's label."""
    store = Store(tmp_path)
    try:
        store.set_meta(spec={"metrics": {"names": ["vbench_imaging_quality"]}})
        for key, random in (("a", False), ("b", True)):
            label = f"vbench_imaging_quality{' ' + RANDOM_WEIGHTS_TAG if random else ''}"
            store.put_scores(key, {"vbench_imaging_quality": {"label": label, "value": 0.5, "per_frame": [0.5],
                                                              "random_weights": random}}, None)
        labels = metric_labels(store)
    finally:
        store.close()
    assert RANDOM_WEIGHTS_TAG in labels["vbench_imaging_quality"], labels


def test_a_requested_metric_without_any_value_says_when_it_applies():
    """Motion smoothness on 32x32 clips: every cell is '-'; the table says why rather than leaving a blank column."""
    points = pd.DataFrame([{"point_id": p, "method": m, "label": p, "reference": p == "baseline", "status": "ok",
                            "psnr": v, "vbench_motion_smoothness": math.nan}
                           for p, m, v in (("baseline", "baseline", math.nan), ("t=0.1", "fbc", 30.0))])
    text = format_points(points)
    assert "vbench_motion_smoothness: no value on any point" in text and "113 px a side" in text
    assert "3 frames" in text and "psnr: no value" not in text
