"""Train the reference Wan model and the reference CLIP on the procedural world, from a seed.

    python -m experiments.reference.train                 # writes experiments/reference/weights/
    python -m experiments.reference.train --out /tmp/ref  # somewhere else

Three stages, each a fixed number of steps (so a seed gives the same weights on the same
torch build and thread count; the CPU seconds of each stage are logged in training.json):

1. VAE (``AutoencoderKLWan``): reconstruction (L1 + MSE) plus a small KL term, on jittered
   clips of the training captions. Its latents' per-channel mean/std become the VAE's
   ``latents_mean``/``latents_std``, which WanPipeline uses to un-normalise before decoding.
2. Transformer (``WanTransformer3DModel``): rectified flow matching, the objective of Wan's
   ``UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True)``:
   ``x_t = (1 - s) x_0 + s eps``, target ``eps - x_0``, timestep ``1000 s``, with ``s`` drawn
   uniformly and shifted by the scheduler's flow shift. Captions are dropped to "" (the
   pipeline's default negative prompt) 10% of the time, so classifier-free guidance works.
   The text encoder (a tiny UMT5 with random weights) stays frozen.
3. Reference CLIP (an open_clip ``CLIP``: ViT image tower, causal text tower): symmetric
   contrastive loss between single frames and their captions.

Weights are written as a diffusers folder (``wan/``) and an open_clip ``local-dir`` folder
(``clip/``), safetensors only, then ``SHA256SUMS`` beside them; the folder is replaced whole
only after everything was written (a crash leaves the previous weights intact).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    threads: int = 1  # one thread: 2 threads ran a VAE step only 1.27x faster here, for 1.6x the CPU time
    vae_steps: int = 1200
    vae_batch: int = 8
    vae_frames: int = 5  # the first frame plus one 4-frame chunk: the clips the model generates
    vae_foreground_weight: float = 20.0
    vae_lr: float = 5e-3
    vae_kl: float = 1e-5
    jitters_per_caption: int = 2
    transformer_steps: int = 3000
    transformer_batch: int = 32
    transformer_lr: float = 2e-3
    caption_dropout: float = 0.1
    clip_steps: int = 400
    clip_batch: int = 48
    clip_lr: float = 2e-3


def _cosine_lr(step: int, total: int, peak: float, warmup: int = 50) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _set_lr(opt, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def _apply(opt, loss, clip_params=None) -> float:
    """One optimiser step on `loss` (gradient norm clipped to 1 over `clip_params`, if given); its value."""
    import torch

    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip_params is not None:
        torch.nn.utils.clip_grad_norm_(clip_params, 1.0)
    opt.step()
    return loss.item()


def _clips(captions, jitters, frames: int, size: int):
    """A float tensor (N, 3, frames, size, size) in [-1, 1] of the given (caption, jitter) pairs."""
    import torch

    from experiments.reference.world import render_clip

    arr = np.stack([render_clip(c, frames=frames, size=size, jitter=int(j)) for c, j in zip(captions, jitters)])
    return torch.from_numpy(arr).permute(0, 4, 1, 2, 3) * 2 - 1


def train_vae(vae, cfg: TrainConfig, steps: int | None = None, log=print) -> list[float]:
    """Reconstruction training of `vae` in place; returns the loss per step."""
    import torch

    from experiments.reference.model import HEIGHT
    from experiments.reference.world import WORLD

    steps = cfg.vae_steps if steps is None else steps
    captions = WORLD.training()
    rng = np.random.default_rng(cfg.seed + 11)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    vae.train()
    losses = []
    for step in range(steps):
        _set_lr(opt, _cosine_lr(step, steps, cfg.vae_lr))
        idx = rng.integers(0, len(captions), cfg.vae_batch)
        x = _clips([captions[i] for i in idx], rng.integers(0, 2**31, cfg.vae_batch), cfg.vae_frames, HEIGHT)
        posterior = vae.encode(x).latent_dist
        # Decode the posterior mean (the transformer trains on means too): sampling with the initial
        # std of ~1 drowns the latents in noise, and the decoder then only learns the background.
        z = posterior.mean
        rec = vae.decode(z).sample
        kl = posterior.kl().mean() / z[0].numel()
        # The shape covers ~8% of a frame: without weighting, a blurry background is the easy minimum.
        # Foreground = pixels that differ from the frame's corner (always background in this world).
        fg = ((x - x[..., :1, :1]).abs().amax(dim=1, keepdim=True) > 0.1).float()
        weight = 1 + cfg.vae_foreground_weight * fg
        err = rec - x
        loss = (weight * (err.abs() + err**2)).mean() / weight.mean() + cfg.vae_kl * kl
        losses.append(_apply(opt, loss, vae.parameters()))
        if step % 50 == 0 or step == steps - 1:
            log(f"vae {step:5d}/{steps} loss {losses[-1]:.4f}")
    vae.eval()
    return losses


def reconstruction_check(vae, frames: int) -> dict:
    """How many held-out clips keep colour and motion through encode -> decode (read by classify_clip)."""
    import torch

    from experiments.reference.model import HEIGHT
    from experiments.reference.world import WORLD, classify_clip

    held = WORLD.held_out()
    with torch.no_grad():
        x = _clips(held, range(len(held)), frames, HEIGHT)
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample
    clips = ((rec.permute(0, 2, 3, 4, 1).numpy() + 1) / 2).clip(0, 1)
    readings = [classify_clip(c) for c in clips]
    ok = sum((r.colour, r.motion) == (c.colour, c.motion) for r, c in zip(readings, held))
    return {"held_out_read_back": f"{ok}/{len(held)}", "l1": round(float((rec - x).abs().mean()), 4)}


def encode_dataset(vae, cfg: TrainConfig):
    """Latent means of `jitters_per_caption` clips per training caption; (latents, caption index)."""
    import torch

    from experiments.reference.model import HEIGHT, NUM_FRAMES
    from experiments.reference.world import WORLD

    captions = WORLD.training()
    latents, owners = [], []
    with torch.no_grad():
        for j in range(cfg.jitters_per_caption):
            for start in range(0, len(captions), 16):
                chunk = captions[start : start + 16]
                x = _clips(chunk, [cfg.seed * 1000 + j * 10_000 + start + k for k in range(len(chunk))], NUM_FRAMES, HEIGHT)
                latents.append(vae.encode(x).latent_dist.mean)
                owners.extend(range(start, start + len(chunk)))
    return torch.cat(latents), torch.tensor(owners)


def set_latent_stats(vae, latents) -> None:
    """Store the per-channel mean/std of `latents` in the VAE config (WanPipeline reads them)."""
    mean = latents.mean(dim=(0, 2, 3, 4))
    std = latents.std(dim=(0, 2, 3, 4))
    vae.register_to_config(latents_mean=[round(float(v), 6) for v in mean], latents_std=[round(float(v), 6) for v in std])


def normalise(vae, latents):
    import torch

    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    return (latents - mean) / std


def caption_embeddings(pipe):
    """Frozen text-encoder embeddings of every training caption, plus "" last (the negative prompt)."""
    import torch

    from experiments.reference.model import MAX_SEQUENCE_LENGTH
    from experiments.reference.world import WORLD

    texts = [c.text for c in WORLD.training()] + [""]
    with torch.no_grad():
        emb, _ = pipe.encode_prompt(texts, do_classifier_free_guidance=False, max_sequence_length=MAX_SEQUENCE_LENGTH,
                                    device=torch.device("cpu"))
    return emb


def train_transformer(transformer, x0, owners, embeddings, cfg: TrainConfig, steps: int | None = None, log=print) -> list[float]:
    """Flow-matching training of `transformer` in place on normalised latents `x0`."""
    import torch

    from experiments.reference.model import FLOW_SHIFT

    steps = cfg.transformer_steps if steps is None else steps
    gen = torch.Generator().manual_seed(cfg.seed + 21)
    opt = torch.optim.AdamW(transformer.parameters(), lr=cfg.transformer_lr, weight_decay=0.01)
    empty = embeddings.shape[0] - 1
    transformer.train()
    losses = []
    for step in range(steps):
        _set_lr(opt, _cosine_lr(step, steps, cfg.transformer_lr, warmup=100))
        idx = torch.randint(0, x0.shape[0], (cfg.transformer_batch,), generator=gen)
        clean = x0[idx]
        text = owners[idx].clone()
        text[torch.rand(cfg.transformer_batch, generator=gen) < cfg.caption_dropout] = empty
        noise = torch.randn(clean.shape, generator=gen)
        u = torch.rand(cfg.transformer_batch, generator=gen)
        sigma = FLOW_SHIFT * u / (1 + (FLOW_SHIFT - 1) * u)
        s = sigma.view(-1, 1, 1, 1, 1)
        noisy = (1 - s) * clean + s * noise
        pred = transformer(noisy, sigma * 1000, embeddings[text], return_dict=False)[0]
        loss = ((pred - (noise - clean)) ** 2).mean()
        losses.append(_apply(opt, loss, transformer.parameters()))
        if step % 100 == 0 or step == steps - 1:
            log(f"transformer {step:5d}/{steps} loss {losses[-1]:.4f}")
    transformer.eval()
    return losses


# The reference CLIP: an open_clip CLIP with a ViT image tower on 32x32 frames and a causal text
# tower over the reference tokenizer (pooled at its end-of-sequence token).
def clip_model_cfg(tokenizer) -> dict:
    from experiments.reference.model import HEIGHT, MAX_SEQUENCE_LENGTH

    return {
        "embed_dim": 64,
        "vision_cfg": {"image_size": HEIGHT, "patch_size": 4, "width": 64, "layers": 3, "head_width": 32, "mlp_ratio": 2.0},
        "text_cfg": {
            "context_length": MAX_SEQUENCE_LENGTH,
            "vocab_size": len(tokenizer),
            "width": 64,
            "heads": 2,
            "layers": 2,
            "mlp_ratio": 2.0,
            "pad_id": tokenizer.pad_token_id,
            "eos_id": tokenizer.eos_token_id,
            "pool_type": "eos",
            "hf_tokenizer_name": "reference",  # open_clip then reads the tokenizer from the local-dir folder
        },
    }


REFERENCE_CLIP_LABEL = "reference-CLIP (toy world; not comparable with published CLIP scores)"
CLIP_PREPROCESS = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic", "resize_mode": "shortest"}


def write_clip_folder(folder: Path, tokenizer, model=None) -> None:
    """open_clip's local-dir layout: open_clip_config.json, tokenizer files, open_clip_model.safetensors."""
    from experiments.reference.model import HEIGHT

    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "model_cfg": clip_model_cfg(tokenizer),
        "preprocess_cfg": {"size": HEIGHT, **CLIP_PREPROCESS},
        # read by metrics.clip_similarity: the name of this CLIP's scores everywhere
        "label": REFERENCE_CLIP_LABEL,
        "note": "trained by `python -m experiments.reference.train` on the procedural reference world only",
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(str(folder))
    if model is not None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))


def build_clip(tokenizer, seed: int):
    import open_clip
    import torch

    torch.manual_seed(seed)
    cfg = clip_model_cfg(tokenizer)
    return open_clip.model.CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"])


def train_clip(model, clip_tokenizer, cfg: TrainConfig, steps: int | None = None, log=print) -> list[float]:
    """Contrastive training of an open_clip `model` on (frame, caption) pairs of the training captions."""
    import torch
    import torch.nn.functional as F

    from experiments.reference.model import HEIGHT, NUM_FRAMES
    from experiments.reference.world import WORLD, render_clip

    steps = cfg.clip_steps if steps is None else steps
    captions = WORLD.training()
    tokens = clip_tokenizer([c.text for c in captions])
    rng = np.random.default_rng(cfg.seed + 31)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.clip_lr, weight_decay=0.05)
    model.train()
    losses = []
    for step in range(steps):
        _set_lr(opt, _cosine_lr(step, steps, cfg.clip_lr))
        idx = rng.choice(len(captions), cfg.clip_batch, replace=False)  # distinct captions: one positive each
        frames = np.stack([
            render_clip(captions[i], frames=NUM_FRAMES, size=HEIGHT, jitter=int(rng.integers(0, 2**31)),
                        only_frame=int(rng.integers(0, NUM_FRAMES)))
            for i in idx
        ])
        images = (torch.from_numpy(frames).permute(0, 3, 1, 2) - 0.5) / 0.5
        image_emb = F.normalize(model.encode_image(images), dim=-1)
        text_emb = F.normalize(model.encode_text(tokens[idx]), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * image_emb @ text_emb.T
        target = torch.arange(len(idx))
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        losses.append(_apply(opt, loss))
        if step % 100 == 0 or step == steps - 1:
            log(f"clip {step:5d}/{steps} loss {losses[-1]:.4f}")
    model.eval()
    return losses


def write_manifest(folder: Path) -> Path:
    """SHA256SUMS beside the weights: one "<sha256>  <relative path>" line per file, sorted."""
    from experiments.reference.manifest import sha256_file

    lines = [
        f"{sha256_file(p)}  {p.relative_to(folder).as_posix()}"
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "SHA256SUMS"
    ]
    manifest = folder / "SHA256SUMS"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def train(cfg: TrainConfig, out: Path, log=print) -> dict:
    """Run every stage and write the weights folder `out` (replaced whole at the end)."""
    import open_clip
    import torch

    from experiments.reference.model import NUM_FRAMES, build_untrained

    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    report: dict = {"config": asdict(cfg), "torch": torch.__version__, "stages": {}}

    def stage(name, fn):
        cpu, wall = time.process_time(), time.time()
        result = fn()
        report["stages"][name] = {"cpu_s": round(time.process_time() - cpu, 1), "wall_s": round(time.time() - wall, 1)}
        log(f"== {name}: {report['stages'][name]}")
        return result

    pipe = build_untrained(cfg.seed)
    vae_losses = stage("vae", lambda: train_vae(pipe.vae, cfg, log=log))
    report["vae_reconstruction"] = reconstruction_check(pipe.vae, NUM_FRAMES)
    log(f"== vae reconstruction: {report['vae_reconstruction']}")
    latents, owners = stage("encode", lambda: encode_dataset(pipe.vae, cfg))
    set_latent_stats(pipe.vae, latents)
    x0 = normalise(pipe.vae, latents)
    embeddings = caption_embeddings(pipe)
    tr_losses = stage("transformer", lambda: train_transformer(pipe.transformer, x0, owners, embeddings, cfg, log=log))

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".reference-", dir=out.parent))
    try:
        pipe.save_pretrained(str(staging / "wan"), safe_serialization=True)
        write_clip_folder(staging / "clip", pipe.tokenizer)
        clip_tokenizer = open_clip.get_tokenizer(f"local-dir:{staging / 'clip'}")
        clip = build_clip(pipe.tokenizer, cfg.seed + 3)
        clip_losses = stage("clip", lambda: train_clip(clip, clip_tokenizer, cfg, log=log))
        write_clip_folder(staging / "clip", pipe.tokenizer, clip)
        report["final_loss"] = {
            "vae": float(np.mean(vae_losses[-20:])),
            "transformer": float(np.mean(tr_losses[-50:])),
            "clip": float(np.mean(clip_losses[-20:])),
        }
        report["cpu_s_total"] = round(sum(s["cpu_s"] for s in report["stages"].values()), 1)
        (staging / "training.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        write_manifest(staging)
        old = out.with_name(out.name + ".old")
        if out.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(out, old)
        os.replace(staging, out)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.reference.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help=f"weights folder (default {WEIGHTS_DIR})")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    report = train(TrainConfig(seed=args.seed, threads=args.threads), args.out)
    print(json.dumps({"out": str(args.out), "cpu_s_total": report["cpu_s_total"], "final_loss": report["final_loss"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
