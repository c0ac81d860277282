"""metrics.names accepts exactly the registry's scored metrics; leaving it out keeps the four defaults."""

from __future__ import annotations

import pytest

from experiments.errors import SpecError
from experiments.spec import Spec, load_spec
from metrics import registry
from tests.conftest import tiny_spec_dict


def test_every_registered_metric_is_accepted_and_the_default_is_unchanged(tmp_path):
    spec = Spec.model_validate(tiny_spec_dict(tmp_path, metrics={"names": list(registry.SCORED), "device": "cpu"}))
    assert tuple(spec.metrics.names) == registry.SCORED
    assert {"psnr_tdiff", "mae_tdiff", "vbench_temporal_flickering", "image_reward"} <= set(registry.SCORED)
    plain = tiny_spec_dict(tmp_path)
    plain["metrics"] = {"device": "cpu"}
    assert tuple(Spec.model_validate(plain).metrics.names) == ("lpips", "psnr", "ssim", "clip")


def test_an_unknown_metric_is_refused_naming_the_allowed_ones(tmp_path, write_spec):
    path = write_spec(tiny_spec_dict(tmp_path, metrics={"names": ["psnr_tdif"], "device": "cpu"}))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert "psnr_tdif" in str(err.value) and "psnr_tdiff" in str(err.value)
