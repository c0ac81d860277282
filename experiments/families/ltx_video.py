"""LTX-Video text-to-video (LTXPipeline + LTXVideoTransformer3DModel, T5 text encoder).

CFG is batched: one transformer call per step on [uncond, cond] (cache context "cond_uncond").
"""

from __future__ import annotations

from experiments.families import (
    MAGCACHE_EVAL_WAN21_ONLY,
    TEXT_KV_CACHE_ONLY_NUCLEUS,
    Family,
    cache_dit_methods,
    register_family,
    supported,
    unsupported,
)
from experiments.families.adapters import PipelineAdapter, ltx_raw_vision


def build_tiny():
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )

    from experiments.families.tiny_parts import make_tokenizer, materialize, seed_everything, tiny_t5_encoder

    tokenizer = make_tokenizer(model_max_length=16)
    text_encoder = tiny_t5_encoder(tokenizer, d_model=32)

    seed_everything(0)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=4,
        caption_channels=32,
    ).eval()

    seed_everything(0)
    vae = AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=False,
        patch_size=1,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    ).eval()

    # Lightricks/LTX-Video's scheduler config
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.95,
        max_shift=2.05,
        base_image_seq_len=1024,
        max_image_seq_len=4096,
        shift_terminal=0.1,
    )
    pipe = LTXPipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer
    )
    return materialize(pipe)


FAMILY = register_family(
    Family(
        name="ltx_video",
        pipeline_class="LTXPipeline",
        transformer_class="LTXVideoTransformer3DModel",
        output="video",
        spatial_multiple=32, frames_step=8,
        cfg="batched",
        hub_ids=("Lightricks/LTX-Video", "a-r-r-o-w/LTX-Video-diffusers"),
        dtype="bfloat16",
        component_dtypes={},
        defaults={
            "height": 480,
            "width": 704,
            "num_frames": 161,
            "num_inference_steps": 50,
            "guidance_scale": 3.0,
            "max_sequence_length": 128,
        },
        tiny_generation={
            "height": 32,
            "width": 32,
            "num_frames": 9,
            "num_inference_steps": 8,
            "guidance_scale": 3.0,
            "max_sequence_length": 16,
        },
        methods={
            "first_block_cache": supported(),
            "mag_cache": supported(),
            "pyramid_attention_broadcast": supported(),
            "faster_cache": unsupported(
                "LTXVideoTransformer3DModel takes packed latents (batch, tokens, channels), but FasterCache's "
                "unconditional-branch approximation splits frequencies on BCFHW/BFCHW/BCHW tensors: RuntimeError: "
                "permute(sparse_coo): number of dimensions in the tensor input does not match the length of the "
                "desired ordering of dimensions i.e. input.dim() = 3 is not equal to len(dims) = 5"
            ),
            "taylorseer_cache": supported(
                "default cache identifiers match nothing in LTX (attn1/attn2/ff): pass cache_identifiers",
                cache_identifiers=[
                    r"^transformer_blocks\.\d+\.attn1$",
                    r"^transformer_blocks\.\d+\.attn2$",
                    r"^transformer_blocks\.\d+\.ff$",
                ],
            ),
            "sea_cache": supported(
                "step index, sigma and step count added to the pipeline's cache context by the family adapter (LTXPipeline passes none); raw vision = the packed tokens unpacked as "
                "LTXPipeline._unpack_latents does",
                raw_vision_callback=ltx_raw_vision,
            ),
            # TeaCache4LTX-Video (ali-vilab/TeaCache) modulates norm1(hidden_states) by the block's scale/shift table,
            # a rule this project does not implement: the project's temb rule instead, not an official one
            # (experiments/methods/teacache.py; named as a deviation on every point)
            "teacache": supported("the project's temb rule, not TeaCache4LTX-Video's modulated norm1: the first "
                                  "block's timestep projection (temb), coefficients from repro calibrate",
                                  modulated_input="temb"),
            "easycache": supported(),
            "text_kv_cache": TEXT_KV_CACHE_ONLY_NUCLEUS,
            **cache_dit_methods("LTXPipeline"),
            "magcache_official_eval": MAGCACHE_EVAL_WAN21_ONLY,
        },
        adapter=PipelineAdapter(step_metadata=True),
        build_tiny=build_tiny,
    )
)
