"""Results you can trust (issue 12): each test reproduces a silent error of the earlier code on a real tiny sweep.

One module-scoped sweep on the tiny Wan twin (CPU, 4 steps, CFG as two passes) with First Block Cache at
thresholds 0 (identical to the baseline: PSNR inf) and 0.3, and two MagCache entries that differ only in
`cfg_branch`. Metrics: PSNR and SSIM only (LPIPS and CLIP not requested).
"""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from experiments.media import read_frames
from experiments.spec import Spec, load_spec
from repro.cli import main
from repro.store import Store
from repro.sweep import run_sweep
from tests.conftest import ROOT, tiny_spec_dict

pytestmark = pytest.mark.slow

MAG = {"params": {"max_skip_steps": 2, "retention_ratio": 0.0}, "sweep": {"threshold": [0.5]}}
METHODS = [
    {"name": "first_block_cache", "sweep": {"threshold": [0.0, 0.3]}},
    {"name": "mag_cache", "label": "mag_cond", "cfg_branch": "cond", **MAG},
    {"name": "mag_cache", "label": "mag_uncond", "cfg_branch": "uncond", **MAG},
]
GENERATION = {"height": 16, "width": 16, "num_frames": 5, "num_inference_steps": 4, "guidance_scale": 5.0,
              "max_sequence_length": 16}


def spec_dict(run_dir, **changes) -> dict:
    base = dict(methods=METHODS, generation=GENERATION, prompts=["a red fox in snow"], seeds=[0, 1],
                timing={"warmup": 0, "repeats": 3})
    return tiny_spec_dict(run_dir, **{**base, **changes})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust")
    spec = Spec.model_validate(spec_dict(root / "run"))
    outcome = run_sweep(spec)
    assert outcome.exit_code == 0
    return spec


def copy_of(spec: Spec, dest) -> str:
    shutil.copytree(spec.run_dir, dest)
    return str(dest)


def frames_of(store: Store, key: str) -> np.ndarray:
    return read_frames(store.run_dir / store.generation(key)["media_dir"])


# 1. MagCache: the ratios of each entry's own CFG branch, recorded with the point


def test_each_magcache_entry_runs_with_its_own_branch_ratios(run):
    store = Store(run.run_dir)
    cal = store.calibrations()
    assert len(cal) == 1 and set(cal[0]["ratios"]) == {"cond", "uncond"}
    assert cal[0]["ratios"]["cond"] != cal[0]["ratios"]["uncond"]
    points = {p["method"]: p for p in store.points()}
    for label, branch in (("mag_cond", "cond"), ("mag_uncond", "uncond")):
        recorded = points[label]["calibration"]
        assert recorded["branch"] == branch and recorded["key"] == cal[0]["key"]
        assert recorded["ratios"] == cal[0]["ratios"][branch]
        assert f"mag_ratios={cal[0]['ratios'][branch]!r}" in points[label]["python_call"]


def test_best_prints_the_chosen_points_own_ratios(run):
    store = Store(run.run_dir)
    ratios = store.calibrations()[0]["ratios"]
    out = CliRunner().invoke(main, ["best", str(run.run_dir), "--max", "compute_fraction=2"],
                             catch_exceptions=False)
    assert out.exit_code == 0
    # gate on the uncond point alone (the only point whose call carries the uncond ratios)
    from repro.aggregate import tables
    from repro.pareto import best_point
    from repro.report import format_best

    points, _ = tables(store)
    uncond = points[points["method"] == "mag_uncond"].to_dict("records")
    text = format_best(best_point(uncond, []), [])
    assert repr(ratios["uncond"]) in text and repr(ratios["cond"]) not in text


# 2. Paste-ready: the call and the snippet run as printed and reproduce the point


def _pipeline_frames(spec: Spec, python_call: str, seed: int) -> np.ndarray:
    import torch

    from experiments.pipelines import load_pipeline

    pipe = load_pipeline(spec.model)
    exec(python_call, {"pipe": pipe})  # exactly as printed
    with torch.inference_mode():
        out = pipe(prompt=spec.prompts[0], generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
                   **spec.generation.pipeline_kwargs())
    arr = np.asarray(out.frames[0], dtype=np.float32)
    return (np.clip(arr, 0.0, 1.0) * 255.0).round().astype(np.uint8)


@pytest.mark.parametrize("point_label", ["mag_uncond", "first_block_cache"])
def test_python_call_runs_as_printed_and_reproduces_the_point(run, point_label):
    store = Store(run.run_dir)
    point = next(p for p in store.points() if p["method"] == point_label and p["label"] != "t=0.0")
    assert "also set" not in point["python_call"]
    job = next(g for g in store.generations(role="cached") if g["point_id"] == point["point_id"] and g["seed"] == 1)
    got = _pipeline_frames(run, point["python_call"], seed=1)
    assert np.array_equal(got, frames_of(store, job["key"]))


def test_spec_snippet_runs_as_printed_and_reproduces_the_point(run, tmp_path):
    store = Store(run.run_dir)
    point = next(p for p in store.points() if p["method"] == "mag_uncond")
    snippet = yaml.safe_load(point["spec_snippet"])
    base = spec_dict(tmp_path / "again", seeds=[1])
    base.pop("methods")
    base["generation"] = {**GENERATION, "num_inference_steps": 28}  # the snippet must bring its own step count
    merged = {**base, **{k: v for k, v in snippet.items() if k != "generation"},
              "generation": {**base["generation"], **snippet.get("generation", {})}}
    path = tmp_path / "snippet.yaml"
    path.write_text(yaml.safe_dump(merged))
    spec = load_spec(path)
    assert run_sweep(spec).exit_code == 0
    again = Store(spec.run_dir)
    assert not again.calibrations()  # the ratios came with the snippet
    mine = next(g for g in again.generations(role="cached"))
    theirs = next(g for g in store.generations(role="cached") if g["point_id"] == point["point_id"] and g["seed"] == 1)
    assert np.array_equal(frames_of(again, mine["key"]), frames_of(store, theirs["key"]))


# 3. A changed spec never mixes results


def test_changed_steps_into_the_same_run_dir_is_refused_and_writes_nothing(run, tmp_path):
    run_dir = copy_of(run, tmp_path / "run")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec_dict(run_dir)))
    before = sorted(p.name for p in (tmp_path / "run").rglob("*"))
    meta = Store(run_dir).meta()
    out = CliRunner().invoke(main, ["sweep", str(spec_path), "--set", "generation.num_inference_steps=8"])
    assert out.exit_code == 2, out.output
    line = out.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "generation.num_inference_steps" in line and "4" in line and "8" in line and "--out" in line
    assert sorted(p.name for p in (tmp_path / "run").rglob("*")) == before
    assert Store(run_dir).meta()["spec"] == meta["spec"]


def test_a_point_aggregates_only_items_of_the_current_spec(run, tmp_path):
    from repro.aggregate import tables

    run_dir = copy_of(run, tmp_path / "run")
    fewer = Spec.model_validate(spec_dict(run_dir, seeds=[1]))
    assert run_sweep(fewer).generated == 0  # every item of seed 1 is there already
    points, items = tables(Store(run_dir))
    assert set(items["seed"]) == {1}
    assert (points[points["status"] == "ok"]["n_items"] == 1).all()


def test_job_keys_include_device_and_dtype(run, monkeypatch):
    import experiments.pipelines as pipelines
    from repro.plan import build_plan

    cpu = {j.key for j in build_plan(run).jobs}
    half = run.model_copy(update={"model": run.model.model_copy(update={"dtype": "bfloat16"})})
    assert cpu.isdisjoint(j.key for j in build_plan(half).jobs)
    monkeypatch.setattr(pipelines, "resolve_device", lambda name: "cuda")  # as on a machine with a GPU
    cuda = run.model_copy(update={"model": run.model.model_copy(update={"device": "auto"})})
    assert cpu.isdisjoint(j.key for j in build_plan(cuda).jobs)


# 4. Values never measured are not reported


def test_unrequested_metrics_appear_nowhere_and_the_baseline_is_the_reference(run, tmp_path):
    from repro.aggregate import tables
    from repro.report import format_points

    store = Store(run.run_dir)
    points, items = tables(store)
    for frame in (points, items):
        assert not {"lpips", "clip", "clip_delta"} & set(frame.columns)
    base = points[points["method"] == "baseline"].iloc[0]
    assert math.isnan(base["psnr"]) and math.isnan(base["ssim"]) and bool(base["reference"])
    text = format_points(points)
    assert "lpips" not in text.lower() and "clip" not in text.lower()
    base_line = next(ln for ln in text.splitlines() if ln.startswith("baseline"))
    assert "ref" in base_line
    assert CliRunner().invoke(main, ["export", str(run.run_dir), "--out", str(tmp_path)]).exit_code == 0
    header = (tmp_path / "points.csv").read_text().splitlines()[0].split(",")
    assert "lpips" not in header and "clip_delta" not in header
    # the HTML report: no column, label or note of a metric the spec did not request (it showed LPIPS)
    from paper_figures.html_report import write_html_report

    page = write_html_report(points, items, [], tmp_path / "html").read_text().lower()
    table = page[page.index("id='points-table'"):page.index("</table>", page.index("id='points-table'"))]
    assert "<th data-kind='num' tabindex='0'>psnr" in table and "lpips" not in table and "clip" not in table


# 5. One encoding of infinity in store, CSV, JSONL and Parquet


def test_identical_psnr_is_inf_in_every_format_and_round_trips(run, tmp_path):
    from repro.export import read_table

    store = Store(run.run_dir)
    con = sqlite3.connect(store.path)
    strict = dict(parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c} in the store"))
    for (per_frame,) in con.execute("SELECT per_frame FROM scores"):
        json.loads(per_frame, **strict)
    for (summary,) in con.execute("SELECT summary FROM generations WHERE summary IS NOT NULL"):
        json.loads(summary, **strict)
    zero = next(p["point_id"] for p in store.points() if p["label"] == "t=0.0")
    tables = {}
    for fmt in ("csv", "jsonl", "parquet"):
        out = CliRunner().invoke(main, ["export", str(run.run_dir), "--format", fmt, "--out", str(tmp_path / fmt)])
        assert out.exit_code == 0, out.output
        tables[fmt] = read_table(tmp_path / fmt / f"items.{fmt}")
    raw = [json.loads(ln, **strict) for ln in (tmp_path / "jsonl" / "items.jsonl").read_text().splitlines()]
    assert {r["psnr"] for r in raw if r["point_id"] == zero} == {"inf"}
    assert all(r["psnr"] is None for r in raw if r["point_id"] == "baseline")  # not a measurement
    for fmt, items in tables.items():
        same = items[items["point_id"] == zero]
        assert (same["psnr"] == math.inf).all() and same["identical"].astype(bool).all(), fmt
        other = items[(items["role"] == "cached") & (items["point_id"] != zero)]
        assert np.isfinite(other["psnr"]).all() and not other["identical"].astype(bool).any(), fmt
        assert items[items["point_id"] == "baseline"]["psnr"].isna().all(), fmt
        pd.testing.assert_series_equal(items["psnr"].astype(float), tables["parquet"]["psnr"].astype(float),
                                       check_names=False)


# 6. The time breakdown adds up to the end-to-end time


def test_time_breakdown_parts_add_up_to_end_to_end_on_measured_timings(run):
    from paper_figures.time_breakdown import SEGMENTS
    from repro.aggregate import tables

    points, items = tables(Store(run.run_dir))
    for frame, total in ((items[items["status"] == "ok"], "e2e_s"), (points, "latency_s")):
        parts = sum(frame[col] for col, *_ in SEGMENTS)
        np.testing.assert_allclose(parts, frame[total], rtol=1e-9)
    labels = [label for _, label, *_ in SEGMENTS]
    assert "denoise (transformer)" not in labels


def test_summary_takes_every_part_from_the_median_runs(run):
    store = Store(run.run_dir)
    ok = store.generations(status="ok")
    for g in ok:
        s = g["summary"]
        parts = s["text_encode_s"] + s["denoise_s"] + s["vae_decode_s"] + s["other_s"]
        assert parts == pytest.approx(s["e2e_s"], rel=1e-9)
        assert s["transformer_s"] + s["loop_overhead_s"] == pytest.approx(s["denoise_s"], rel=1e-9)


# 7. The spec hash names the experiment, not where it is written


def test_spec_hash_ignores_output_and_tracking_but_not_results(tmp_path):
    a = Spec.model_validate(spec_dict(tmp_path / "a"))
    b = Spec.model_validate(spec_dict(tmp_path / "b", wandb={"mode": "offline", "tags": ["x"]}))
    assert a.spec_hash() == b.spec_hash()
    steps = Spec.model_validate(spec_dict(tmp_path / "a", generation={**GENERATION, "num_inference_steps": 8}))
    assert steps.spec_hash() != a.spec_hash()


# 8. Errors keep their cause


def test_failed_generation_stores_its_traceback(tmp_path):
    methods = [{"name": "taylorseer_cache", "params": {"cache_identifiers": ["(unclosed"]}}]
    spec = Spec.model_validate(spec_dict(tmp_path / "run", methods=methods, seeds=[0], timing={"warmup": 0,
                                                                                                 "repeats": 1}))
    assert run_sweep(spec).exit_code == 1
    failed = Store(spec.run_dir).generations(status="failed")
    assert failed and all(g["traceback"].startswith("Traceback") for g in failed)
    assert all("re.error" in g["traceback"] or "PatternError" in g["traceback"] for g in failed)
    assert all("\n" not in g["error"] for g in failed)


def _cached_hub_model(tmp_path, drop_weights: bool):
    """acme/tiny-wan in a Hugging Face cache layout under tmp_path/hf (revision main), optionally broken."""
    from experiments.families import get_family

    hub = tmp_path / "hf" / "hub" / "models--acme--tiny-wan"
    snapshot = hub / "snapshots" / ("0" * 40)
    get_family("wan").build_tiny().save_pretrained(snapshot)
    if drop_weights:
        for weights in (snapshot / "transformer").glob("diffusion_pytorch_model*"):
            weights.unlink()
    (hub / "refs").mkdir(parents=True)
    (hub / "refs" / "main").write_text("0" * 40)


def _sweep_hub_model(tmp_path, **model) -> subprocess.CompletedProcess:
    spec = spec_dict(tmp_path / "run", methods=[METHODS[0]], seeds=[0],
                     model={"id": "acme/tiny-wan", "pipeline_class": "WanPipeline", "device": "cpu", **model})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-m", "repro.cli", "sweep", str(path)], cwd=ROOT, env=env,
                          capture_output=True, text=True)


def test_a_broken_cached_model_is_not_reported_as_missing_weights(tmp_path):
    """Weights gone from a cached snapshot: a real 'no file found', not the hub's own: it surfaces as itself."""
    _cached_hub_model(tmp_path, drop_weights=True)
    out = _sweep_hub_model(tmp_path)
    assert out.returncode not in (0, 3), out.stderr[-2000:]
    assert "diffusion_pytorch_model" in out.stderr and "repro fetch-weights" not in out.stderr


def test_a_bad_revision_of_a_cached_model_is_named(tmp_path):
    """The model is cached, the revision (a typo) is not: the message names the revision, not 'fetch the model'."""
    _cached_hub_model(tmp_path, drop_weights=False)
    out = _sweep_hub_model(tmp_path, revision="v1-typo")
    assert out.returncode == 3, out.stderr[-2000:]
    line = out.stderr.strip().splitlines()[-1]
    assert "model.revision" in line and "'v1-typo'" in line and "main" in line and "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()
