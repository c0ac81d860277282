"""Plot content checks through the SVG text (matplotlib writes each text as a comment when fonts are paths)."""

from __future__ import annotations

import re

import numpy as np

from paper_figures.style import method_styles


def _svg_text(fig) -> str:
    svg = fig.file("svg").read_text(encoding="utf-8")
    return "\n".join(re.findall(r"<!-- (.*?) -->", svg, flags=re.S))


def test_random_weight_label_visible_in_figures(video_run):
    lpips = _svg_text(video_run.by_stem("pareto_lpips"))
    assert "[random weights]" in lpips
    assert "random weights" not in _svg_text(video_run.by_stem("pareto_psnr"))
    assert "random weights" in _svg_text(video_run.by_stem("grid_p0_s0"))  # grid labels show LPIPS
    for stem in ("pareto_lpips", "grid_p0_s0", "grid_video_p0_s0"):
        assert "random-weight" in video_run.by_stem(stem).caption


def test_pareto_content(video_run):
    text = _svg_text(video_run.by_stem("pareto_lpips"))
    assert "lower is better" in text and "speedup" in text
    for label in ("t=0.05", "t=0.2", "t=0.24 r=0.2", "baseline", "first_block_cache", "mag_cache", "Pareto front"):
        assert label in text, label
    assert "t=0.3" not in text  # the failed point is not drawn...
    assert "t=0.3" in video_run.by_stem("pareto_lpips").caption  # ...but named in the caption
    assert "higher is better" in _svg_text(video_run.by_stem("pareto_psnr"))
    # Baseline PSNR is inf: no star position, an explicit note instead.
    assert "identical" in _svg_text(video_run.by_stem("pareto_psnr"))


def test_other_figures_content(video_run):
    heat = _svg_text(video_run.by_stem("skip_heatmap"))
    assert "blocks computed" in heat and "denoising step" in heat and "mag_cache t=0.06 r=0.2" in heat
    times = _svg_text(video_run.by_stem("time_breakdown"))
    for part in ("text encode", "transformer (denoise loop)", "rest of the denoise loop", "VAE decode", "other",
                 "baseline"):
        assert part in times
    mag = _svg_text(video_run.by_stem("mag_ratios"))
    assert "cond (used)" in mag and "uncond" in mag


def test_method_styles_are_distinct_and_stable():
    styles = method_styles(["mag_cache", "first_block_cache", "new_cache", "other_cache", "baseline"])
    assert "baseline" not in styles
    looks = {(s.color, s.marker, s.linestyle) for s in styles.values()}
    assert len(looks) == 4
    assert len({s.marker for s in styles.values()}) == 4 and len({s.color for s in styles.values()}) == 4
    # A known method looks the same whatever else is in the sweep.
    assert method_styles(["first_block_cache"])["first_block_cache"] == styles["first_block_cache"]


def test_label_placement_avoids_overlaps():
    import matplotlib.pyplot as plt

    from paper_figures.label_placement import LabelSpec, place_labels
    from paper_figures.style import figure_style

    with figure_style():
        fig, ax = plt.subplots(figsize=(3.3, 2.5), layout="constrained")
        xs = np.linspace(1.2, 2.4, 8)
        ys = 0.02 + 0.05 * (xs - 1.2)
        ax.plot(xs, ys, "o-")
        ax.set_xlim(1.0, 2.6)
        ax.set_ylim(0.0, 0.1)
        anns = place_labels(ax, [LabelSpec(x, y, f"t={x:.2f}", must_show=True) for x, y in zip(xs, ys)])
        renderer = fig.canvas.get_renderer()
        boxes = [a.get_window_extent(renderer) for a in anns if a is not None]
        plt.close(fig)
    assert len(boxes) == 8
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b)
