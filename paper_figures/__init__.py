"""Paper-ready figures and tables from tidy sweep tables (no database, no `repro` import).

Entry point: `make_all(points, items, calibrations, out_dir)` writes every
figure (PNG/PDF/SVG), `table.md`/`table.tex`, side-by-side MP4s for video
sweeps, `out_dir/index.md` and the self-contained `out_dir/index.html`. Each
builder is also public and returns a `Figure` (or None when it has nothing to draw).

    points = pd.read_csv("points.csv")          # exported tables work too...
    points.attrs["metric_labels"] = {...}       # ...but CSV drops attrs: restore labels
    points.attrs["title"] = "fbc sweep · FLUX.1-dev"
    make_all(points, items, calibrations, "runs/x/figures")
"""

from paper_figures.build import make_all
from paper_figures.figure import DEFAULT_FORMATS, Figure, save_figure
from paper_figures.grid_video import grid_video, grid_videos
from paper_figures.grids import comparison_grid, comparison_grids
from paper_figures.html_report import write_html_report
from paper_figures.index_page import write_index
from paper_figures.mag_ratios import mag_ratio_plot
from paper_figures.pareto_plot import pareto_plot, pareto_plots
from paper_figures.skip_heatmap import skip_heatmap
from paper_figures.tables import build_table, latex_table, markdown_table, threshold_table
from paper_figures.time_breakdown import time_breakdown

__all__ = [
    "DEFAULT_FORMATS",
    "Figure",
    "build_table",
    "comparison_grid",
    "comparison_grids",
    "grid_video",
    "grid_videos",
    "latex_table",
    "make_all",
    "mag_ratio_plot",
    "markdown_table",
    "pareto_plot",
    "pareto_plots",
    "save_figure",
    "skip_heatmap",
    "threshold_table",
    "time_breakdown",
    "write_html_report",
    "write_index",
]
