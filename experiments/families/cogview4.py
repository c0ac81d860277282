"""CogView4 text-to-image (CogView4Pipeline + CogView4Transformer2DModel, GLM-4 text encoder).

CFG runs as two separate transformer calls per step (cache contexts "cond" and "uncond").
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
from experiments.families.adapters import PipelineAdapter, image_raw_vision


def build_tiny():
    from diffusers import CogView4Pipeline, CogView4Transformer2DModel, FlowMatchEulerDiscreteScheduler
    from transformers import GlmConfig, GlmModel

    from experiments.families.tiny_parts import (
        make_tokenizer,
        materialize,
        seed_everything,
        tiny_autoencoder_kl,
        tokenizer_ids,
    )

    # GLM's tokenizer pads on the left, prepends special tokens ("[gMASK]<sop>") and adds no eos; the
    # pipeline pads with `padding="longest"`, so an empty negative prompt still needs one token.
    tokenizer = make_tokenizer(model_max_length=64, bos_token="<s>", add_bos=True, add_eos=False, padding_side="left")
    ids = tokenizer_ids(tokenizer)
    seed_everything(0)
    text_encoder = GlmModel(
        GlmConfig(
            vocab_size=ids["vocab_size"],
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=128,
            pad_token_id=ids["pad_token_id"],
            eos_token_id=ids["eos_token_id"],
            bos_token_id=ids["bos_token_id"],
        )
    ).eval()

    seed_everything(0)
    transformer = CogView4Transformer2DModel(
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=4,
        attention_head_dim=8,
        num_attention_heads=4,
        text_embed_dim=32,
        time_embed_dim=16,
        condition_dim=8,
        pos_embed_max_size=32,
        sample_size=8,
        rope_axes_dim=(256, 256),
    ).eval()

    vae = tiny_autoencoder_kl(latent_channels=4, levels=3, scaling_factor=1.0, shift_factor=0.0, quant_conv=False)
    # THUDM/CogView4-6B's scheduler config
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_shift=0.25,
        max_shift=0.75,
        base_image_seq_len=256,
        use_dynamic_shifting=True,
        time_shift_type="linear",
    )
    pipe = CogView4Pipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )
    return materialize(pipe)


FAMILY = register_family(
    Family(
        name="cogview4",
        pipeline_class="CogView4Pipeline",
        transformer_class="CogView4Transformer2DModel",
        output="image",
        cfg="separate",
        hub_ids=("THUDM/CogView4-6B", "zai-org/CogView4-6B"),
        dtype="bfloat16",
        component_dtypes={},
        defaults={"height": 1024, "width": 1024, "num_inference_steps": 50, "guidance_scale": 3.5},
        tiny_generation={"height": 32, "width": 32, "num_inference_steps": 8, "guidance_scale": 3.5},
        methods={
            "first_block_cache": supported(),
            # Calibration prints two ratio arrays (cond, uncond): CFG runs as two passes.
            "mag_cache": supported(),
            "pyramid_attention_broadcast": supported(
                "runs; caveat: PAB state is not per cache_context, so the skip counter advances on both CFG passes"
            ),
            "faster_cache": unsupported(
                "FasterCache expects CFG batched as [uncond, cond] in one call; CogView4Pipeline runs cond and "
                "uncond as two separate calls: IndexError: tuple index out of range "
                "(faster_cache.py, cache_output.chunk(2, dim=0)[1])"
            ),
            "taylorseer_cache": supported(
                "default cache identifiers match nothing in CogView4 (attn1, ff): pass cache_identifiers",
                cache_identifiers=[r"^transformer_blocks\.\d+\.attn1$", r"^transformer_blocks\.\d+\.ff$"],
            ),
            "sea_cache": supported(
                "step index, sigma and step count added to the pipeline's cache context by the family adapter (CogView4Pipeline passes none); raw vision = the latent image",
                raw_vision_callback=image_raw_vision,
            ),
            # TeaCache has no script for CogView4 (its norm1 takes hidden, text and temb together): the project's temb
            # rule, not an official one (experiments/methods/teacache.py; named as a deviation on every point)
            "teacache": supported("the project's temb rule, not an official TeaCache rule: the first block's timestep "
                                  "projection (temb), coefficients from repro calibrate", modulated_input="temb"),
            "easycache": supported(),
            "text_kv_cache": TEXT_KV_CACHE_ONLY_NUCLEUS,
            **cache_dit_methods("CogView4Pipeline"),
            "magcache_official_eval": MAGCACHE_EVAL_WAN21_ONLY,
        },
        adapter=PipelineAdapter(step_metadata=True),
        build_tiny=build_tiny,
    )
)
