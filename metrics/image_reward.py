"""ImageReward (Xu et al. 2023): a human-preference reward of an image for its prompt.

The ``image-reward`` package cannot be installed beside this project (it downgrades timm to
0.6.13, which open_clip_torch >= 3 refuses, and adds fairscale/datasets), so its model is
rebuilt from transformers' maintained BLIP classes with ImageReward's own head, following
THUDM/ImageReward ``ImageReward/ImageReward.py`` (commit 0f5fa3e286577d412aea3e1b02c7fadcdb4d3996)
and its BLIP (``models/BLIP/blip_pretrain.py``, ``blip.py``: ``BLIP_Pretrain(image_size=224,
vit='large')``; salesforce/BLIP ``models/vit.py`` @ 7856669 for the ViT):

* image: ``Resize(224, bicubic)``, ``CenterCrop(224)``, CLIP mean/std; BLIP ViT-L/16 (24 layers,
  width 1024, LayerNorm eps 1e-6) -> all tokens after the final norm = ``BlipVisionModel``;
* text: ``BertTokenizer('bert-base-uncased')`` plus ``[DEC]`` and ``[ENC]`` (vocabulary 30524),
  ``padding='max_length', truncation=True, max_length=35``; the BLIP text encoder (BERT-base with
  cross-attention to the image tokens, med_config.json) = ``BlipTextModel``; its ``[CLS]`` output;
* head: ``Linear(768,1024) Dropout Linear(1024,128) Dropout Linear(128,64) Dropout Linear(64,16)
  Linear(16,1)`` (no activations, as in the source), then ``(r - 0.16717362830052426) / 1.0333394966054072``.

Weights: ``ImageReward.pt`` of hub ``THUDM/ImageReward`` (a state dict, loaded with
``weights_only=True``; its BLIP keys are renamed to transformers' names by :func:`convert_state_dict`)
and the vocabulary of ``google-bert/bert-base-uncased``. Missing weights raise
:class:`~metrics.WeightsMissing` (``repro fetch-weights``); with ``allow_random_weights`` the
network is random and labelled so, and when the vocabulary is missing too a stand-in character
vocabulary is used (labelled with the same tag: such a score is plumbing, not ImageReward).
Published FLUX tables (ToCa, TaylorSeer, FoCa, cache-dit's DrawBench) report the mean over prompts.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .registry import RANDOM_WEIGHTS_TAG, with_random_tag

if TYPE_CHECKING:
    import torch

__all__ = ["ImageRewardNet", "convert_state_dict", "load_image_reward", "image_reward_frames", "image_reward"]

log = logging.getLogger(__name__)
REPO, CHECKPOINT = "THUDM/ImageReward", "ImageReward.pt"
BERT_REPO, BERT_FILES = "google-bert/bert-base-uncased", ("vocab.txt",)
MEAN, STD = 0.16717362830052426, 1.0333394966054072
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
MAX_LENGTH = 35
RANDOM_SEED = 0


@dataclass(frozen=True)
class ImageRewardNet:
    vision: "torch.nn.Module"
    text: "torch.nn.Module"
    head: "torch.nn.Module"
    tokenizer: Any
    random_weights: bool

    @property
    def label(self) -> str:
        return with_random_tag("image_reward_v1.0", self.random_weights)

    @property
    def device(self) -> "torch.device":
        return next(self.head.parameters()).device


def _configs():
    from transformers import BlipTextConfig, BlipVisionConfig

    # BLIP_Pretrain(vit='large', image_size=224): ViT-L/16; med_config.json with encoder_width = 1024
    vision = BlipVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=224, patch_size=16, hidden_act="gelu", layer_norm_eps=1e-6)
    text = BlipTextConfig(vocab_size=30524, hidden_size=768, encoder_hidden_size=1024, intermediate_size=3072,
                          num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=512,
                          hidden_act="gelu", layer_norm_eps=1e-12, pad_token_id=0,
                          is_decoder=True)  # builds the cross-attention layers; called with is_decoder=False
    return vision, text


def _head() -> "torch.nn.Module":
    from torch import nn

    return nn.Sequential(nn.Linear(768, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                         nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))


_VISION_RENAMES = (
    (r"^cls_token$", "embeddings.class_embedding"),
    (r"^pos_embed$", "embeddings.position_embedding"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embedding."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.layers.\1.layer_norm1."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.layers.\1.layer_norm2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"encoder.layers.\1.self_attn.qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.projection."),
    (r"^blocks\.(\d+)\.mlp\.", r"encoder.layers.\1.mlp."),
    (r"^norm\.", "post_layernorm."),
)
_HEAD_INDEX = {"0": "0", "2": "2", "4": "4", "6": "6", "7": "7"}  # MLP.layers indices with weights


def convert_state_dict(sd: dict[str, "torch.Tensor"]) -> dict[str, dict[str, "torch.Tensor"]]:
    """ImageReward.pt keys -> {"vision", "text", "head"} state dicts in transformers' BLIP names.

    >>> import torch
    >>> out = convert_state_dict({"blip.visual_encoder.blocks.3.attn.proj.weight": torch.zeros(1),
    ...                           "blip.text_encoder.encoder.layer.0.crossattention.self.key.bias": torch.zeros(1),
    ...                           "mlp.layers.7.bias": torch.zeros(1), "blip.vision_proj.weight": torch.zeros(1)})
    >>> sorted(out["vision"]), sorted(out["text"]), sorted(out["head"])
    (['encoder.layers.3.self_attn.projection.weight'], ['encoder.layer.0.crossattention.self.key.bias'], ['7.bias'])
    """
    out: dict[str, dict[str, Any]] = {"vision": {}, "text": {}, "head": {}}
    for key, value in sd.items():
        if key.startswith("blip.visual_encoder."):
            k = key[len("blip.visual_encoder."):]
            for pattern, repl in _VISION_RENAMES:
                if re.match(pattern, k):
                    out["vision"][re.sub(pattern, repl, k)] = value
                    break
        elif key.startswith("blip.text_encoder."):
            out["text"][key[len("blip.text_encoder."):]] = value  # transformers ported med.py's names as they are
        elif key.startswith("mlp.layers."):
            idx, _, rest = key[len("mlp.layers."):].partition(".")
            out["head"][f"{_HEAD_INDEX[idx]}.{rest}"] = value
    return out  # blip.vision_proj / text_proj / itm_head are not used by ImageReward.score


def load_image_reward(device: Any = "auto", allow_random_weights: bool = False) -> ImageRewardNet:
    """ImageReward from the caches (WeightsMissing naming `repro fetch-weights`), or labelled random weights."""
    from .device import resolve_device
    from .weights import resolve_hub_file

    dev = resolve_device(device)
    ckpt = resolve_hub_file(REPO, CHECKPOINT, "ImageReward checkpoint", "image_reward", allow_random_weights)
    # a real checkpoint never meets the stand-in vocabulary: only random networks may go without it
    vocab = resolve_hub_file(BERT_REPO, BERT_FILES[0], "ImageReward's BERT vocabulary (bert-base-uncased)",
                             "image_reward", allow_random_weights=allow_random_weights and ckpt is None)
    return _build(str(dev), None if ckpt is None else str(ckpt), None if vocab is None else str(vocab))


@functools.lru_cache(maxsize=1)
def _build(device: str, ckpt: str | None, vocab: str | None) -> ImageRewardNet:
    import torch
    from transformers import BertTokenizer, BlipTextModel, BlipVisionModel

    vision_cfg, text_cfg = _configs()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        vision, text, head = BlipVisionModel(vision_cfg), BlipTextModel(text_cfg, add_pooling_layer=False), _head()
    if ckpt is not None:
        parts = convert_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
        for name, module in (("vision", vision), ("text", text), ("head", head)):
            missing, _ = module.load_state_dict(parts[name], strict=False)
            missing = [k for k in missing if not k.endswith("position_ids")]
            if missing:
                raise RuntimeError(f"ImageReward checkpoint {ckpt}: {name} lacks {len(missing)} weights, "
                                   f"e.g. {missing[:3]}; is it ImageReward-v1.0?")
    else:
        log.warning("ImageReward: pretrained weights not available; using RANDOM weights (seed %d). "
                    "Results are labelled %s and are not ImageReward scores.", RANDOM_SEED, RANDOM_WEIGHTS_TAG)
    stand_in = _stand_in_vocab() if vocab is None else None
    tokenizer = BertTokenizer(vocab or stand_in, do_lower_case=True)  # reads the file now
    if stand_in:
        os.unlink(stand_in)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})  # blip.init_tokenizer
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    modules = []
    for m in (vision, text, head):
        m = m.eval().to(device)
        for p in m.parameters():
            p.requires_grad_(False)
        modules.append(m)
    return ImageRewardNet(*modules, tokenizer=tokenizer, random_weights=ckpt is None)


def _stand_in_vocab() -> str:
    """A character WordPiece vocabulary for random-weight plumbing when bert-base-uncased's is not cached."""
    import string
    import tempfile

    chars = string.ascii_lowercase + string.digits + string.punctuation
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in chars)]
    f = tempfile.NamedTemporaryFile("w", suffix="-vocab.txt", delete=False)
    f.write("\n".join(tokens) + "\n")
    f.close()
    return f.name


def image_reward_frames(net: ImageRewardNet, x: "torch.Tensor", prompt: str, batch_size: int = 16) -> np.ndarray:
    """ImageReward of each of ``[n, 3, H, W]`` frames (uint8, or floats on [0, 1]) for one prompt (float64, CPU)."""
    import torch

    from .clip_similarity import resize_crop_normalize
    from .device import full_precision

    tokens = net.tokenizer(prompt, padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    out = []
    with torch.inference_mode(), full_precision(net.device):
        for s in range(0, x.shape[0], batch_size):
            pix = resize_crop_normalize(x[s : s + batch_size].to(net.device), (224, 224), CLIP_MEAN, CLIP_STD)
            image = net.vision(pixel_values=pix).last_hidden_state
            k = image.shape[0]
            text = net.text(input_ids=tokens.input_ids.to(net.device).expand(k, -1),
                            attention_mask=tokens.attention_mask.to(net.device).expand(k, -1),
                            encoder_hidden_states=image,
                            encoder_attention_mask=torch.ones(image.shape[:-1], dtype=torch.long, device=net.device))
            reward = net.head(text.last_hidden_state[:, 0, :].float()).squeeze(-1)
            out.append(((reward - MEAN) / STD).to("cpu", torch.float64))
    return torch.cat(out).numpy()


def image_reward(images: Any, prompt: str, device: Any = "auto", allow_random_weights: bool = False) -> np.ndarray:
    """ImageReward per image of an image or batch for one prompt."""
    from .inputs import to_frames

    fr = to_frames(images, "images", kind="image")
    net = load_image_reward(device, allow_random_weights)
    return image_reward_frames(net, fr.pixels(device=net.device), prompt)
