"""A run next to a published table: row by row, with the difference and whether the published
value falls inside our 95% interval, and every setting in which the two differ.

A published row is matched to one of our points, in this order: an explicit
``--match LABEL=POINT_ID``; a point whose spec label (``methods[].label``) or point label
equals the row's label; a point of the same method whose parameters include every
parameter the row gives. The published baseline row is matched to our baseline. Rows of
another model than the run's are not compared (listed as such). A speedup the source does
not print is derived from its latencies and marked so.

Mismatched settings (model, every setting the table records: steps, resolution, frames, guidance,
scheduler shift, dtype, seeds; prompts, hardware, metric protocol) are listed under the table,
each with the source line that states the published value, never hidden: the numbers are
comparable only as far as those agree. What the source does not state is listed as such. For
each matched row, the point's method settings that differ from the method's official code (its
registry ``deviations``: a named project option, a warm-up other than the script's, diffusers'
MagCache where the paper ran the original) and a method other than the row's are listed too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from repro.papers import NUMBERS, PROTOCOL_FIELDS, PaperTable, PublishedRow

#: Which columns are compared, their labels and formats.
COLUMNS = {"speedup": ("speedup", "{:.2f}x"), "latency_s": ("latency (s)", "{:.2f}"),
           "lpips": ("LPIPS", "{:.4f}"), "ssim": ("SSIM", "{:.4f}"), "psnr": ("PSNR", "{:.2f}"),
           "clip": ("CLIP", "{:.2f}"), "image_reward": ("ImageReward", "{:.4f}")}
#: Bare setting names of a table are generation settings; other settings are dotted paths into the spec
#: (``model.scheduler.flow_shift``, ``model.dtype``, ``seeds``).
GENERATION = ("height", "width", "num_frames", "num_inference_steps", "guidance_scale")


@dataclass
class Cell:
    published: float | None
    ours: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    derived: bool = False  # published value computed from published latencies
    measured: bool = True  # False: the run has no such column (the metric was not requested)

    @property
    def diff(self) -> float | None:
        if self.published is None or _missing(self.ours):
            return None
        return self.ours - self.published

    @property
    def inside_ci(self) -> bool | None:
        if self.published is None or _missing(self.ci_low) or _missing(self.ci_high):
            return None
        return self.ci_low <= self.published <= self.ci_high


@dataclass
class RowComparison:
    row: PublishedRow
    point_id: str | None
    point_label: str | None
    how: str  # "label", "params", "--match", "baseline", or why it is unmatched
    cells: dict[str, Cell] = field(default_factory=dict)


@dataclass
class Comparison:
    table: PaperTable
    run_name: str
    rows: list[RowComparison]
    mismatches: list[str]
    notes: list[str]


def compare(table: PaperTable, points, items, spec: dict[str, Any], point_methods: dict[str, str],
            matches: dict[str, str] | None = None, run_protocol: dict[str, Any] | None = None,
            prompt_set: dict[str, Any] | None = None) -> Comparison:
    """Compare a run's point table with `table`.

    ``points``/``items``: the run's tables (:func:`repro.aggregate.tables`); ``spec``: the
    run's resolved spec (a dict); ``point_methods``: point id -> registry method name;
    ``matches``: published label -> our point id (overrides automatic matching).
    """
    matches = dict(matches or {})
    unknown = [k for k in matches if k not in {r.label for r in table.rows}]
    if unknown:
        from experiments.errors import SpecError

        raise SpecError(f"--match {unknown[0]!r}: no such row in {table.name}; its rows: "
                        f"{', '.join(r.label for r in table.rows)}")
    recs = {r["point_id"]: r for r in points.to_dict("records")}
    bad = [pid for pid in matches.values() if pid not in recs]
    if bad:
        from experiments.errors import SpecError

        raise SpecError(f"--match ...={bad[0]}: no such point in this run; its points: {', '.join(recs)}")
    run_model = (spec.get("model") or {}).get("id") or _model_source(spec)
    out_rows: list[RowComparison] = []
    compared_models: set[str] = set()
    for row in table.rows:
        row_model = table.row_model(row)
        if row_model and not _same_model(row_model, run_model) and row.label not in matches:
            out_rows.append(RowComparison(row, None, None, f"not compared: model {row_model}"))
            continue
        compared_models.add(row_model or "")
        pid, how = _match(row, recs, point_methods, matches)
        rc = RowComparison(row, pid, recs[pid]["label"] if pid else None, how)
        for col in NUMBERS:
            pub, derived = getattr(row, col), False
            if col == "speedup" and pub is None and row.latency_s and row.method != "baseline":
                base = table.baseline_latency(row)
                if base:
                    pub, derived = base / row.latency_s, True
            if pub is None:
                continue
            cell = Cell(pub, derived=derived)
            if pid:
                rec = recs[pid]
                cell.ours = _num(rec.get(col))
                cell.ci_low = _num(rec.get(f"{col}_ci_low"))
                cell.ci_high = _num(rec.get(f"{col}_ci_high"))
                cell.measured = col in rec
                if col == "latency_s":
                    cell.ci_low, cell.ci_high = _num(rec.get("latency_q25_s")), _num(rec.get("latency_q75_s"))
            rc.cells[col] = cell
        out_rows.append(rc)
    mismatches = _mismatches(table, spec, items, run_model, compared_models, run_protocol or {}, prompt_set)
    mismatches += _method_differences(out_rows, recs, point_methods, spec)
    notes = []
    if any(c.derived for r in out_rows for c in r.cells.values()):
        notes.append("speedup marked * is derived from the published latencies (the source prints none)")
    if any("latency_s" in r.cells and r.point_id for r in out_rows):
        notes.append("latency: our interval is the interquartile range over items; absolute times depend on hardware")
    notes.append("in CI: the published value lies inside our 95% bootstrap interval over items")
    from metrics.registry import has_random_tag

    labels = getattr(points, "attrs", {}).get("metric_labels") or {}
    random = sorted({COLUMNS[c][0] for r in out_rows for c, cell in r.cells.items()
                     if cell.ours is not None and has_random_tag(labels.get(c))})
    if random:
        notes.append(f"{', '.join(random)}: ours made with RANDOM network weights (plumbing only, not comparable)")
    return Comparison(table, spec.get("name", "run"), out_rows, mismatches, notes)


def _match(row: PublishedRow, recs: dict[str, dict[str, Any]], point_methods: dict[str, str],
           matches: dict[str, str]) -> tuple[str | None, str]:
    if row.label in matches:
        return matches[row.label], "--match"
    if row.method == "baseline":
        return ("baseline", "baseline") if "baseline" in recs else (None, "no baseline in this run")
    cached = [r for r in recs.values() if r["method"] != "baseline" and r["status"] != "failed"]
    for r in cached:
        if row.label in (r["method"], r["label"]):
            return r["point_id"], "label"
    if row.params:
        for r in cached:
            ours = _params(r)
            if point_methods.get(r["point_id"]) == row.method and all(
                    k in ours and _equal(ours[k], v) for k, v in row.params.items()):
                return r["point_id"], "params"
    return None, "no matching point (label it like the row, or use --match LABEL=POINT_ID)"


def _mismatches(table: PaperTable, spec: dict[str, Any], items, run_model: str, compared_models: set[str],
                protocol: dict[str, Any], prompt_set: dict[str, Any] | None) -> list[str]:
    out = []
    for m in sorted(compared_models):
        if m and not _same_model(m, run_model):
            out.append(f"model: published {m}, ours {run_model} (matched by --match)")
    if table.model_id and not _same_model(table.model_id, run_model) and not compared_models - {""}:
        out.append(f"model: published {table.model} ({table.model_id}), ours {run_model}")
    elif table.model_id and _same_model(table.model_id, run_model) and "original" in table.model:
        out.append(f"model code: published {table.model}, ours the diffusers pipeline of {run_model}")
    for key, published in table.settings.items():
        ours = spec_setting(spec, key)
        if not _equal_setting(ours, published):
            where = table.sources.get(key)
            shown = "not set (the pipeline's or the model's default)" if ours is None else ours
            cited = f" (published value: {where})" if where else ""
            out.append(f"{key}: published {published}, ours {shown}{cited}")
    if table.unstated:
        out.append(f"not stated by the source (ours is our choice): {', '.join(table.unstated)}")
    devices = sorted({str(d) for d in items.get("device", []) if d}) if len(items) else []
    out.append(f"hardware: published {table.hardware or 'not stated'}, ours {', '.join(devices) or 'unknown'}")
    ours_prompts = (prompt_set or {}).get("preset") or f"{len(spec.get('prompts') or [])} prompts of the spec"
    if table.prompts is None or str(table.prompts).lower() != str(ours_prompts).lower():
        out.append(f"prompts: published {table.prompts or 'not stated'}, ours {ours_prompts}")
    if prompt_set and not prompt_set.get("reportable", True):
        out.append(f"NOT REPORTABLE: our run used {prompt_set.get('limit')} of the {prompt_set.get('n_total')} "
                   f"{prompt_set.get('preset')} prompts (limit)")
    ours_clip = " ".join(str((spec.get("metrics") or {}).get(k) or "") for k in ("clip_model", "clip_pretrained"))
    if table.clip_model and table.clip_model.split(" (")[0] != ours_clip.strip():
        out.append(f"CLIP model: published {table.clip_model}, ours {ours_clip.strip() or 'not requested'}")
    unstated = [k for k in PROTOCOL_FIELDS if table.protocol.get(k) is None]
    for k in PROTOCOL_FIELDS:
        pub = table.protocol.get(k)
        if pub is not None and k in protocol and protocol[k] != pub:
            out.append(f"protocol {k}: published {pub}, ours {protocol[k]}")
    if unstated:
        out.append(f"protocol not stated by the source: {', '.join(unstated)}")
    return out


def spec_setting(spec: dict[str, Any], key: str) -> Any:
    """Our value of a table setting: a bare name is ``generation.<name>``, a dotted name a path into the spec."""
    path = key.split(".") if "." in key or key in ("seeds", "prompts") else ["generation", key]
    node: Any = spec
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _equal_setting(ours: Any, published: Any) -> bool:
    if isinstance(ours, list) and isinstance(published, list):
        return len(ours) == len(published) and all(_equal(a, b) for a, b in zip(ours, published))
    return ours is not None and _equal(ours, published)


def _method_differences(rows: list[RowComparison], recs: dict[str, dict[str, Any]], point_methods: dict[str, str],
                        spec: dict[str, Any]) -> list[str]:
    """For each matched row: a method other than the row's, and every setting of the point that differs from its
    method's official code (the registry's ``deviations``, with the family's official fixed params)."""
    out = []
    for rc in rows:
        if not rc.point_id or rc.row.method == "baseline" or rc.point_id not in recs:
            continue
        method = point_methods.get(rc.point_id) or recs[rc.point_id].get("method")
        where = f"{rc.row.label} (our point {rc.point_id})"
        if method != rc.row.method:
            out.append(f"{where}: method: published {rc.row.method}, ours {method}")
        for line in method_deviations(method, _params(recs[rc.point_id]), spec):
            out.append(f"{where}: {line}")
    return out


def method_deviations(method: str | None, params: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    """The registry's deviations of `method` with `params` on the spec's model family (no model is loaded)."""
    from experiments.methods.registry import METHODS, all_methods

    registered = (METHODS if method in METHODS else all_methods()).get(method or "")
    if registered is None or registered.deviations is None:
        return []
    return registered.deviations(params, _family_params(spec, method))


def _family_params(spec: dict[str, Any], method: str) -> dict[str, Any]:
    try:
        from experiments.pipelines import family_of
        from experiments.spec import ModelSpec

        family = family_of(ModelSpec.model_validate(spec.get("model") or {}))
    except Exception:  # a spec stored by another version: no family, no official fixed params
        return {}
    support = family.methods.get(method) if family else None
    return dict(support.extra) if support else {}


# ---------------------------------------------------------------------------------------------
# Rendering


def _cells_text(rc: RowComparison, col: str) -> tuple[str, str, str, str]:
    """(published, ours [ci], diff, in-CI) texts for one cell."""
    cell = rc.cells.get(col)
    if cell is None:
        return "", "", "", ""
    fmt = COLUMNS[col][1]
    pub = fmt.format(cell.published) + ("*" if cell.derived else "")
    if _missing(cell.ours):
        return pub, "-" if cell.measured else "not measured", "", ""
    ours = fmt.format(cell.ours)
    if not (_missing(cell.ci_low) or _missing(cell.ci_high)):
        ours += f" [{fmt.format(cell.ci_low)}, {fmt.format(cell.ci_high)}]"
    diff = _signed(fmt, cell.diff)
    inside = {True: "yes", False: "no", None: ""}[cell.inside_ci]
    return pub, ours, diff, inside


def _records(cmp: Comparison) -> tuple[list[str], list[list[str]]]:
    head = ["published row", "our point", "metric", "published", "ours [95% CI]", "ours - published", "in CI"]
    body = []
    for rc in cmp.rows:
        first = True
        cols = [c for c in COLUMNS if c in rc.cells] or [None]
        for col in cols:
            texts = _cells_text(rc, col) if col else ("", "", "", "")
            ours_point = (rc.point_label or rc.point_id or "-") if rc.point_id else f"- ({rc.how})"
            body.append([rc.row.label if first else "", ours_point if first else "",
                         COLUMNS[col][0] if col else "-", *texts])
            first = False
    return head, body


def format_text(cmp: Comparison) -> str:
    head, body = _records(cmp)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(head)]
    lines = [f"{cmp.run_name} vs {cmp.table.title}", f"source: {cmp.table.citation}", ""]
    lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in body]
    lines += ["", "settings that differ (the numbers are comparable only as far as these agree):"]
    lines += [f"  - {m}" for m in cmp.mismatches] or ["  (none)"]
    lines += ["", *[f"note: {n}" for n in cmp.notes]]
    return "\n".join(lines)


def format_markdown(cmp: Comparison) -> str:
    head, body = _records(cmp)
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = [f"**{esc(cmp.run_name)} vs {esc(cmp.table.title)}** (source: {esc(cmp.table.citation)})", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in body]
    lines += ["", "Settings that differ:", ""] + [f"- {esc(m)}" for m in cmp.mismatches]
    lines += [""] + [f"_{esc(n)}_  " for n in cmp.notes]
    return "\n".join(lines) + "\n"


def format_latex(cmp: Comparison) -> str:
    head, body = _records(cmp)
    tex = latex_text
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{ll l rrrc}", r"\toprule",
             " & ".join(tex(h) for h in head) + r" \\", r"\midrule"]
    lines += [" & ".join(tex(c) for c in r) + r" \\" for r in body]
    lines += [r"\bottomrule", r"\end{tabular}",
              r"\caption{" + tex(f"{cmp.run_name} vs {cmp.table.title} ({cmp.table.citation}). Differing settings: "
                                 + "; ".join(cmp.mismatches) + ".") + "}", r"\end{table}"]
    return "\n".join(lines) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}"}


def latex_text(s: str) -> str:
    """LaTeX-escaped text; "2.14x" becomes "2.14$\\times$"."""
    import re

    return re.sub(r"(\d)x\b", r"\1$\\times$", "".join(_TEX.get(ch, ch) for ch in s))


def published_points(cmp: Comparison) -> list[dict[str, Any]]:
    """Published rows of the run's model as points for the Pareto overlay (hollow markers)."""
    out = []
    for rc in cmp.rows:
        if rc.row.method == "baseline" or rc.how.startswith("not compared"):
            continue
        vals = {col: cell.published for col, cell in rc.cells.items()}
        if "speedup" in vals:
            out.append({"label": rc.row.label, "citation": cmp.table.short, **vals})
    return out


def describe_table(table: PaperTable) -> str:
    lines = [f"{table.name}: {table.title}", f"  citation: {table.citation}",
             f"  source:   {table.source.describe()}", f"  model:    {table.model} ({table.model_id or '-'})",
             f"  settings: {table.settings or 'not stated'}", f"  prompts:  {table.prompts or 'not stated'}",
             f"  hardware: {table.hardware or 'not stated'}",
             "  protocol: " + ", ".join(f"{k}={table.protocol.get(k) if table.protocol.get(k) is not None else '?'}"
                                        for k in PROTOCOL_FIELDS)]
    for key, where in table.sources.items():
        lines.append(f"  {key} = {table.settings[key]}: {where}")
    if table.unstated:
        lines.append(f"  not stated by the source: {', '.join(table.unstated)}")
    if table.source.note:
        lines.append(f"  note:     {' '.join(table.source.note.split())}")
    lines.append("")
    for r in table.rows:
        nums = ", ".join(f"{k}={v:g}" for k, v in r.numbers().items())
        extra = f" {r.params}" if r.params else ""
        model = f" [{r.model_id}]" if r.model_id else ""
        lines.append(f"  {r.label:22s} {r.method:28s}{extra}{model}: {nums}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def _same_model(a: str | None, b: str | None) -> bool:
    return bool(a and b) and a.lower() == b.lower()


def _model_source(spec: dict[str, Any]) -> str:
    m = spec.get("model") or {}
    return m.get("path") or (f"tiny:{m['tiny']}" if m.get("tiny") else "") or str(m.get("reference") or "unknown")


def _params(rec: dict[str, Any]) -> dict[str, Any]:
    import json

    p = rec.get("params")
    return json.loads(p) if isinstance(p, str) else dict(p or {})


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _signed(fmt: str, v: float | None) -> str:
    if v is None:
        return ""
    text = fmt.format(abs(v))
    return ("+" if v >= 0 else "-") + text


# ---------------------------------------------------------------------------------------------
# A run directory


def compare_run_dir(run_dir, paper: str, matches: dict[str, str] | None = None):
    """(Comparison, points, items) for a run directory and a published table name or file."""
    from repro.aggregate import tables
    from repro.papers import get_paper
    from repro.store import Store

    table = get_paper(paper)
    store = Store.open_existing(run_dir)
    try:
        points, items = tables(store)
        meta = store.meta()
        methods = {g["point_id"]: g["method"] for g in store.generations(role="cached")}
    finally:
        store.close()
    spec = meta.get("spec") or {}
    cmp = compare(table, points, items, spec, methods, matches, run_protocol=run_protocol(spec),
                  prompt_set=meta.get("prompt_set") or spec.get("prompt_set"))
    return cmp, points, items


def run_protocol(spec: dict[str, Any]) -> dict[str, Any]:
    """The metric protocol a run was scored with, as the fields of a published table's ``protocol``."""
    from repro.aggregate import run_protocol as protocol_of

    proto = protocol_of(spec).record()
    proto["lpips_net"] = (spec.get("metrics") or {}).get("lpips_net", "alex")
    return proto


def write_comparison(cmp: Comparison, points, items, out_dir) -> list:
    """NAME.md and NAME.tex, and the run's Pareto plots with the published points overlaid, under out_dir."""
    from pathlib import Path

    from experiments.media import write_text

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for ext, render in (("md", format_markdown), ("tex", format_latex)):
        path = out_dir / f"{cmp.table.name}.{ext}"
        write_text(path, render(cmp))
        written.append(path)
    published = published_points(cmp)
    if published:
        from paper_figures.pareto_plot import pareto_plots

        overlay = points.copy()
        overlay.attrs = dict(points.attrs)
        overlay.attrs["published"] = published
        for fig in pareto_plots(overlay, out_dir / cmp.table.name, formats=("png", "pdf")):
            written += list(fig.files)
    return written
