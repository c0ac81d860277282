"""The results store: one SQLite file per run directory.

A generation row is written only after its media are complete on disk (written under a
temporary name, then renamed), and every write commits at once, so a crash or ``kill -9``
loses at most the generation in flight and never leaves a row that points at half a file.

Tables: ``meta`` (resolved spec, hashes, versions, device), ``points`` (the plan's points),
``generations`` (one row per baseline or cached generation), ``scores`` (one row per
generation and metric) and ``calibrations`` (MagCache ratios).

Infinity (the PSNR of an output identical to its baseline) is stored as SQLite's REAL +inf
in ``scores.value``, and as the JSON string ``"inf"`` inside JSON text (``per_frame``,
``summary``): JSON has no infinity, and ``null`` means "not measured". The exports use the
same encoding (``repro.export``).
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from experiments.errors import SpecError
from metrics.registry import has_random_tag

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS points (
    point_id TEXT PRIMARY KEY, method TEXT NOT NULL, label TEXT NOT NULL, params TEXT NOT NULL,
    optimization TEXT NOT NULL, key_param TEXT, key_value TEXT, python_call TEXT, spec_snippet TEXT,
    calibration TEXT
);
CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('baseline', 'cached')),
    point_id TEXT NOT NULL,
    method TEXT, params TEXT NOT NULL, optimization TEXT NOT NULL,
    prompt_index INTEGER NOT NULL, prompt TEXT NOT NULL, seed INTEGER NOT NULL,
    quality_baseline_key TEXT, speed_baseline_key TEXT,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    error TEXT,
    kind TEXT, media_dir TEXT, mp4 TEXT, num_frames INTEGER, height INTEGER, width INTEGER,
    e2e_s REAL, denoise_s REAL, compute_executed INTEGER, compute_possible INTEGER,
    peak_memory_bytes INTEGER, summary TEXT, device TEXT,
    spec_hash TEXT, code_version TEXT, attempts INTEGER NOT NULL DEFAULT 1, created_at TEXT NOT NULL,
    traceback TEXT
);
CREATE TABLE IF NOT EXISTS scores (
    generation_key TEXT NOT NULL, metric TEXT NOT NULL, label TEXT NOT NULL, value REAL,
    per_frame TEXT NOT NULL, random_weights INTEGER NOT NULL, reference_key TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (generation_key, metric)
);
CREATE TABLE IF NOT EXISTS calibrations (
    key TEXT PRIMARY KEY, ratios TEXT NOT NULL, used TEXT NOT NULL, meta TEXT NOT NULL, created_at TEXT NOT NULL
);
"""

STORE_FILE = "results.sqlite"
SQLITE_HEADER = b"SQLite format 3\x00"
#: columns added after the first release: stores made before get them on open
_ADDED_COLUMNS = (("points", "calibration", "TEXT"), ("generations", "traceback", "TEXT"),
                  ("generations", "score_error", "TEXT"))


def _parts(keys: Iterable[str], size: int = 500) -> list[list[str]]:
    """`keys` in parts small enough for one SQL ``IN (...)`` (SQLite caps the parameters of a statement)."""
    keys = list(dict.fromkeys(keys))
    return [keys[i:i + size] for i in range(0, len(keys), size)]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _json(value: Any) -> str:
    # inf is not JSON: written as the string "inf" (NaN as null), so any strict JSON parser reads the store
    return json.dumps(encode_nonfinite(value), sort_keys=True, default=str, allow_nan=False)


def encode_nonfinite(value: Any) -> Any:
    """inf -> "inf", -inf -> "-inf", NaN -> None, recursively (the store's and the exports' JSON encoding)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if value != value else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: encode_nonfinite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_nonfinite(v) for v in value]
    return value


def decode_nonfinite(value: Any) -> Any:
    """The inverse of :func:`encode_nonfinite` for numeric JSON ("inf"/"-inf" -> floats)."""
    if value in ("inf", "-inf"):
        return float(value)
    if isinstance(value, dict):
        return {k: decode_nonfinite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_nonfinite(v) for v in value]
    return value


class Store:
    """Thin, explicit access to the run's SQLite file. Every write commits immediately.

    A damaged file (truncated, overwritten, not SQLite) is refused with one message and never
    written to. ``read_only=True`` (the reading verbs: pareto, best, export, figures) opens it
    without writing anything, so an archived read-only run directory can still be inspected.
    """

    def __init__(self, run_dir: str | Path, read_only: bool = False):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / STORE_FILE
        self.read_only = read_only
        _check_header(self.path)
        try:
            if read_only:
                self.db = _connect_read_only(self.path)
            else:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            _check_integrity(self.db, self.path)
            if not read_only:
                with self._writing():
                    self.db.execute("PRAGMA journal_mode=WAL")
                    self.db.execute("PRAGMA synchronous=FULL")
                    self.db.executescript(SCHEMA)
                    for table, column, kind in _ADDED_COLUMNS:
                        if column not in {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}:
                            self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        except sqlite3.DatabaseError as exc:  # a full disk, a read-only directory, else a damaged file
            error = _operational(exc, self.path)
            raise (StoreDamaged(self.path, str(exc)) if error is exc else error) from None

    @classmethod
    def open_existing(cls, run_dir: str | Path, read_only: bool = False) -> "Store":
        from experiments.errors import RunDirMissing

        if not (Path(run_dir) / STORE_FILE).is_file():
            raise RunDirMissing(f"{run_dir}: no {STORE_FILE} here; is this a run directory made by `repro sweep`?")
        return cls(run_dir, read_only=read_only)

    @contextlib.contextmanager
    def _writing(self):
        """One committed transaction; a full disk becomes DiskFull naming this store (the transaction rolls back)."""
        try:
            with self.db:
                yield
        except sqlite3.OperationalError as exc:
            raise _operational(exc, self.path) from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- meta ---------------------------------------------------------------------------------

    def set_meta(self, **values: Any) -> None:
        with self._writing():
            for k, v in values.items():
                self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, _json(v)))

    def replace_scoring(self, spec: dict[str, Any], drop: Iterable[str]) -> None:
        """Record a spec with new metric settings and, in the same transaction, delete the scores of the metrics
        in `drop` (under every protocol): scores of two networks are never mixed, even if rescoring stops early."""
        with self._writing():
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", ("spec", _json(spec)))
            for metric in drop:
                self.db.execute("DELETE FROM scores WHERE metric = ? OR metric LIKE ?", (metric, f"{metric}@%"))

    def meta(self) -> dict[str, Any]:
        return {r["key"]: json.loads(r["value"]) for r in self.db.execute("SELECT * FROM meta")}

    def recorded_spec(self) -> Any:
        """The resolved experiments.spec.Spec the run was made with (SpecError: it stopped before recording one)."""
        from experiments.spec import Spec

        meta = self.meta()
        if "spec" not in meta:
            raise SpecError(f"{self.run_dir}: the run has no recorded spec yet (it stopped before starting); "
                            f"run `repro sweep`")
        return Spec.model_validate(meta["spec"])

    # -- points -------------------------------------------------------------------------------

    def put_points(self, points: list[dict[str, Any]]) -> None:
        with self._writing():
            for p in points:
                self.db.execute(
                    "INSERT OR REPLACE INTO points (point_id, method, label, params, optimization, key_param, "
                    "key_value, python_call, spec_snippet, calibration) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (p["point_id"], p["method"], p["label"], _json(p["params"]), _json(p["optimization"]),
                     p.get("key_param"), _json(p.get("key_value")), p.get("python_call"), p.get("spec_snippet"),
                     _json(p.get("calibration"))),
                )

    def points(self) -> list[dict[str, Any]]:
        rows = [dict(r) for r in self.db.execute("SELECT * FROM points ORDER BY rowid")]
        for r in rows:
            r["params"] = json.loads(r["params"])
            r["optimization"] = json.loads(r["optimization"])
            r["key_value"] = json.loads(r["key_value"]) if r["key_value"] is not None else None
            r["calibration"] = json.loads(r["calibration"]) if r.get("calibration") else None
        return rows

    # -- generations --------------------------------------------------------------------------

    def put_generation(self, row: dict[str, Any]) -> None:
        """Insert or replace one generation; its media must already be complete on disk."""
        row = dict(row)
        previous = self.generation(row["key"])
        row["attempts"] = (previous["attempts"] + 1) if previous else 1
        row["created_at"] = _now()
        for field in ("params", "optimization", "summary"):
            if field in row and not isinstance(row[field], str):
                row[field] = _json(row[field])
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._writing():
            self.db.execute(f"INSERT OR REPLACE INTO generations ({cols}) VALUES ({marks})", tuple(row.values()))

    def generation(self, key: str) -> dict[str, Any] | None:
        r = self.db.execute("SELECT * FROM generations WHERE key = ?", (key,)).fetchone()
        return _decode_generation(r) if r else None

    def _select(self, sql: str, args: list, column: str, keys: Iterable[str] | None) -> list[sqlite3.Row]:
        """Rows of `sql` (which ends in a WHERE clause), only those whose `column` is in `keys` when given, in the
        order they were stored."""
        if keys is None:
            return list(self.db.execute(f"{sql} ORDER BY rowid", args))
        sql = sql.replace("SELECT", "SELECT rowid AS stored_order,", 1)
        rows = [r for part in _parts(keys) for r in self.db.execute(
            f"{sql} AND {column} IN ({','.join('?' * len(part))})", [*args, *part])]
        return sorted(rows, key=lambda r: r["stored_order"])

    def generations(self, role: str | None = None, status: str | None = None,
                    keys: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Generation rows in the order they were stored (only `keys`, when given)."""
        sql, args = "SELECT * FROM generations WHERE 1=1", []
        for column, value in (("role", role), ("status", status)):
            if value:
                sql, args = f"{sql} AND {column} = ?", [*args, value]
        return [_decode_generation(r) for r in self._select(sql, args, "key", keys)]

    def generation_states(self) -> list[dict[str, Any]]:
        """Every generation's key, point, status, quality baseline, scoring error and media folder (cheap)."""
        return [dict(r) for r in self.db.execute(
            "SELECT key, point_id, status, quality_baseline_key, score_error, media_dir FROM generations "
            "ORDER BY rowid")]

    def statuses(self) -> dict[str, str]:
        return {r["key"]: r["status"] for r in self.db.execute("SELECT key, status FROM generations")}

    # -- scores -------------------------------------------------------------------------------

    def put_scores(self, generation_key: str, scores: dict[str, dict[str, Any]], reference_key: str | None,
                   error: str | None = None) -> None:
        """A generation's scores and, in the same transaction, its scoring error (None: scored without one)."""
        with self._writing():
            self.db.execute("UPDATE generations SET score_error = ? WHERE key = ?", (error, generation_key))
            for metric, s in scores.items():
                self.db.execute(
                    "INSERT OR REPLACE INTO scores VALUES (?,?,?,?,?,?,?,?)",
                    (generation_key, metric, s["label"], _finite_or_text(s["value"]), _json(s["per_frame"]),
                     int(s.get("random_weights", has_random_tag(s["label"]))), reference_key, _now()),
                )

    def scores(self, keys: Iterable[str] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
        """Generation key -> metric key -> {value, label, per_frame, random_weights} (only `keys`, when given)."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for r in self._select("SELECT * FROM scores WHERE 1=1", [], "generation_key", keys):
            out.setdefault(r["generation_key"], {})[r["metric"]] = {
                "value": None if r["value"] is None else float(r["value"]), "label": r["label"],
                "per_frame": decode_nonfinite(json.loads(r["per_frame"])),
                "random_weights": bool(r["random_weights"]),
            }
        return out

    def score_keys(self, keys: Iterable[str] | None = None) -> dict[str, set[str]]:
        """Generation key -> the metric keys it has scores for (only `keys`, when given)."""
        out: dict[str, set[str]] = {}
        for r in self._select("SELECT generation_key, metric FROM scores WHERE 1=1", [], "generation_key", keys):
            out.setdefault(r["generation_key"], set()).add(r["metric"])
        return out

    # -- calibrations -------------------------------------------------------------------------

    def put_calibration(self, key: str, ratios: dict[str, list[float]], used: str, meta: dict[str, Any]) -> None:
        with self._writing():
            self.db.execute("INSERT OR REPLACE INTO calibrations VALUES (?,?,?,?,?)",
                            (key, _json(ratios), used, _json(meta), _now()))

    def calibration(self, key: str) -> dict[str, Any] | None:
        r = self.db.execute("SELECT * FROM calibrations WHERE key = ?", (key,)).fetchone()
        return _decode_calibration(r) if r else None

    def calibrations(self) -> list[dict[str, Any]]:
        return [_decode_calibration(r) for r in self.db.execute("SELECT * FROM calibrations ORDER BY rowid")]


class StoreDamaged(SpecError):
    """results.sqlite cannot be read as a results store; it is left exactly as it is."""

    def __init__(self, path: Path, detail: str):
        super().__init__(
            f"{path}: the results store is damaged ({detail[:200]}); it was left untouched. Restore it from a "
            f"backup, or move it away (mv {path} {path}.broken) and run the sweep again to regenerate the run")
        self.path = path


def _check_header(path: Path) -> None:
    """A non-empty file that does not start like SQLite is refused before SQLite is handed it."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return
    except IsADirectoryError:
        raise StoreDamaged(path, "it is a directory") from None
    if head and head != SQLITE_HEADER:
        raise StoreDamaged(path, "not an SQLite file")


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """Open without writing: mode=ro, or immutable when the folder is read-only and SQLite cannot create -shm."""
    from urllib.parse import quote

    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    db = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        db.close()
    return sqlite3.connect(uri + "&immutable=1", uri=True, timeout=30, isolation_level=None)


def _check_integrity(db: sqlite3.Connection, path: Path) -> None:
    rows = db.execute("PRAGMA quick_check").fetchall()
    if [tuple(r) for r in rows] != [("ok",)]:
        raise StoreDamaged(path, "; ".join(str(r[0]) for r in rows[:3]))


def _operational(exc: sqlite3.DatabaseError, path: Path) -> Exception:
    """DiskFull or a read-only SpecError naming this store; any other error is returned as it is."""
    from experiments.errors import DiskFull

    if "disk is full" in str(exc) or getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL":
        return DiskFull(path)
    if "readonly" in str(exc) or "unable to open" in str(exc):
        return SpecError(f"{path}: cannot write the results store ({exc}); is the run directory read-only? "
                         f"Reading verbs (pareto, best, export, figures) work on it; copy it elsewhere to add to it")
    return exc


def _decode_generation(r: sqlite3.Row) -> dict[str, Any]:
    d = dict(r)
    d.pop("stored_order", None)  # added by Store._select to keep the stored order across parts
    for field in ("params", "optimization", "summary"):
        if d.get(field):
            d[field] = json.loads(d[field])
    if isinstance(d.get("summary"), dict):
        d["summary"] = decode_nonfinite(d["summary"])
    return d


def _decode_calibration(r: sqlite3.Row) -> dict[str, Any]:
    d = dict(r)
    d["ratios"] = json.loads(d["ratios"])
    d["meta"] = json.loads(d["meta"])
    return d


def _finite_or_text(value: float | None) -> Any:
    # SQLite stores inf as a REAL (+inf); NaN becomes NULL, which is what "not computed" means.
    return None if value is None or value != value else float(value)
