"""Where results came from: code revision, library versions, device. Written beside every run."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from experiments.media import write_text

PACKAGES = ("torch", "diffusers", "transformers", "torchmetrics", "lpips", "open_clip_torch", "wandb", "numpy")


def environment() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    libs = {}
    for pkg in PACKAGES:
        try:
            libs[pkg] = version(pkg)
        except PackageNotFoundError:
            libs[pkg] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "libraries": libs,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cpu_threads": torch.get_num_threads(),
        "code_revision": _git_revision(),
    }


def write_run_files(run_dir: Path, spec: Any, env: dict[str, Any]) -> None:
    """spec.resolved.yaml and environment.json, each written to a temporary name and renamed."""
    write_text(run_dir / "spec.resolved.yaml", yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    write_text(run_dir / "environment.json", json.dumps(env, indent=2, sort_keys=True))


def _git_revision() -> str | None:
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
