"""Kandinsky 5.0 text-to-video Lite (Kandinsky5T2VPipeline + Kandinsky5Transformer3DModel).

Text encoders: Qwen2.5-VL (hidden states of a chat-templated prompt) and CLIP (pooled). CFG runs
as two separate transformer calls per step, and the pipeline enters no ``cache_context`` and has
no ``current_timestep``: the family adapter supplies both.
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
from experiments.families.adapters import PipelineAdapter, kandinsky5_raw_vision

_ADAPTED = "through the family adapter: "


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
    # diffusers zero-initialises every Kandinsky5Modulation (its gates and shifts), so a freshly built block is
    # the identity and no cache could change the output; trained checkpoints are not zero: give them small weights
    import torch

    from diffusers.models.transformers.transformer_kandinsky import Kandinsky5Modulation

    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in transformer.modules():
            if isinstance(module, Kandinsky5Modulation):
                layer = module.out_layer
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * 0.1)
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator) * 0.1)

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
        # Kandinsky5T2VPipeline enters no cache_context and keeps no current_timestep, and the decoder block
        # names its input visual_embed: the adapter gives each call a context ("cond", then "uncond") with the
        # scheduler's step, sigma and step count, sets pipe._current_timestep during the call, and lets hooks
        # that ask for "hidden_states" by name (First Block Cache) find visual_embed.
        methods={
            "first_block_cache": supported(_ADAPTED + "cache context per CFG branch; hidden_states = visual_embed"),
            "mag_cache": supported(_ADAPTED + "cache context per CFG branch (calibration: one ratio array each)"),
            # the default identifiers also match the text blocks, whose prompt lengths differ between the CFG calls
            # (PAB's state is not per cache_context): name the visual blocks' attention only
            "pyramid_attention_broadcast": supported(
                _ADAPTED + "current_timestep from the scheduler; identifiers name the visual blocks' attention; "
                "caveat: PAB state is not per cache_context, so the skip counter advances on both CFG calls",
                spatial_attention_block_identifiers=[r"^visual_transformer_blocks\.\d+\.self_attention$"],
                cross_attention_block_identifiers=[r"^visual_transformer_blocks\.\d+\.cross_attention$"],
            ),
            "faster_cache": unsupported(
                "FasterCache's unconditional-branch reuse needs CFG batched as [uncond, cond] in one call; "
                "Kandinsky5T2VPipeline runs cond and uncond as two separate calls"
            ),
            "taylorseer_cache": supported(
                _ADAPTED + "cache context per CFG branch; default cache identifiers match nothing in Kandinsky 5 "
                "(self_attention/cross_attention/feed_forward): pass cache_identifiers",
                cache_identifiers=[r"^visual_transformer_blocks\.\d+\.self_attention$",
                                   r"^visual_transformer_blocks\.\d+\.cross_attention$",
                                   r"^visual_transformer_blocks\.\d+\.feed_forward$"],
            ),
            "sea_cache": supported(_ADAPTED + "cache context with step index, sigma and step count; raw vision = "
                                   "the latent channels of hidden_states", raw_vision_callback=kandinsky5_raw_vision),
            "teacache": unsupported(
                "no timestep-modulated input rule: Kandinsky5TransformerDecoderBlock modulates by a time_embed "
                "input through visual_modulation, neither a norm1(hidden_states, emb=temb) nor a temb input "
                "(rules exist for wan (TeaCache4Wan2.1), flux, hunyuan_video and sd35 (norm1), and the project's "
                "temb rule for cogview4 and ltx_video); TeaCache's rescaling is fitted per model rule (probe: "
                "'modulated_input=norm1 needs a first block whose norm1 takes the timestep embedding')"
            ),
            "easycache": unsupported(
                "EasyCache reuses the transformer's input-to-output residual; Kandinsky 5's input carries the "
                "conditioning frames and mask beside the latents, so there is none to reuse (probe: "
                "'Kandinsky5Transformer3DModel maps hidden_states (1, 2, 4, 4, 9) to (1, 2, 4, 4, 4)')"
            ),
            "text_kv_cache": TEXT_KV_CACHE_ONLY_NUCLEUS,
            **cache_dit_methods("Kandinsky5T2VPipeline", dbprune=unsupported(
                "cache-dit 1.5.3's Dynamic Block Prune fails on its own Kandinsky 5 adapter (ForwardPattern_3): "
                "TypeError: CachedBlocks_Pattern_3_4_5._process_block_outputs() takes 2 positional arguments but "
                "3 were given (DBCache with the same adapter runs)")),
            "magcache_official_eval": MAGCACHE_EVAL_WAN21_ONLY,
        },
        adapter=PipelineAdapter(
            branches=("cond", "uncond"), step_metadata=True, current_timestep=True,
            hidden_states_alias=("diffusers.models.transformers.transformer_kandinsky:Kandinsky5TransformerDecoderBlock",),
        ),
        build_tiny=build_tiny,
        current_timestep=False,
    )
)
