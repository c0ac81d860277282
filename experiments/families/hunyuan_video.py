"""HunyuanVideo text-to-video (HunyuanVideoPipeline + HunyuanVideoTransformer3DModel).

Guidance-distilled: the guidance scale is an embedding (``guidance_embeds=True``); true CFG only
runs when ``true_cfg_scale > 1`` with a negative prompt. Text encoders: Llama + CLIP.
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
from experiments.families.adapters import PipelineAdapter, video_raw_vision


def build_tiny():
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoPipeline,
        HunyuanVideoTransformer3DModel,
    )
    from transformers import LlamaConfig, LlamaModel

    from experiments.families.tiny_parts import (
        make_tokenizer,
        materialize,
        seed_everything,
        tiny_clip_text_encoder,
        tiny_hunyuan_video_vae,
        tokenizer_ids,
    )

    # The pipeline wraps the prompt in a long system template and crops its first 95 tokens;
    # with max_sequence_length=16 the Llama input is 111 tokens.
    tokenizer = make_tokenizer(model_max_length=256, bos_token="<s>", add_bos=True, add_eos=False)
    ids = tokenizer_ids(tokenizer)
    seed_everything(0)
    text_encoder = LlamaModel(
        LlamaConfig(
            vocab_size=ids["vocab_size"],
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=3,  # the pipeline takes hidden_states[-3]
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            hidden_act="silu",
            rms_norm_eps=1e-5,
            pad_token_id=ids["pad_token_id"],
            bos_token_id=ids["bos_token_id"],
            eos_token_id=ids["eos_token_id"],
        )
    ).eval()
    # CLIP is always padded to 77 tokens by the pipeline.
    tokenizer_2 = make_tokenizer(model_max_length=77, bos_token="<s>", add_bos=True)
    text_encoder_2 = tiny_clip_text_encoder(tokenizer_2, hidden_size=8, projection_dim=8)

    seed_everything(0)
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=2,
        num_single_layers=2,
        num_refiner_layers=1,
        patch_size=1,
        patch_size_t=1,
        guidance_embeds=True,
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_axes_dim=(4, 6, 6),
    ).eval()

    vae = tiny_hunyuan_video_vae()

    scheduler = FlowMatchEulerDiscreteScheduler(shift=7.0)  # hunyuanvideo-community/HunyuanVideo
    pipe = HunyuanVideoPipeline(
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        vae=vae,
        scheduler=scheduler,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
    )
    return materialize(pipe)


FAMILY = register_family(
    Family(
        name="hunyuan_video",
        pipeline_class="HunyuanVideoPipeline",
        transformer_class="HunyuanVideoTransformer3DModel",
        output="video",
        frames_step=4,
        cfg="distilled",
        hub_ids=("hunyuanvideo-community/HunyuanVideo",),
        # The FBC benchmark loads the transformer in bfloat16 and the rest in float16, with VAE tiling.
        dtype="float16",
        component_dtypes={"transformer": "bfloat16"},
        defaults={
            "height": 320,
            "width": 512,
            "num_frames": 61,
            "num_inference_steps": 50,
            "guidance_scale": 6.0,
        },
        tiny_generation={
            "height": 32,
            "width": 32,
            "num_frames": 5,
            "num_inference_steps": 8,
            "guidance_scale": 6.0,
            "max_sequence_length": 16,
        },
        methods={
            "first_block_cache": supported(),
            "mag_cache": supported(),
            "pyramid_attention_broadcast": supported(),
            "faster_cache": supported(
                "keep spatial_attention_timestep_skip_range below the first timestep (default (-1, 681)): with "
                "is_guidance_distilled=True, a window that contains the first step makes the attention hook "
                "approximate from an empty cache: TypeError: 'NoneType' object is not subscriptable",
                is_guidance_distilled=True,
                tensor_format="BCFHW",
            ),
            "taylorseer_cache": supported(),
            "sea_cache": supported(
                "step index, sigma and step count added to the pipeline's cache context by the family adapter (HunyuanVideoPipeline passes none); raw vision = the latent video, as diffusers' Wan rule",
                raw_vision_callback=video_raw_vision,
            ),
            "teacache": supported("modulated input: transformer_blocks[0].norm1(hidden_states, emb=temb)",
                                  modulated_input="norm1"),
            # EasyCache4HunyuanVideo: ret_steps = 5 (5 warm-up steps), one call per step.
            "easycache": supported("EasyCache4HunyuanVideo rules: 5 warm-up steps", warmup_steps=5),
            "text_kv_cache": TEXT_KV_CACHE_ONLY_NUCLEUS,
            **cache_dit_methods("HunyuanVideoPipeline"),
            "magcache_official_eval": MAGCACHE_EVAL_WAN21_ONLY,
        },
        adapter=PipelineAdapter(step_metadata=True),
        build_tiny=build_tiny,
    )
)
