"""Weight resolution: cache first, fast failure offline, downloads, and loading cached checkpoints."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import metrics
from metrics import weights


@pytest.fixture
def caches(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path


@pytest.fixture(autouse=True)
def _local_without_proxy(monkeypatch):
    # The local test servers must be reached directly even where a proxy is configured.
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def http_dir(tmp_path):
    """A local HTTP server over a directory: a stand-in for download.pytorch.org."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_hf_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "h"))
    assert weights.hf_cache_dir() == tmp_path / "h" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "c"))
    assert weights.hf_cache_dir() == tmp_path / "c"


def test_lpips_backbone_is_downloaded_into_torch_cache_and_hash_checked(caches, http_dir, monkeypatch):
    root, base = http_dir
    payload = b"not really alexnet" * 100
    sha = hashlib.sha256(payload).hexdigest()[:8]
    (root / f"alexnet-owt-{sha}.pth").write_bytes(payload)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(weights, "_lpips_url", lambda net: f"{base}/alexnet-owt-{sha}.pth")
    got = metrics.fetch_weights(metrics=("lpips",))
    assert got == [str(caches / "torch" / "hub" / "checkpoints" / f"alexnet-owt-{sha}.pth")]
    assert Path(got[0]).read_bytes() == payload
    assert weights.resolve_lpips_backbone("alex") == Path(got[0])  # now found in the cache
    # a corrupted download (hash prefix mismatch) is not kept and is reported
    (root / "alexnet-owt-00000000.pth").write_bytes(payload)
    monkeypatch.setattr(weights, "_lpips_url", lambda net: f"{base}/alexnet-owt-00000000.pth")
    with pytest.raises(metrics.WeightsMissing, match="download failed"):
        metrics.fetch_weights(metrics=("lpips",))
    assert not (caches / "torch" / "hub" / "checkpoints" / "alexnet-owt-00000000.pth").exists()


def test_unreachable_host_fails_fast_with_the_fix(caches, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    # port 9 on localhost: connection refused at once
    monkeypatch.setattr(weights, "_lpips_url", lambda net: "http://127.0.0.1:9/alexnet-owt-7be5be79.pth")
    t = time.monotonic()
    with pytest.raises(metrics.WeightsMissing) as e:
        metrics.Scorer(names=("lpips",), device="cpu")
    assert time.monotonic() - t < 5
    assert "download failed" in str(e.value) and "python -m metrics fetch" in str(e.value)
    # and with random weights allowed, the same situation falls back (labelled)
    s = metrics.Scorer(names=("lpips",), device="cpu", allow_random_weights=True)
    assert s.random_weights == {"lpips": True}


def test_probe_gives_up_on_a_silent_host():
    import socket

    silent = socket.socket()  # accepts connections (backlog) but never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        t = time.monotonic()
        why = weights._reachable(f"http://127.0.0.1:{silent.getsockname()[1]}/x", timeout=0.5)
        assert why is not None and time.monotonic() - t < 3
    finally:
        silent.close()


def test_cached_clip_checkpoint_is_found_in_hf_cache_layout(caches):
    src = weights.clip_source("ViT-B-32", "laion2b_s34b_b79k")
    repo = caches / "hf" / "hub" / ("models--" + src.repo_id.replace("/", "--"))
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "open_clip_model.safetensors").write_bytes(b"x")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    path, _ = weights.resolve_clip_checkpoint("ViT-B-32", "laion2b_s34b_b79k")
    assert path == snap / "open_clip_model.safetensors"


def test_cached_lpips_backbone_is_loaded_not_random(caches):
    """A backbone in TORCH_HOME is used as the pretrained one (squeeze: a small file)."""
    import torchvision

    torch.manual_seed(5)
    fake = torchvision.models.squeezenet1_1().state_dict()
    target = weights.lpips_backbone_file("squeeze")
    target.parent.mkdir(parents=True)
    torch.save(fake, target)
    s = metrics.Scorer(names=("lpips",), lpips_net="squeeze", device="cpu")
    assert s.random_weights == {"lpips": False} and s.labels == {"lpips": "lpips_squeeze"}
    first_conv = s._lpips.module.net.slice1[0].weight
    assert torch.equal(first_conv.contiguous(), fake["features.0.weight"])


def test_clip_checkpoint_file_is_loaded_and_scored(tmp_path):
    """A local open_clip checkpoint (tiny custom model) goes through the pretrained path."""
    import open_clip

    from metrics.clip_similarity import load_clip, preprocess

    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "TinyTestCLIP.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "TinyTestCLIP.json")
    torch.manual_seed(9)
    model = open_clip.create_model("TinyTestCLIP")
    ckpt = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), ckpt)
    net = load_clip("TinyTestCLIP", str(ckpt), device="cpu")
    assert not net.random_weights and net.label == f"clip_TinyTestCLIP_{ckpt}"
    assert torch.equal(net.model.visual.conv1.weight, model.visual.conv1.weight)
    assert net.size == (32, 32)
    img = np.random.default_rng(0).integers(0, 256, (2, 48, 40, 3), dtype=np.uint8)
    got = metrics.clip_score(img, "a tiny test", model="TinyTestCLIP", pretrained=str(ckpt), device="cpu")
    x = torch.from_numpy(img).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        ie = torch.nn.functional.normalize(model.encode_image(preprocess(net, x)), dim=-1)
        te = torch.nn.functional.normalize(model.encode_text(open_clip.get_tokenizer("TinyTestCLIP")(["a tiny test"])), dim=-1)
    np.testing.assert_allclose(got, (100 * (ie @ te.T)[:, 0].clamp(min=0)).numpy(), atol=1e-4)
