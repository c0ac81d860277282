"""Stable Diffusion 3 / 3.5 text-to-image (StableDiffusion3Pipeline + SD3Transformer2DModel).

CFG is batched: one transformer call per step on [uncond, cond]. The pipeline has neither a
``current_timestep`` attribute nor ``cache_context`` blocks: the family adapter supplies both.
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
from experiments.families.adapters import PipelineAdapter, image_raw_vision


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


_ADAPTED = "through the family adapter: "

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
        # SD3Transformer2DModel is not a CacheMixin in diffusers 0.42.1: the registry applies the bare
        # diffusers.hooks.apply_* functions. StableDiffusion3Pipeline enters no transformer.cache_context()
        # and keeps no current_timestep: the adapter gives each call a context ("cond_uncond": CFG is one
        # batched call; "skip_layers": the extra call of skip-layer guidance) with the scheduler's step,
        # sigma and step count, and sets pipe._current_timestep during the call.
        methods={
            "first_block_cache": supported(_ADAPTED + "cache context per call (apply_first_block_cache)"),
            # calibration gives one ratio array (context "cond_uncond")
            "mag_cache": supported("via apply_mag_cache (SD3Transformer2DModel is not a CacheMixin)"),
            "pyramid_attention_broadcast": supported(_ADAPTED + "current_timestep from the scheduler"),
            # the unconditional half is dropped from every batched input, pooled_projections included (diffusers'
            # default list omits it; left batched, SD3's time-text embedding broadcasts it over the cond half)
            "faster_cache": supported(
                _ADAPTED + "current_timestep; CFG batched as [uncond, cond]; pooled_projections named as a batched "
                "input", tensor_format="BCHW",
                _unconditional_conditional_input_kwargs_identifiers=[
                    "hidden_states", "encoder_hidden_states", "timestep", "pooled_projections"]),
            "taylorseer_cache": supported(_ADAPTED + "cache context per call"),
            "sea_cache": supported(_ADAPTED + "step index, sigma and step count; raw vision = the latent image",
                                   raw_vision_callback=image_raw_vision),
            "teacache": supported(_ADAPTED + "cache context per call; modulated input: "
                                  "transformer_blocks[0].norm1(hidden_states, emb=temb) (AdaLayerNormZero)",
                                  modulated_input="norm1"),
            "easycache": supported(_ADAPTED + "cache context per call"),
            "text_kv_cache": TEXT_KV_CACHE_ONLY_NUCLEUS,
            # SD3's last block returns no text stream, so cache-dit's encoder-side calibrator finds no residual
            # to forecast (AssertionError: State 'transformer_blocks_Bn_residual' not found): it is turned off
            **cache_dit_methods(
                "StableDiffusion3Pipeline",
                dbcache_taylorseer=supported("cache-dit's block adapter; enable_encoder_calibrator=False (the last "
                                             "block returns no text stream to forecast)", enable_encoder_calibrator=False),
                dbcache_foca=supported("cache-dit's block adapter; enable_encoder_calibrator=False (the last block "
                                       "returns no text stream to forecast)", enable_encoder_calibrator=False)),
            "magcache_official_eval": MAGCACHE_EVAL_WAN21_ONLY,
        },
        build_tiny=build_tiny,
        current_timestep=False,
        adapter=PipelineAdapter(branches=("cond_uncond", "skip_layers"), step_metadata=True, current_timestep=True,
                                encoder_passthrough=("diffusers.models.attention:JointTransformerBlock",)),
    )
)
