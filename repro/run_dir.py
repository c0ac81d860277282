"""What a run directory may be, and what in it is still trustworthy.

- An output directory is refused when it is a filesystem root, the home directory, or an
  existing non-empty directory that is not a run directory (no ``results.sqlite``): a sweep
  writes and cleans up inside it, and must never do that among someone else's files.
- Nothing inside a run directory may be a symbolic link that leads out of it (``media/``,
  ``figures/``, a generation's folder, the store): writes and start-up clean-up would land
  outside, so such a run directory is refused.
- A generation row is trusted only while its media exist: :func:`missing_media` lists the
  ``ok`` rows whose frames folder is gone, so a re-run regenerates them and readers skip them.
  A copy without ``media/`` at all (a pulled results artifact) is results-only: read as recorded.

Example::

    check_output_dir(Path("runs/tiny"))
    check_no_escaping_links(Path("runs/tiny"))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.errors import SpecError

from repro.store import STORE_FILE
from repro.tracking import LEDGER, LOCK, LOG

#: What a sweep itself creates in a run directory (an interrupted start leaves some of these without a store).
RUN_ENTRIES = {STORE_FILE, f"{STORE_FILE}-wal", f"{STORE_FILE}-shm", f"{STORE_FILE}-journal", ".lock", "media",
               "figures", "export", "spec.resolved.yaml", "environment.json", "wandb", LEDGER, LOG, LOCK}


def check_output_dir(run_dir: Path) -> None:
    """Refuse an output directory a sweep must not write into (see the module docstring)."""
    path = Path(run_dir).expanduser()
    resolved = path.resolve()
    if resolved == Path(resolved.anchor):
        raise SpecError(f"output directory {run_dir} (--out or output.dir): is the filesystem root; give a directory for this run, e.g. runs/NAME")
    if resolved == Path.home().resolve():
        raise SpecError(f"output directory {run_dir} (--out or output.dir): is your home directory; give a directory for this run, e.g. ~/runs/NAME")
    if path.exists() and not path.is_dir():
        raise SpecError(f"output directory {run_dir} (--out or output.dir): exists and is not a directory")
    if path.is_dir() and not (path / STORE_FILE).exists():
        foreign = sorted(e.name for e in path.iterdir() if e.name not in RUN_ENTRIES and not e.name.startswith(".tmp-"))
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise SpecError(f"output directory {run_dir} (--out or output.dir): is a non-empty directory that is not a run directory (it holds "
                            f"{shown}); give a new or empty directory")


def check_no_escaping_links(run_dir: Path) -> None:
    """Refuse a run directory in which a symlink leads outside it (top level, media/ and figures/ entries)."""
    root = Path(run_dir)
    if not root.is_dir():
        return
    base = root.resolve()
    candidates = list(root.iterdir())
    for sub in ("media", "figures", "export"):
        folder = root / sub
        if folder.is_dir() and not folder.is_symlink():
            candidates.extend(folder.iterdir())
    for entry in candidates:
        if entry.is_symlink():
            target = entry.resolve()
            if target != base and base not in target.parents:
                raise SpecError(f"{entry} is a symbolic link to {target}, outside the run directory {root}; "
                                f"outputs are never written through links out of a run. Replace the link by "
                                f"a real folder (or move the run directory there)")


def holds_media(run_dir: Path) -> bool:
    """Whether this is a full run directory (with ``media/``) rather than a results-only copy."""
    return (Path(run_dir) / "media").is_dir()


def media_present(run_dir: Path, generation: dict[str, Any]) -> bool:
    """Whether an ok generation's frames folder still exists and holds its frames (any media format)."""
    from experiments.media import has_frames

    return bool(generation.get("media_dir")) and has_frames(Path(run_dir) / generation["media_dir"])


def missing_media(store: Any) -> list[dict[str, Any]]:
    """The ok generations whose media are gone (deleted, moved): not trusted until regenerated."""
    return [g for g in store.generations(status="ok") if not media_present(store.run_dir, g)]
