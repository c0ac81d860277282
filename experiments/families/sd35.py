"""Stable Diffusion 3 / 3.5 text-to-image (StableDiffusion3Pipeline + SD3Transformer2DModel).

CFG is batched: one transformer call per step on [uncond, cond]. The pipeline has neither a
``current_timestep`` attribute nor ``cache_context`` blocks.
"""

from __future__ import annotations

from experiments.families import Family, register_family, supported, unsupported


def build_tiny():
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    from experiments.families.tiny_parts import (
        make_tokenizer,
        materialize,
        seed_everything,
        tiny_autoencoder_kl,
        tiny_clip_text_encoder,
        tiny_t5_encoder,
    )

    tokenizer = make_tokenizer(model_max_length=16, bos_token="<s>", add_bos=True)
    tokenizer_2 = make_tokenizer(model_max_length=16, bos_token="<s>", add_bos=True)
    tokenizer_3 = make_tokenizer(model_max_length=16)
    text_encoder = tiny_clip_text_encoder(tokenizer, hidden_size=32, projection_dim=32, with_projection=True, seed=0)
    text_encoder_2 = tiny_clip_text_encoder(tokenizer_2, hidden_size=32, projection_dim=32, with_projection=True, seed=1)
    text_encoder_3 = tiny_t5_encoder(tokenizer_3, d_model=64)  # >= the two CLIP widths together

    seed_everything(0)
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_layers=4,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=64,
        caption_projection_dim=32,
        pooled_projection_dim=64,  # two CLIP projections concatenated
        out_channels=4,
        pos_embed_max_size=16,
        qk_norm="rms_norm",  # as in SD3.5
    ).eval()

    vae = tiny_autoencoder_kl(latent_channels=4, levels=3, scaling_factor=1.5305, shift_factor=0.0609, quant_conv=False)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        text_encoder_3=text_encoder_3,
        tokenizer_3=tokenizer_3,
    )
    return materialize(pipe)


_NO_CACHE_MIXIN = (
    "AttributeError: 'SD3Transformer2DModel' object has no attribute 'enable_cache' (not a CacheMixin)"
)

FAMILY = register_family(
    Family(
        name="sd35",
        pipeline_class="StableDiffusion3Pipeline",
        transformer_class="SD3Transformer2DModel",
        output="image",
        cfg="batched",
        hub_ids=(
            "stabilityai/stable-diffusion-3.5-large",
            "stabilityai/stable-diffusion-3.5-medium",
            "stabilityai/stable-diffusion-3.5-large-turbo",
            "stabilityai/stable-diffusion-3-medium-diffusers",
        ),
        dtype="bfloat16",
        component_dtypes={},
        defaults={
            "height": 1024,
            "width": 1024,
            "num_inference_steps": 28,
            "guidance_scale": 3.5,
            "max_sequence_length": 256,
        },
        tiny_generation={
            "height": 32,
            "width": 32,
            "num_inference_steps": 8,
            "guidance_scale": 3.5,
            "max_sequence_length": 16,
        },
        # SD3Transformer2DModel is not a CacheMixin in diffusers 0.42.1: `pipe.transformer.enable_cache`
        # does not exist. The notes after it say what the bare apply_* functions do on the tiny twin.
        methods={
            "first_block_cache": unsupported(
                _NO_CACHE_MIXIN + "; apply_first_block_cache raises 'No cache context is set' because "
                "StableDiffusion3Pipeline never enters transformer.cache_context()"
            ),
            # The runner falls back to apply_mag_cache when the model has no enable_cache; CFG is batched,
            # so calibration gives one ratio array (context "inference").
            "mag_cache": supported("via apply_mag_cache (SD3Transformer2DModel is not a CacheMixin)"),
            "pyramid_attention_broadcast": unsupported(
                _NO_CACHE_MIXIN + "; apply_pyramid_attention_broadcast runs, but the pipeline has no "
                "current_timestep attribute for current_timestep_callback"
            ),
            "faster_cache": unsupported(
                _NO_CACHE_MIXIN + "; apply_faster_cache fails: 'The size of tensor a (4) must match the size "
                "of tensor b (2) at non-singleton dimension 0', and there is no current_timestep attribute"
            ),
            "taylorseer_cache": unsupported(
                _NO_CACHE_MIXIN + "; apply_taylorseer_cache raises 'No cache context is set'"
            ),
            "sea_cache": unsupported(
                _NO_CACHE_MIXIN + "; apply_sea_cache is a no-op: 'SeaCache requires a cache context for each "
                "transformer call; running in fail-open mode'"
            ),
            "teacache": unsupported(
                "StableDiffusion3Pipeline never enters transformer.cache_context(), which TeaCache's per-branch "
                "state needs (probe: 'No cache context is set')"
            ),
            "easycache": unsupported(
                "the pipeline never enters transformer.cache_context(), which EasyCache's per-branch state needs "
                "(probe: 'No cache context is set')"
            ),
            "magcache_official_eval": unsupported(
                "MagCache's evaluation script (the source of its Table 1) exists for Wan2.1 only: two "
                "transformer calls per step with one interleaved ratio list; use mag_cache"
            ),
        },
        build_tiny=build_tiny,
        current_timestep=False,
    )
)
