"""A sweep's results as a versioned W&B artifact, and `repro pull`, which rebuilds a run directory from one.

What is packed (type `sweep-results`, name `<spec name>-results`; W&B numbers the versions and
gives a new one only when the content changed):

- `results.sqlite`: a consistent copy made with SQLite's backup API (the live file has a WAL beside it)
- `spec.resolved.yaml`, `environment.json`: what made the results, and where
- `export/`: the tidy point and item tables (CSV) with their metric labels
- `figures/`: when `repro figures` made them
- `media/`: only with `wandb.artifact_media: true` (outputs are large; without them figures skip the grids)

`repro pull` takes a W&B artifact path (`entity/project/name:v3`) or a folder holding a
downloaded artifact, checks every entry (plain files with relative paths inside the target; no
links, no `..`, no references to other storage), copies into a temporary sibling of `--out`
and renames it into place, so an interrupted pull leaves no half run directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from experiments.errors import SpecError
from repro.store import STORE_FILE

ARTIFACT_TYPE = "sweep-results"
RUN_FILES = ("spec.resolved.yaml", "environment.json")
FOLDERS = ("figures", "export")


def artifact_name(spec_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", spec_name) + "-results"


# -- packing ---------------------------------------------------------------------------------------


def pack(run_dir: Path, dest: Path, media: bool) -> list[Path]:
    """Write the artifact's files under `dest` (an empty folder); returns them."""
    from repro.export import export_tables

    run_dir, dest = Path(run_dir), Path(dest)
    _backup(run_dir / STORE_FILE, dest / STORE_FILE)
    for name in RUN_FILES:
        if _plain_file(run_dir / name):
            shutil.copy2(run_dir / name, dest / name)
    export_tables(run_dir, "csv", dest / "export")
    for folder in ("figures", *(["media"] if media else [])):
        _copy_plain_tree(run_dir / folder, dest / folder)
    return sorted(p for p in dest.rglob("*") if p.is_file())


def content_digest(root: Path) -> str:
    """Digest of what an artifact says, not of how SQLite laid it out: every file but the store, plus the
    exported tables that hold the store's results (SQLite rewrites its header on every write)."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file() and p.name != STORE_FILE):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def log_results(wandb, run, packed: Path, spec: Any, stopped: bool, media: bool) -> Any:
    """Log the folder `pack` wrote from `run` (W&B copies the files into its staging area at once)."""
    files = [p for p in packed.rglob("*") if p.is_file()]
    meta = _store_meta(packed / STORE_FILE)
    artifact = wandb.Artifact(
        artifact_name(spec.name), type=ARTIFACT_TYPE,
        description=f"results of sweep {spec.name!r} ({'stopped early' if stopped else 'complete'})",
        metadata={"spec_name": spec.name, "spec_hash": spec.spec_hash(), "status": "stopped" if stopped else "complete",
                  "media": media, "files": len(files), "versions": meta.get("versions"),
                  "content_digest": content_digest(packed)},
    )
    artifact.add_dir(str(packed))
    aliases = ["latest", "stopped" if stopped else "complete", f"spec-{spec.spec_hash()}"]
    run.log_artifact(artifact, aliases=aliases)
    return artifact


def _backup(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    target = sqlite3.connect(dst)
    try:
        source.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    finally:
        target.close()
        source.close()


def _plain_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _copy_plain_tree(src: Path, dst: Path) -> None:
    """Copy regular files only; links (which may point anywhere) stay behind."""
    if not src.is_dir() or src.is_symlink():
        return
    for folder, dirs, files in os.walk(src, followlinks=False):
        dirs[:] = [d for d in dirs if not (Path(folder) / d).is_symlink() and not d.startswith(".tmp-")]
        for name in files:
            path = Path(folder) / name
            if _plain_file(path) and not name.startswith(".tmp-"):
                out = dst / path.relative_to(src)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, out)


# -- pulling ---------------------------------------------------------------------------------------


def safe_entry(name: str) -> PurePosixPath:
    """An artifact entry's path, refused unless it is relative and stays inside the target folder."""
    p = PurePosixPath(name)
    if not name or "\\" in name or "\0" in name or p.is_absolute() or re.match(r"^[A-Za-z]:", name) or \
            any(part in ("..", "") for part in name.split("/")):
        raise SpecError(f"artifact entry {name!r}: not a relative path inside the artifact; refusing to unpack")
    return p


def pull(artifact: str, out: str | Path | None = None, runs_root: Path = Path("runs")) -> Path:
    """Rebuild a run directory from `artifact` (a W&B artifact path or a downloaded artifact folder)."""
    local = Path(artifact)
    if local.is_dir():
        return _rebuild(local, out, runs_root)
    if not re.match(r"^[\w.-]+/[\w.-]+/[\w.-]+(:[\w.-]+)?$|^[\w.-]+(:[\w.-]+)?$", artifact):
        raise SpecError(f"pull {artifact!r}: neither a folder nor a W&B artifact path (entity/project/name:version)")
    with tempfile.TemporaryDirectory(prefix="repro-pull-") as tmp:
        return _rebuild(_download(artifact, Path(tmp)), out, runs_root)


def _download(name: str, into: Path) -> Path:
    import wandb

    art = wandb.Api().artifact(name, type=ARTIFACT_TYPE)
    for path, entry in art.manifest.entries.items():
        safe_entry(path)
        if entry.ref:
            raise SpecError(f"artifact {name}: entry {path!r} refers to other storage ({entry.ref}); refusing it")
    return Path(art.download(root=str(into / "files")))


def _rebuild(src: Path, out: str | Path | None, runs_root: Path) -> Path:
    files = _check_tree(src)
    meta = _store_meta(src / STORE_FILE)
    name = (meta.get("spec") or {}).get("name")
    if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", name):
        raise SpecError(f"{src}: the store names no valid sweep (meta.spec.name = {name!r})")
    target = Path(out) if out else runs_root / name
    if target.is_symlink() or target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise SpecError(f"--out {target}: exists and is not an empty folder; pull into a new one")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-pull-{target.name}-", dir=target.parent))
    try:
        for rel in files:
            dst = tmp.joinpath(*rel.parts)
            if not dst.resolve().is_relative_to(tmp.resolve()):  # belt and braces after safe_entry
                raise SpecError(f"artifact entry {rel}: resolves outside the target folder")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src.joinpath(*rel.parts), dst)
        if target.exists():
            target.rmdir()
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _check_tree(src: Path) -> list[PurePosixPath]:
    """Every entry of a downloaded artifact: plain files with safe relative paths, the store among them."""
    files = []
    for folder, dirs, names in os.walk(src, followlinks=False):
        for name in [*dirs, *names]:
            path = Path(folder) / name
            rel = path.relative_to(src).as_posix()
            safe_entry(rel)
            if path.is_symlink():
                raise SpecError(f"artifact entry {rel!r} is a link; a sweep artifact holds plain files only")
            if name in names:
                if not path.is_file():
                    raise SpecError(f"artifact entry {rel!r} is not a regular file")
                files.append(PurePosixPath(rel))
    if PurePosixPath(STORE_FILE) not in files:
        raise SpecError(f"{src}: no {STORE_FILE}; is this a {ARTIFACT_TYPE} artifact logged by `repro sweep`?")
    return files


def _store_meta(path: Path) -> dict[str, Any]:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT key, value FROM meta").fetchall()
            db.execute("SELECT count(*) FROM generations").fetchone()
        finally:
            db.close()
        return {k: json.loads(v) for k, v in rows}
    except (sqlite3.Error, json.JSONDecodeError) as exc:
        raise SpecError(f"{path}: not a readable results store ({exc})") from None
