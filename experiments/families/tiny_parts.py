"""Shared pieces for the tiny offline twins: a local word-level tokenizer and seeding.

Everything here is built in code; nothing is downloaded. torch / transformers / tokenizers are
imported inside the functions so that ``import experiments.families`` stays cheap.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

# A fixed vocabulary: special tokens first, then common prompt words. Unknown words map to <unk>.
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>", "<s>")
WORDS = (
    "a an the of and in on at with to from by for is are over under near into through "
    "photo painting video image picture render illustration portrait landscape close-up "
    "cat dog horse bird fish astronaut robot person man woman child car boat train city street "
    "forest mountain river lake ocean sea beach desert sky cloud clouds sun moon star stars "
    "red green blue yellow black white orange purple golden silver bright dark glowing "
    "small large tiny big old young beautiful detailed cinematic realistic soft sharp "
    "riding walking running flying swimming sitting standing dancing playing "
    "mars space night day sunset sunrise rain snow fog light lights shadow "
    "slow motion camera pan zoom high quality low blurry ugly bad"
).split()


def seed_everything(seed: int = 0) -> None:
    """Seed torch's global generator (call before building each component)."""
    import torch

    torch.manual_seed(seed)


def word_vocab(extra: tuple[str, ...] = ()) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for tok in (*SPECIAL_TOKENS, *WORDS, *extra):
        vocab.setdefault(tok, len(vocab))
    return vocab


def make_tokenizer(
    model_max_length: int = 32,
    *,
    pad_token: str = "<pad>",
    eos_token: str = "</s>",
    unk_token: str = "<unk>",
    bos_token: str | None = None,
    add_eos: bool = True,
    add_bos: bool = False,
    padding_side: str = "right",
    vocab_size: int | None = None,
    extra_tokens: tuple[str, ...] = (),
    extra_init: dict[str, Any] | None = None,
):
    """A ``PreTrainedTokenizerFast`` over a fixed word-level vocabulary.

    Lower-cases, splits on whitespace and punctuation, appends ``eos`` (and prepends ``bos``)
    so pipelines that pad to ``max_length`` with attention masks behave like with T5/CLIP.
    ``vocab_size``, when given, pads the vocabulary with ``<extra_i>`` tokens up to that size.
    Serializes to ``tokenizer.json`` + ``tokenizer_config.json`` and reloads with
    ``PreTrainedTokenizerFast.from_pretrained`` offline.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    specials = [pad_token, eos_token, unk_token] + ([bos_token] if bos_token else [])
    vocab = word_vocab(tuple(specials) + tuple(extra_tokens))
    if vocab_size is not None:
        if vocab_size < len(vocab):
            raise ValueError(f"vocab_size {vocab_size} is smaller than the base vocabulary ({len(vocab)})")
        i = 0
        while len(vocab) < vocab_size:
            vocab.setdefault(f"<extra_{i}>", len(vocab))
            i += 1

    tok = Tokenizer(WordLevel(vocab=vocab, unk_token=unk_token))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    single = "$A"
    special_ids = []
    if add_bos and bos_token:
        single = f"{bos_token} {single}"
        special_ids.append((bos_token, vocab[bos_token]))
    if add_eos:
        single = f"{single} {eos_token}"
        special_ids.append((eos_token, vocab[eos_token]))
    if special_ids:
        tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=special_ids)

    kwargs: dict[str, Any] = dict(
        tokenizer_object=tok,
        model_max_length=model_max_length,
        pad_token=pad_token,
        eos_token=eos_token,
        unk_token=unk_token,
        padding_side=padding_side,
    )
    if bos_token:
        kwargs["bos_token"] = bos_token
    kwargs.update(extra_init or {})
    return PreTrainedTokenizerFast(**kwargs)


def tokenizer_ids(tokenizer) -> dict[str, int]:
    """pad/eos/bos/unk ids and the vocabulary size, for building a matching text encoder config."""
    return {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id,
        "unk_token_id": tokenizer.unk_token_id,
    }


def materialize(pipe):
    """Round-trip a freshly built pipeline through ``save_pretrained`` / ``from_pretrained``.

    Why: a model loaded from safetensors keeps its weights in the memory-mapped file, whose
    tensors are only 8-byte aligned, while freshly built weights are 64-byte aligned. CPU
    matmul kernels take different code paths for the two, so outputs differ in the last bit
    (~1e-7). Loading the twin from its own saved copy makes the in-memory twin bit-identical
    to any later ``save_pretrained`` -> ``from_pretrained`` copy (the files are byte-identical,
    so every tensor sits at the same offset). Only a local folder is read: no hub access.
    The folder is deleted at once; on Linux the mapped weights stay valid.
    """
    import tempfile

    cls = type(pipe)
    with quiet_loading(), tempfile.TemporaryDirectory(prefix="tiny-twin-") as folder:
        pipe.save_pretrained(folder)
        loaded = cls.from_pretrained(folder)
    loaded.set_progress_bar_config(disable=True)
    return loaded


@contextmanager
def quiet_loading():
    """Silence diffusers/transformers progress bars while building a twin; restores them after."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    was = (dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled())
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if was[0]:
            dlog.enable_progress_bar()
        if was[1]:
            tlog.enable_progress_bar()


def tiny_clip_text_encoder(tokenizer, *, hidden_size: int = 32, projection_dim: int = 32, with_projection: bool = False,
                           num_hidden_layers: int = 2, seed: int = 0):
    """A small ``CLIPTextModel`` (or ``CLIPTextModelWithProjection``) matching `tokenizer`."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    ids = tokenizer_ids(tokenizer)
    config = CLIPTextConfig(
        vocab_size=ids["vocab_size"],
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        projection_dim=projection_dim,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        pad_token_id=ids["pad_token_id"],
        bos_token_id=ids["bos_token_id"],
        eos_token_id=ids["eos_token_id"],  # pooled output = hidden state at the first eos
    )
    seed_everything(seed)
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(config).eval()


def tiny_t5_encoder(tokenizer, *, d_model: int = 32, num_layers: int = 2, seed: int = 0, umt5: bool = False):
    """A small ``T5EncoderModel`` (or ``UMT5EncoderModel``) matching `tokenizer`."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    ids = tokenizer_ids(tokenizer)
    config_cls, model_cls = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    config = config_cls(
        vocab_size=ids["vocab_size"],
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=num_layers,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        dropout_rate=0.0,
        pad_token_id=ids["pad_token_id"],
        eos_token_id=ids["eos_token_id"],
        decoder_start_token_id=ids["pad_token_id"],
    )
    seed_everything(seed)
    return model_cls(config).eval()


def tiny_autoencoder_kl(*, latent_channels: int = 4, levels: int = 3, scaling_factor: float = 1.5,
                        shift_factor: float | None = None, quant_conv: bool = True, seed: int = 0):
    """A small 2D ``AutoencoderKL`` with spatial scale factor ``2 ** (levels - 1)``."""
    from diffusers import AutoencoderKL

    seed_everything(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=(8,) * levels,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=32,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=quant_conv,
        use_post_quant_conv=quant_conv,
        mid_block_add_attention=True,
    ).eval()


def tiny_hunyuan_video_vae(seed: int = 0):
    """A small ``AutoencoderKLHunyuanVideo`` (8x spatial, 4x temporal compression), shared by HunyuanVideo and Kandinsky 5."""
    from diffusers import AutoencoderKLHunyuanVideo

    seed_everything(seed)
    return AutoencoderKLHunyuanVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        act_fn="silu",
        norm_num_groups=4,
        scaling_factor=0.476986,
        spatial_compression_ratio=8,
        temporal_compression_ratio=4,
        mid_block_add_attention=True,
    ).eval()
