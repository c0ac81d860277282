"""Wan 2.2 text-to-video A14B: WanPipeline with two experts (mixture of experts by timestep).

`transformer` denoises the high-noise steps (t >= boundary_ratio * 1000), `transformer_2` the
low-noise steps; each has its own guidance scale (`guidance_scale`, `guidance_scale_2`).
Cache methods enabled through `pipe.transformer.enable_cache` only touch the high-noise expert;
`transformer_2` runs uncached unless it is cached as well.
"""

from __future__ import annotations

from experiments.families import Family, register_family, unsupported, untested
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
            "mag_cache": unsupported(
                "pipe.transformer (the high-noise expert) only runs the steps with t >= boundary_ratio * 1000, "
                "so a calibration with num_inference_steps=N records ratios for part of the steps only "
                "(probe: 'MagCache calibration recorded 3 ratios for 8 steps'); each expert would need its own step count "
                "and ratios"
            ),
            "teacache": unsupported(
                "pipe.transformer (the high-noise expert) runs only the steps with t >= boundary_ratio * 1000, "
                "too few to fit coefficients (probe: 'TeaCache calibration needs more than 4 (input change, "
                "residual change) pairs per branch ... got 2'); each expert would need its own cache and coefficients"
            ),
            "easycache": untested(
                "caches only pipe.transformer, the high-noise expert, which runs the first steps (t >= boundary_ratio "
                "* 1000), mostly warm-up steps; transformer_2 stays uncached (on the tiny twin it skips calls at 8 "
                "steps and none at 6)"
            ),
            "magcache_official_eval": unsupported(
                "MagCache's evaluation script is for Wan2.1's single transformer; a two-expert model splits its calls between two transformers"
            ),
        },
        build_tiny=build_tiny,
        notes="cache methods on pipe.transformer cover only the high-noise expert; transformer_2 stays uncached",
    )
)
