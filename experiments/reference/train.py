"""Train the reference Wan model and the reference CLIP on the procedural world, from a seed.

    python -m experiments.reference.train                 # writes experiments/reference/weights/
    python -m experiments.reference.train --out /tmp/ref  # somewhere else

Three stages, each a fixed number of steps, over `processes` processes of one thread each (the
default, ``--processes 2``: one per core), started by ``torch.multiprocessing.spawn`` and meeting
through torch's FileStore in the staging folder. The VAE trains in process 0 alone on the whole
batch, while process 1 trains the CLIP; process 0 then sends the VAE to the others, so the VAE is
the same bits for every process count. The transformer trains data-parallel: every process draws
the same global batch from the seed, computes its share of it, and the gradients are summed
(torch.distributed, gloo) before one identical optimiser step in each. So a seed gives the same
weights on the same torch build, process count and kind of CPU (its vector instructions decide
how kernels round: the shipped weights do not come back bit for bit on an AVX-512 machine, with
this launcher or the earlier one); a data-parallel step is the one-process step up to float
rounding (checked by the tests), but over many steps those roundings grow into another model.
At the end the processes compare digests of their weights. The CPU and wall seconds of each stage
are logged in training.json. A process that fails stops the run: spawn stops the others and raises
``ProcessRaisedException`` ("Process 1 terminated with the following error: <traceback>") or
``ProcessExitedException`` (killed by a signal) for it.

Why the VAE is not data-parallel: its latent space is the fragile part of the recipe. The same VAE
recipe trained data-parallel (float rounding apart, the same steps) read clips back as well, yet
every transformer trained on its latents confused colour words; see the README.

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

The CLIP stage runs in one process (the second, while the first trains the VAE; with
``--processes 1``, after the transformer, in this process). Weights are written as a diffusers
folder (``wan/``) and an open_clip ``local-dir`` folder (``clip/``), safetensors only, then
``SHA256SUMS`` beside them; the folder is replaced whole only after everything was written (a
failure, Ctrl-C or SIGTERM stops the training processes and leaves the previous weights intact).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
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
    processes: int = 2  # the shipped weights' run: one per core
    threads: int = 1  # per process
    vae_steps: int = 1200
    vae_batch: int = 8
    vae_frames: int = 5  # the first frame plus one 4-frame chunk: the clips the model generates
    vae_foreground_weight: float = 20.0
    vae_lr: float = 5e-3
    vae_kl: float = 1e-5
    jitters_per_caption: int = 2
    transformer_steps: int = 1800
    transformer_batch: int = 64
    transformer_lr: float = 3e-3
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


@dataclass(frozen=True)
class Shard:
    """This process's part of a data-parallel stage: rank `rank` of `world` (one process: 0 of 1).

    Every process draws the whole global batch (same seed) and computes the rows ``part(n)``; a loss
    is this process's share of the global loss (``mean``: its sum over the global normaliser), so
    the summed gradients are those of the global loss on one process.
    """

    rank: int = 0
    world: int = 1

    def part(self, n: int) -> slice:
        if n % self.world:
            raise ValueError(f"a global batch of {n} does not split over {self.world} processes")
        size = n // self.world
        return slice(self.rank * size, (self.rank + 1) * size)

    def total(self, value):
        """`value` (a tensor) summed over the processes; a copy, without gradient."""
        total = value.detach().clone()
        if self.world > 1:
            import torch.distributed as dist

            with _exchange():
                dist.all_reduce(total)
        return total

    def mean(self, x, weight=None):
        """This process's share of the global mean of `x` (weighted by `weight`, broadcast to it)."""
        if self.world == 1:  # the plain expression: the VAE stage (always one process) keeps its earlier bits
            return x.mean() if weight is None else (weight * x).mean() / weight.mean()
        if weight is None:
            return x.sum() / self.total(x.new_tensor(float(x.numel())))
        return (weight * x).sum() / self.total(weight.expand_as(x).sum())

    def share(self, module) -> None:
        """Give every process `module`'s weights as process 0 has them (after a stage only it ran)."""
        if self.world == 1:
            return
        import torch
        import torch.distributed as dist
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        tensors = list(module.state_dict().values())
        flat = _flatten_dense_tensors(tensors)  # one message
        with _exchange():
            dist.broadcast(flat, src=0)
        with torch.no_grad():
            for t, v in zip(tensors, _unflatten_dense_tensors(flat, tensors)):
                t.copy_(v)

    def step(self, opt, loss, params, clip: bool = True) -> float:
        """One optimiser step on the summed gradients of every process's `loss`; the global loss."""
        import torch

        opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in params if p.grad is not None]  # the same parameters in every process
        if self.world > 1:
            import torch.distributed as dist
            from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

            flat = _flatten_dense_tensors([*grads, loss.detach().view(1)])  # one message per step
            with _exchange():
                dist.all_reduce(flat)
            *summed, value = _unflatten_dense_tensors(flat, [*grads, loss.detach().view(1)])
            for g, s in zip(grads, summed):
                g.copy_(s)
            value = value.item()
        else:
            value = loss.item()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return value


# How long a process whose message failed waits before failing itself (the launcher stops it sooner).
PEER_LOST_WAIT_S = 60.0


@contextlib.contextmanager
def _exchange():
    """Around a message to the other processes. An error there mostly means another process failed
    and is gone; torch.multiprocessing.spawn names the first process whose exit it sees and stops
    the rest, so this one waits instead of racing the failed one out with its lost connection."""
    try:
        yield
    except Exception:
        time.sleep(PEER_LOST_WAIT_S)
        raise


def _clips(captions, jitters, frames: int, size: int):
    """A float tensor (N, 3, frames, size, size) in [-1, 1] of the given (caption, jitter) pairs."""
    import torch

    from experiments.reference.world import render_clip

    arr = np.stack([render_clip(c, frames=frames, size=size, jitter=int(j)) for c, j in zip(captions, jitters)])
    return torch.from_numpy(arr).permute(0, 4, 1, 2, 3) * 2 - 1


def train_vae(vae, cfg: TrainConfig, steps: int | None = None, log=print) -> list[float]:
    """Reconstruction training of `vae` in place, in one process on the whole batch; the loss per step."""
    import torch

    from experiments.reference.model import HEIGHT
    from experiments.reference.world import WORLD

    steps = cfg.vae_steps if steps is None else steps
    captions = WORLD.training()
    rng = np.random.default_rng(cfg.seed + 11)
    params = list(vae.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.vae_lr, weight_decay=0.0)
    shard = Shard()  # the plain one-process expressions (see Shard.mean): the shipped VAE's bits
    vae.train()
    losses = []
    for step in range(steps):
        _set_lr(opt, _cosine_lr(step, steps, cfg.vae_lr))
        idx = rng.integers(0, len(captions), cfg.vae_batch)
        jitters = rng.integers(0, 2**31, cfg.vae_batch)
        x = _clips([captions[i] for i in idx], jitters, cfg.vae_frames, HEIGHT)
        posterior = vae.encode(x).latent_dist
        # Decode the posterior mean (the transformer trains on means too): sampling with the initial
        # std of ~1 drowns the latents in noise, and the decoder then only learns the background.
        z = posterior.mean
        rec = vae.decode(z).sample
        kl = shard.mean(posterior.kl()) / z[0].numel()
        # The shape covers ~8% of a frame: without weighting, a blurry background is the easy minimum.
        # Foreground = pixels that differ from the frame's corner (always background in this world).
        fg = ((x - x[..., :1, :1]).abs().amax(dim=1, keepdim=True) > 0.1).float()
        weight = 1 + cfg.vae_foreground_weight * fg
        err = rec - x
        loss = shard.mean(err.abs() + err**2, weight) + cfg.vae_kl * kl
        losses.append(shard.step(opt, loss, params))
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


def train_transformer(transformer, x0, owners, embeddings, cfg: TrainConfig, steps: int | None = None, log=print,
                      shard: Shard = Shard()) -> list[float]:
    """Flow-matching training of `transformer` in place on normalised latents `x0` (this process's `shard`)."""
    import torch

    from experiments.reference.model import FLOW_SHIFT

    steps = cfg.transformer_steps if steps is None else steps
    gen = torch.Generator().manual_seed(cfg.seed + 21)
    params = list(transformer.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.transformer_lr, weight_decay=0.01)
    empty = embeddings.shape[0] - 1
    mine = shard.part(cfg.transformer_batch)
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
        clean, text, noise, sigma = clean[mine], text[mine], noise[mine], sigma[mine]
        s = sigma.view(-1, 1, 1, 1, 1)
        noisy = (1 - s) * clean + s * noise
        pred = transformer(noisy, sigma * 1000, embeddings[text], return_dict=False)[0]
        loss = shard.mean((pred - (noise - clean)) ** 2)
        losses.append(shard.step(opt, loss, params))
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
        losses.append(Shard().step(opt, loss, list(model.parameters()), clip=False))
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


def _timed(stages: dict, name: str, fn, log):
    cpu, wall = time.process_time(), time.time()
    result = fn()
    stages[name] = {"cpu_s": round(time.process_time() - cpu, 1), "wall_s": round(time.time() - wall, 1)}
    log(f"== {name}: {stages[name]}")
    return result


def _train_wan(cfg: TrainConfig, shard: Shard, stages: dict, log):
    """Stages 1 and 2: the VAE (process 0 alone; the others receive it), then this process's shard
    of the transformer on its latents."""
    from experiments.reference.model import build_untrained

    pipe = build_untrained(cfg.seed)
    vae_losses: list[float] = []
    if shard.rank == 0:
        vae_losses = _timed(stages, "vae", lambda: train_vae(pipe.vae, cfg, log=log), log)
    shard.share(pipe.vae)
    pipe.vae.eval()
    latents, owners = _timed(stages, "encode", lambda: encode_dataset(pipe.vae, cfg), log)
    set_latent_stats(pipe.vae, latents)
    x0 = normalise(pipe.vae, latents)
    embeddings = caption_embeddings(pipe)
    tr_losses = _timed(stages, "transformer",
                       lambda: train_transformer(pipe.transformer, x0, owners, embeddings, cfg, log=log, shard=shard), log)
    return pipe, vae_losses, tr_losses


def _weights_digest(pipe) -> str:
    """sha256 of every trained tensor: the processes must end with the same weights."""
    import hashlib

    h = hashlib.sha256()
    for module in (pipe.vae, pipe.transformer):
        for name, tensor in module.state_dict().items():
            h.update(name.encode())
            h.update(tensor.contiguous().numpy().tobytes())
    return h.hexdigest()


def _deterministic(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    # That mode also fills every new tensor with NaN first (against reads of uninitialised memory,
    # which no kernel here does): 2-5% of a step here, for the same losses step for step.
    torch.utils.deterministic.fill_uninitialized_memory = False


def _train_clip_into(folder: Path, cfg: TrainConfig, stages: dict, log) -> float:
    """Stage 3: the reference CLIP, written into `folder` (its tokenizer files already there)."""
    import open_clip

    from experiments.reference.model import make_reference_tokenizer

    tokenizer = make_reference_tokenizer()
    clip = build_clip(tokenizer, cfg.seed + 3)
    clip_tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    losses = _timed(stages, "clip", lambda: train_clip(clip, clip_tokenizer, cfg, log=log), log)
    write_clip_folder(folder, tokenizer, clip)
    return float(np.mean(losses[-20:]))


_RENDEZVOUS = ".rendezvous"  # torch's FileStore, in the staging folder


def join_group(rank: int, world: int, rendezvous: Path | str) -> None:
    """Join the gloo process group through torch's FileStore at `rendezvous`."""
    import datetime

    import torch.distributed as dist

    # The others wait in their first message for process 0's VAE stage (10 min on a loaded machine).
    # Joining is an exchange too: a process that fails right after joining breaks the others' join.
    with _exchange():
        dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=30))


def _process(rank: int, cfg: TrainConfig, staging: str, started: float, verbose: bool) -> None:
    """Training process `rank` of ``cfg.processes``: its stages; process 0 also writes ``wan/`` and
    ``training.json`` into `staging`. Process 1 (or the only one, after the transformer) trains the CLIP."""
    import torch
    import torch.distributed as dist

    from experiments.reference.model import NUM_FRAMES

    _deterministic(cfg.threads)
    folder, world, stages = Path(staging), cfg.processes, {}
    quiet = lambda line: None  # noqa: E731
    log = (lambda line: print(line if rank == 0 else f"[rank {rank}] {line}", flush=True)) if verbose else quiet
    mine: dict = {"stages": stages}
    if world > 1:
        join_group(rank, world, folder / _RENDEZVOUS)
    if rank == 1:  # while process 0 trains the VAE
        mine["clip_loss"] = _train_clip_into(folder / "clip", cfg, stages, log)
    pipe, vae_losses, tr_losses = _train_wan(cfg, Shard(rank, world), stages, log if rank == 0 else quiet)
    if world == 1:
        mine["clip_loss"] = _train_clip_into(folder / "clip", cfg, stages, log)
    mine["digest"], mine["cpu_s"] = _weights_digest(pipe), time.process_time()
    everyone = [mine]
    if world > 1:
        everyone = [None] * world
        with _exchange():
            dist.all_gather_object(everyone, mine)
            # Every process past its last message before any tears the group down: tearing it down
            # under a peer aborted that peer (SIGABRT in 3 of 10 runs of the data-parallel step test).
            dist.barrier()
        dist.destroy_process_group()
    if rank != 0:
        return
    for other, theirs in enumerate(everyone):
        if theirs["digest"] != mine["digest"]:
            raise RuntimeError(f"training process {other} ended with other weights than process 0: "
                               "the data-parallel steps diverged")
    clip_process = everyone[min(1, world - 1)]
    report = {"config": asdict(cfg), "torch": torch.__version__,
              "stages": {**stages, "clip": clip_process["stages"]["clip"]}}
    report["vae_reconstruction"] = reconstruction_check(pipe.vae, NUM_FRAMES)
    log(f"== vae reconstruction: {report['vae_reconstruction']}")
    pipe.save_pretrained(str(folder / "wan"), safe_serialization=True)
    report["final_loss"] = {"vae": float(np.mean(vae_losses[-20:])), "transformer": float(np.mean(tr_losses[-50:])),
                            "clip": clip_process["clip_loss"]}
    others_cpu_s = sum(theirs["cpu_s"] for theirs in everyone[1:])
    report["cpu_s_total"] = round(time.process_time() + others_cpu_s, 1)  # every process, start-up included
    report["wall_s_total"] = round(time.time() - started, 1)
    (folder / "training.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


def train(cfg: TrainConfig, out: Path, verbose: bool = True) -> dict:
    """Run every stage and write the weights folder `out` (replaced whole at the end); the report.

    ``cfg.processes`` > 1: torch.multiprocessing.spawn starts them (ranks 0..N-1) and raises
    ``ProcessRaisedException`` / ``ProcessExitedException`` naming the first to fail, with its
    traceback, after stopping the others. One process trains here.
    """
    import torch.multiprocessing as mp

    from experiments.reference.model import make_reference_tokenizer

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".reference-", dir=out.parent))
    processes = None
    try:
        write_clip_folder(staging / "clip", make_reference_tokenizer())
        args = (cfg, str(staging), time.time(), verbose)
        if cfg.processes == 1:
            _process(0, *args)
        else:
            # daemon: should this process exit without stopping them (SIGTERM while they start), it
            # stops them on its way out instead of waiting for them.
            processes = mp.spawn(_process, args, nprocs=cfg.processes, join=False, daemon=True)
            while not processes.join():
                pass
            # The last process's store removes it, unless one checked for it just before the other removed it.
            (staging / _RENDEZVOUS).unlink(missing_ok=True)
        report = json.loads((staging / "training.json").read_text())
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
        # spawn stops the others when one fails, but not when this process is interrupted (Ctrl-C, SIGTERM).
        for proc in processes.processes if processes else ():
            proc.terminate()
            proc.join()
        for error_file in processes.error_files if processes else ():  # spawn reads them, never removes them
            Path(error_file).unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


def _unwind_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C: the training processes are stopped and the staging folder removed."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.reference.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help=f"weights folder (default {WEIGHTS_DIR})")
    parser.add_argument("--processes", type=int, default=TrainConfig.processes,
                        help="data-parallel processes, one thread each (default %(default)s, as the shipped weights; "
                             "the weights depend on it)")
    args = parser.parse_args(argv)
    batch = TrainConfig.transformer_batch  # the data-parallel stage's
    if args.processes < 1 or batch % args.processes:
        allowed = [n for n in range(1, batch + 1) if batch % n == 0]
        parser.error(f"--processes {args.processes}: must divide the transformer's batch size ({batch}): "
                     f"{', '.join(map(str, allowed))}")
    _unwind_on_sigterm()
    report = train(TrainConfig(seed=args.seed, processes=args.processes), args.out)
    print(json.dumps({"out": str(args.out), "wall_s_total": report["wall_s_total"], "cpu_s_total": report["cpu_s_total"],
                      "final_loss": report["final_loss"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
