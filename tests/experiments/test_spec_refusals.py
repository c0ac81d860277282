"""Issue 13: every bad value is refused by `repro validate` (exit 2, one short line, nothing written).

Each case is a spec a hostile or careless user wrote; before the fix most of them validated and then
ran as "ok" points (NaN thresholds, bools as numbers) or crashed mid-sweep.
"""

from __future__ import annotations

import os

import pytest
import torch
import yaml
from click.testing import CliRunner

from repro.cli import main
from tests.conftest import tiny_spec_dict

MAG = {"name": "mag_cache", "params": {"max_skip_steps": 2, "mag_ratios": [1.0] * 6},
       "calibrate": "never", "sweep": {"threshold": [0.1]}}


def fbc(threshold):
    return {"methods": [{"name": "first_block_cache", "sweep": {"threshold": [threshold]}}]}


def mag(**params):
    entry = {**MAG, "params": {**MAG["params"], **params}}
    return {"methods": [entry]}


def gen(**changes):
    base = tiny_spec_dict("unused")["generation"]
    return {"generation": {**base, **changes}}


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")

CASES = [
    # method parameters: type and range against the diffusers config dataclass fields
    ("threshold-nan", fbc(float("nan")), "must be a finite number"),
    ("threshold-inf", fbc(float("inf")), "must be a finite number"),
    ("threshold-bool", fbc(True), "must be a finite number"),
    ("threshold-string", fbc("NOPE"), "must be a finite number"),
    ("threshold-list", fbc([1, 2]), "must be a finite number"),
    ("threshold-mapping", fbc({"a": 1}), "must be a finite number"),
    ("max-skip-float", mag(max_skip_steps=2.5), "max_skip_steps=2.5 must be an integer"),
    ("max-skip-word", mag(max_skip_steps="three"), "max_skip_steps='three' must be an integer"),
    ("retention-list", mag(retention_ratio=[1, 2]), "retention_ratio=[1, 2] must be a finite number"),
    ("retention-range", mag(retention_ratio=1.5), "retention_ratio=1.5 must be in [0, 1]"),
    ("pab-zero-range", {"methods": [{"name": "pyramid_attention_broadcast",
                                     "params": {"spatial_attention_block_skip_range": 0}}]}, "must be >= 1"),
    ("callable-field", {"methods": [{"name": "faster_cache", "params": {"attention_weight_callback": "x"}}]},
     "attention_weight_callback"),
    ("huge-grid", {"methods": [{**MAG, "sweep": {"threshold": [0.1] * 200, "retention_ratio": [0.5] * 200}}]},
     "40,000 points"),
    # generation numbers: strict types, shape rules, maxima, memory
    ("steps-bool", gen(num_inference_steps=True), "valid integer"),
    ("steps-float", gen(num_inference_steps=6.0), "valid integer"),
    ("steps-million", gen(num_inference_steps=10**6), "1000 training timesteps"),
    ("height-bool", gen(height=True), "valid integer"),
    ("height-huge", gen(height=100000), "maximum 8,192"),
    ("height-not-multiple", gen(height=100), "not a multiple of 16"),
    ("frames-string", gen(num_frames="1e9"), "valid integer"),
    ("frames-huge", gen(num_frames=10**9 + 1), "maximum 1,025"),
    ("frames-not-4k+1", gen(num_frames=6), "not k*4+1"),
    ("memory", gen(height=8192, width=8192, num_frames=1025), "for the decoded frames alone"),
    ("guidance-inf", gen(guidance_scale=float("inf")), "finite number"),
    ("guidance-nan", gen(guidance_scale=float("nan")), "finite number"),
    ("guidance-bool", gen(guidance_scale=True), "valid number"),
    ("passthrough-nan", gen(max_sequence_length=float("nan")), "not a finite number"),
    ("passthrough-unknown", gen(max_sequence_lenght=16), "did you mean 'max_sequence_length'"),
    ("passthrough-reserved", gen(output_type="pil"), "set by the sweep"),
    ("repeats-huge", {"timing": {"warmup": 0, "repeats": 10**9}}, "maximum 100"),
    ("repeats-float", {"timing": {"warmup": 0, "repeats": 2.0}}, "valid integer"),
    ("seed-huge", {"seeds": [2**70]}, "signed 64-bit"),
    ("seed-bool", {"seeds": [True]}, "not an integer"),
    ("batch-size-bool", {"metrics": {"names": ["psnr"], "device": "cpu", "batch_size": True}}, "valid integer"),
    ("mp4-string", {"output": {"dir": "x", "mp4": "yes please"}}, "valid boolean"),
    # model source and devices
    ("pipeline-class-unknown", {"model": {"tiny": "wan", "device": "cpu", "pipeline_class": "NopePipeline"}},
     "no pipeline class 'NopePipeline'"),
    ("pipeline-class-ignored", {"model": {"tiny": "wan", "device": "cpu", "pipeline_class": "FluxPipeline"}},
     "does not apply to model.tiny 'wan'"),
    ("model-path-missing", {"model": {"path": "/nonexistent/model", "device": "cpu"}}, "not a folder"),
    ("tiny-unknown", {"model": {"tiny": "nope", "device": "cpu"}}, "unknown model family 'nope'"),
    pytest.param("device-cuda", {"model": {"tiny": "wan", "device": "cuda"}}, "model.device: cuda",
                 marks=NO_CUDA),
    pytest.param("metrics-device-cuda", {"metrics": {"names": ["psnr"], "device": "cuda"}},
                 "metrics.device: cuda", marks=NO_CUDA),
]


def _check_refused(out, needle, run_dir):
    assert out.exit_code == 2, out.output
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) < 1000, out.stderr[:3000]
    assert needle in lines[0], lines[0]
    assert "Traceback" not in out.output
    assert not run_dir.exists()


@pytest.mark.parametrize("name, change, needle", CASES, ids=[c.values[0] if hasattr(c, "marks") else c[0]
                                                             for c in CASES])
def test_bad_value_refused_at_validation(tmp_path, name, change, needle):
    run_dir = tmp_path / "run"
    data = tiny_spec_dict(run_dir, **change)
    if name == "mp4-string":
        data["output"]["dir"] = str(run_dir)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    _check_refused(CliRunner().invoke(main, ["validate", str(spec)]), needle, run_dir)


def test_model_path_without_model_index(tmp_path):
    (tmp_path / "weights").mkdir()
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict(tmp_path / "run", model={"path": str(tmp_path / "weights")})))
    _check_refused(CliRunner().invoke(main, ["validate", str(spec)]), "no model_index.json", tmp_path / "run")


def test_matching_pipeline_class_is_accepted_for_a_tiny_model(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict(tmp_path / "run",
                                                  model={"tiny": "wan", "device": "cpu", "pipeline_class": "WanPipeline"})))
    out = CliRunner().invoke(main, ["validate", str(spec)])
    assert out.exit_code == 0, out.output


def test_a_bad_spec_is_also_refused_by_sweep_before_the_run_dir_exists(tmp_path):
    run_dir = tmp_path / "run"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict(run_dir, **fbc(float("nan")))))
    _check_refused(CliRunner().invoke(main, ["sweep", str(spec)]), "finite number", run_dir)


def test_set_override_values_get_the_same_checks(tmp_path):
    run_dir = tmp_path / "run"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict(run_dir)))
    out = CliRunner().invoke(main, ["validate", str(spec), "--set", "methods.0.sweep.threshold=[.nan]"])
    _check_refused(out, "finite number", run_dir)


# ---------------------------------------------------------------------------------------------
# YAML and prompts files


def _yaml_spec(tmp_path, text_after_name: str) -> str:
    """A tiny spec as YAML text with `text_after_name` spliced in after the name line."""
    body = yaml.safe_dump(tiny_spec_dict(tmp_path / "run"), sort_keys=False)
    return body.replace("name: t\n", "name: t\n" + text_after_name, 1)


def _validate_text(tmp_path, text: str | bytes, needle: str):
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(text if isinstance(text, bytes) else text.encode())
    _check_refused(CliRunner().invoke(main, ["validate", str(spec)]), needle, tmp_path / "run")


def test_duplicate_top_level_key_refused(tmp_path):
    _validate_text(tmp_path, _yaml_spec(tmp_path, "seeds: [5]\n"), "'seeds' appears twice")


def test_duplicate_nested_key_refused(tmp_path):
    text = _yaml_spec(tmp_path, "").replace("  height: 16\n", "  height: 16\n  height: 32\n", 1)
    _validate_text(tmp_path, text, "'height' appears twice")


def test_merge_keys_and_plain_aliases_still_work(tmp_path):
    text = _yaml_spec(tmp_path, "").replace("seeds:\n- 0\n", "seeds: &s [0]\n", 1)
    spec = tmp_path / "spec.yaml"
    spec.write_text(text.replace("timing:\n  warmup: 0\n  repeats: 1\n",
                                 "timing:\n  <<: {warmup: 0}\n  repeats: 1\n"))
    out = CliRunner().invoke(main, ["validate", str(spec)])
    assert out.exit_code == 0, out.output


def test_non_utf8_spec_refused(tmp_path):
    text = _yaml_spec(tmp_path, "description: caf\xe9\n").encode("latin-1")
    _validate_text(tmp_path, text, "not UTF-8")


def test_oversized_spec_refused_without_reading_it(tmp_path):
    spec = tmp_path / "spec.yaml"
    with open(spec, "wb") as fh:
        fh.write(_yaml_spec(tmp_path, "").encode())
        fh.truncate(2 << 30)  # sparse: 2 GiB of NULs costs no disk
    out = CliRunner().invoke(main, ["validate", str(spec)])
    _check_refused(out, "the limit is 1 MiB", tmp_path / "run")


BOMB = "".join(f"  - &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n" for i in range(1, 10))


def test_alias_bomb_in_generation_is_bounded(tmp_path):
    text = _yaml_spec(tmp_path, "")
    text = text.replace("generation:\n", "generation:\n  bomb:\n  - &l0 [lol, lol, lol, lol, lol, lol, lol]\n"
                        + BOMB.replace("  - ", "  - ", -1), 1)
    _validate_text(tmp_path, text, "YAML expands to more than")


def test_alias_bomb_in_prompts_is_bounded(tmp_path):
    text = _yaml_spec(tmp_path, "")
    start = text.index("prompts:\n")
    end = text.index("seeds:")
    text = text[:start] + "prompts:\n  - &l0 [lol, lol, lol, lol, lol, lol, lol]\n" + BOMB + text[end:]
    _validate_text(tmp_path, text, "YAML expands to more than")


def test_prompts_that_are_not_strings_give_a_short_message(tmp_path):
    text = _yaml_spec(tmp_path, "")
    start = text.index("prompts:\n")
    end = text.index("seeds:")
    text = text[:start] + "prompts:\n  - &a [" + ", ".join(["xxxxxxxxxx"] * 5000) + "]\n  - *a\n" + text[end:]
    _validate_text(tmp_path, text, "prompts[0]")


def test_recursive_alias_refused(tmp_path):
    _validate_text(tmp_path, _yaml_spec(tmp_path, "description: &r [1, *r]\n"), "recursive")


def test_python_tags_never_execute(tmp_path):
    marker = tmp_path / "pwned"
    text = _yaml_spec(tmp_path, f"description: !!python/object/apply:os.system ['touch {marker}']\n")
    _validate_text(tmp_path, text, "not valid YAML")
    assert not marker.exists()


@pytest.mark.parametrize("content, needle", [
    (b"a fox\ncaf\xe9 au lait\n", "not UTF-8"),
    (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "looks binary"),
    (b"# only a comment\n\n", "holds no prompts"),
    ("x" * 20000 + "\n", "maximum 10,000"),
])
def test_bad_prompts_file_refused(tmp_path, content, needle):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(content if isinstance(content, bytes) else content.encode())
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict(tmp_path / "run", prompts={"file": "prompts.txt"})))
    _check_refused(CliRunner().invoke(main, ["validate", str(spec)]), needle, tmp_path / "run")


def test_huge_prompts_file_refused_by_size(tmp_path):
    prompts = tmp_path / "prompts.txt"
    with open(prompts, "wb") as fh:
        fh.write(b"a fox\n")
        fh.truncate(1 << 30)  # sparse 1 GiB
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict(tmp_path / "run", prompts={"file": str(prompts)})))
    _check_refused(CliRunner().invoke(main, ["validate", str(spec)]), "the limit is 16 MiB", tmp_path / "run")


def test_every_family_tiny_generation_meets_its_own_shape_rules():
    from experiments.families import all_families
    from experiments.feasibility import check_shapes
    from experiments.spec import GenerationSpec

    for family in all_families().values():
        check_shapes(GenerationSpec(**family.tiny_generation), family, where=family.name)
        check_shapes(GenerationSpec(**{k: v for k, v in family.defaults.items()
                                       if k in ("height", "width", "num_frames")}), family, where=family.name)


def test_message_length_is_bounded_for_huge_values(tmp_path):
    text = _yaml_spec(tmp_path, "").replace("seeds:\n- 0\n", "seeds: ['" + "x" * 50000 + "']\n")
    _validate_text(tmp_path, text, "is not an integer")
    text = _yaml_spec(tmp_path, "").replace("name: t\n", "name: t\nbogus_" + "k" * 900 + ": 1\n")
    _validate_text(tmp_path, text, "unknown field")


def _not_a_run_dir(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "thesis.tex").write_text("mine")
    return str(tmp_path / "full")


# Refused by `repro validate` exactly as by `repro sweep`: the same one line, exit 2, nothing written.
SAME_AS_SWEEP = [
    ("hub-id-dotdot", lambda tmp: {"model": {"id": "../../etc", "device": "cpu"}}, "model.id"),
    ("hub-id-three-parts", lambda tmp: {"model": {"id": "a/b/c", "device": "cpu"}}, "model.id"),
    ("hub-id-double-dash", lambda tmp: {"model": {"id": "org/--model", "device": "cpu"}}, "model.id"),
    ("out-root", lambda tmp: {"output": {"dir": "/", "mp4": False}}, "filesystem root"),
    ("out-not-a-run-dir", lambda tmp: {"output": {"dir": _not_a_run_dir(tmp), "mp4": False}}, "not a run directory"),
]


@pytest.mark.parametrize("name, change, needle", SAME_AS_SWEEP, ids=[c[0] for c in SAME_AS_SWEEP])
def test_validate_refuses_what_sweep_refuses_with_the_same_message(tmp_path, name, change, needle):
    data = tiny_spec_dict(tmp_path / "run", **change(tmp_path))
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    lines = []
    for verb in ("validate", "sweep"):
        out = CliRunner().invoke(main, [verb, str(spec)])
        assert out.exit_code == 2, (verb, out.output)
        assert "Traceback" not in out.output and out.exception is None or isinstance(out.exception, SystemExit)
        lines.append(out.stderr.strip().splitlines())
    assert len(lines[0]) == 1 and needle in lines[0][0], lines[0]
    assert lines[0] == lines[1]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written
