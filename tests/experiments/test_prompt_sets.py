"""Prompt-set presets from a local fixture cache in the public sources' own file formats,
the offline refusal (exit 3), provenance in the spec, and non-reportable subsets."""

from __future__ import annotations

import hashlib
import io
import json

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from experiments import prompt_sets
from experiments.spec import load_spec
from repro.cli import main
from tests.conftest import tiny_spec_dict

VBENCH = "a bird and a cat\na cat and a dog\n\nIn a still frame, a stop sign\nA person is riding a bike\n"
PARTI = ("Prompt\tCategory\tChallenge\tNote\nbond\tAbstract\tBasic\tBiology-inspired concepts\n"
         "a red cube\tIllustrations\tBasic\t\nA punk rock squirrel on a stump.\tAnimals\tComplex\t\n")


def _drawbench_parquet() -> bytes:
    buf = io.BytesIO()
    pd.DataFrame({"prompts": ["A red colored car.", "A black colored car.", "A horse riding an astronaut."],
                  "category": ["Colors", "Colors", "Conflicting"]}).to_parquet(buf, index=False)
    return buf.getvalue()


FIXTURES = {"vbench": VBENCH.encode(), "partiprompts": PARTI.encode(), "drawbench": _drawbench_parquet()}


def _install(name: str, revision: str | None = None) -> None:
    preset = prompt_sets.PRESETS[name]
    rev = revision or preset.revision
    data = FIXTURES[name]
    prompt_sets.store_entry(prompt_sets.cache_root() / name / rev, data, {
        "preset": name, "url": preset.url(rev), "repo": preset.repo, "path": preset.path, "revision": rev,
        "requested_revision": rev, "sha256": hashlib.sha256(data).hexdigest(), "format": preset.format})


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "cache"


def _spec_file(tmp_path, prompts, **changes):
    data = tiny_spec_dict(tmp_path / "run", prompts=prompts, **changes)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name,expected", [
    ("vbench", ["a bird and a cat", "a cat and a dog", "In a still frame, a stop sign", "A person is riding a bike"]),
    ("partiprompts", ["bond", "a red cube", "A punk rock squirrel on a stump."]),
    ("drawbench", ["A red colored car.", "A black colored car.", "A horse riding an astronaut."]),
])
def test_each_preset_parses_its_public_file_format(name, expected):
    _install(name)
    loaded = prompt_sets.load(prompt_sets.PromptSetRequest(name))
    assert loaded.prompts == expected
    rec = loaded.record
    assert rec["sha256"] == hashlib.sha256(FIXTURES[name]).hexdigest()
    assert rec["revision"] == prompt_sets.PRESETS[name].revision and rec["n_total"] == len(expected)
    assert rec["reportable"] is True


def test_limit_samples_deterministically_in_source_order_and_is_not_reportable():
    _install("vbench")
    a = prompt_sets.load(prompt_sets.PromptSetRequest("vbench", limit=2, sample_seed=3))
    b = prompt_sets.load(prompt_sets.PromptSetRequest("vbench", limit=2, sample_seed=3))
    c = prompt_sets.load(prompt_sets.PromptSetRequest("vbench", limit=2, sample_seed=4))
    assert a.prompts == b.prompts and len(a.prompts) == 2
    assert a.record["indices"] == sorted(a.record["indices"])
    assert a.record["reportable"] is False
    assert {tuple(a.prompts), tuple(c.prompts)} <= {tuple(p) for p in _pairs(VBENCH)}


def _pairs(text):
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return [[lines[i], lines[j]] for i in range(len(lines)) for j in range(i + 1, len(lines))]


def test_spec_with_preset_carries_provenance_and_changes_the_spec_hash(tmp_path):
    _install("partiprompts")
    spec = load_spec(_spec_file(tmp_path, {"preset": "partiprompts", "limit": 2}))
    assert len(spec.prompts) == 2 and spec.prompt_set["preset"] == "partiprompts"
    assert spec.prompt_set["sha256"] == hashlib.sha256(FIXTURES["partiprompts"]).hexdigest()
    full = load_spec(_spec_file(tmp_path, {"preset": "partiprompts"}))
    assert full.spec_hash() != spec.spec_hash()


def test_offline_without_the_set_exits_3_naming_what_to_fetch_and_writes_nothing(tmp_path):
    path = _spec_file(tmp_path, {"preset": "vbench", "limit": 2})
    res = CliRunner().invoke(main, ["sweep", str(path)])
    assert res.exit_code == 3, res.output
    assert "prompt set 'vbench'" in res.output and "repro fetch-weights SPEC" in res.output
    assert "Vchitect/VBench" in res.output
    assert not (tmp_path / "run").exists()


def test_validate_plans_without_the_set_and_says_so(tmp_path):
    path = _spec_file(tmp_path, {"preset": "drawbench", "limit": 3})
    res = CliRunner().invoke(main, ["validate", str(path)])
    assert res.exit_code == 0, res.output
    assert "not fetched yet" in res.output and "3 baseline generations" in res.output


def test_a_corrupted_cached_file_is_refused(tmp_path, cache):
    _install("vbench")
    (cache / "prompt_sets" / "vbench" / prompt_sets.PRESETS["vbench"].revision / "prompts.lines").write_text("x\n")
    res = CliRunner().invoke(main, ["sweep", str(_spec_file(tmp_path, {"preset": "vbench"}))])
    assert res.exit_code == 3 and "does not match the sha256" in res.output


@pytest.mark.parametrize("prompts,needle", [
    ({"preset": "vbenc"}, "did you mean 'vbench'"),
    ({"preset": "vbench", "limit": 0}, "prompts.limit: 0 must be a positive integer"),
    ({"preset": "vbench", "limit": 2, "extra": 1}, "unknown field 'extra'"),
    ({"preset": "vbench", "limit": 99}, "more than the 4 prompts"),
    ({"preset": "vbench", "revision": "../x"}, "prompts.revision"),
])
def test_bad_preset_requests_exit_2(tmp_path, prompts, needle):
    _install("vbench")
    res = CliRunner().invoke(main, ["validate", str(_spec_file(tmp_path, prompts))])
    assert res.exit_code == 2 and needle in res.output, res.output


def test_fetch_weights_fetches_the_set_into_the_cache(tmp_path, monkeypatch):
    calls = []

    def download(preset, rev):  # the network is the one part that cannot run here
        calls.append((preset.name, rev))
        return FIXTURES[preset.name], "0123456789abcdef0123456789abcdef01234567"

    monkeypatch.setattr(prompt_sets, "_download", download)
    path = _spec_file(tmp_path, {"preset": "drawbench", "revision": "main"})
    res = CliRunner().invoke(main, ["fetch-weights", str(path)])
    assert res.exit_code == 0, res.output
    assert calls == [("drawbench", "main")]
    record = json.loads((prompt_sets.cache_root() / "drawbench" / "main" / "source.json").read_text())
    assert record["revision"] == "0123456789abcdef0123456789abcdef01234567"
    spec = load_spec(path)
    assert spec.prompts[0] == "A red colored car." and spec.prompt_set["revision"] == record["revision"]


@pytest.mark.slow
def test_a_limited_run_is_marked_not_reportable_in_tables_and_figures(tmp_path):
    from repro.aggregate import tables
    from repro.store import Store
    from repro.sweep import run_sweep

    _install("vbench")
    spec = load_spec(_spec_file(tmp_path, {"preset": "vbench", "limit": 2},
                                methods=[{"name": "first_block_cache", "sweep": {"threshold": [0.3]}}]))
    assert run_sweep(spec).exit_code == 0
    points, _ = tables(Store.open_existing(tmp_path / "run"))
    assert "NOT REPORTABLE" in points.attrs["title"]
    assert "2 of the 4 vbench prompts" in points.attrs["not_reportable"]
    res = CliRunner().invoke(main, ["figures", str(tmp_path / "run"), "--format", "png"])
    assert res.exit_code == 0, res.output
    tables_md = next((tmp_path / "run" / "figures").glob("*table*.md")).read_text()
    assert "NOT REPORTABLE: prompt subset" in tables_md
    resolved = yaml.safe_load((tmp_path / "run" / "spec.resolved.yaml").read_text())
    assert resolved["prompt_set"]["repo"] == "Vchitect/VBench" and resolved["prompt_set"]["sha256"]
