"""Spec validation: every mistake is one clear SpecError naming field, value and what is allowed."""

from __future__ import annotations

import pytest

from experiments.errors import SpecError
from experiments.spec import apply_override, load_spec
from tests.conftest import ROOT, tiny_spec_dict


def test_tiny_config_validates_with_defaults():
    spec = load_spec(ROOT / "configs" / "tiny.yaml")
    assert spec.model.reference == "wan" and spec.model.tiny is None
    assert spec.metrics.clip_model == "reference" and "lpips" not in spec.metrics.names
    assert [m.name for m in spec.methods] == ["first_block_cache", "mag_cache"]
    assert spec.run_dir.as_posix() == "runs/tiny"


def test_override_sets_nested_fields_and_list_items(tmp_path, write_spec):
    path = write_spec(tiny_spec_dict(tmp_path / "run"))
    spec = load_spec(path, overrides=["generation.num_inference_steps=9", "methods.0.sweep.threshold=[0.1, 0.2]",
                                      "seeds=[3, 4]"])
    assert spec.generation.num_inference_steps == 9
    assert spec.methods[0].sweep["threshold"] == [0.1, 0.2]
    assert spec.seeds == [3, 4]


def test_prompts_from_file_relative_to_spec(tmp_path, write_spec):
    (tmp_path / "prompts.txt").write_text("# comment\na cat\n\na dog\n")
    path = write_spec(tiny_spec_dict(tmp_path / "run", prompts={"file": "prompts.txt"}))
    assert load_spec(path).prompts == ["a cat", "a dog"]


def test_spec_hash_changes_with_content(tmp_path, write_spec):
    path = write_spec(tiny_spec_dict(tmp_path / "run"))
    assert load_spec(path).spec_hash() == load_spec(path).spec_hash()
    assert load_spec(path).spec_hash() != load_spec(path, overrides=["seeds=[7]"]).spec_hash()


@pytest.mark.parametrize("change, needle", [
    ({"methods": [{"name": "first_block_cach", "sweep": {"threshold": [0.1]}}]}, "did you mean 'first_block_cache'"),
    ({"methods": [{"name": "first_block_cache", "sweep": {"threshhold": [0.1]}}]}, "did you mean 'threshold'"),
    ({"methods": [{"name": "first_block_cache", "sweep": {"threshold": [-0.1]}}]}, "threshold=-0.1 is negative"),
    ({"methods": [{"name": "mag_cache", "sweep": {"retention_ratio": [-1]}}]}, "retention_ratio=-1 is negative"),
    ({"methods": [{"name": "first_block_cache", "sweep": {"threshold": []}}]}, "empty list"),
    ({"methods": []}, "no cache methods"),
    ({"prompts": []}, "no prompts"),
    ({"prompts": ["ok", "  "]}, "prompt 1 is empty"),
    ({"prompts": {"file": "missing.txt"}}, "prompts file not found"),
    ({"seeds": [0, "one"]}, "seed 'one' is not an integer"),
    ({"seeds": [1.5]}, "is not an integer"),
    ({"seeds": [1, 1]}, "duplicates"),
    ({"model": {"tiny": "wan", "id": "x/y"}}, "exactly one of model.id"),
    ({"generation": {"num_inference_steps": 0}}, "generation.num_inference_steps"),
    ({"timing": {"repeats": 0}}, "timing.repeats"),
    ({"timing": {"items": 0}}, "timing.items"),
    ({"timing": {"items": "some"}}, "timing.items"),
    ({"timming": {}}, "did you mean 'timing'"),
    ({"methods": [{"name": "mag_cache", "params": {"num_inference_steps": 4}}]}, "set automatically"),
])
def test_bad_specs_give_one_clear_error(tmp_path, write_spec, change, needle):
    path = write_spec(tiny_spec_dict(tmp_path / "run", **change))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert needle in str(err.value)
    message = str(err.value)
    assert "\n" not in message.strip(), message  # one line
    assert "Traceback" not in message
    assert not (tmp_path / "run").exists()


def test_unknown_param_lists_valid_ones(tmp_path, write_spec):
    path = write_spec(tiny_spec_dict(tmp_path / "run", methods=[{"name": "mag_cache", "sweep": {"treshold": [1]}}]))
    with pytest.raises(SpecError, match="Valid parameters: .*max_skip_steps.*retention_ratio.*threshold"):
        load_spec(path)


def test_yaml_must_be_a_mapping(write_spec):
    with pytest.raises(SpecError, match="must be a YAML mapping"):
        load_spec(write_spec("- just\n- a list\n"))


def test_python_tags_are_refused(tmp_path, write_spec):
    marker = tmp_path / "pwned"
    path = write_spec(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)
    assert not marker.exists()


def test_bad_override_syntax():
    with pytest.raises(SpecError, match="KEY.PATH=VALUE"):
        apply_override({}, "no-equals-sign")
    with pytest.raises(SpecError, match="not a valid index"):
        apply_override({"methods": []}, "methods.3.name=x")
