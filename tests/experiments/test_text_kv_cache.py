"""diffusers' lossless text K/V cache through the registry: outputs bit-identical, text projections computed once."""

from __future__ import annotations

import pytest


def test_text_kv_cache_is_lossless_and_computes_text_projections_once():
    import torch
    from diffusers import NucleusMoEImageTransformer2DModel

    from experiments.methods import enable_cache, get_method

    torch.manual_seed(0)
    transformer = NucleusMoEImageTransformer2DModel(
        patch_size=2, in_channels=16, num_layers=3, attention_head_dim=8, num_attention_heads=2, num_key_value_heads=1,
        joint_attention_dim=16, axes_dims_rope=(2, 2, 4), num_experts=4, moe_intermediate_dim=8).eval()
    latents = torch.randn(1, 16, 16)
    prompts = {"cond": torch.randn(1, 5, 16), "uncond": torch.randn(1, 7, 16)}  # one tensor per prompt, as a pipeline
    projections = []
    for block in transformer.transformer_blocks:
        block.encoder_proj.register_forward_hook(lambda m, a, o: projections.append(1))

    def denoise():
        outputs = []
        for step in range(4):
            timestep = torch.tensor([1000.0 - 250 * step])
            for branch, text in prompts.items():
                with transformer.cache_context(branch):
                    outputs.append(transformer(hidden_states=latents, img_shapes=[(1, 4, 4)], encoder_hidden_states=text,
                                               timestep=timestep, return_dict=False)[0])
        return outputs

    with torch.inference_mode():
        plain = denoise()
        assert len(projections) == 4 * 2 * 3
        projections.clear()
        method = get_method("text_kv_cache")
        assert method.origin == "diffusers" and method.config_class_name == "TextKVCacheConfig"
        disable = enable_cache(transformer, method.build_config({}))
        try:
            cached = denoise()
        finally:
            disable()
        assert len(projections) == 2 * 3  # once per prompt and block, not per step
        after = denoise()
    assert all(torch.equal(a, b) for a, b in zip(plain, cached))
    assert all(torch.equal(a, b) for a, b in zip(plain, after))


def test_text_kv_cache_is_recorded_unsupported_on_every_family():
    from experiments.families import all_families

    for family in all_families().values():
        support = family.methods["text_kv_cache"]
        assert support.status == "unsupported" and "NucleusMoEImageTransformerBlock" in support.reason


def test_text_kv_cache_has_no_settings():
    from experiments.errors import SpecError
    from experiments.methods import check_method_spec
    from experiments.spec import MethodSpec

    check_method_spec(MethodSpec(name="text_kv_cache"), "methods[0]", None)
    with pytest.raises(SpecError, match="unknown parameter 'threshold'"):
        check_method_spec(MethodSpec(name="text_kv_cache", params={"threshold": 0.1}), "methods[0]", None)
