"""Wan 2.2 text-to-video A14B: WanPipeline with two experts (mixture of experts by timestep).

`transformer` denoises the high-noise steps (t >= boundary_ratio * 1000), `transformer_2` the
low-noise steps; each has its own guidance scale (`guidance_scale`, `guidance_scale_2`).
Cache methods enabled through `pipe.transformer.enable_cache` only touch the high-noise expert; the
family's adapter names `transformer_2` as a further expert, so the engine enables the same cache on
it too (each expert keeps its own state). cache-dit caches both experts through its own Wan adapter.
"""

from __future__ import annotations

from experiments.families import Family, not_applicable, register_family, supported, unsupported, untested
from experiments.families.adapters import PipelineAdapter, wan_expert_steps
from experiments.families.wan import FAMILY as WAN


def build_tiny():
    from experiments.families.wan import build_tiny_wan

    return build_tiny_wan(two_stage=True)


FAMILY = register_family(
    Family(
        name="wan22",
        pipeline_class="WanPipeline",
        transformer_class="WanTransformer3DModel",
        output="video",
        frames_step=4,
        cfg="separate",
        hub_ids=("Wan-AI/Wan2.2-T2V-A14B-Diffusers",),
        dtype="bfloat16",
        component_dtypes={"vae": "float32"},
        defaults={
            "height": 720,
            "width": 1280,
            "num_frames": 81,
            "num_inference_steps": 40,
            "guidance_scale": 4.0,
            "guidance_scale_2": 3.0,
        },
        tiny_generation={
            "height": 32,
            "width": 32,
            "num_frames": 5,
            "num_inference_steps": 8,
            "guidance_scale": 4.0,
            "guidance_scale_2": 3.0,
            "max_sequence_length": 16,
        },
        methods={
            **WAN.methods,
            # each expert runs MagCache over its own steps: ratios, retention ratio and skip budget of its share
            "mag_cache": supported(
                "on both experts: the calibration records each expert's steps and joins them; at run time each "
                "expert gets its share of the ratios and its own step count (its retention steps count from its "
                "first step)"
            ),
            "teacache": unsupported(
                "TeaCache's rescaling polynomial is fitted per model, and each expert is a model of its own running "
                "part of the steps (the high-noise expert's share gives 2 input/residual pairs per branch, too few "
                "for a degree-4 fit); TeaCache publishes no Wan 2.2 coefficients (probe: 'TeaCache calibration "
                "needs more than 4 (input change, residual change) pairs per branch')"
            ),
            "easycache": untested(
                "caches pipe.transformer (the high-noise expert) only: EasyCache counts the pipeline's steps "
                "itself, so the engine does not enable it on transformer_2, and the per-expert rule of "
                "EasyCache4Wan2.2 (one state per expert, each forcing the last step of its share) is not "
                "implemented; on the tiny twin it skips calls of the first expert"),
            "magcache_official_eval": not_applicable(
                "MagCache's evaluation script is for Wan2.1's single transformer; a two-expert model splits its calls "
                "between two transformers"),
        },
        build_tiny=build_tiny,
        adapter=PipelineAdapter(experts=("transformer_2",), expert_steps=wan_expert_steps),
        notes="the engine enables a cache on both experts, each with its own state; MagCache runs once per expert "
              "over its own steps (ratios calibrated over both, split at the boundary); a cache that counts the "
              "pipeline's steps itself and has no per-expert config (TeaCache, EasyCache) caches the first only",
    )
)
