"""Wan 2.1 text-to-video (WanPipeline + WanTransformer3DModel).

CFG runs as two separate transformer calls per step (cache contexts "cond" and "uncond"), so a
MagCache calibration prints two ratio arrays. The VAE should stay in float32 on real GPUs.
"""

from __future__ import annotations

from experiments.families import TEXT_KV_CACHE_ONLY_NUCLEUS, Family, cache_dit_methods, register_family, supported, unsupported


def build_tiny():
    """The tiny Wan 2.1 twin (one transformer)."""
    return build_tiny_wan()


def build_tiny_wan(two_stage: bool = False):
    """Tiny WanPipeline; `two_stage` adds a low-noise `transformer_2` and boundary_ratio 0.875 (Wan 2.2 A14B)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel

    from experiments.families.tiny_parts import make_tokenizer, materialize, seed_everything, tiny_t5_encoder

    tokenizer = make_tokenizer(model_max_length=16)
    text_encoder = tiny_t5_encoder(tokenizer, umt5=True)

    def make_transformer(seed: int):
        seed_everything(seed)
        return WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=12,
            in_channels=16,
            out_channels=16,
            text_dim=32,
            freq_dim=32,
            ffn_dim=32,
            num_layers=4,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=32,
        ).eval()

    transformer = make_transformer(0)

    seed_everything(0)
    vae = AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    ).eval()

    # Same scheduler as Wan-AI/Wan2.1-T2V-1.3B-Diffusers (UniPC, flow prediction, shift 3.0).
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=3.0
    )

    extra = {"transformer_2": make_transformer(1), "boundary_ratio": 0.875} if two_stage else {}
    pipe = WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler, transformer=transformer, **extra
    )
    return materialize(pipe)


FAMILY = register_family(
    Family(
        name="wan",
        pipeline_class="WanPipeline",
        transformer_class="WanTransformer3DModel",
        output="video",
        frames_step=4,
        cfg="separate",
        hub_ids=("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "Wan-AI/Wan2.1-T2V-14B-Diffusers"),
        dtype="bfloat16",
        component_dtypes={"vae": "float32"},
        defaults={
            "height": 480,
            "width": 832,
            "num_frames": 81,
            "num_inference_steps": 50,
            "guidance_scale": 5.0,
        },
        tiny_generation={
            "height": 32,
            "width": 32,
            "num_frames": 5,
            "num_inference_steps": 8,
            "guidance_scale": 5.0,
            "max_sequence_length": 16,
        },
        methods={
            "first_block_cache": supported(),
            # Calibration prints two ratio arrays (cond, uncond) because CFG runs as two passes.
            "mag_cache": supported(),
            "pyramid_attention_broadcast": supported(
                "runs; caveat: PAB state is not per cache_context, so with CFG as two passes per step the "
                "skip counter advances on both passes (with spatial skip range 2 the uncond pass reuses the "
                "cond pass's attention of the same step)"
            ),
            "faster_cache": unsupported(
                "FasterCache expects CFG batched as [uncond, cond] in one transformer call; WanPipeline runs "
                "cond and uncond as two separate calls (batch 1), so its attention hook fails: "
                "IndexError: tuple index out of range (faster_cache.py, cache_output.chunk(2, dim=0)[1]). "
                "With is_guidance_distilled=True it runs, but then mixes the cond and uncond passes' attention"
            ),
            # Default identifiers ("^blocks.*attn", re.fullmatch) match no Wan module (attn1/attn2), which
            # makes TaylorSeer a silent no-op; name the attention and feed-forward modules explicitly.
            "taylorseer_cache": supported(
                "default cache identifiers match nothing in Wan (attn1/attn2): pass cache_identifiers",
                cache_identifiers=[r"^blocks\.\d+\.attn1$", r"^blocks\.\d+\.attn2$", r"^blocks\.\d+\.ffn$"],
            ),
            "sea_cache": supported(),
            # TeaCache4Wan2.1's rules: signal e (or e0 with use_ret_steps) from the condition embedder, in float32.
            "teacache": supported("TeaCache4Wan2.1 rules: time embedding e (e0 with use_ret_steps), float32",
                                  modulated_input="wan"),
            # EasyCache4Wan2.1: the cond call decides for the pair; ret_steps = 10*2 (10 warm-up steps).
            "easycache": supported("EasyCache4Wan2.1 rules: 10 warm-up steps, the cond call decides for both "
                                   "branches", warmup_steps=10),
            "text_kv_cache": TEXT_KV_CACHE_ONLY_NUCLEUS,
            **cache_dit_methods("WanPipeline"),
            "magcache_official_eval": supported("the rule of MagCache's Wan2.1 evaluation script (wan_magcache.py): "
                                                "interleaved cond/uncond ratios, square roots, <="),
        },
        build_tiny=build_tiny,
    )
)
