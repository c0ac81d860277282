"""`index.html`: the whole sweep on one self-contained page that works from disk with no network.

Everything the page needs is inside it (data as inline JSON, CSS, script, the figures as data
URIs) except the outputs themselves: videos and frames are referenced by relative paths, so the
page works where the run directory is copied or pulled and stays small (frames shown from a
lossless video file, which browsers cannot play, are written as PNGs under ``frames/`` beside it). Sections: provenance,
the sortable points table (labels for random-weight metrics and suspect timings), the Pareto
plots, baseline-vs-cached players (videos played in step; images with a slider and a flicker
view) and the skip heat map, then every other figure.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from paper_figures import contract as c
from experiments.media import FRAME_PATTERN
from paper_figures.figure import Figure, atomic_path
from paper_figures.frames import Frame, output_frames

HTML_NAME = "index.html"
PAIRS_PER_POINT = 2  # baseline-vs-cached pairs shown per point
MAX_PAIRS = 24
EMBED_LIMIT = 2_000_000  # bytes: a figure larger than this is linked, not embedded


def _columns(points: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(column, title, kind) of the points table: the run's quality columns only (metrics.registry order)."""
    quality = [(m, m, "num") for m in c.QUALITY if m in points.columns]
    return [("point", "point", "text"), ("method", "method", "text"), ("speedup", "speedup", "num"),
            ("compute_fraction", "compute fraction", "num"), *quality, ("latency_s", "latency (s)", "num"),
            ("peak_memory_mb", "peak memory (MB)", "num"), ("n_items", "items", "num"), ("status", "status", "text")]


def _is_reference_value(col: str) -> bool:
    """The baseline's own value of this column is a reference by definition, not a measurement."""
    return col in ("speedup", "compute_fraction") or col in c.METRICS


def write_html_report(points: pd.DataFrame, items: pd.DataFrame | None, figures: Sequence[Figure],
                      out_dir: Path | str, provenance: dict[str, Any] | None = None) -> Path:
    """Write `out_dir/index.html` (to a temporary name, then renamed); returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = items if items is not None else pd.DataFrame()
    provenance = provenance if provenance is not None else dict(points.attrs.get("provenance") or {})
    title = c.sweep_title(points)
    by_stem = {f.path_stem: f for f in figures}
    pareto = [f for f in figures if f.path_stem.startswith("pareto_")]
    heatmap = [by_stem["skip_heatmap"]] if "skip_heatmap" in by_stem else []
    curves = [by_stem["frame_curves"]] if "frame_curves" in by_stem else []
    others = [f for f in figures if f not in pareto and f not in heatmap and f not in curves and f.kind == "figure"]
    body = [
        f"<h1>{_e(title)}</h1>",
        _provenance(provenance, items),
        "<h2 id='points'>Points</h2>", _notes(points), _points_table(points),
        "<h2 id='pareto'>Pareto fronts</h2>", _figures(pareto, out) or "<p>No Pareto plot (no quality metric).</p>",
        "<h2 id='compare'>Baseline vs cached</h2>", _pairs(points, items, out),
        "<h2 id='skips'>Skip heat map</h2>", _figures(heatmap, out) or "<p>No per-step data.</p>",
    ]
    if curves:  # videos: where in the clip each point loses quality, beside its skip pattern over the steps
        body += ["<h2 id='frames'>Quality over the clip</h2>", _figures(curves, out)]
    if others:
        body += ["<h2 id='more'>More figures</h2>", _figures(others, out)]
    page = _PAGE.format(title=_e(title), css=_CSS, body="\n".join(body), script=_SCRIPT,
                        data=_json_for_script({"provenance": provenance}))
    path = out / HTML_NAME
    tmp = out / f".tmp-{HTML_NAME}"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


# -- sections ----------------------------------------------------------------------------------------


def _provenance(prov: dict[str, Any], items: pd.DataFrame) -> str:
    devices = sorted({c.text(d) for d in items.get("device", pd.Series(dtype=object)) if c.text(d)})
    env = prov.get("environment") or {}
    rows = [("spec", prov.get("spec_name")), ("spec hash", prov.get("spec_hash")),
            ("code revision", env.get("code_revision")), ("device", ", ".join(devices) or None),
            ("GPUs", ", ".join(env.get("gpus") or []) or None), ("python", env.get("python")),
            ("platform", env.get("platform"))]
    versions = {**(prov.get("versions") or {}), **{k: v for k, v in (env.get("libraries") or {}).items() if v}}
    rows += [(f"version: {k}", v) for k, v in sorted(versions.items())]
    cells = "".join(f"<tr><th>{_e(k)}</th><td><code>{_e(c.text(v))}</code></td></tr>" for k, v in rows
                    if c.text(v))
    return f"<details open id='provenance'><summary>Provenance</summary><table class='kv'>{cells}</table></details>"


def _notes(points: pd.DataFrame) -> str:
    notes = []
    random = [m for m in c.QUALITY if m in points.columns and c.is_random_weights(points, m)]
    if random:
        notes.append(f"<p class='warn'><span class='badge rw'>random weights</span> {_e(', '.join(random))} were "
                     f"computed with random-weight networks: not comparable to published scores.</p>")
    suspect = c.flag(points, "timing_suspect")
    if suspect.any():  # each point's own reasons (beyond its Amdahl bound, items spread ...) are on its badge
        reasons = [c.text(r) for r in points.loc[suspect, "timing_suspect_reason"]] \
            if "timing_suspect_reason" in points.columns else []
        kinds = sorted({_reason_kind(r) for r in reasons if r})
        notes.append(f"<p class='warn'><span class='badge ts'>timing suspect</span> {int(suspect.sum())} point(s) "
                     f"whose speedup is not to be trusted as measured ({_e('; '.join(kinds) or 'see each badge')}); "
                     f"hover a badge for the point's reason.</p>")
    if "psnr" in points.columns:
        notes.append("<p class='note'>PSNR of outputs identical to their baseline is infinite per item; means cap "
                     "it at 100 dB.</p>")
    notes.append("<p class='note'>Click a column title to sort.</p>")
    return "".join(notes)


def _reason_kind(reason: str) -> str:
    """A timing-suspect reason in a few words (repro.aggregate.timing_suspect_reasons says the rest)."""
    kinds = []
    if "Amdahl bound" in reason:
        kinds.append("beyond what its compute fraction allows")
    if "spread" in reason:
        kinds.append("per-item speedups spread widely")
    return ", ".join(kinds) or reason


def _points_table(points: pd.DataFrame) -> str:
    frame = c.sort_points(points)
    columns = _columns(points)
    random = {m for m in c.QUALITY if m in points.columns and c.is_random_weights(points, m)}
    front_metric = next((m for m in c.METRICS if f"on_front_{m}" in frame.columns), None)
    suspect = c.flag(frame, "timing_suspect")
    front = c.flag(frame, f"on_front_{front_metric}") if front_metric else c.flag(frame, "")
    tuned = c.tune_role(frame)
    badge = " <span class='badge rw'>random weights</span>"

    def title_of(col: str, title: str) -> str:
        return c.metric_label(points, col).replace(c.RANDOM_WEIGHTS_TAG, "").strip() if col in c.QUALITY else title

    head = "".join(f"<th data-kind='{kind}' tabindex='0'>{_e(title_of(col, title))}{badge if col in random else ''}"
                   f"</th>" for col, title, kind in columns)
    rows = []
    for (_, r), is_suspect, on_front, role in zip(frame.iterrows(), suspect, front, tuned):
        cells = []
        for col, _, kind in columns:
            if col == "point":
                value = c.text(r.get("label")) or c.text(r.get("point_id"))
                extra = " <span class='badge ts' title='{}'>timing suspect</span>".format(
                    _e(c.text(r.get("timing_suspect_reason")))) if is_suspect else ""
                if on_front:
                    extra += (f" <span class='badge front' title='on the {_e(front_metric)} Pareto front'>"
                              f"front</span>")
                if role == "chosen":
                    extra += " <span class='badge tune' title='the setting repro tune chose'>chosen by tune</span>"
                elif role == "explored":
                    extra += " <span class='badge explored' title='a setting repro tune explored'>explored</span>"
                cells.append(f"<td data-v='{_e(value)}'>{_e(value)}{extra}</td>")
            elif kind == "num":
                v = pd.to_numeric(pd.Series([r.get(col)]), errors="coerce").iloc[0]
                sort_v = "" if pd.isna(v) else ("1e308" if v == math.inf else repr(float(v)))
                # the baseline's own speedup and quality are the reference values, not measurements
                shown = "reference" if c.text(r.get("method")) == c.BASELINE and _is_reference_value(col) \
                    else _fmt(col, v, r)
                cells.append(f"<td class='num' data-v='{sort_v}'>{_e(shown)}</td>")
            else:
                value = c.text(r.get(col))
                cells.append(f"<td data-v='{_e(value)}'>{_e(value)}</td>")
        rows.append(f"<tr data-point='{_e(c.text(r.get('point_id')))}'>{''.join(cells)}</tr>")
    return f"<table id='points-table' class='sortable'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _fmt(col: str, v: float, row: pd.Series) -> str:
    if pd.isna(v):
        return "–"
    if v == math.inf:
        return "∞ (identical)"
    if col == "speedup":
        lo, hi = row.get("speedup_ci_low"), row.get("speedup_ci_high")
        ci = f" [{lo:.2f}, {hi:.2f}]" if isinstance(lo, float) and isinstance(hi, float) and \
            not (math.isnan(lo) or math.isnan(hi)) and lo != hi else ""
        return f"{v:.2f}x{ci}"
    if col in ("n_items",):
        return str(int(v))
    if col in ("psnr", "peak_memory_mb"):
        return f"{v:.2f}"
    return f"{v:.3f}"


def _figures(figures: Sequence[Figure], out: Path) -> str:
    parts = []
    for f in figures:
        src = _figure_src(f, out)
        if src is None:
            continue
        parts.append(f"<figure id='fig-{_e(f.path_stem)}'><img alt='{_e(f.path_stem)}' src='{src}'>"
                     f"<figcaption>{_e(f.caption)}</figcaption></figure>")
    return "".join(parts)


def _figure_src(f: Figure, out: Path) -> str | None:
    for suffix, mime in (("png", "image/png"), ("svg", "image/svg+xml")):
        path = f.file(suffix)
        if path is not None and path.is_file():
            if path.stat().st_size <= EMBED_LIMIT:
                return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"
            return _e(_rel(path, out))
    return None


def _pairs(points: pd.DataFrame, items: pd.DataFrame, out: Path) -> str:
    if items.empty or "point_id" not in items:
        return "<p>No outputs to compare.</p>"
    ok = items[c.status_of(items) == "ok"]
    is_base = ok["method"].map(c.text) == c.BASELINE
    by_key = {c.text(r.get("key")): r for r in ok.to_dict("records") if c.text(r.get("key"))}
    base = c.baseline_row(points)
    base_pid = c.text(base.get("point_id")) if base is not None else c.BASELINE
    by_item = {(int(r["prompt_index"]), int(r["seed"])): r for r in ok[is_base].to_dict("records")
               if c.text(r.get("point_id")) == base_pid}
    names = {c.text(r.get("point_id")): c.point_name(r) for _, r in points.iterrows()}
    cached = ok[~is_base]
    blocks = []
    for pid in [c.text(p) for p in c.cached_points(points)["point_id"]]:
        rows = cached[cached["point_id"].map(c.text) == pid].sort_values(["prompt_index", "seed"])
        for r in rows.head(PAIRS_PER_POINT).to_dict("records"):
            # the quality reference the store names, else the unoptimized baseline of the same prompt and seed
            ref = by_key.get(c.text(r.get("quality_baseline_key"))) or by_item.get((int(r["prompt_index"]),
                                                                                   int(r["seed"])))
            if ref is not None and len(blocks) < MAX_PAIRS:
                blocks.append(_pair(len(blocks), names.get(pid, pid), r, ref, out))
    return "".join(blocks) or "<p>No finished baseline/cached pair.</p>"


def _pair(i: int, name: str, cached: dict[str, Any], baseline: dict[str, Any], out: Path) -> str:
    caption = (f"<p class='pair-title'><b>{_e(name)}</b> · prompt {int(cached['prompt_index'])} "
               f"“{_e(c.text(cached.get('prompt')))}” · seed {int(cached['seed'])} · "
               f"speedup {_e(_fmt('speedup', float(cached.get('speedup', math.nan)), pd.Series(dtype=object)))}</p>")
    if c.text(cached.get("mp4")) and c.text(baseline.get("mp4")) and Path(cached["mp4"]).is_file() \
            and Path(baseline["mp4"]).is_file():
        return (f"<div class='pair video-pair' id='pair-{i}' data-state='paused'>{caption}<div class='side'>"
                f"<figure><video muted playsinline preload='auto' src='{_e(_rel(Path(baseline['mp4']), out))}'></video>"
                f"<figcaption>baseline</figcaption></figure>"
                f"<figure><video muted playsinline preload='auto' src='{_e(_rel(Path(cached['mp4']), out))}'></video>"
                f"<figcaption>cached</figcaption></figure></div>"
                f"<div class='controls'><button class='play'>play both</button> "
                f"<input class='seek' type='range' min='0' max='1000' value='0' aria-label='position'> "
                f"<label><input class='loop' type='checkbox' checked> loop</label></div></div>")
    frames_c, frames_b = output_frames(cached.get("frames_dir")), output_frames(baseline.get("frames_dir"))
    if not frames_c or not frames_b:
        return f"<div class='pair missing'>{caption}<p>outputs missing on disk</p></div>"
    n = min(len(frames_c), len(frames_b))
    frames_c, frames_b = [_frame_file(f, out) for f in frames_c[:n]], [_frame_file(f, out) for f in frames_b[:n]]
    srcs = _json_attr({"b": [_rel(p, out) for p in frames_b], "c": [_rel(p, out) for p in frames_c]})
    frame_picker = (f" <label>frame <input class='frame' type='range' min='0' max='{n - 1}' value='0'></label>"
                    if n > 1 else "")
    return (f"<div class='pair image-pair' id='pair-{i}' data-frames='{srcs}'>{caption}"
            f"<div class='compare'><img class='under' alt='cached' src='{_e(_rel(frames_c[0], out))}'>"
            f"<img class='over' alt='baseline' src='{_e(_rel(frames_b[0], out))}'><div class='divider'></div></div>"
            f"<div class='controls'><label>baseline ◀ <input class='wipe' type='range' min='0' max='100' value='50'>"
            f" ▶ cached</label> <button class='flicker'>flicker</button>{frame_picker}</div></div>")


# -- helpers -----------------------------------------------------------------------------------------


def _frame_file(frame: Frame, out: Path) -> Path:
    """A PNG of the frame for an <img>: its own file, or one written under out/frames/ from a video file."""
    if frame.file is not None:
        return frame.file
    path = out / "frames" / frame.folder.name / FRAME_PATTERN.format(frame.index)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            frame.image().save(tmp, format="PNG", compress_level=1)
    return path


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), base.resolve())).as_posix()


def _e(s: Any) -> str:
    return html.escape(c.text(s), quote=True)


def _json_attr(obj: Any) -> str:
    return html.escape(json.dumps(obj), quote=True)


def _json_for_script(obj: Any) -> str:
    # inside <script>, "</" would end the element; JSON allows "<\/"
    return json.dumps(obj, default=str).replace("</", "<\\/")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>{css}</style>
</head><body>
<nav><a href="#points">points</a> · <a href="#pareto">Pareto</a> · <a href="#compare">baseline vs cached</a> ·
<a href="#skips">skips</a> · <a href="#provenance">provenance</a></nav>
{body}
<script type="application/json" id="report-data">{data}</script>
<script>{script}</script>
</body></html>
"""

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
nav{font-size:13px;margin-bottom:1em}h1{font-size:22px}h2{font-size:18px;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}table.sortable th{cursor:pointer;user-select:none;background:#f6f6f6}
th[aria-sort=ascending]::after{content:" ▲"}th[aria-sort=descending]::after{content:" ▼"}
table.kv th{background:none;font-weight:600}.badge{font-size:11px;padding:1px 5px;border-radius:3px;white-space:nowrap}
.badge.rw{background:#fde2b8;color:#7a4500}.badge.ts{background:#f8c9c9;color:#8a0000}.badge.front{background:#d3ecd5;color:#1d5b22}
.badge.tune{background:#1f3b73;color:#fff}.badge.explored{background:#e4e8f0;color:#39445a}
p.warn{background:#fff6e5;padding:4px 8px;border-left:3px solid #e0a030}p.note{color:#666;font-size:12px}
figure{margin:.5em 0}figure img{max-width:min(100%,760px)}figcaption{font-size:12px;color:#555}
.pair{border:1px solid #e4e4e4;padding:8px;margin:10px 0;border-radius:4px}.pair-title{margin:0 0 6px}
.side{display:flex;gap:12px}.side figure{margin:0}.side video{width:320px;image-rendering:pixelated;background:#000}
.compare{position:relative;display:inline-block;line-height:0}.compare img{width:320px;image-rendering:pixelated}
.compare img.over{position:absolute;left:0;top:0;clip-path:inset(0 50% 0 0)}
.compare .divider{position:absolute;top:0;bottom:0;left:50%;width:2px;background:#fff;box-shadow:0 0 2px #000}
.controls{margin-top:6px;font-size:13px}
"""

_SCRIPT = r"""
(function () {
  "use strict";
  // sortable points table: numbers by value (empty last), text by locale
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      function sort() {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var num = th.dataset.kind === "num", body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
          if (num) {
            if (x === "" || y === "") { return (x === "") - (y === ""); }
            return asc ? parseFloat(x) - parseFloat(y) : parseFloat(y) - parseFloat(x);
          }
          return asc ? x.localeCompare(y) : y.localeCompare(x);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (e) { if (e.key === "Enter") { sort(); } });
    });
  });

  // video pairs: one control drives both; the cached video follows the baseline's clock. What the button does
  // follows the pair's state (data-state), never lead.paused: at a clip's end the browser marks the video paused
  // before its "ended" handler restarts it, and a click in that gap must still pause both
  document.querySelectorAll(".video-pair").forEach(function (pair) {
    var v = pair.querySelectorAll("video"), lead = v[0], follow = v[1];
    var button = pair.querySelector(".play"), seek = pair.querySelector(".seek"), loop = pair.querySelector(".loop");
    function playing() { return pair.dataset.state === "playing"; }
    function align() {
      if (Math.abs(follow.currentTime - lead.currentTime) > 0.03) { follow.currentTime = lead.currentTime; }
    }
    function tick() {
      if (playing() && !lead.paused) {
        align();
        if (lead.duration) { seek.value = Math.round(1000 * lead.currentTime / lead.duration); }
        requestAnimationFrame(tick);
      }
    }
    function play() {
      pair.dataset.state = "playing";
      button.textContent = "pause both";
      follow.currentTime = lead.currentTime;
      Promise.all([lead.play(), follow.play()]).then(tick)
        .catch(function (err) {
          // a pause (the other video ending, a click) cutting a pending play() short is not an error
          if (err && err.name === "AbortError") { return; }
          pause(); pair.dataset.error = String(err);
        });
    }
    function pause() {
      pair.dataset.state = "paused";
      lead.pause(); follow.pause(); align(); button.textContent = "play both";
    }
    button.addEventListener("click", function () { if (playing()) { pause(); } else { play(); } });
    seek.addEventListener("input", function () {
      if (lead.duration) { lead.currentTime = follow.currentTime = lead.duration * seek.value / 1000; }
    });
    lead.addEventListener("ended", function () {
      follow.pause();
      if (playing() && loop.checked) { lead.currentTime = follow.currentTime = 0; play(); } else { pause(); }
    });
    follow.addEventListener("ended", function () { if (!lead.paused) { align(); } });
  });

  // image pairs: a wipe slider over the two, a flicker view, and a frame picker for frame folders
  document.querySelectorAll(".image-pair").forEach(function (pair) {
    var over = pair.querySelector("img.over"), under = pair.querySelector("img.under");
    var wipe = pair.querySelector(".wipe"), divider = pair.querySelector(".divider");
    var flick = pair.querySelector(".flicker"), frame = pair.querySelector(".frame");
    var frames = JSON.parse(pair.dataset.frames), timer = null, shown = true;
    function setWipe() {
      over.style.clipPath = "inset(0 " + (100 - wipe.value) + "% 0 0)";
      divider.style.left = wipe.value + "%";
    }
    wipe.addEventListener("input", setWipe);
    flick.addEventListener("click", function () {
      if (timer) { clearInterval(timer); timer = null; flick.textContent = "flicker"; setWipe(); return; }
      flick.textContent = "stop flicker";
      timer = setInterval(function () { shown = !shown; over.style.clipPath = shown ? "none" : "inset(0 100% 0 0)"; }, 500);
    });
    if (frame) {
      frame.addEventListener("input", function () { over.src = frames.b[frame.value]; under.src = frames.c[frame.value]; });
    }
    setWipe();
  });
})();
"""
