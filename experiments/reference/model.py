"""The untrained reference Wan pipeline: real diffusers classes with small configs.

``build_untrained(seed)`` returns a ``WanPipeline`` whose VAE (``AutoencoderKLWan``, 4x spatial
and 2x temporal compression) and transformer (``WanTransformer3DModel``) are freshly initialised
from `seed`; the text encoder is a tiny ``UMT5EncoderModel`` with random weights, also built
from `seed`, which stays frozen (the transformer learns to read its embeddings). Training
(:mod:`experiments.reference.train`) fills in the VAE and transformer weights.
"""

from __future__ import annotations

# Generation settings the reference model is trained for (and configs/tiny.yaml uses).
HEIGHT = WIDTH = 32
NUM_FRAMES = 5
MAX_SEQUENCE_LENGTH = 16
Z_DIM = 16
FLOW_SHIFT = 3.0


def make_reference_tokenizer():
    from experiments.families.tiny_parts import make_tokenizer
    from experiments.reference.world import VOCABULARY

    return make_tokenizer(model_max_length=MAX_SEQUENCE_LENGTH, extra_tokens=VOCABULARY)


def build_vae(seed: int):
    from diffusers import AutoencoderKLWan

    from experiments.families.tiny_parts import seed_everything

    seed_everything(seed)
    return AutoencoderKLWan(
        base_dim=8,
        z_dim=Z_DIM,
        dim_mult=[1, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        scale_factor_spatial=4,
        scale_factor_temporal=2,
        latents_mean=[0.0] * Z_DIM,  # replaced by the training latents' statistics
        latents_std=[1.0] * Z_DIM,
    )


def build_transformer(seed: int):
    from diffusers import WanTransformer3DModel

    from experiments.families.tiny_parts import seed_everything

    seed_everything(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=4,
        attention_head_dim=16,
        in_channels=Z_DIM,
        out_channels=Z_DIM,
        text_dim=32,
        freq_dim=64,
        ffn_dim=192,
        num_layers=6,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )


def build_scheduler():
    from diffusers import UniPCMultistepScheduler

    # Same scheduler as Wan-AI/Wan2.1-T2V-1.3B-Diffusers (UniPC, flow prediction, shift 3.0).
    return UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=FLOW_SHIFT
    )


def build_untrained(seed: int = 0):
    from diffusers import WanPipeline

    from experiments.families.tiny_parts import tiny_t5_encoder

    tokenizer = make_reference_tokenizer()
    text_encoder = tiny_t5_encoder(tokenizer, umt5=True, seed=seed).eval()
    for p in text_encoder.parameters():
        p.requires_grad_(False)
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=build_vae(seed + 1),
        transformer=build_transformer(seed + 2),
        scheduler=build_scheduler(),
    )
