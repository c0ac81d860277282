"""Comparison grids (image and video) and the side-by-side MP4."""

from __future__ import annotations

import imageio.v2 as imageio
import numpy as np
from PIL import Image

from paper_figures import comparison_grid, grid_video
from paper_figures.grid_selection import select_prompts


def test_image_grids_for_chosen_prompts(image_run):
    stems = [f.path_stem for f in image_run.figures]
    assert "grid_p0_s0" in stems and "grid_p1_s1" in stems
    assert not any(s.startswith("grid_video") for s in stems)  # images: no MP4
    fig = image_run.by_stem("grid_p1_s1")
    with Image.open(fig.file("png")) as im:
        assert im.size[0] > im.size[1]  # one row per method: a wide strip
    assert "prompt 1, seed 1" in fig.caption and "t=0.3" in fig.caption


def test_select_prompts(image_run):
    items = image_run.items
    assert select_prompts(items) == [(0, 0)]
    assert select_prompts(items, [1]) == [(1, 0)]
    assert select_prompts(items, [(1, 1), 0, (7, 7)]) == [(1, 1), (0, 0)]
    assert select_prompts(items.iloc[0:0]) == []


def test_missing_output_gets_placeholder(image_run, tmp_path):
    items = image_run.items.copy()
    gone = items["point_id"] == "mag1"
    items.loc[gone, "frames_dir"] = str(tmp_path / "does_not_exist")
    fig = comparison_grid(image_run.points, items, tmp_path, 0, 0, formats=("png",))
    assert "Missing outputs: mag_cache t=0.12 r=0.2" in fig.caption


def test_video_grid_is_frame_strips(video_run):
    fig = video_run.by_stem("grid_p0_s0")
    svg = fig.file("svg").read_text()
    assert svg.count("<image ") == 6 * 4  # rows = baseline + 5 points, columns = 4 frames
    assert "video frames" in fig.caption
    assert "frame 0" in svg and "frame 5" in svg  # 6 frames: first and last are shown


def test_side_by_side_mp4(video_run, tmp_path):
    fig = video_run.by_stem("grid_video_p0_s0")
    assert fig.kind == "video" and fig.files[0].suffix == ".mp4"
    reader = imageio.get_reader(fig.files[0], format="FFMPEG")
    frames = [f for f in reader]
    reader.close()
    assert len(frames) == 6
    h, w, _ = frames[0].shape
    assert w > 3 * h  # baseline + 3 outputs tiled horizontally
    assert fig.caption.count(";") == 3 and fig.caption.split("left to right: ")[1].startswith("baseline")
    # Explicit point choice, in the given order.
    chosen = grid_video(video_run.points, video_run.items, tmp_path, 0, 0, point_ids=["mag1", "fbc0"])
    assert "mag_cache t=0.24 r=0.2" in chosen.caption.split(";")[1]
    assert imageio.get_reader(chosen.files[0], format="FFMPEG").get_meta_data()["size"][0] < w


def test_grid_video_skips_images(image_run, tmp_path):
    assert grid_video(image_run.points, image_run.items, tmp_path, 0, 0) is None


def test_grid_tiles_are_not_blank(image_run):
    with Image.open(image_run.by_stem("grid_p0_s0").file("png")) as im:
        arr = np.asarray(im.convert("RGB"), dtype=float)
    assert arr.std() > 20  # real pixels were drawn, not just white axes
