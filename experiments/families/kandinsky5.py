"""Kandinsky 5.0 text-to-video Lite (Kandinsky5T2VPipeline + Kandinsky5Transformer3DModel).

Text encoders: Qwen2.5-VL (hidden states of a chat-templated prompt) and CLIP (pooled). CFG runs
as two separate transformer calls per step, and the pipeline enters no ``cache_context`` and has
no ``current_timestep``.
"""

from __future__ import annotations

from experiments.families import Family, register_family, unsupported


def build_tiny():
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        Kandinsky5T2VPipeline,
        Kandinsky5Transformer3DModel,
    )
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from experiments.families.tiny_parts import (
        make_tokenizer,
        materialize,
        seed_everything,
        tiny_clip_text_encoder,
        tiny_hunyuan_video_vae,
        tokenizer_ids,
    )

    # The pipeline calls tokenizer(text=..., images=None, videos=None, padding=...) like a Qwen2-VL
    # processor, and crops the first 128 tokens (its system template) from the hidden states.
    tokenizer = make_tokenizer(model_max_length=1024, add_eos=False, extra_tokens=("<|vision_start|>", "<|video_pad|>", "<|image_pad|>"))
    ids = tokenizer_ids(tokenizer)
    vocab = tokenizer.get_vocab()
    seed_everything(0)
    text_encoder = Qwen2_5_VLForConditionalGeneration(
        Qwen2_5_VLConfig(
            text_config={
                "vocab_size": ids["vocab_size"],
                "hidden_size": 16,
                "intermediate_size": 32,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
                "max_position_embeddings": 1024,
                "rope_parameters": {"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 10000.0},
                "pad_token_id": ids["pad_token_id"],
                "bos_token_id": ids["bos_token_id"],
                "eos_token_id": ids["eos_token_id"],
            },
            vision_config={
                "depth": 1,
                "hidden_size": 16,
                "intermediate_size": 16,
                "num_heads": 2,
                "out_hidden_size": 16,
                "fullatt_block_indexes": [0],
            },
            image_token_id=vocab["<|image_pad|>"],
            video_token_id=vocab["<|video_pad|>"],
            vision_start_token_id=vocab["<|vision_start|>"],
        )
    ).eval()
    tokenizer_2 = make_tokenizer(model_max_length=77, bos_token="<s>", add_bos=True)  # padded to 77
    text_encoder_2 = tiny_clip_text_encoder(tokenizer_2, hidden_size=8, projection_dim=8)

    seed_everything(0)
    transformer = Kandinsky5Transformer3DModel(
        in_visual_dim=4,
        in_text_dim=16,
        in_text_dim2=8,
        time_dim=16,
        out_visual_dim=4,
        patch_size=(1, 2, 2),
        model_dim=32,
        ff_dim=64,
        num_text_blocks=1,
        num_visual_blocks=3,
        axes_dims=(4, 6, 6),
        visual_cond=True,  # as in the T2V Lite checkpoints
    ).eval()

    vae = tiny_hunyuan_video_vae()

    scheduler = FlowMatchEulerDiscreteScheduler(shift=5.0)
    pipe = Kandinsky5T2VPipeline(
        transformer=transformer,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        scheduler=scheduler,
    )
    return materialize(pipe)


FAMILY = register_family(
    Family(
        name="kandinsky5",
        pipeline_class="Kandinsky5T2VPipeline",
        transformer_class="Kandinsky5Transformer3DModel",
        output="video",
        frames_step=4,
        cfg="separate",
        hub_ids=("kandinskylab/Kandinsky-5.0-T2V-Lite-sft-5s-Diffusers",),
        dtype="bfloat16",
        component_dtypes={},
        defaults={
            "height": 512,
            "width": 768,
            "num_frames": 121,
            "num_inference_steps": 50,
            "guidance_scale": 5.0,
        },
        tiny_generation={
            "height": 32,
            "width": 32,
            "num_frames": 5,
            "num_inference_steps": 8,
            "guidance_scale": 5.0,
            "max_sequence_length": 64,  # the default negative prompt is long
        },
        # Kandinsky5Transformer3DModel is a CacheMixin, but in diffusers 0.42.1 none of the methods
        # works through this pipeline (no cache_context, no current_timestep, block signature).
        methods={
            "first_block_cache": unsupported(
                "ValueError: Parameter 'hidden_states' not found in function signature but was requested "
                "(Kandinsky5TransformerDecoderBlock's forward does not name its input hidden_states)"
            ),
            "mag_cache": unsupported(
                "no-op: runs, but calibration gives degenerate ratios [1.0, 0.0, 0.0, ...] and any threshold "
                "leaves the output bit-identical (the pipeline enters no cache_context, so the cond and uncond "
                "calls share one state, and the decoder block does not take hidden_states)"
            ),
            "pyramid_attention_broadcast": unsupported(
                "AttributeError: 'Kandinsky5T2VPipeline' object has no attribute 'current_timestep' "
                "(current_timestep_callback has nothing to read)"
            ),
            "faster_cache": unsupported(
                "AttributeError: 'Kandinsky5T2VPipeline' object has no attribute 'current_timestep'; "
                "CFG also runs as two separate calls, which FasterCache does not handle"
            ),
            "taylorseer_cache": unsupported(
                "no-op with the default identifiers (nothing matches self_attention/cross_attention/"
                "feed_forward); with explicit cache_identifiers: ValueError: No cache context is set "
                "(the pipeline never enters transformer.cache_context)"
            ),
            "sea_cache": unsupported(
                "no-op: 'SeaCache requires a cache context for each transformer call; running in fail-open mode'"
            ),
            "teacache": unsupported(
                "no timestep-modulated input rule: Kandinsky5TransformerDecoderBlock's norm1 does not take the timestep embedding "
                "(probe: 'modulated_input=norm1 needs a first block whose norm1 takes the timestep embedding'); "
                "rules exist for wan (TeaCache4Wan2.1), flux and hunyuan_video (norm1)"
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
