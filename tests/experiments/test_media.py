"""Lossless media: bit-exact round trips, the recorded format, old run directories, one "present" rule."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import metrics
from experiments import media
from experiments.media import MediaError, has_frames, media_info, read_frames, write_frames
from repro.run_dir import media_present

DATA = Path(__file__).parent / "data"


def _noise(shape, seed=0) -> np.ndarray:
    """Uniform noise: every value in every channel, no structure a codec could lean on (the worst case)."""
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _moving_texture(frames=6, h=24, w=40, grain=3) -> np.ndarray:
    """A textured image sliding by a pixel per frame (what inter prediction is for), plus grain of +-`grain`."""
    base = _noise((h, w + frames, 3), seed=1).astype(np.int16)
    clip = np.stack([base[:, t:t + w] for t in range(frames)])
    return np.clip(clip + np.random.default_rng(2).integers(-grain, grain + 1, clip.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape", [(5, 16, 16, 3), (3, 33, 31, 3), (2, 1, 1, 3), (17, 8, 12, 3)])
def test_video_round_trip_is_bit_exact(tmp_path, shape):
    frames = _noise(shape)
    paths = write_frames(frames, tmp_path / "g", mp4=False)
    folder = Path(paths["media_dir"])
    assert sorted(p.name for p in folder.iterdir()) == [media.VIDEO_FILE, media.RECORD]
    got = read_frames(folder)
    assert got.dtype == np.uint8 and got.shape == shape and np.array_equal(got, frames)


def test_the_format_is_recorded(tmp_path):
    frames = _moving_texture()
    write_frames(frames, tmp_path / "v", mp4=True)
    record = json.loads((tmp_path / "v" / media.RECORD).read_text())
    assert record["format"] == media.VIDEO_FORMAT == media_info(tmp_path / "v").format
    assert (record["frames"], record["height"], record["width"]) == frames.shape[:3]
    assert record["files"] == [media.VIDEO_FILE]
    assert (tmp_path / "v" / "video.mp4").is_file()  # the viewable copy, beside the lossless one
    assert np.array_equal(read_frames(tmp_path / "v"), frames)  # never read from the lossy MP4

    import av

    with av.open(str(tmp_path / "v" / media.VIDEO_FILE)) as c:
        stream = c.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "gbrp")  # RGB planes, not YUV


def test_an_image_stays_one_png(tmp_path):
    frame = _noise((1, 20, 30, 3))
    write_frames(frame, tmp_path / "i", mp4=True)  # no MP4 for an image
    assert sorted(p.name for p in (tmp_path / "i").iterdir()) == ["frame_00000.png", media.RECORD]
    assert media_info(tmp_path / "i").format == media.IMAGE_FORMAT
    assert np.array_equal(np.asarray(Image.open(tmp_path / "i" / "frame_00000.png")), frame[0])
    assert np.array_equal(read_frames(tmp_path / "i"), frame)


def test_same_frames_give_the_same_bytes(tmp_path):
    frames = _moving_texture()
    write_frames(frames, tmp_path / "a", mp4=False)
    write_frames(frames, tmp_path / "b", mp4=False)
    assert (tmp_path / "a" / media.VIDEO_FILE).read_bytes() == (tmp_path / "b" / media.VIDEO_FILE).read_bytes()


def test_moving_texture_takes_fewer_bytes_than_png(tmp_path):
    """The point of the format, on content with the motion inter prediction is for (not a size target:
    benchmarks/bench_media.py measures that on realistic video)."""
    frames = _moving_texture(frames=12, h=48, w=64, grain=0)
    write_frames(frames, tmp_path / "v", mp4=False)
    png = 0
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"{i}.png", compress_level=1)
        png += (tmp_path / f"{i}.png").stat().st_size
    assert (tmp_path / "v" / media.VIDEO_FILE).stat().st_size < 0.5 * png


def test_folder_written_by_the_png_frames_code_stays_readable():
    """tests/experiments/data/legacy_png_frames was written by experiments/media.py before this format
    (a PNG per frame, no media.json); the .npy beside it holds the frames it was given."""
    folder = DATA / "legacy_png_frames"
    expected = np.load(DATA / "legacy_png_frames.npy")
    info = media_info(folder)
    assert info.format == media.LEGACY_FORMAT and info.frames == 3 and info.sha256 is None
    assert has_frames(folder) and media_present(DATA, {"media_dir": "legacy_png_frames"})
    assert np.array_equal(read_frames(folder), expected)


def test_scores_from_decoded_frames_equal_scores_from_png(tmp_path):
    """PSNR and SSIM of a cached output against its baseline: the same numbers from either format."""
    baseline = _moving_texture(frames=8)
    cached = np.clip(baseline.astype(np.int16) + _noise(baseline.shape, 5) % 7 - 3, 0, 255).astype(np.uint8)
    for name, frames in (("b", baseline), ("c", cached)):
        write_frames(frames, tmp_path / name, mp4=False)
        legacy = tmp_path / f"legacy-{name}"
        legacy.mkdir()
        for i, f in enumerate(frames):
            Image.fromarray(f).save(legacy / media.FRAME_PATTERN.format(i), compress_level=1)
    for fn in (metrics.psnr, metrics.ssim):
        new = np.asarray(fn(read_frames(tmp_path / "c"), read_frames(tmp_path / "b")))
        old = np.asarray(fn(read_frames(tmp_path / "legacy-c"), read_frames(tmp_path / "legacy-b")))
        assert np.isfinite(new).all() and np.array_equal(new, old)


def test_truncated_or_altered_video_is_refused_not_misread(tmp_path):
    frames = _moving_texture(frames=10)
    write_frames(frames, tmp_path / "v", mp4=False)
    video = tmp_path / "v" / media.VIDEO_FILE
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match="differ from the 10 frame"):
        read_frames(tmp_path / "v")

    write_frames(frames, tmp_path / "w", mp4=False)
    record = json.loads((tmp_path / "w" / media.RECORD).read_text())
    record["sha256"] = "0" * 64
    (tmp_path / "w" / media.RECORD).write_text(json.dumps(record))
    with pytest.raises(MediaError, match="truncated or altered"):
        read_frames(tmp_path / "w")


def test_present_means_readable_files_for_every_format(tmp_path):
    write_frames(_moving_texture(), tmp_path / "video", mp4=False)
    write_frames(_noise((1, 8, 8, 3)), tmp_path / "image", mp4=False)
    shutil.copytree(DATA / "legacy_png_frames", tmp_path / "legacy")
    (tmp_path / "empty").mkdir()
    shutil.copytree(tmp_path / "video", tmp_path / "no-video-file")
    (tmp_path / "no-video-file" / media.VIDEO_FILE).unlink()
    shutil.copytree(tmp_path / "video", tmp_path / "bad-record")
    (tmp_path / "bad-record" / media.RECORD).write_text("{not json")
    shutil.copytree(tmp_path / "video", tmp_path / "future-format")
    (tmp_path / "future-format" / media.RECORD).write_text(json.dumps({"format": "from-a-later-version"}))

    present = {name: media_present(tmp_path, {"media_dir": name}) for name in
               ("video", "image", "legacy", "empty", "no-video-file", "bad-record", "future-format", "gone")}
    assert present == {"video": True, "image": True, "legacy": True, "empty": False, "no-video-file": False,
                       "bad-record": False, "future-format": False, "gone": False}
    assert media_present(tmp_path, {"media_dir": None}) is False
    for name in ("empty", "no-video-file", "gone"):
        with pytest.raises(FileNotFoundError):
            read_frames(tmp_path / name)
    with pytest.raises(MediaError, match="unknown media format 'from-a-later-version'"):
        read_frames(tmp_path / "future-format")


def test_bad_frames_write_nothing(tmp_path):
    with pytest.raises(ValueError, match=r"uint8 \[F, H, W, 3\]"):
        write_frames(np.zeros((2, 4, 4, 3), np.float32), tmp_path / "x", mp4=False)
    assert list(tmp_path.iterdir()) == []


def test_figures_read_frames_of_every_format(tmp_path):
    """paper_figures sees the same pixels in a video file, an image and an old PNG-per-frame folder."""
    from paper_figures.frames import image_size, load_rgb, output_frames
    from paper_figures.html_report import _frame_file

    clip = _moving_texture()
    write_frames(clip, tmp_path / "video", mp4=False)
    shown = output_frames(tmp_path / "video")
    assert len(shown) == len(clip) and all(f.file is None for f in shown)
    assert image_size(shown[0]) == (clip.shape[2], clip.shape[1])
    assert all(np.array_equal(load_rgb(f), clip[i]) for i, f in enumerate(shown))
    png = _frame_file(shown[3], tmp_path / "report")  # what the report's <img> shows
    assert png == tmp_path / "report" / "frames" / "video" / "frame_00003.png"
    assert np.array_equal(np.asarray(Image.open(png)), clip[3])

    legacy = output_frames(DATA / "legacy_png_frames")
    assert [f.file.name for f in legacy] == ["frame_00000.png", "frame_00001.png", "frame_00002.png"]
    assert np.array_equal(np.stack([load_rgb(f) for f in legacy]), np.load(DATA / "legacy_png_frames.npy"))
    assert output_frames(tmp_path / "missing") == [] and output_frames(None) == []


def _cached_like(base: np.ndarray, amplitude: int = 2, seed: int = 3) -> np.ndarray:
    """The baseline with a small error, as a cache leaves it; values near 0 and 255 wrap in the difference."""
    err = np.random.default_rng(seed).integers(-amplitude, amplitude + 1, base.shape)
    return np.clip(base.astype(np.int16) + err, 0, 255).astype(np.uint8)


def test_a_cached_video_is_stored_as_its_difference_from_the_baseline_when_smaller(tmp_path):
    base = _moving_texture(frames=8, grain=0)
    base[:, :2] = 0  # the extremes: a difference of -2 at 0 and +2 at 255 must come back exactly
    base[:, -2:] = 255
    cached = _cached_like(base)
    write_frames(base, tmp_path / "b", mp4=False)
    write_frames(cached, tmp_path / "c", mp4=False, base=(tmp_path / "b", base))
    write_frames(cached, tmp_path / "plain", mp4=False)
    info = media_info(tmp_path / "c")
    assert (info.format, info.base, info.is_video) == (media.DELTA_FORMAT, "b", True)
    assert np.array_equal(read_frames(tmp_path / "c"), cached)
    assert (tmp_path / "c" / media.VIDEO_FILE).stat().st_size < (tmp_path / "plain" / media.VIDEO_FILE).stat().st_size
    # (cached - base + 128) mod 256: what the file codes, by hand
    got = np.stack([f.to_ndarray() for f in __import__("av").open(str(tmp_path / "c" / media.VIDEO_FILE)).decode(video=0)])
    assert np.array_equal(got, ((cached.astype(int) - base.astype(int) + 128) % 256).astype(np.uint8))

    # unrelated content (a baseline of new noise each frame): its difference is larger, so the video is itself
    noise = _noise(base.shape, seed=9)
    write_frames(noise, tmp_path / "n", mp4=False)
    write_frames(base, tmp_path / "o", mp4=False, base=(tmp_path / "n", noise))
    assert media_info(tmp_path / "o").format == media.VIDEO_FORMAT and np.array_equal(read_frames(tmp_path / "o"), base)
    # a baseline of another shape, or outside the folder's parent: never a base
    write_frames(cached[:4], tmp_path / "short", mp4=False, base=(tmp_path / "b", base))
    (tmp_path / "elsewhere").mkdir()
    write_frames(cached, tmp_path / "elsewhere" / "c", mp4=False, base=(tmp_path / "b", base))
    assert media_info(tmp_path / "short").format == media_info(tmp_path / "elsewhere" / "c").format == media.VIDEO_FORMAT


def test_a_difference_whose_baseline_is_gone_or_changed_is_not_present_or_refused(tmp_path):
    from paper_figures.frames import load_rgb, output_frames

    base = _moving_texture(frames=6, grain=0)
    cached = _cached_like(base)
    write_frames(base, tmp_path / "b", mp4=False)
    write_frames(cached, tmp_path / "c", mp4=False, base=(tmp_path / "b", base))
    assert media_info(tmp_path / "c").format == media.DELTA_FORMAT
    assert [np.array_equal(load_rgb(f), cached[i]) for i, f in enumerate(output_frames(tmp_path / "c"))] == [True] * 6

    shown = output_frames(tmp_path / "c")
    write_frames(_cached_like(base, seed=5), tmp_path / "b", mp4=False)  # the baseline regenerated differently
    # not present (the next sweep regenerates it with its baseline), never misread
    assert media_present(tmp_path, {"media_dir": "c"}) is False and output_frames(tmp_path / "c") == []
    with pytest.raises(FileNotFoundError):
        read_frames(tmp_path / "c")
    with pytest.raises(FileNotFoundError):  # a figure listed before the change: its decode cache is not stale
        load_rgb(shown[0])

    (tmp_path / "b" / media.VIDEO_FILE).unlink()  # the baseline's own file gone
    write_frames(cached, tmp_path / "c2", mp4=False, base=(tmp_path / "b", base))
    assert media_present(tmp_path, {"media_dir": "c2"}) is False
    shutil.rmtree(tmp_path / "b")
    assert media_present(tmp_path, {"media_dir": "c"}) is False


def test_crafted_records_cannot_make_a_difference_read_another_difference_or_loop(tmp_path):
    b = _moving_texture(frames=4, grain=0)
    write_frames(b, tmp_path / "b", mp4=False)
    write_frames(_cached_like(b), tmp_path / "x", mp4=False, base=(tmp_path / "b", b))
    write_frames(_cached_like(b, seed=4), tmp_path / "y", mp4=False, base=(tmp_path / "b", b))
    for name, other in (("x", "y"), ("y", "x")):  # x's base is y and y's base is x
        record = json.loads((tmp_path / name / media.RECORD).read_text())
        record["base"] = other
        record["base_sha256"] = json.loads((tmp_path / other / media.RECORD).read_text())["sha256"]
        (tmp_path / name / media.RECORD).write_text(json.dumps(record))
    assert media_present(tmp_path, {"media_dir": "x"}) is False and media_present(tmp_path, {"media_dir": "y"}) is False
    with pytest.raises(FileNotFoundError):
        read_frames(tmp_path / "x")


@pytest.mark.parametrize("base", ["../b", "/tmp/b", "", ".hidden", "a/b", None, 7])
def test_a_difference_never_reads_a_baseline_outside_its_media_folder(tmp_path, base):
    b = _moving_texture(frames=4, grain=0)
    write_frames(b, tmp_path / "b", mp4=False)
    write_frames(_cached_like(b), tmp_path / "c", mp4=False, base=(tmp_path / "b", b))
    record = json.loads((tmp_path / "c" / media.RECORD).read_text())
    record["base"] = base
    (tmp_path / "c" / media.RECORD).write_text(json.dumps(record))
    with pytest.raises(MediaError, match="not the name of a sibling folder"):
        read_frames(tmp_path / "c")
    assert media_present(tmp_path, {"media_dir": "c"}) is False


def test_a_difference_never_follows_a_linked_baseline_and_files_are_plain_names(tmp_path):
    outside = tmp_path / "outside"
    run = tmp_path / "media"
    b = _moving_texture(frames=4, grain=0)
    write_frames(b, outside / "b", mp4=False)
    run.mkdir()
    (run / "b").symlink_to(outside / "b")
    cached = _cached_like(b)
    write_frames(cached, run / "c", mp4=False, base=(run / "b", b))  # a linked baseline is never a base
    assert media_info(run / "c").format == media.VIDEO_FORMAT and np.array_equal(read_frames(run / "c"), cached)
    write_frames(b, run / "real", mp4=False)
    write_frames(cached, run / "d", mp4=False, base=(run / "real", b))
    shutil.rmtree(run / "real")
    (run / "real").symlink_to(outside / "b")  # the baseline swapped for a link out after the fact
    assert media_present(run, {"media_dir": "d"}) is False
    with pytest.raises(FileNotFoundError):
        read_frames(run / "d")
    write_frames(b, run / "v", mp4=False)
    for bad in ("../outside/b/frames.mkv", str(outside / "b" / media.VIDEO_FILE), ".hidden"):
        record = json.loads((run / "v" / media.RECORD).read_text())
        record["files"] = [bad]
        (run / "v" / media.RECORD).write_text(json.dumps(record))
        with pytest.raises(MediaError, match="not a plain file name"):
            read_frames(run / "v")
        assert media_present(run, {"media_dir": "v"}) is False
