"""FLUX.1 text-to-image (FluxPipeline + FluxTransformer2DModel).

FLUX.1-dev is guidance-distilled: the guidance scale is an input embedding (``guidance_embeds``),
there is no CFG pass, so FasterCache must be told ``is_guidance_distilled=True``.
"""

from __future__ import annotations

from experiments.families import (
    MAGCACHE_EVAL_WAN21_ONLY,
    TEXT_KV_CACHE_ONLY_NUCLEUS,
    Family,
    cache_dit_methods,
    register_family,
    supported,
)
from experiments.families.adapters import PipelineAdapter, flux_raw_vision


def build_tiny():
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    from experiments.families.tiny_parts import (
        make_tokenizer,
        materialize,
        seed_everything,
        tiny_autoencoder_kl,
        tiny_clip_text_encoder,
        tiny_t5_encoder,
    )

    tokenizer = make_tokenizer(model_max_length=16, bos_token="<s>", add_bos=True)
    tokenizer_2 = make_tokenizer(model_max_length=16)
    text_encoder = tiny_clip_text_encoder(tokenizer, hidden_size=32, projection_dim=32)
    text_encoder_2 = tiny_t5_encoder(tokenizer_2, d_model=32)

    seed_everything(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels packed 2x2
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,
        axes_dims_rope=(4, 4, 8),
    ).eval()

    vae = tiny_autoencoder_kl(latent_channels=4, levels=3, scaling_factor=1.5035, shift_factor=0.0609, quant_conv=False)

    # black-forest-labs/FLUX.1-dev's scheduler config
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
    return materialize(pipe)


FAMILY = register_family(
    Family(
        name="flux",
        pipeline_class="FluxPipeline",
        transformer_class="FluxTransformer2DModel",
        output="image",
        cfg="distilled",
        hub_ids=("black-forest-labs/FLUX.1-dev", "black-forest-labs/FLUX.1-schnell"),
        dtype="bfloat16",
        component_dtypes={},
        defaults={
            "height": 1024,
            "width": 1024,
            "num_inference_steps": 28,
            "guidance_scale": 3.5,
            "max_sequence_length": 512,
        },
        tiny_generation={
            "height": 32,
            "width": 32,
            "num_inference_steps": 8,
            "guidance_scale": 3.5,
            "max_sequence_length": 16,
        },
        methods={
            "first_block_cache": supported(),
            "mag_cache": supported(
                "diffusers ships calibrated ratios for FLUX.1-dev as diffusers.hooks.mag_cache.FLUX_MAG_RATIOS"
            ),
            "pyramid_attention_broadcast": supported(),
            "faster_cache": supported(
                "keep spatial_attention_timestep_skip_range below the first timestep (default (-1, 681)): with "
                "is_guidance_distilled=True, a window that contains the first step makes the attention hook "
                "approximate from an empty cache: TypeError: 'NoneType' object is not subscriptable",
                is_guidance_distilled=True,
                tensor_format="BCHW",
            ),
            "taylorseer_cache": supported(),
            "sea_cache": supported(
                "step index, sigma and step count added to the pipeline's cache context by the family adapter (FluxPipeline passes none); raw vision = the packed latents unpacked as "
                "FluxPipeline._unpack_latents does",
                raw_vision_callback=flux_raw_vision,
            ),
            "teacache": supported("modulated input: transformer_blocks[0].norm1(hidden_states, emb=temb)",
                                  modulated_input="norm1"),
            "easycache": supported(),
            "text_kv_cache": TEXT_KV_CACHE_ONLY_NUCLEUS,
            **cache_dit_methods("FluxPipeline"),
            "magcache_official_eval": MAGCACHE_EVAL_WAN21_ONLY,
        },
        adapter=PipelineAdapter(step_metadata=True),
        build_tiny=build_tiny,
    )
)
