"""Fixtures: synthetic sweep tables plus make_all runs shared across tests (rendering is the slow part)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from paper_figures import Figure, make_all

from .synthetic import make_calibrations, make_items, make_points

ALL_FORMATS = ("png", "pdf", "svg")


@dataclass
class Run:
    points: pd.DataFrame
    items: pd.DataFrame
    figures: list[Figure]
    out: Path

    def by_stem(self, stem: str) -> Figure:
        return next(f for f in self.figures if f.path_stem == stem)


# Second rendering in a fresh interpreter with another hash seed: byte-identical output
# must not depend on process state (set/dict order, caches, ids). Runs while the
# first rendering runs here, so the determinism check costs little wall time.
_SECOND_RUN = """
import pickle, sys
from paper_figures import make_all
points, items, calibrations = pickle.load(open(sys.argv[1], "rb"))
make_all(points, items, calibrations, sys.argv[2], formats=tuple(sys.argv[3].split(",")))
"""


@pytest.fixture(scope="session")
def video_runs(tmp_path_factory) -> tuple[Run, Run]:
    """A small video sweep (random-weight LPIPS, one failed point) rendered twice, all formats."""
    import pickle

    root = tmp_path_factory.mktemp("video")
    points = make_points(random_lpips=True, fbc=(0.05, 0.1, 0.2), mag=(0.06, 0.24))
    items = make_items(points, root / "media", kind="video", n_prompts=2, seeds=(0,), n_frames=6, size=(48, 32))
    calibrations = make_calibrations()
    inputs = root / "inputs.pkl"
    inputs.write_bytes(pickle.dumps((points, items, calibrations)))
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    second = subprocess.Popen(
        [sys.executable, "-c", _SECOND_RUN, str(inputs), str(root / "b"), ",".join(ALL_FORMATS)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        figures = make_all(points, items, calibrations, root / "a", formats=ALL_FORMATS)
    finally:
        log, _ = second.communicate(timeout=300)
    assert second.returncode == 0, log
    return Run(points, items, figures, root / "a"), Run(points, items, [], root / "b")


@pytest.fixture(scope="session")
def video_run(video_runs) -> Run:
    return video_runs[0]


@pytest.fixture(scope="session")
def image_run(tmp_path_factory) -> Run:
    """An image sweep (4 + 2 points, real-weight labels), PNG only."""
    root = tmp_path_factory.mktemp("image")
    points = make_points(random_lpips=False, fbc=(0.05, 0.1, 0.15, 0.2), mag=(0.06, 0.12))
    items = make_items(points, root / "media", kind="image", n_prompts=2, seeds=(0, 1), size=(64, 48))
    out = root / "figs"
    figures = make_all(points, items, make_calibrations(), out, formats=("png",), grid_prompts=[0, (1, 1)])
    return Run(points, items, figures, out)
