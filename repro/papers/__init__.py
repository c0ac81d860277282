"""Published results as data: one YAML file per published table, with where each number came from.

Every table records the model (as the source names it, and the hub id we would run), the
generation settings, the prompts, the hardware, the metric protocol and a citation; every
row the method, its parameters where the source gives them, and only the numbers the
source prints (``null``/absent where it prints none: nothing is filled in). ``source``
says which file at which commit, or which page, the numbers were read from, and its
``note`` what was left out and why.

``repro papers`` lists them; ``repro compare RUN_DIR --paper NAME`` puts a run next to one
(:mod:`repro.papers.compare`). A path to a YAML file of the same shape works wherever a
name does, for tables of your own.

>>> t = get_paper("easycache-wan-1.3b")
>>> [r.label for r in t.rows][:2], t.rows[2].psnr
(['baseline', 'PAB'], 22.57)
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from experiments.errors import SpecError
HERE = Path(__file__).parent
#: Numbers a published row may carry (a subset of our point columns; image_reward: FLUX tables).
NUMBERS = ("speedup", "latency_s", "lpips", "psnr", "ssim", "clip", "image_reward")
#: Protocol fields a table records; the vocabulary of :mod:`metrics.protocol` (None: not stated).
PROTOCOL_FIELDS = ("psnr", "ssim", "lpips_net", "lpips_spatial", "averaging", "data_range")
MAX_BYTES = 1 << 20


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    kind: Literal["repository-file", "quoted", "page"]
    repo: str | None = None
    path: str | None = None
    commit: str | None = Field(default=None, pattern=r"^[0-9a-f]{40}$")
    where: str | None = None
    note: str | None = None

    def describe(self) -> str:
        if self.kind == "repository-file":
            return f"{self.repo}:{self.path}@{(self.commit or '?')[:7]}"
        return self.where or self.kind


class PublishedRow(_Strict):
    label: str
    method: str  # our registry name ("baseline" for the uncached reference)
    params: dict[str, Any] | None = None
    model_id: str | None = None  # when this row's model differs from the table's
    settings: dict[str, Any] | None = None  # overrides of the table's settings for this row
    speedup: float | None = Field(default=None, gt=0)
    latency_s: float | None = Field(default=None, gt=0)
    lpips: float | None = None
    psnr: float | None = None
    ssim: float | None = None
    clip: float | None = None
    image_reward: float | None = None

    def numbers(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in NUMBERS if getattr(self, k) is not None}


class PaperTable(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]*$")
    title: str
    citation: str
    short: str  # label of its points in figures
    source: Source
    model: str
    model_id: str | None = None
    #: settings the source states: bare names are generation settings, dotted names paths into a spec
    #: (``model.scheduler.flow_shift``, ``model.dtype``, ``seeds``)
    settings: dict[str, Any] = Field(default_factory=dict)
    #: where the source states each setting (file and line, or the quoted text)
    sources: dict[str, str] = Field(default_factory=dict)
    #: settings a run needs that the source does not state (so a run's value there is its own choice)
    unstated: list[str] = Field(default_factory=list)
    prompts: str | None = None
    hardware: str | None = None
    clip_model: str | None = None  # the CLIP the source's CLIP scores were made with, where stated
    protocol: dict[str, Any] = Field(default_factory=dict)
    rows: list[PublishedRow]

    def row_model(self, row: PublishedRow) -> str | None:
        return row.model_id or self.model_id

    def row_settings(self, row: PublishedRow) -> dict[str, Any]:
        return {**self.settings, **(row.settings or {})}

    def baseline_latency(self, row: PublishedRow) -> float | None:
        """The published baseline latency of the same model and settings as `row` (for derived speedups)."""
        for r in self.rows:
            if r.method == "baseline" and self.row_model(r) == self.row_model(row) \
                    and self.row_settings(r) == self.row_settings(row) and r.latency_s:
                return r.latency_s
        return None


class PaperError(SpecError):
    """A published table file that cannot be read (the message names the file and the field)."""


def load_table(path: str | Path) -> PaperTable:
    """Read and check one table file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise PaperError(f"{path}: no such paper table file")
    if path.stat().st_size > MAX_BYTES:
        raise PaperError(f"{path}: larger than {MAX_BYTES} bytes; a paper table is a small YAML file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PaperError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise PaperError(f"{path}: a paper table is a YAML mapping (name:, citation:, rows:, ...)")
    try:
        table = PaperTable.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise PaperError(f"{path}: {loc}: {err['msg']}") from None
    unknown = sorted(set(table.protocol) - set(PROTOCOL_FIELDS))
    if unknown:
        raise PaperError(f"{path}: protocol: unknown field(s) {unknown}; allowed: {', '.join(PROTOCOL_FIELDS)}")
    orphan = sorted(set(table.sources) - set(table.settings))
    if orphan:
        raise PaperError(f"{path}: sources: {orphan} name no setting of the table; settings: {', '.join(table.settings)}")
    return table


@lru_cache(maxsize=1)
def all_papers() -> dict[str, PaperTable]:
    """The tables shipped in this package, by name."""
    tables = [load_table(p) for p in sorted(HERE.glob("*.yaml"))]
    return {t.name: t for t in tables}


def get_paper(name_or_path: str) -> PaperTable:
    """A shipped table by name, or a table file by path; PaperError names the known tables."""
    papers = all_papers()
    if name_or_path in papers:
        return papers[name_or_path]
    if name_or_path.endswith((".yaml", ".yml")) or Path(name_or_path).is_file():
        return load_table(name_or_path)
    import difflib

    near = difflib.get_close_matches(name_or_path, list(papers), n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    raise PaperError(f"--paper {name_or_path!r}: no such published table{hint} Known: {', '.join(papers)} "
                     "(or give the path of a table YAML file)")
