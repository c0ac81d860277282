"""score_folders, the CLI, fetch_weights offline, lazy imports and the docstring examples."""

from __future__ import annotations

import doctest
import importlib
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

import metrics
from metrics.__main__ import main


@pytest.fixture
def folders(tmp_path, rng):
    a, b = tmp_path / "cached", tmp_path / "baseline"
    (a / "sub").mkdir(parents=True)
    (b / "sub").mkdir(parents=True)
    imgs = {}
    for name in ["0.png", "1.png", "sub/2.png"]:
        x = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        y = np.clip(x.astype(int) + rng.integers(-10, 11, x.shape), 0, 255).astype(np.uint8)
        Image.fromarray(x).save(a / name)
        Image.fromarray(y).save(b / name)
        imgs[name] = (x, y)
    Image.fromarray(imgs["0.png"][0]).save(a / "only_a.png")
    np.save(a / "clip.npy", np.zeros((3, 40, 48, 3), np.uint8))  # a 3-frame "video"
    np.save(b / "clip.npy", np.full((3, 40, 48, 3), 255, np.uint8))
    return a, b, imgs


def test_score_folders_pairs_files_by_relative_name(folders):
    a, b, imgs = folders
    res = metrics.score_folders(a, b, names=("psnr", "ssim"), device="cpu", batch_size=2,
                                allow_unmatched=True)
    rows = {r["file"]: r for r in res["items"]}
    assert set(rows) == {"0.png", "1.png", "sub/2.png", "clip.npy"}
    for name, (x, y) in imgs.items():
        assert rows[name]["psnr"] == pytest.approx(peak_signal_noise_ratio(x / 255.0, y / 255.0, data_range=1.0), abs=1e-6)
        assert rows[name]["frames"] == 1
    assert rows["clip.npy"]["frames"] == 3 and rows["clip.npy"]["psnr"] == pytest.approx(0.0, abs=1e-12)
    assert res["unmatched"] == {"only_in_a": ["only_a.png"], "only_in_b": []}
    agg = res["aggregate"]["psnr"]
    assert agg["n"] == 4 and agg["mean"] == pytest.approx(np.mean([r["psnr"] for r in res["items"]]))
    assert res["labels"] == {"psnr": "psnr", "ssim": "ssim"}


def test_score_folders_with_networks_and_prompts(folders, empty_caches):
    a, b, _ = folders
    mp = empty_caches()
    try:
        res = metrics.score_folders(a, b, names=("lpips", "clip"), prompts={"0.png": "a photo of a cat"}, allow_unmatched=True,
                                    device="cpu", allow_random_weights=True)
    finally:
        mp.undo()
    rows = {r["file"]: r for r in res["items"]}
    assert "clip_delta" in rows["0.png"] and "clip_delta" not in rows["1.png"]
    assert res["aggregate"]["clip_delta"]["n"] == 1 and res["aggregate"]["lpips"]["n"] == 4
    assert res["random_weights"] == {"lpips": True, "clip": True}


def test_cli_score_prints_rows_and_aggregate(folders, capsys, tmp_path, empty_caches):
    a, b, _ = folders
    out_json = tmp_path / "r.json"
    mp = empty_caches()
    try:
        code = main(["score", str(a), str(b), "--common-only", "--metrics", "psnr,lpips", "--device", "cpu",
                     "--allow-random-weights", "--json", str(out_json)])
    finally:
        mp.undo()
    assert code == 0
    text = capsys.readouterr().out
    assert "sub/2.png" in text and "lpips=lpips_alex [random weights]" in text
    assert "psnr: mean" in text and "RANDOM weights" in text
    assert json.loads(out_json.read_text())["aggregate"]["psnr"]["n"] == 4


def test_cli_without_weights_fails_with_fetch_hint(folders, capsys, empty_caches):
    a, b, _ = folders
    mp = empty_caches()
    try:
        code = main(["score", str(a), str(b), "--common-only", "--metrics", "lpips", "--device", "cpu"])
    finally:
        mp.undo()
    assert code == 2
    assert "python -m metrics fetch" in capsys.readouterr().err


def test_fetch_weights_offline_raises_quickly(empty_caches):
    import time

    mp = empty_caches()
    try:
        t = time.monotonic()
        with pytest.raises(metrics.WeightsMissing, match="HF_HUB_OFFLINE"):
            metrics.fetch_weights(metrics=("lpips",))
        with pytest.raises(metrics.WeightsMissing, match="CLIP ViT-B-32/laion2b_s34b_b79k"):
            metrics.fetch_weights(metrics=("clip",))
        assert time.monotonic() - t < 10
    finally:
        mp.undo()


def test_import_metrics_is_light():
    code = "import sys, metrics; print(sorted(m for m in ('torch', 'lpips', 'open_clip', 'repro', 'experiments') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    "module",
    ["metrics", "metrics.errors", "metrics.inputs", "metrics.psnr_db", "metrics.ssim_index", "metrics.stats",
     "metrics.scorer", "metrics.weights", "metrics.folders", "metrics.device", "metrics.lpips_distance",
     "metrics.clip_similarity"],
)
def test_docstring_examples_run(module, empty_caches):
    mp = empty_caches()
    try:
        res = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS | doctest.IGNORE_EXCEPTION_DETAIL)
    finally:
        mp.undo()
    assert res.attempted > 0 and res.failed == 0
