"""The sha256 manifest of the shipped reference weights (``weights/SHA256SUMS``).

One ``<sha256>  <relative path>`` line per file (the ``sha256sum`` format, so
``cd experiments/reference/weights && sha256sum -c SHA256SUMS`` checks it too).
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: Path) -> dict[str, str]:
    """{relative path: sha256} from `folder`/SHA256SUMS."""
    entries: dict[str, str] = {}
    for line in (Path(folder) / "SHA256SUMS").read_text().splitlines():
        if line.strip():
            digest, name = line.split(None, 1)
            entries[name.strip()] = digest
    return entries


def manifest_problems(folder: Path) -> list[str]:
    """Every way `folder` differs from its manifest (missing, changed or unlisted files); [] when it matches."""
    folder = Path(folder)
    if not (folder / "SHA256SUMS").is_file():
        return [f"{folder}: no SHA256SUMS manifest"]
    listed = read_manifest(folder)
    problems = []
    for name, digest in sorted(listed.items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{name}: listed in the manifest but missing")
        elif sha256_file(path) != digest:
            problems.append(f"{name}: sha256 differs from the manifest (retrain or restore the file)")
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != "SHA256SUMS"}
    problems += [f"{name}: not listed in the manifest" for name in sorted(present - set(listed))]
    return problems
