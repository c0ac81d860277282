"""index.html without a browser: self-contained, relative media that resolve, labels, escaping, atomic write."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd

from paper_figures import make_all, write_html_report

from .synthetic import make_items, make_points


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.scripts: list[dict] = []
        self.rows: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for name in ("src", "href", "poster", "data"):
            if a.get(name):
                self.refs.append((tag, name, a[name]))
        if tag == "tr" and "data-point" in a:
            self.rows.append(a["data-point"])
        if a.get("data-frames"):
            for srcs in json.loads(a["data-frames"]).values():
                self.refs += [(tag, "data-frames", s) for s in srcs]


def _parse(path: Path) -> _Refs:
    p = _Refs()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def test_self_contained_with_relative_media_that_resolve(video_run):
    page = video_run.out / "index.html"
    text = page.read_text(encoding="utf-8")
    refs = _parse(page).refs
    assert refs
    for tag, attr, ref in refs:
        assert not re.match(r"^[a-z]+://", ref) and not ref.startswith("//"), (tag, ref)  # nothing from a network
        if ref.startswith("data:") or ref.startswith("#"):
            continue
        assert not Path(ref).is_absolute(), ref
        assert (page.parent / ref).resolve().is_file(), ref  # a relative path that works from the page's folder
    assert "@import" not in text and "<link rel=\"stylesheet\"" not in text
    # the Pareto plots and the heat map are inside the page
    assert re.search(r"id='fig-pareto_lpips'><img alt='pareto_lpips' src='data:image/png;base64,", text)
    assert "id='fig-skip_heatmap'><img alt='skip_heatmap' src='data:image/png;base64," in text
    assert not list(video_run.out.glob(".tmp-*"))


def test_every_point_is_a_row_with_its_labels(video_run):
    page = video_run.out / "index.html"
    rows = _parse(page).rows
    assert sorted(rows) == sorted(video_run.points["point_id"].astype(str))
    text = page.read_text(encoding="utf-8")
    assert "<span class='badge rw'>random weights</span>" in text  # the synthetic LPIPS is random-weight
    assert "timing suspect</span>" not in text


def test_timing_suspect_points_are_labelled_with_their_reason(image_run, tmp_path):
    points = image_run.points.copy()
    points.attrs = dict(image_run.points.attrs)
    flagged = points.index[points["method"] != "baseline"][0]
    points["timing_suspect"] = False
    points["timing_suspect_reason"] = ""
    points.loc[flagged, "timing_suspect"] = True
    points.loc[flagged, "timing_suspect_reason"] = "speedup 9.1x beyond the Amdahl bound 2.0x"
    page = write_html_report(points, image_run.items, image_run.figures, tmp_path)
    text = page.read_text(encoding="utf-8")
    assert text.count("<span class='badge ts' title='speedup 9.1x beyond the Amdahl bound 2.0x'>timing suspect") == 1
    assert "random weights</span>" not in text


def test_text_from_the_sweep_cannot_inject_markup(tmp_path):
    points = make_points(random_lpips=False, fbc=(0.1,), mag=())
    points.loc[points["method"] != "baseline", "label"] = "<script>alert(1)</script>"
    items = make_items(points, tmp_path / "media", kind="image", n_prompts=1, seeds=(0,), size=(16, 16))
    items["prompt"] = "</script><img src=x onerror=alert(1)>"
    points.attrs["provenance"] = {"spec_name": "a</script>b", "spec_hash": "abc"}
    page = write_html_report(points, items, [], tmp_path / "figs").read_text(encoding="utf-8")
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert page.count("</script>") == 2  # the data block and the page's own script
    data = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S).group(1)
    assert json.loads(data)["provenance"]["spec_name"] == "a</script>b"


def test_image_pairs_get_a_wipe_and_a_flicker_view(image_run):
    text = (image_run.out / "index.html").read_text(encoding="utf-8")
    assert text.count("class='pair image-pair'") >= 2 and "class='wipe'" in text and "class='flicker'" in text
    assert "<video" not in text  # no mp4 in an image sweep


def test_missing_media_and_empty_tables_still_give_a_page(tmp_path):
    points = make_points(random_lpips=False, fbc=(0.1,), mag=())
    items = make_items(points, tmp_path / "media", kind="image", n_prompts=1, seeds=(0,), size=(16, 16))
    items["frames_dir"] = str(tmp_path / "gone")
    text = write_html_report(points, items, [], tmp_path / "a").read_text(encoding="utf-8")
    assert "outputs missing on disk" in text
    text = write_html_report(points, pd.DataFrame(), [], tmp_path / "b").read_text(encoding="utf-8")
    assert "No outputs to compare" in text and "No Pareto plot" in text


def test_make_all_writes_it(tmp_path):
    points = make_points(random_lpips=False, fbc=(0.1, 0.2), mag=())
    items = make_items(points, tmp_path / "media", kind="image", n_prompts=1, seeds=(0,), size=(16, 16))
    make_all(points, items, [], tmp_path / "figs", formats=("png",))
    assert (tmp_path / "figs" / "index.html").is_file()
