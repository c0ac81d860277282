"""Prompt-set presets: the prompt lists caching papers evaluate on, loaded from their public sources.

A spec names one as ``prompts: {preset: NAME, limit: N, sample_seed: S, revision: REV}``.
Each preset is a file in a public repository or a Hugging Face hub data set, pinned to a
revision (override it with ``revision:``). Like model weights, prompt sets are never
fetched behind the user's back when offline: ``repro fetch-weights SPEC`` downloads them
into the cache (``$REPRO_CACHE_DIR/prompt_sets``, default
``~/.cache/diffusion-cache-repro/prompt_sets``), and a run whose set is not there stops with
exit 3 naming what to fetch. When ``HF_HUB_OFFLINE`` is not set, a missing set is fetched
on first use.

The cache keeps, per preset and revision, the file as downloaded and ``source.json`` (URL,
revision, sha256). Loading checks the file against that hash, so a corrupted or edited
copy is refused rather than used. The source, revision, hash, the number of prompts in the
set and the sampling (``limit``, ``sample_seed``) go into the resolved spec, hence into
every run's provenance and spec hash. A run with ``limit`` below the set's size is marked
non-reportable in tables and figures: a subset is for smoke tests, not for comparing with
published numbers.

Presets (see :data:`PRESETS`): ``vbench`` (VBench's standard per-dimension list,
``prompts/all_dimension.txt``, one prompt per line), ``partiprompts`` (PartiPrompts,
``PartiPrompts.tsv``, column ``Prompt``), ``drawbench`` (DrawBench as the hub data set
``Jialuo21/DrawBench``, parquet, column ``prompts``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.errors import ModelUnavailable, SpecError

MAX_BYTES = 16 << 20  # a prompt list is small; refuse anything that is not


class PromptSetUnavailable(ModelUnavailable):
    """A preset's prompt file is not in the cache and cannot be fetched now (exit 3, like missing weights)."""


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    kind: str  # "github" (a repository file) | "hub-dataset" (a Hugging Face data set)
    repo: str
    path: str  # repository file, or a glob of data files in the hub data set
    revision: str
    format: str  # "lines" | "tsv" | "parquet"
    column: str | None = None
    note: str = ""

    def url(self, revision: str | None = None) -> str:
        rev = revision or self.revision
        if self.kind == "github":
            return f"https://raw.githubusercontent.com/{self.repo}/{rev}/{self.path}"
        return f"https://huggingface.co/datasets/{self.repo}/tree/{rev} ({self.path})"


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("vbench", "VBench standard prompt list (all dimensions)", "github", "Vchitect/VBench",
           "prompts/all_dimension.txt", "191c7213735d237e177ffb62851b7843692f954a", "lines",
           note="the combined per-dimension list the VBench prompt README describes; one prompt per line"),
    Preset("partiprompts", "PartiPrompts (P2)", "github", "google-research/parti", "PartiPrompts.tsv",
           "2c99f6652cbc7f0d0441aa91f4c7e7055bcb0071", "tsv", column="Prompt",
           note="tab-separated: Prompt, Category, Challenge, Note"),
    Preset("drawbench", "DrawBench (Imagen)", "hub-dataset", "Jialuo21/DrawBench", "data/test-*.parquet", "main",
           "parquet", column="prompts",
           note="hub data set with columns prompts, category; its default revision is the branch main, so the "
                "commit actually fetched is recorded (pin one with `revision:`)"),
)}


@dataclass(frozen=True)
class PromptSetRequest:
    preset: str
    limit: int | None = None
    sample_seed: int = 0
    revision: str | None = None

    @classmethod
    def from_spec(cls, raw: Any) -> "PromptSetRequest":
        where = "prompts"
        if not isinstance(raw, dict):
            raise SpecError(f"{where}: expected {{preset: NAME, limit: N, sample_seed: S}}")
        allowed = {"preset", "limit", "sample_seed", "revision"}
        extra = sorted(set(raw) - allowed)
        if extra:
            raise SpecError(f"{where}: unknown field {extra[0]!r}; allowed: {', '.join(sorted(allowed))}")
        name = raw.get("preset")
        if name not in PRESETS:
            import difflib

            near = difflib.get_close_matches(str(name), list(PRESETS), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise SpecError(f"{where}.preset: {name!r} is not a prompt-set preset{hint} Allowed: {', '.join(PRESETS)}")
        for key in ("limit", "sample_seed"):
            v = raw.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < (1 if key == "limit" else 0)):
                bound = "a positive integer" if key == "limit" else "an integer >= 0"
                raise SpecError(f"{where}.{key}: {v!r} must be {bound}")
        rev = raw.get("revision")
        if rev is not None and (not isinstance(rev, str) or not rev.strip() or "/" in rev or ".." in rev):
            raise SpecError(f"{where}.revision: {rev!r} must be a commit hash, tag or branch name")
        return cls(name, raw.get("limit"), raw.get("sample_seed") or 0, rev)


def cache_root() -> Path:
    base = os.environ.get("REPRO_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "diffusion-cache-repro")
    return Path(base) / "prompt_sets"


def _entry_dir(preset: Preset, revision: str) -> Path:
    return cache_root() / preset.name / revision


def _offline() -> bool:
    from metrics.weights import offline  # the project's one HF_HUB_OFFLINE parser

    return offline()


def fetch(name: str, revision: str | None = None) -> Path:
    """Download a preset's file into the cache (atomically) and record its hash; returns its folder."""
    preset = PRESETS[name]
    rev = revision or preset.revision
    folder = _entry_dir(preset, rev)
    if (folder / "source.json").is_file():
        return folder
    data, resolved = _download(preset, rev)
    if len(data) > MAX_BYTES:
        raise PromptSetUnavailable(f"prompt set {name!r}: {preset.url(rev)} is larger than {MAX_BYTES} bytes")
    record = {"preset": name, "url": preset.url(rev), "repo": preset.repo, "path": preset.path,
              "revision": resolved, "requested_revision": rev, "sha256": hashlib.sha256(data).hexdigest(),
              "format": preset.format}
    store_entry(folder, data, record)
    return folder


def store_entry(folder: Path, data: bytes, record: dict[str, Any]) -> None:
    """Write a cache entry: the file, then source.json last (an entry without it is incomplete and ignored)."""
    from experiments.media import write_text

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"prompts.{record['format']}"
    tmp = folder / f".tmp-{target.name}"
    tmp.write_bytes(data)
    os.replace(tmp, target)
    write_text(folder / "source.json", json.dumps(record, indent=2, sort_keys=True))


def _download(preset: Preset, rev: str) -> tuple[bytes, str]:
    """(file bytes, resolved revision). Raises PromptSetUnavailable with the reason."""
    try:
        if preset.kind == "github":
            import urllib.request

            with urllib.request.urlopen(preset.url(rev), timeout=60) as resp:
                return resp.read(MAX_BYTES + 1), rev
        import fnmatch

        from huggingface_hub import HfApi, hf_hub_download

        api = HfApi()
        info = api.dataset_info(preset.repo, revision=rev)
        files = sorted(f for f in api.list_repo_files(preset.repo, repo_type="dataset", revision=info.sha)
                       if fnmatch.fnmatch(f, preset.path))
        if len(files) != 1:
            raise PromptSetUnavailable(f"prompt set {preset.name!r}: expected one file matching {preset.path} in "
                                       f"{preset.repo}@{info.sha}, found {files}")
        path = hf_hub_download(preset.repo, files[0], repo_type="dataset", revision=info.sha)
        return Path(path).read_bytes(), info.sha
    except PromptSetUnavailable:
        raise
    except Exception as exc:  # network, HTTP, hub errors: all mean "cannot fetch now"
        raise PromptSetUnavailable(f"prompt set {preset.name!r} could not be fetched from {preset.url(rev)}: "
                                   f"{type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class LoadedPromptSet:
    prompts: list[str]
    record: dict[str, Any]  # provenance, stored in the resolved spec as `prompt_set`


def load(request: PromptSetRequest, fetch_if_missing: bool | None = None) -> LoadedPromptSet:
    """The (sampled) prompts of a preset from the cache, with their provenance record.

    Missing from the cache: fetched when online (``fetch_if_missing`` defaults to "not
    HF_HUB_OFFLINE"), else :class:`PromptSetUnavailable` naming the command to run.
    """
    preset = PRESETS[request.preset]
    rev = request.revision or preset.revision
    folder = _entry_dir(preset, rev)
    if not (folder / "source.json").is_file():
        if fetch_if_missing is None:
            fetch_if_missing = not _offline()
        if not fetch_if_missing:
            raise PromptSetUnavailable(
                f"prompt set {preset.name!r} ({preset.repo} {preset.path} @ {rev}) is not in the cache {cache_root()} "
                f"and HF_HUB_OFFLINE is set. Fetch it on a machine with internet: `repro fetch-weights SPEC`, "
                f"then copy {folder} here (or point REPRO_CACHE_DIR at that cache).")
        folder = fetch(preset.name, rev)
    record = json.loads((folder / "source.json").read_text())
    data_path = folder / f"prompts.{preset.format}"
    if not data_path.is_file() or data_path.stat().st_size > MAX_BYTES:
        raise PromptSetUnavailable(f"prompt set {preset.name!r}: {data_path} is missing or too large; "
                                   f"delete {folder} and run `repro fetch-weights SPEC` again")
    data = data_path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != record.get("sha256"):
        raise PromptSetUnavailable(f"prompt set {preset.name!r}: {data_path} does not match the sha256 recorded when it "
                                   f"was fetched ({digest[:12]} != {str(record.get('sha256'))[:12]}); delete {folder} "
                                   "and run `repro fetch-weights SPEC` again")
    prompts = parse(data, preset)
    if not prompts:
        raise PromptSetUnavailable(f"prompt set {preset.name!r}: {data_path} holds no prompts")
    n_total = len(prompts)
    if request.limit is not None and request.limit > n_total:
        raise SpecError(f"prompts.limit: {request.limit} is more than the {n_total} prompts of {preset.name!r}")
    chosen = list(range(n_total))
    if request.limit is not None and request.limit < n_total:
        chosen = sorted(random.Random(request.sample_seed).sample(chosen, request.limit))
    out = {"preset": preset.name, "title": preset.title, "source": record.get("url"), "repo": preset.repo,
           "path": preset.path, "revision": record.get("revision"), "sha256": digest, "n_total": n_total,
           "limit": request.limit, "sample_seed": request.sample_seed, "indices": chosen,
           "requested_revision": request.revision,
           "reportable": len(chosen) == n_total}
    return LoadedPromptSet([prompts[i] for i in chosen], out)


def parse(data: bytes, preset: Preset) -> list[str]:
    """The prompts of a preset's file, in file order, stripped, empty lines dropped."""
    if preset.format == "lines":
        lines = data.decode("utf-8").splitlines()
        return [ln.strip() for ln in lines if ln.strip()]
    if preset.format == "tsv":
        import csv

        reader = csv.DictReader(io.StringIO(data.decode("utf-8")), delimiter="\t")
        if preset.column not in (reader.fieldnames or []):
            raise PromptSetUnavailable(f"prompt set {preset.name!r}: no column {preset.column!r} "
                                       f"(columns: {reader.fieldnames})")
        return [r[preset.column].strip() for r in reader if (r.get(preset.column) or "").strip()]
    if preset.format == "parquet":
        import pandas as pd

        frame = pd.read_parquet(io.BytesIO(data))
        if preset.column not in frame.columns:
            raise PromptSetUnavailable(f"prompt set {preset.name!r}: no column {preset.column!r} "
                                       f"(columns: {list(frame.columns)})")
        return [str(p).strip() for p in frame[preset.column] if str(p).strip()]
    raise ValueError(f"unknown prompt-set format {preset.format!r}")


def placeholder(request: PromptSetRequest, reason: str) -> LoadedPromptSet:
    """For `repro validate` / `fetch-weights` on a machine without the set: a plan-only stand-in, never run."""
    n = request.limit or 1
    prompts = [f"<{request.preset} prompt {i + 1} of {'?' if not request.limit else n}: not fetched>" for i in range(n)]
    return LoadedPromptSet(prompts, {"preset": request.preset, "limit": request.limit,
                                     "sample_seed": request.sample_seed, "requested_revision": request.revision,
                                     "fetched": False, "reason": reason})
