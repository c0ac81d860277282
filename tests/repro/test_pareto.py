"""Pareto fronts and quality gates on hand-made tables."""

from __future__ import annotations

import math

import pytest

from repro.pareto import best_point, pareto_mask, parse_gates
from experiments.errors import SpecError


def test_dominated_points_are_excluded():
    speed = [1.0, 2.0, 1.5, 3.0, 2.5]
    lpips = [0.05, 0.10, 0.12, 0.30, 0.30]
    # (1.5, 0.12) is beaten by (2.0, 0.10); (2.5, 0.30) by (3.0, 0.30)
    assert pareto_mask(speed, lpips, "min") == [True, True, False, True, False]


def test_direction_matters():
    speed = [1.0, 2.0]
    assert pareto_mask(speed, [30.0, 20.0], "max") == [True, True]
    assert pareto_mask(speed, [20.0, 30.0], "max") == [False, True]


def test_exact_ties_are_all_kept_and_nan_never_on_front():
    assert pareto_mask([2.0, 2.0, 1.0], [0.1, 0.1, 0.2], "min") == [True, True, False]
    assert pareto_mask([2.0, math.nan, 5.0], [0.1, 0.0, math.nan], "min") == [True, False, False]


POINTS = [
    {"method": "baseline", "label": "baseline", "status": "ok", "speedup": 1.0, "lpips": 0.0, "psnr": math.inf},
    {"method": "fbc", "label": "t=0.05", "status": "ok", "speedup": 1.4, "lpips": 0.04, "psnr": 35.0},
    {"method": "fbc", "label": "t=0.1", "status": "ok", "speedup": 1.9, "lpips": 0.09, "psnr": 31.0},
    {"method": "fbc", "label": "t=0.2", "status": "ok", "speedup": 2.6, "lpips": 0.21, "psnr": 26.0},
    {"method": "mag", "label": "t=0.12", "status": "ok", "speedup": 1.9, "lpips": 0.07, "psnr": 32.0},
    {"method": "mag", "label": "t=0.5", "status": "failed", "speedup": math.nan, "lpips": math.nan, "psnr": math.nan},
]


def test_best_picks_fastest_point_meeting_every_gate():
    assert best_point(POINTS, [("lpips", "max", 0.10)])["label"] == "t=0.12"  # tie at 1.9x: lower lpips wins
    assert best_point(POINTS, [("lpips", "max", 0.25)])["label"] == "t=0.2"
    assert best_point(POINTS, [("lpips", "max", 0.25), ("psnr", "min", 30)])["label"] == "t=0.12"
    assert best_point(POINTS, [("lpips", "max", 0.01)]) is None


def test_gate_parsing():
    assert parse_gates(["lpips=0.1"], ["psnr=30"]) == [("lpips", "max", 0.1), ("psnr", "min", 30.0)]
    with pytest.raises(SpecError, match="unknown metric 'lpip'"):
        parse_gates(["lpip=0.1"], [])
    with pytest.raises(SpecError, match="METRIC=NUMBER"):
        parse_gates(["lpips=low"], [])
