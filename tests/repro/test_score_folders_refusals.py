"""Issue 13: `repro score-folders` refuses what it cannot score faithfully (exit 2, the file named).

16-bit PNGs are written here byte by byte (zlib + struct), so the test does not depend on any
library's 16-bit support: PIL opens them as 8-bit "RGB", which is exactly the silent cut refused.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from repro.cli import main


def png16(path, arr: np.ndarray) -> None:
    """A valid 16-bit PNG (RGB or grey) from a uint16 array [H, W, C]."""
    h, w, c = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    color = {3: 2, 1: 0}[c]
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def rgb(seed: int, shape=(16, 16, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture
def dirs(tmp_path):
    a, b = tmp_path / "cached", tmp_path / "baseline"
    a.mkdir()
    b.mkdir()
    for name in ("0.png", "1.png"):
        Image.fromarray(rgb(1)).save(a / name)
        Image.fromarray(rgb(2)).save(b / name)
    return a, b


def refused(a, b, needle, *extra):
    out = CliRunner().invoke(main, ["score-folders", str(a), str(b), "--metrics", "psnr,ssim", *extra])
    assert out.exit_code == 2, out.output
    assert "Traceback" not in out.output
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and len(lines[0]) < 1000 and needle in lines[0], out.stderr
    return lines[0]


def test_sixteen_bit_rgb_is_refused_not_truncated(dirs):
    a, b = dirs
    png16(a / "0.png", np.random.default_rng(0).integers(0, 65536, (16, 16, 3)).astype(np.uint16))
    assert Image.open(a / "0.png").mode == "RGB"  # what PIL would silently have scored
    assert "0.png" in refused(a, b, "16-bit")


def test_sixteen_bit_grey_is_refused(dirs):
    a, b = dirs
    png16(b / "1.png", np.random.default_rng(0).integers(0, 65536, (16, 16, 1)).astype(np.uint16))
    assert "1.png" in refused(a, b, "16-bit")


def test_different_file_sets_are_refused_by_name_unless_common_only(dirs):
    a, b = dirs
    Image.fromarray(rgb(3)).save(a / "extra.png")
    assert "extra.png" in refused(a, b, "different files")
    out = CliRunner().invoke(main, ["score-folders", str(a), str(b), "--metrics", "psnr", "--common-only"])
    assert out.exit_code == 0, out.output
    assert "extra.png" in out.stderr and "warning" in out.stderr


def test_different_sizes_are_refused_by_name(dirs):
    a, b = dirs
    Image.fromarray(rgb(4, (16, 24, 3))).save(a / "1.png")
    assert "1.png" in refused(a, b, "shape mismatch")


def test_non_image_bytes_are_refused_by_name(dirs):
    a, b = dirs
    (a / "0.png").write_bytes(b"this is not a png at all")
    assert "0.png" in refused(a, b, "not a readable image")


def test_out_of_range_npy_is_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    np.save(a / "x.npy", np.full((8, 8, 3), 2.0))
    np.save(b / "x.npy", np.full((8, 8, 3), 0.5))
    assert "x.npy" in refused(a, b, "[0, 1]")


def test_garbage_npy_is_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x.npy").write_bytes(b"garbage")
    np.save(b / "x.npy", np.full((8, 8, 3), 0.5))
    assert "x.npy" in refused(a, b, "not a readable .npy")


def test_no_common_names_is_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    Image.fromarray(rgb(1)).save(a / "x.png")
    Image.fromarray(rgb(1)).save(b / "y.png")
    refused(a, b, "no files with the same relative path")


def test_unknown_metric_is_refused(dirs):
    a, b = dirs
    out = CliRunner().invoke(main, ["score-folders", str(a), str(b), "--metrics", "fid"])
    assert out.exit_code == 2 and "unknown metric" in out.stderr, out.output
