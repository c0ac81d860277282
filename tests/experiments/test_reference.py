"""The reference world, its training code, the shipped reference CLIP and its manifest, and how a
spec reaches them (model.reference, metrics.clip_model: reference)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import metrics
from experiments.reference import CLIP_DIR, WEIGHTS_DIR, ReferenceUnavailable, check_weights, clip_model_id
from experiments.reference.manifest import manifest_problems, read_manifest
from experiments.reference.model import HEIGHT, MAX_SEQUENCE_LENGTH, NUM_FRAMES
from experiments.reference.world import (
    BACKGROUNDS, COLOURS, MOTIONS, SHAPES, WORLD, Caption, classify_clip, parse_caption, render_clip,
)
from experiments.spec import Spec


def _spec_dict(run_dir, **generation) -> dict:
    return {
        "name": "reference-test",
        "model": {"reference": "wan", "device": "cpu"},
        "generation": {"height": HEIGHT, "width": HEIGHT, "num_frames": NUM_FRAMES, "num_inference_steps": 10,
                       "guidance_scale": 5.0, "max_sequence_length": MAX_SEQUENCE_LENGTH, **generation},
        "prompts": ["a red circle moving left on a black background"],
        "seeds": [0],
        "methods": [{"name": "first_block_cache", "sweep": {"threshold": [0.0]}}],
        "metrics": {"names": ["psnr"], "device": "cpu"},
        "timing": {"warmup": 0, "repeats": 1},
        "wandb": {"mode": "disabled"},
        "output": {"dir": str(run_dir), "mp4": False},
    }


# -- the world ---------------------------------------------------------------------------------


def test_grammar_split_is_fixed_disjoint_and_covers_every_colour_and_motion():
    every = WORLD.captions()
    assert len(every) == len(COLOURS) * len(SHAPES) * len(MOTIONS) * len(BACKGROUNDS)
    held = WORLD.held_out()
    assert len(held) == len(set(held)) == 20
    assert set(held).isdisjoint(WORLD.training()) and len(WORLD.training()) == len(every) - 20
    assert {c.colour for c in held} == set(COLOURS) and {c.motion for c in held} == set(MOTIONS)
    assert held == WORLD.held_out()  # deterministic


def test_caption_text_round_trips_and_bad_captions_name_the_word():
    for cap in WORLD.captions()[:30]:
        assert parse_caption(cap.text) == cap
    with pytest.raises(ValueError, match="'pink'"):
        parse_caption("a pink circle moving left on a black background")
    with pytest.raises(ValueError, match="not a reference-world caption"):
        parse_caption("a red fox in snow")


def test_classifier_reads_rendered_clips_back():
    # The classifier the behaviour tests rely on, checked on ground-truth clips (with jitter).
    for i, cap in enumerate(WORLD.captions()):
        reading = classify_clip(render_clip(cap, frames=NUM_FRAMES, size=HEIGHT, jitter=i))
        assert (reading.colour, reading.motion, reading.background) == (cap.colour, cap.motion, cap.background), cap


def test_clip_is_deterministic_and_moves():
    cap = Caption("red", "circle", "right", "black")
    a, b = render_clip(cap), render_clip(cap)
    assert np.array_equal(a, b) and a.shape == (9, 32, 32, 3) and a.dtype == np.float32
    assert not np.array_equal(a[0], a[-1])
    assert classify_clip(a).displacement[0] > 10


# -- the shipped weights -----------------------------------------------------------------------


def test_shipped_weights_match_their_manifest():
    listed = read_manifest(WEIGHTS_DIR)
    assert any(name.startswith("clip/") and name.endswith(".safetensors") for name in listed)
    assert manifest_problems(WEIGHTS_DIR) == []
    check_weights()
    total = sum((WEIGHTS_DIR / name).stat().st_size for name in listed)
    assert total <= 15 * 2**20
    assert not [p for p in WEIGHTS_DIR.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]  # safetensors only


def test_manifest_catches_a_changed_a_missing_and_an_unlisted_file(tmp_path):
    copy = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, copy)
    weights = sorted(copy.rglob("*.safetensors"))
    data = bytearray(weights[0].read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights[0].write_bytes(bytes(data))
    next(p for p in sorted(copy.rglob("*.json")) if p.name != "SHA256SUMS").unlink()
    (copy / "extra.txt").write_text("x")
    problems = manifest_problems(copy)
    assert any("sha256 differs" in p for p in problems)
    assert any("missing" in p for p in problems)
    assert any("extra.txt: not listed" in p for p in problems)


def test_damaged_or_missing_reference_weights_stop_the_sweep_before_its_run_dir(tmp_path, monkeypatch):
    import experiments.reference as ref
    from experiments.pipelines import ModelUnavailable, check_model_available

    copy = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, copy)
    monkeypatch.setattr(ref, "WEIGHTS_DIR", copy)
    spec = Spec.model_validate(_spec_dict(tmp_path / "run"))
    shutil.rmtree(copy / "wan")  # the trained Wan weights gone: the message says how to train them
    with pytest.raises(ModelUnavailable, match="no trained weights.*python -m experiments.reference.train"):
        check_model_available(spec.model)
    shutil.copytree(WEIGHTS_DIR / "wan", copy / "wan")
    config = copy / "clip" / "open_clip_config.json"
    config.write_text(config.read_text() + " ")
    with pytest.raises(ReferenceUnavailable, match="clip/open_clip_config.json: sha256 differs"):
        ref.check_weights()
    with pytest.raises(ModelUnavailable, match="python -m experiments.reference.train"):
        check_model_available(spec.model)


def test_unknown_reference_name_is_a_spec_error(tmp_path):
    with pytest.raises(Exception, match="unknown reference model 'flux'; reference models: wan"):
        Spec.model_validate({**_spec_dict(tmp_path), "model": {"reference": "flux"}})
    with pytest.raises(Exception, match="exactly one of"):
        Spec.model_validate({**_spec_dict(tmp_path), "model": {"reference": "wan", "tiny": "wan"}})


# -- training ----------------------------------------------------------------------------------


def _few_steps(seed: int):
    """Two steps of every stage from an untrained model; returns losses and the trained tensors."""
    import open_clip
    import torch

    from experiments.reference import train as T
    from experiments.reference.model import build_untrained

    cfg = T.TrainConfig(seed=seed, vae_batch=2, transformer_batch=4, clip_batch=8)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipe = build_untrained(seed)
        vae_losses = T.train_vae(pipe.vae, cfg, steps=2, log=lambda s: None)
        captions = WORLD.training()[:4]
        with torch.no_grad():
            latents = pipe.vae.encode(T._clips(captions, range(4), NUM_FRAMES, HEIGHT)).latent_dist.mean
        T.set_latent_stats(pipe.vae, latents)
        x0 = T.normalise(pipe.vae, latents)
        emb = T.caption_embeddings(pipe)
        tr_losses = T.train_transformer(pipe.transformer, x0, torch.arange(4), emb, cfg, steps=2, log=lambda s: None)
        clip = T.build_clip(pipe.tokenizer, seed + 3)
        tokenizer = open_clip.get_tokenizer(clip_model_id())  # the shipped folder's tokenizer
        clip_losses = T.train_clip(clip, tokenizer, cfg, steps=2, log=lambda s: None)
    finally:
        torch.set_num_threads(threads)
    tensors = {f"vae.{k}": v for k, v in pipe.vae.state_dict().items()}
    tensors |= {f"transformer.{k}": v for k, v in pipe.transformer.state_dict().items()}
    tensors |= {f"clip.{k}": v for k, v in clip.state_dict().items()}
    return (vae_losses, tr_losses, clip_losses), tensors


@pytest.mark.slow  # training processes
def test_a_few_training_steps_run_learn_and_are_deterministic():
    import torch

    from experiments.reference.model import build_untrained

    losses, tensors = _few_steps(0)
    again_losses, again = _few_steps(0)
    assert losses == again_losses
    assert all(np.isfinite(x) for stage in losses for x in stage)
    assert tensors.keys() == again.keys()
    assert all(torch.equal(tensors[k], again[k]) for k in tensors)
    fresh = build_untrained(0)
    changed = [k for k, v in fresh.transformer.state_dict().items() if not torch.equal(v, tensors[f"transformer.{k}"])]
    assert changed, "two optimiser steps changed no transformer weight"


# -- behaviour of the trained model ------------------------------------------------------------


def test_reference_clip_is_labelled_and_prefers_the_right_caption():
    scorer = metrics.Scorer(names=("clip",), device="cpu", clip_model=clip_model_id())
    label = scorer.labels["clip"]
    assert "reference" in label and "not comparable" in label and "random" not in label
    right, wrong = 0, 0
    for i, cap in enumerate(WORLD.held_out()):
        frames = (render_clip(cap, jitter=i) * 255).round().astype(np.uint8)
        other = Caption(next(c for c in COLOURS if c != cap.colour), cap.shape, cap.motion, cap.background)
        right += scorer.score_prompt(frames, cap.text)["value"] > scorer.score_prompt(frames, other.text)["value"]
        wrong += 1
    assert right >= 0.9 * wrong
    assert (CLIP_DIR / "open_clip_config.json").is_file()


def test_a_spec_selects_the_reference_clip_by_name(tmp_path):
    from repro.scoring import build_scorer

    spec = Spec.model_validate({**_spec_dict(tmp_path), "metrics": {"names": ["clip"], "clip_model": "reference",
                                                                     "device": "cpu"}})
    assert spec.metrics.clip_model_id == clip_model_id() == f"local-dir:{CLIP_DIR}"
    scorer = build_scorer(spec.metrics)
    assert scorer.labels["clip"].startswith("clip_reference-CLIP") and not any(scorer.random_weights.values())
    assert metrics.fetch_weights(clip_model=clip_model_id(), metrics=("clip",)) == [str(CLIP_DIR)]


# -- data-parallel training ----------------------------------------------------------------------


def _shard_step(rank: int, world: int, init: str, out_dir: str) -> None:
    """One SGD step (lr 1, so the weight change is minus the gradient) on this rank's shard of a fixed batch."""
    import json

    import torch
    import torch.distributed as dist

    from experiments.reference.train import Shard, join_group

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    x = torch.linspace(-1, 1, 24).view(8, 3)
    y = torch.linspace(0, 2, 16).view(8, 2)
    if world > 1:
        join_group(rank, world, init)
    shard = Shard(rank, world)
    mine = shard.part(8)
    weight = torch.linspace(1, 3, 8).view(8, 1)  # broadcast over the outputs, as the VAE's pixel weights
    err = (model(x[mine]) - y[mine]) ** 2
    loss = shard.mean(err, weight[mine]) + shard.mean(err.abs())  # this rank's share of the global means
    value = shard.step(torch.optim.SGD(model.parameters(), lr=1.0), loss, list(model.parameters()), clip=False)
    if world > 1:
        dist.barrier()  # as training does: tearing the group down under a peer aborts it
        dist.destroy_process_group()
    with open(f"{out_dir}/world{world}-rank{rank}.json", "w") as fh:
        json.dump({"loss": value, "weight": model.weight.tolist(), "bias": model.bias.tolist()}, fh)


@pytest.mark.slow  # training processes
def test_a_data_parallel_step_is_the_one_process_step_on_the_whole_batch(tmp_path):
    import json

    import torch
    from torch.multiprocessing import spawn

    from experiments.reference.train import Shard

    _shard_step(0, 1, "", str(tmp_path))
    spawn(_shard_step, (2, str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2)
    names = ("world1-rank0", "world2-rank0", "world2-rank1")
    one, *ranks = (json.loads((tmp_path / f"{n}.json").read_text()) for n in names)
    for got in ranks:  # every rank ends with the one-process weights and reports the global loss
        assert got["loss"] == pytest.approx(one["loss"], rel=1e-6)
        for name in ("weight", "bias"):
            assert torch.allclose(torch.tensor(got[name]), torch.tensor(one[name]), atol=1e-6), name
    with pytest.raises(ValueError, match="does not split over 3 processes"):
        Shard(0, 3).part(8)


def _fail_beside_an_exchange(rank: int, culprit: int, init: str) -> None:
    """Process `culprit` fails for its own reason after its connections closed (as on its way out,
    or a slow exit under load); the other, still joining or mid-exchange, loses its connection at once."""
    import time

    import torch
    import torch.distributed as dist

    from experiments.reference.train import Shard, join_group

    join_group(rank, 2, init)
    if rank == culprit:
        dist.destroy_process_group()
        time.sleep(2)
        raise ValueError(f"process {culprit}'s own error")
    Shard(rank, 2).total(torch.ones(1))


@pytest.mark.parametrize("culprit", [0, 1])
@pytest.mark.slow  # training processes
def test_a_failing_process_is_named_by_its_rank_not_the_one_that_lost_its_connection(tmp_path, monkeypatch, culprit):
    """torch.multiprocessing.spawn names the first process whose exit it sees; the one that lost its
    connection waits in train._exchange, so that is the one that failed."""
    import tempfile

    from torch.multiprocessing import ProcessRaisedException, spawn

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # spawn's error files, which it leaves behind
    with pytest.raises(ProcessRaisedException, match=rf"Process {culprit} terminated with the following error") as info:
        spawn(_fail_beside_an_exchange, (culprit, str(tmp_path / "rendezvous")), nprocs=2)
    assert info.value.error_index == culprit
    assert f"ValueError: process {culprit}'s own error" in str(info.value)


def test_a_process_count_that_does_not_divide_the_batches_is_refused_with_the_counts_that_do(tmp_path, capsys):
    from experiments.reference.train import TrainConfig, main

    batch = TrainConfig.transformer_batch  # the VAE trains in one process: only this batch is split
    allowed = [n for n in range(1, 1025) if batch % n == 0]
    assert 3 not in allowed
    with pytest.raises(SystemExit) as exit_info:
        main(["--processes", "3", "--out", str(tmp_path / "w")])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "--processes 3" in message and message.rstrip().endswith(", ".join(map(str, allowed)))
    assert not (tmp_path / "w").exists()


_TINY = dict(vae_steps=2, transformer_steps=2, clip_steps=2, vae_batch=2, transformer_batch=4, clip_batch=4,
             jitters_per_caption=1)


def _tiny_training(**changes):
    from experiments.reference import train as T

    return T.TrainConfig(**(_TINY | changes))


@pytest.fixture
def torch_settings_restored():
    """train() with one process sets the thread count and deterministic mode process-wide, as its command should."""
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
    torch.utils.deterministic.fill_uninitialized_memory = fill


@pytest.mark.slow  # training processes
def test_two_process_training_writes_the_one_process_model(tmp_path, torch_settings_restored):
    import torch
    from safetensors.torch import load_file

    from experiments.reference import train as T
    from experiments.reference.model import build_untrained

    reports = {n: T.train(_tiny_training(processes=n), tmp_path / f"w{n}", verbose=False) for n in (1, 2)}
    for n, report in reports.items():
        out = tmp_path / f"w{n}"
        assert manifest_problems(out) == [] and "clip/open_clip_model.safetensors" in read_manifest(out)
        assert not list(out.rglob(".*")) and not list(tmp_path.glob(".reference-*"))  # no rendezvous file, no staging
        assert set(report["stages"]) == {"vae", "encode", "transformer", "clip"} and report["wall_s_total"] > 0
    one, two = reports[1]["final_loss"], reports[2]["final_loss"]
    assert one.keys() == two.keys() == {"vae", "transformer", "clip"}
    assert all(two[k] == pytest.approx(one[k], rel=1e-5) for k in one), (one, two)
    fresh = build_untrained(0)
    for part, module in (("vae", fresh.vae), ("transformer", fresh.transformer)):
        a = load_file(str(tmp_path / f"w1/wan/{part}/diffusion_pytorch_model.safetensors"))
        b = load_file(str(tmp_path / f"w2/wan/{part}/diffusion_pytorch_model.safetensors"))
        start = module.state_dict()
        assert any(not torch.equal(a[k], start[k]) for k in a)  # trained
        if part == "vae":  # trained by process 0 alone, whatever the process count: the same bits
            assert all(torch.equal(a[k], b[k]) for k in a)
            continue
        # Same up to float rounding (a rounding-level gradient can flip one Adam update: at most 2 lr).
        assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-3, part
        assert sum(float((a[k] - b[k]).abs().sum()) for k in a) / sum(v.numel() for v in a.values()) < 1e-6, part
    clip = lambda n: (tmp_path / f"w{n}/clip/open_clip_model.safetensors").read_bytes()  # noqa: E731
    assert clip(1) == clip(2)  # one process trains it either way: the same bytes


@pytest.mark.slow  # training processes
def test_a_failing_training_process_is_named_by_rank_and_leaves_the_previous_weights(tmp_path, monkeypatch):
    import tempfile

    from torch.multiprocessing import ProcessRaisedException

    from experiments.reference import train as T

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where spawn puts its error files
    out = tmp_path / "weights"
    out.mkdir()
    (out / "kept.txt").write_text("previous weights")
    # More distinct captions per CLIP batch than the world has: the CLIP stage (process 1) raises.
    with pytest.raises(ProcessRaisedException, match=r"Process 1 terminated with the following error:") as info:
        T.train(_tiny_training(processes=2, clip_batch=10_000), out, verbose=False)
    assert info.value.error_index == 1 and "in train_clip" in str(info.value) and "ValueError: " in str(info.value)
    assert [p.name for p in out.iterdir()] == ["kept.txt"] and (out / "kept.txt").read_text() == "previous weights"
    assert not list(tmp_path.glob(".reference-*")) and not list(temp.iterdir())


@pytest.mark.slow  # training processes
def test_sigterm_stops_the_training_processes_and_leaves_the_previous_weights(tmp_path):
    """The launcher is stopped while both training processes run (process 0 in a long VAE stage)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "weights"
    out.mkdir()
    (out / "kept.txt").write_text("previous weights")
    script = (f"from experiments.reference import train as T; T._unwind_on_sigterm(); "
              f"T.train(T.TrainConfig(**{_TINY | dict(vae_steps=10**6, processes=2)!r}), {str(out)!r}, verbose=False)")
    root = str(Path(__file__).resolve().parents[2])
    launcher = subprocess.Popen([sys.executable, "-c", script], env=os.environ | {"PYTHONPATH": root})

    def training_processes() -> list[int]:  # the launcher's children started by multiprocessing's spawn
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                spawned = b"spawn_main" in (proc / "cmdline").read_bytes()
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            if parent == launcher.pid and spawned:
                found.append(int(proc.name))
        return found

    try:
        deadline = time.monotonic() + 300  # against a hang only
        while not (len(training_processes()) == 2 and list(tmp_path.glob(".reference-*/.rendezvous"))):
            assert launcher.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        ranks = training_processes()
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=300) == 128 + signal.SIGTERM
    finally:
        if launcher.poll() is None:  # a failed assertion above: its training processes get SIGINT as it dies
            launcher.kill()
            launcher.wait()
    assert [p.name for p in out.iterdir()] == ["kept.txt"] and not list(tmp_path.glob(".reference-*"))
    for pid in ranks:  # stopped and reaped by the launcher before it exited
        assert not Path(f"/proc/{pid}").exists()


def test_evaluate_refuses_a_folder_that_is_not_a_pipeline(tmp_path, capsys):
    from experiments.reference.evaluate import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    assert exit_info.value.code == 2 and "no model_index.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([str(WEIGHTS_DIR / "wan"), "--seed-sets", "0"])
    assert exit_info.value.code == 2
