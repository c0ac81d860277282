"""`repro export`: the tidy item and point tables as CSV, Parquet or JSON Lines.

Files are written under a temporary name and renamed, so a reader never sees half a file.
Beside the tables: ``metrics.json`` (what each quality column is: direction, label, unit,
identity value, protocol; from :mod:`metrics.registry`) and ``metric_labels.json``.

How values are encoded, the same in every format (and in the store):

* not measured (a failed item, a metric of the baseline it is the reference for): empty / null /
  NaN, and the baseline rows have ``reference`` True;
* PSNR of an output identical to its baseline: +infinity, written ``inf`` in CSV, the string
  ``"inf"`` in JSON Lines (JSON has no infinity; null would read as "not measured") and a float64
  inf in Parquet; the ``identical`` column (items) and ``n_identical`` (points) say so as well.

:func:`read_table` reads any of the three back with inf and NaN as they were.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from experiments.media import write_text
from repro.aggregate import tables
from repro.store import Store, encode_nonfinite


def export_tables(run_dir: str | Path, fmt: str, out: str | Path | None = None) -> list[Path]:
    store = Store.open_existing(run_dir, read_only=True)
    points, items = tables(store)
    meta = store.meta()
    store.close()
    if len(points) == 0:
        from experiments.errors import NoResults

        raise NoResults(f"no results yet in {run_dir}: no generation has finished; run or resume `repro sweep` "
                        f"first (nothing to export)")
    for df in (points, items):  # provenance on every row
        df["spec_hash"] = meta.get("spec_hash")
        for pkg, version in (meta.get("versions") or {}).items():
            df[f"version_{pkg}"] = version
    out_dir = Path(out) if out else Path(run_dir) / "export"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "metrics.json", out_dir / "metric_labels.json"]
    write_text(written[0], json.dumps(points.attrs.get("metrics", {}), indent=2, ensure_ascii=False))
    # CSV cannot carry DataFrame attrs: keep the labels (incl. "[random weights]") beside the tables
    write_text(written[1], json.dumps(points.attrs.get("metric_labels", {}), indent=2, ensure_ascii=False))
    for name, df in (("points", points), ("items", items)):
        path = out_dir / f"{name}.{fmt}"
        tmp = path.with_name(f".tmp-{path.name}")
        if fmt == "csv":
            df.to_csv(tmp, index=False)  # inf as "inf", NaN as an empty cell
        elif fmt == "parquet":
            df.to_parquet(tmp, index=False)
        else:
            with open(tmp, "w", encoding="utf-8") as fh:
                for record in df.to_dict("records"):
                    fh.write(json.dumps(encode_nonfinite(record), default=_plain, allow_nan=False,
                                        ensure_ascii=False) + "\n")
        os.replace(tmp, path)
        written.append(path)
    return written


def read_table(path: str | Path):
    """An exported table back as a DataFrame, inf and NaN restored (CSV, Parquet or JSON Lines by suffix)."""
    import pandas as pd

    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)  # pandas reads "inf" as float inf
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    frame = pd.DataFrame(rows)
    for col in frame.columns:
        if _numeric(frame[col]):
            frame[col] = frame[col].map(lambda v: math.nan if v is None else float(v))
    return frame


def _numeric(values) -> bool:
    """A JSON column of numbers, "inf"/"-inf" and nulls (not booleans, not text)."""
    def kind(v) -> str:
        if v is None:
            return "null"
        if isinstance(v, str) and v in ("inf", "-inf"):
            return "number"
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return "other"
        return "number"

    kinds = {kind(v) for v in values}
    return "number" in kinds and kinds <= {"number", "null"}


def _plain(value):
    """numpy scalars and other non-JSON values as plain Python."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)
