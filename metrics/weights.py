"""Where pretrained weights live, whether they are cached, and how to fetch them.

* LPIPS backbones (AlexNet / VGG16 / SqueezeNet 1.1) are torchvision ImageNet
  checkpoints in torch's hub cache, ``$TORCH_HOME/hub/checkpoints`` (i.e.
  ``torch.hub.get_dir()/checkpoints``). The lpips package ships its own
  linear-layer weights, so nothing else is needed.
* CLIP weights are open_clip checkpoints in the Hugging Face cache
  (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``),
  or for the few tags without a hub copy, ``~/.cache/clip``.
* VBench's networks: DINO ViT-B/16 (hub ``timm/vit_base_patch16_224.dino``), CLIP ViT-B-32 and
  ViT-L-14 (OpenAI, as CLIP above), LAION's aesthetic head (``sa_0_4_vit_l_14_linear.pth`` from
  github.com/LAION-AI/aesthetic-predictor, kept in the torch checkpoint folder).
* ImageReward: ``ImageReward.pt`` of hub ``THUDM/ImageReward`` and the BERT vocabulary of hub
  ``google-bert/bert-base-uncased`` (the tokenizer ImageReward's BLIP builds on).

The cache is always checked first. A download is only attempted when the file
is missing, ``HF_HUB_OFFLINE`` is not set, and a quick probe of the host
answers within a few seconds (so an offline machine fails fast instead of
hanging). Otherwise :class:`~metrics.errors.WeightsMissing` says what is
missing, where it was looked for, and which command fetches it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import WeightsMissing

__all__ = [
    "LPIPS_NETS",
    "ClipSource",
    "clip_source",
    "fetch_command",
    "fetch_weights",
    "hf_cache_dir",
    "lpips_backbone_file",
    "offline",
    "resolve_url_file",
    "resolve_clip_checkpoint",
    "resolve_hub_file",
    "resolve_lpips_backbone",
    "torch_checkpoint_dir",
]

log = logging.getLogger(__name__)

#: lpips ``net`` name -> torchvision weights enum holding the ImageNet checkpoint URL.
LPIPS_NETS = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights", "squeeze": "SqueezeNet1_1_Weights"}
PROBE_TIMEOUT_S = 5.0


def fetch_command(
    lpips_net: str = "alex", clip_model: str = "ViT-B-32", clip_pretrained: str = "laion2b_s34b_b79k"
) -> str:
    """The shell command that downloads the weights, quoted in every WeightsMissing message.

    >>> fetch_command()
    'python -m metrics fetch --lpips-net alex --clip-model ViT-B-32 --clip-pretrained laion2b_s34b_b79k'
    """
    return (
        f"python -m metrics fetch --lpips-net {lpips_net} --clip-model {clip_model} "
        f"--clip-pretrained {clip_pretrained}"
    )


def _missing(what: str, where: Path | str, why: str, cmd: str) -> WeightsMissing:
    return WeightsMissing(
        f"{what} not found in {where} ({why}). Fix: on a machine with internet access run "
        f"`repro fetch-weights SPEC` or `{cmd}` (with TORCH_HOME / HF_HOME pointing at the cache "
        "this machine uses, or copy the cache over); for smoke tests only, "
        "allow_random_weights=True / --allow-random-weights scores with labelled random weights."
    )


def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` asks for no network access (honoured for all downloads here).

    The project's one parser of the variable (``experiments.pipelines`` uses it too), with
    huggingface_hub's own rule (1/ON/YES/TRUE, any case, nothing stripped), so we never
    call the hub offline while it goes online, or the reverse.

    >>> offline() in (True, False)
    True
    """
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _reachable(url: str, timeout: float | None = None) -> str | None:
    """None if ``url``'s host answers within ``timeout`` seconds, else the reason.

    Runs in a daemon thread with a hard deadline because DNS lookups ignore socket
    timeouts and can otherwise stall for minutes on a machine without network.
    """
    timeout = PROBE_TIMEOUT_S if timeout is None else timeout
    result: list[str | None] = []

    def probe() -> None:
        try:
            req = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(req, timeout=timeout):
                pass
            result.append(None)
        except urllib.error.HTTPError:
            result.append(None)  # the host answered; an HTTP status is not a network failure
        except Exception as err:  # noqa: BLE001 - any failure means "not reachable"
            result.append(f"{type(err).__name__}: {err}")

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 1.0)
    if not result:
        return f"no answer from {url} within {timeout:.0f} s"
    return result[0]


# ---------------------------------------------------------------------------- LPIPS


def torch_checkpoint_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints`` (follows ``TORCH_HOME`` at call time)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def _lpips_url(net: str) -> str:
    if net not in LPIPS_NETS:
        raise ValueError(f"unknown LPIPS net {net!r}; choose one of {sorted(LPIPS_NETS)}")
    import torchvision.models as tvm

    return getattr(tvm, LPIPS_NETS[net]).IMAGENET1K_V1.url


def lpips_backbone_file(net: str) -> Path:
    """Path where torchvision keeps (or will keep) the ImageNet backbone of LPIPS ``net``.

    >>> lpips_backbone_file("alex").name
    'alexnet-owt-7be5be79.pth'
    """
    return torch_checkpoint_dir() / os.path.basename(_lpips_url(net))


def _may_download(what: str, where: Path, url: str, cmd: str) -> None:
    """Raise WeightsMissing (naming `what`, `where` it goes and `cmd`) when offline or `url` is unreachable."""
    if offline():
        raise _missing(what, where, "HF_HUB_OFFLINE is set, no download attempted", cmd)
    why = _reachable(url)
    if why is not None:
        raise _missing(what, where, f"download failed: {why}", cmd)


def _download_lpips_backbone(net: str) -> Path:
    import torch

    target = lpips_backbone_file(net)
    url = _lpips_url(net)
    cmd = fetch_command(lpips_net=net)
    what = f"LPIPS {net} backbone {target.name}"
    _may_download(what, target.parent, url, cmd)
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", url, target)
    # torchvision names files <name>-<sha256 prefix>.pth; torch.hub verifies that prefix.
    m = re.search(r"-([a-f0-9]+)\.", target.name)
    try:
        torch.hub.download_url_to_file(url, str(target), hash_prefix=m.group(1) if m else None, progress=True)
    except Exception as err:  # noqa: BLE001
        raise _missing(what, target.parent, f"download failed: {err}", cmd) from err
    return target


def resolve_lpips_backbone(net: str, allow_random_weights: bool = False) -> Path | None:
    """Cached path of the backbone, downloading it if possible; None means "use random weights".

    None is only returned when ``allow_random_weights`` is true; otherwise a
    missing file raises :class:`WeightsMissing`.
    """
    path = lpips_backbone_file(net)
    if path.is_file():
        return path
    try:
        return _download_lpips_backbone(net)
    except WeightsMissing:
        if allow_random_weights:
            return None
        raise


# ----------------------------------------------------------------------------- CLIP


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved from the environment at call time.

    (``huggingface_hub`` reads it once at import, which would ignore later changes.)
    """
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


@dataclass(frozen=True)
class ClipSource:
    """Where open_clip's weights for ``model``/``pretrained`` come from.

    ``kind`` is "hf" (hub repo + candidate filenames, safetensors first), "url"
    (direct download into ``~/.cache/clip``) or "file" (a local checkpoint path).
    ``cfg`` is open_clip's pretrained config (mean/std/interpolation/quick_gelu...).
    """

    model: str
    pretrained: str
    kind: str
    repo_id: str = ""
    filenames: tuple[str, ...] = ()
    url: str = ""
    file: str = ""
    cfg: dict | None = None


def clip_source(model: str, pretrained: str) -> ClipSource:
    """Describe the checkpoint for an open_clip ``model`` and ``pretrained`` tag or file path.

    >>> clip_source("ViT-B-32", "laion2b_s34b_b79k").repo_id
    'laion/CLIP-ViT-B-32-laion2B-s34B-b79K'
    """
    if os.path.isfile(pretrained):
        return ClipSource(model, pretrained, "file", file=pretrained, cfg={})
    import open_clip

    if model not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {model!r}")
    cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise ValueError(f"unknown pretrained tag {pretrained!r} for {model}; known tags: {tags}")
    hub = cfg.get("hf_hub", "")
    if hub:
        # Same parsing as open_clip: "org/repo/" means the default file name.
        repo_id, filename = os.path.split(hub)
        filename = filename or "open_clip_pytorch_model.bin"
        names = [filename]
        # open_clip prefers a .safetensors twin when the hub has one; so do we.
        if filename == "open_clip_pytorch_model.bin":
            names.insert(0, "open_clip_model.safetensors")
        elif filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        return ClipSource(model, pretrained, "hf", repo_id=repo_id, filenames=tuple(names), cfg=cfg)
    return ClipSource(model, pretrained, "url", url=cfg["url"], cfg=cfg)


def _cached_clip(src: ClipSource) -> Path | None:
    if src.kind == "file":
        return Path(src.file)
    if src.kind == "url":
        p = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(src.url)
        return p if p.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    for name in src.filenames:
        hit = try_to_load_from_cache(src.repo_id, name, cache_dir=str(hf_cache_dir()))
        if isinstance(hit, str) and os.path.isfile(hit):
            return Path(hit)
    return None


def _download_clip(src: ClipSource, lpips_net: str = "alex") -> Path:
    cmd = fetch_command(lpips_net=lpips_net, clip_model=src.model, clip_pretrained=src.pretrained)
    if src.kind == "url":
        where = Path(os.path.expanduser("~/.cache/clip"))
        what = f"CLIP {src.model}/{src.pretrained} checkpoint {os.path.basename(src.url)}"
        probe = src.url
    else:
        where = hf_cache_dir()
        what = f"CLIP {src.model}/{src.pretrained} weights (hub repo {src.repo_id}, file {src.filenames[-1]})"
        probe = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/") + f"/{src.repo_id}"
    _may_download(what, where, probe, cmd)
    try:
        if src.kind == "url":
            from open_clip.pretrained import download_pretrained_from_url

            return Path(download_pretrained_from_url(src.url, cache_dir=str(where)))
        from huggingface_hub import hf_hub_download

        last: Exception | None = None
        for name in src.filenames:
            try:
                return Path(hf_hub_download(src.repo_id, name, cache_dir=str(where)))
            except Exception as err:  # noqa: BLE001 - try the next candidate (e.g. no safetensors)
                last = err
        raise last or RuntimeError("no candidate file")
    except Exception as err:  # noqa: BLE001
        raise _missing(what, where, f"download failed: {err}", cmd) from err


def resolve_clip_checkpoint(
    model: str, pretrained: str, allow_random_weights: bool = False
) -> tuple[Path | None, ClipSource]:
    """Cached checkpoint for a CLIP model (downloading it if possible) and its source.

    The path is None only when ``allow_random_weights`` is true and the weights are
    unavailable; otherwise a missing checkpoint raises :class:`WeightsMissing`.
    """
    src = clip_source(model, pretrained)
    path = _cached_clip(src)
    if path is not None:
        return path, src
    try:
        return _download_clip(src), src
    except WeightsMissing:
        if allow_random_weights:
            return None, src
        raise


# ------------------------------------------------------------------- single files (VBench, ImageReward)

#: LAION's aesthetic predictor head, as VBench's vbench/aesthetic_quality.py downloads it
AESTHETIC_URL = "https://github.com/LAION-AI/aesthetic-predictor/raw/main/sa_0_4_vit_l_14_linear.pth"


def _metric_command(metric: str) -> str:
    return f"python -m metrics fetch --metrics {metric}"


def resolve_hub_file(repo_id: str, filename: str, what: str, metric: str,
                     allow_random_weights: bool = False) -> Path | None:
    """A file of a Hugging Face hub repo from the cache (downloading it if possible).

    None only when ``allow_random_weights`` and the file is unavailable; otherwise
    :class:`WeightsMissing` names the file, the cache and the fetch commands.
    """
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo_id, filename, cache_dir=str(hf_cache_dir()))
    if isinstance(hit, str) and os.path.isfile(hit):
        return Path(hit)
    where, full = hf_cache_dir(), f"{what} (hub repo {repo_id}, file {filename})"
    try:
        probe = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/") + f"/{repo_id}"
        _may_download(full, where, probe, _metric_command(metric))
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(repo_id, filename, cache_dir=str(where)))
        except Exception as err:  # noqa: BLE001
            raise _missing(full, where, f"download failed: {err}", _metric_command(metric)) from err
    except WeightsMissing:
        if allow_random_weights:
            return None
        raise


def resolve_url_file(url: str, what: str, metric: str, allow_random_weights: bool = False) -> Path | None:
    """A checkpoint its source downloads by URL (VBench's aesthetic head, MUSIQ, AMT-S), in the torch checkpoint
    folder under its own file name (downloading it if possible). None only when ``allow_random_weights``."""
    import torch

    target = torch_checkpoint_dir() / os.path.basename(url)
    if target.is_file():
        return target
    try:
        cmd, what = _metric_command(metric), f"{what} {target.name}"
        _may_download(what, target.parent, url, cmd)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(target), progress=True)
        except Exception as err:  # noqa: BLE001
            raise _missing(what, target.parent, f"download failed: {err}", cmd) from err
        return target
    except WeightsMissing:
        if allow_random_weights:
            return None
        raise


def _fetch_metric_files(name: str) -> list[str]:
    """Fetch what a VBench dimension or ImageReward needs (raises WeightsMissing when impossible)."""
    if name == "vbench_subject_consistency":
        from .vbench import DINO_FILE, DINO_REPO

        return [str(resolve_hub_file(DINO_REPO, DINO_FILE, "DINO ViT-B/16", name))]
    if name == "vbench_background_consistency":
        return fetch_weights(clip_model="ViT-B-32", clip_pretrained="openai", metrics=("clip",))
    if name == "vbench_aesthetic_quality":
        return [*fetch_weights(clip_model="ViT-L-14", clip_pretrained="openai", metrics=("clip",)),
                str(resolve_url_file(AESTHETIC_URL, "LAION aesthetic head", name))]
    from .vbench import URL_CHECKPOINTS

    if name in URL_CHECKPOINTS:
        return [str(resolve_url_file(*URL_CHECKPOINTS[name], name))]
    if name == "image_reward":
        from .image_reward import BERT_REPO, BERT_FILES, CHECKPOINT, REPO

        return [str(resolve_hub_file(REPO, CHECKPOINT, "ImageReward checkpoint", name))] + \
            [str(resolve_hub_file(BERT_REPO, f, "ImageReward's BERT tokenizer", name)) for f in BERT_FILES]
    return []


# ---------------------------------------------------------------------------- fetch


def fetch_weights(
    lpips_net: str = "alex",
    clip_model: str = "ViT-B-32",
    clip_pretrained: str = "laion2b_s34b_b79k",
    metrics: tuple[str, ...] | list[str] = ("lpips", "clip"),
) -> list[str]:
    """Download (or find already cached) the weights the given metrics need; returns the paths.

    Model-free metrics need nothing; VBench's network dimensions and ImageReward fetch their own files.

    Files land in the standard caches (``torch.hub.get_dir()/checkpoints`` and the
    Hugging Face cache), where :class:`~metrics.Scorer` looks for them.
    Raises :class:`WeightsMissing` if a download is impossible.

    >>> import metrics
    >>> metrics.fetch_weights(metrics=())  # nothing requested, nothing fetched
    []
    """
    from .registry import SCORED

    unknown = set(metrics) - set(SCORED)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}")
    got: list[str] = []
    if "lpips" in metrics:
        path = lpips_backbone_file(lpips_net)
        got.append(str(path if path.is_file() else _download_lpips_backbone(lpips_net)))
    if "clip" in metrics and clip_model.startswith("local-dir:"):
        from .clip_similarity import local_clip_config

        local_clip_config(clip_model[len("local-dir:"):])  # a local folder: nothing to fetch, only check it
        got.append(clip_model[len("local-dir:"):])
    elif "clip" in metrics:
        src = clip_source(clip_model, clip_pretrained)
        path = _cached_clip(src) or _download_clip(src, lpips_net=lpips_net)
        got.append(str(path))
        # Most tokenizers ship inside open_clip; HF-tokenizer models download theirs on first use.
        import open_clip

        try:
            open_clip.get_tokenizer(clip_model)
        except Exception as err:  # noqa: BLE001
            raise _missing(
                f"tokenizer for CLIP {clip_model}",
                hf_cache_dir(),
                f"download failed: {err}",
                fetch_command(lpips_net, clip_model, clip_pretrained),
            ) from err
    for name in metrics:
        got += _fetch_metric_files(name)
    return got
