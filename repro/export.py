"""`repro export`: the tidy item and point tables as CSV, Parquet or JSON Lines.

Files are written under a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from experiments.media import write_text
from repro.aggregate import tables
from repro.store import Store


def export_tables(run_dir: str | Path, fmt: str, out: str | Path | None = None) -> list[Path]:
    store = Store.open_existing(run_dir, read_only=True)
    points, items = tables(store)
    meta = store.meta()
    store.close()
    if len(points) == 0:
        from experiments.errors import SpecError

        raise SpecError(f"{run_dir}: no results yet (no generation has finished); nothing to export")
    for df in (points, items):  # provenance on every row
        df["spec_hash"] = meta.get("spec_hash")
        for pkg, version in (meta.get("versions") or {}).items():
            df[f"version_{pkg}"] = version
    out_dir = Path(out) if out else Path(run_dir) / "export"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "metric_labels.json"]
    # CSV cannot carry DataFrame attrs: keep the labels (incl. "[random weights]") beside the tables
    write_text(written[0], json.dumps(points.attrs.get("metric_labels", {}), indent=2, ensure_ascii=False))
    for name, df in (("points", points), ("items", items)):
        path = out_dir / f"{name}.{fmt}"
        tmp = path.with_name(f".tmp-{path.name}")
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        elif fmt == "parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_json(tmp, orient="records", lines=True)
        os.replace(tmp, path)
        written.append(path)
    return written
