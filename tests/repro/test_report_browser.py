"""`repro figures` -> index.html in a real headless Chromium (Debian's `chromium`, driven by Playwright).

The page loads from disk with no console error and no failed request, sorting a column reorders
the rows, both videos of a pair play in step, the image view's wipe and flicker work, and a
screenshot is saved (pytest's tmp dir; its path is printed).
"""

from __future__ import annotations

import os
import shutil

import pytest
from click.testing import CliRunner

from experiments.spec import Spec
from repro.cli import main
from repro.sweep import run_sweep
from tests.conftest import tiny_spec_dict

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _browser():
    missing = []
    if CHROMIUM is None:
        missing.append("the chromium package (.ci/run installs it)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package (dev extra)")
    if missing:
        if os.environ.get("CI"):
            pytest.fail("browser test cannot run in CI: missing " + " and ".join(missing))
        pytest.skip("missing " + " and ".join(missing))
    from playwright.sync_api import sync_playwright

    return sync_playwright


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    spec = Spec.model_validate(tiny_spec_dict(
        root / "run", prompts=["a red fox in snow"],
        methods=[{"name": "first_block_cache", "sweep": {"threshold": [0.0, 0.2, 0.4]}}],
        generation={"height": 16, "width": 16, "num_frames": 17, "num_inference_steps": 4, "guidance_scale": 5.0,
                    "max_sequence_length": 16},
        output={"dir": str(root / "run"), "mp4": True}))
    assert run_sweep(spec).exit_code == 0
    out = CliRunner().invoke(main, ["figures", str(spec.run_dir), "--format", "png"])
    assert out.exit_code == 0, out.output
    return spec, spec.run_dir / "figures" / "index.html"


def _open(browser, page_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
    page.goto(page_path.as_uri(), wait_until="load")
    return page, problems


def _column(page, index: int) -> list[str]:
    return page.eval_on_selector_all("#points-table tbody tr", f"rs => rs.map(r => r.cells[{index}].dataset.v)")


def test_page_sorts_and_plays_pairs_in_step(report, tmp_path):
    spec, page_path = report
    sync_playwright = _browser()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--mute-audio",
                                                                     "--autoplay-policy=no-user-gesture-required"])
        try:
            page, problems = _open(browser, page_path)
            assert spec.spec_hash() in page.inner_text("#provenance")
            # sorting: speedup (column 2) descending, then ascending; the row order follows
            def order():
                return page.eval_on_selector_all("#points-table tbody tr", "rs => rs.map(r => r.dataset.point)")

            cells = dict(zip(order(), _column(page, 2)))
            speedup = {p: float(v) for p, v in cells.items() if v != ""}
            empty = sorted(p for p, v in cells.items() if v == "")  # no value: last either way
            assert len(set(speedup.values())) > 1
            header = page.locator("#points-table th").nth(2)
            header.click()
            ascending = order()
            assert ascending[:len(speedup)] == sorted(speedup, key=speedup.get)
            assert sorted(ascending[len(speedup):]) == empty
            header.click()
            descending = order()
            assert descending[:len(speedup)] == sorted(speedup, key=speedup.get, reverse=True)
            assert descending != ascending
            assert page.get_attribute("#points-table th:nth-child(3)", "aria-sort") == "descending"

            # a video pair: one button plays both, they stay in step, pause stops both
            pair = page.locator(".video-pair").first
            pair.locator("video").nth(0).evaluate("v => new Promise(ok => v.readyState >= 2 ? ok() : "
                                                  "v.addEventListener('loadeddata', () => ok()))")
            times = ("p => { const v = p.querySelectorAll('video'); return [v[0].currentTime, v[1].currentTime, "
                     "v[0].paused, v[1].paused, v[0].duration, p.dataset.state]; }")
            pair.locator(".play").click()
            page.wait_for_function("p => p.querySelector('video').currentTime > 0.15",
                                   arg=pair.element_handle(), timeout=20000)
            in_step = 0
            for _ in range(40):  # samples at a loop's wrap-around (either clip at its end) say nothing of step
                a, b, pa, pb, duration, state = pair.evaluate(times)
                assert state == "playing"
                if 0.05 < min(a, b) and max(a, b) < duration - 0.1:
                    assert not (pa or pb) and abs(a - b) < 0.1, (a, b)
                    in_step += 1
                if in_step == 4:
                    break
                page.wait_for_timeout(60)
            assert in_step == 4
            pair.locator(".play").click()
            a, b, pa, pb, _, state = pair.evaluate(times)
            assert pa and pb and abs(a - b) < 0.05 and state == "paused"
            assert pair.locator(".play").inner_text() == "play both"
            # a click while the browser has marked the lead paused at its clip's end, before the "ended" handler
            # restarts the loop, still pauses both: the button follows the pair's state, not the lead's
            pair.locator(".play").click()
            page.wait_for_function("p => !p.querySelectorAll('video')[1].paused", arg=pair.element_handle(),
                                   timeout=20000)
            pair.evaluate("p => p.querySelector('video').pause()")
            pair.locator(".play").click()
            a, b, pa, pb, _, state = pair.evaluate(times)
            assert pa and pb and state == "paused", (pa, pb, state)
            assert pair.get_attribute("data-error") is None

            shot = tmp_path / "index.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            print(f"screenshot: {shot}")
            assert problems == []
        finally:
            browser.close()


def test_image_view_wipes_and_flickers(report, tmp_path):
    """The same outputs without MP4s: frames in a wipe/flicker view with a frame picker."""
    import paper_figures
    from repro.aggregate import tables
    from repro.store import Store

    spec, _ = report
    points, items = tables(Store(spec.run_dir))
    items["mp4"] = None
    page_path = paper_figures.write_html_report(points, items, [], spec.run_dir / "figures-frames")
    sync_playwright = _browser()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page, problems = _open(browser, page_path)
            pair = page.locator(".image-pair").first
            assert page.locator(".video-pair").count() == 0
            loaded = pair.evaluate("p => Array.from(p.querySelectorAll('img')).every(i => i.complete && i.naturalWidth > 0)")
            assert loaded
            pair.locator(".wipe").fill("20")
            assert pair.evaluate("p => p.querySelector('img.over').style.clipPath") == "inset(0px 80% 0px 0px)"
            pair.locator(".flicker").click()
            seen = set()
            for _ in range(8):
                seen.add(pair.evaluate("p => p.querySelector('img.over').style.clipPath"))
                page.wait_for_timeout(150)
            assert {"none", "inset(0px 100% 0px 0px)"} <= seen  # alternates between baseline and cached
            pair.locator(".frame").fill("16")
            assert pair.evaluate("p => p.querySelector('img.over').src").endswith("frame_00016.png")
            page.wait_for_timeout(100)
            assert problems == []
            page.screenshot(path=str(tmp_path / "frames.png"), full_page=True)
        finally:
            browser.close()
