"""Lossless media: bytes per video against PNG frames, encode/decode speed, bit-exact round trip, same scores.

Compares, video by video, the frames folder written before (one PNG per frame, PIL
compress_level=1, as experiments/media.py wrote them) with the lossless video format that
experiments/media.py writes now (H.264 lossless RGB in Matroska, see that module), both through
the project's own code path (write_frames / read_frames), and prints for each video:

- bytes of the lossless frames (the MP4 preview excluded from both) and their ratio to PNG;
  also the disk space taken (whole blocks: a PNG per frame costs a block per frame)
- the same for its cached output, written as the sweep writes it (its baseline's frames at hand:
  stored as itself or as its difference from the baseline, whichever is smaller)
- encode and decode time, decode speed in frames/s and MB/s of pixels
- whether the decoded frames equal the frames given, bit for bit
- whether PSNR and SSIM (the metrics package) of a cached-like output against its baseline,
  computed from the decoded frames, are identical to those computed from the PNG frames

Videos:
- the reference model (experiments/reference; configs/tiny.yaml's model and settings, 32x32,
  5 frames, 10 steps, guidance 2): held-out captions, baseline and First Block Cache (threshold
  0.3) outputs; --reference-size also asks for a larger (out-of-training-size) generation
- synthetic natural video: scikit-image photographs seen by a moving camera (sub-pixel pan
  and slow zoom, bicubic resampling: every frame differs from the last, nothing repeats
  exactly), clean and with Gaussian grain (sigma 1.5, a worst case: grain cannot be predicted);
  the cached output is the baseline plus a smooth error field slowly changing over time (3 levels
  RMS, about 39 dB: residual reuse), or with --partner offset the same shot with the camera a
  quarter pixel off (a worst case for storing the difference)

--candidates also encodes every video with the other lossless codecs this FFmpeg has
(FFV1, lossless H.265 and VP9, other x264 presets, and H.264 / H.265 on YCoCg-R planes), which is
how the format was chosen, and
--images compares single-frame formats (why an image stays PNG). Timings share the machine
with whatever else runs: compare them within one run. Run:

    python benchmarks/bench_media.py                       # 240x416x33 synthetic, 4 reference prompts
    python benchmarks/bench_media.py --size 480x832x81     # Wan's default video size
    python benchmarks/bench_media.py --candidates --images
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import media  # noqa: E402

# -- videos --------------------------------------------------------------------------------------


def reference_clips(n_prompts: int, sizes: list[tuple[int, int, int]]):
    """(name, baseline frames, cached frames) from the trained reference Wan model."""
    import torch
    from diffusers.hooks import FirstBlockCacheConfig

    from experiments.reference import load_reference
    from experiments.reference.model import MAX_SEQUENCE_LENGTH
    from experiments.reference.world import WORLD

    pipe = load_reference("wan")
    captions = WORLD.held_out()[:n_prompts]

    def generate(text, seed, h, w, f):
        out = pipe(prompt=text, height=h, width=w, num_frames=f, num_inference_steps=10, guidance_scale=2.0,
                   max_sequence_length=MAX_SEQUENCE_LENGTH, output_type="np",
                   generator=torch.Generator().manual_seed(seed)).frames[0]
        return _uint8(out)

    out = []
    with torch.no_grad():
        for h, w, f in sizes:
            for i, cap in enumerate(captions):
                out.append([f"reference {h}x{w}x{f} #{i}", generate(cap.text, i, h, w, f), None])
        pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.3))  # diffusers' own path, as the sweep
        k = 0
        for h, w, f in sizes:
            for i, cap in enumerate(captions):
                out[k][2] = generate(cap.text, i, h, w, f)
                k += 1
    return [tuple(c) for c in out]


def _uint8(frames) -> np.ndarray:
    # as experiments.runner turns a pipeline's float output into the stored uint8 frames
    return (np.clip(np.asarray(frames, dtype=np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)


def camera(img: np.ndarray, h: int, w: int, f: int, offset: float = 0.0, grain: float = 0.0, seed: int = 0):
    """A moving camera over a photograph: sub-pixel pan (0.7, 1.9 px per frame) and 0.3% zoom per frame."""
    from PIL import Image

    im = Image.fromarray(img)
    rng = np.random.default_rng(seed)
    base = min(img.shape[1] / (w * 1.15), img.shape[0] / (h * 1.15))  # source pixels per output pixel
    cx, cy = img.shape[1] / 2, img.shape[0] / 2
    frames = []
    for t in range(f):
        s = base / (1 + 0.003 * t)
        x0 = cx - s * w / 2 + (1.9 * t + offset) * s
        y0 = cy - s * h / 2 + (0.7 * t + offset) * s
        a = np.asarray(im.transform((w, h), Image.Transform.AFFINE, (s, 0, x0, 0, s, y0),
                                    resample=Image.Resampling.BICUBIC), np.float64)
        if grain:
            a = a + rng.normal(0, grain, a.shape)
        frames.append(np.clip(a, 0, 255).round().astype(np.uint8))
    return np.stack(frames)


def cache_error(frames: np.ndarray, level: float, seed: int = 3) -> np.ndarray:
    """`frames` plus a smooth error field slowly changing over time (Gaussian noise blurred by 4 frames and 6 px),
    `level` 8-bit levels RMS: what reusing a residual leaves, at about 20 log10(255 / level) dB."""
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(np.random.default_rng(seed).standard_normal(frames.shape[:3]), sigma=(4, 6, 6))
    field *= level / field.std()
    return np.clip(frames + field[..., None], 0, 255).round().astype(np.uint8)


def synthetic_clips(h: int, w: int, f: int, sources: list[str], partner: str = "cache"):
    from skimage import data

    for name in sources:
        img = getattr(data, name)()
        for grain in (0.0, 1.5):
            tag = f"{name} {h}x{w}x{f}" + (f" grain {grain}" if grain else "")
            base = camera(img, h, w, f, grain=grain, seed=1)
            cached = cache_error(base, 3.0) if partner == "cache" else \
                camera(img, h, w, f, offset=0.25, grain=grain, seed=2)
            yield tag, base, cached


# -- the two formats through the project's code ----------------------------------------------------


def write_png_frames(frames: np.ndarray, folder: Path) -> None:
    """The frames folder as experiments/media.py wrote it before: one PNG per frame, compress_level=1."""
    from PIL import Image

    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / media.FRAME_PATTERN.format(i), compress_level=1)


def folder_bytes(folder: Path) -> tuple[int, int]:
    """(bytes of the lossless files, disk space in whole blocks); media.json is counted, the MP4 is not."""
    files = [p for p in folder.iterdir() if p.suffix != ".mp4"]
    return sum(p.stat().st_size for p in files), sum(p.stat().st_blocks * 512 for p in files)


def timed(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def measure(name: str, baseline: np.ndarray, cached: np.ndarray, tmp: Path, repeats: int) -> dict:
    import metrics

    row = {"name": name, "frames": baseline.shape[0], "raw": baseline.nbytes}
    for fmt in ("png", "new"):
        b, c = tmp / f"{fmt}-b", tmp / f"{fmt}-c"

        def write(frames=baseline, folder=b, fmt=fmt):
            shutil.rmtree(folder, ignore_errors=True)
            if fmt == "png":
                write_png_frames(frames, folder)
            else:
                media.write_frames(frames, folder, mp4=False)

        _, row[f"{fmt}_enc_s"] = timed(write, repeats)
        if fmt == "png":
            write_png_frames(cached, c)
        else:  # as the sweep writes a cached output: its baseline's frames at hand
            media.write_frames(cached, c, mp4=False, base=(b, baseline))
            row["cached_format"] = media.media_info(c).format
        row[f"{fmt}_bytes"], row[f"{fmt}_disk"] = folder_bytes(b)
        row[f"{fmt}_cached_bytes"], _ = folder_bytes(c)
        decoded, row[f"{fmt}_dec_s"] = timed(lambda b=b: media.read_frames(b), repeats)
        row[f"{fmt}_exact"] = decoded.shape == baseline.shape and np.array_equal(decoded, baseline)
        dc, row[f"{fmt}_cached_dec_s"] = timed(lambda c=c: media.read_frames(c), repeats)
        row[f"{fmt}_exact"] &= np.array_equal(dc, cached)
        row[f"{fmt}_scores"] = {m.__name__: np.asarray(m(dc, decoded)) for m in (metrics.psnr, metrics.ssim)}
    row["same_scores"] = all(np.array_equal(row["png_scores"][k], row["new_scores"][k]) for k in row["png_scores"])
    row["psnr"] = float(np.mean(row["new_scores"]["psnr"]))
    return row


# -- candidate codecs (how the format was chosen) --------------------------------------------------

YCOCG = "ycocg-r"  # frames handed over as YCoCg-R planes in yuv444p10le


def ycocg_r(frames: np.ndarray) -> np.ndarray:
    """RGB uint8 [F, H, W, 3] -> YCoCg-R planes uint16 [F, 3, H, W] (Co, Cg offset by 256: 1..511)."""
    r, g, b = (frames[..., i].astype(np.int32) for i in range(3))
    co = r - b
    t = b + (co >> 1)
    cg = g - t
    return np.stack([t + (cg >> 1), co + 256, cg + 256], axis=1).astype(np.uint16)


def ycocg_r_inverse(planes: np.ndarray) -> np.ndarray:
    y, co, cg = planes[:, 0].astype(np.int32), planes[:, 1].astype(np.int32) - 256, planes[:, 2].astype(np.int32) - 256
    t = y - (cg >> 1)
    b = t - (co >> 1)
    return np.stack([b + co, cg + t, b], axis=-1).astype(np.uint8)


CANDIDATES = {  # name: (encoder, pixel format handed to it, options)
    "ffv1": ("ffv1", "bgr0", {"level": "3", "coder": "1", "context": "1"}),
    "x264rgb veryfast": ("libx264rgb", "rgb24", {"qp": "0", "preset": "veryfast"}),
    "x264rgb medium": ("libx264rgb", "rgb24", {"qp": "0", "preset": "medium"}),
    "x264rgb slow": ("libx264rgb", "rgb24", {"qp": "0", "preset": "slow"}),
    "x265 lossless gbrp": ("libx265", "gbrp", {"x265-params": "lossless=1:log-level=error", "preset": "medium"}),
    "vp9 lossless gbrp": ("libvpx-vp9", "gbrp", {"lossless": "1", "deadline": "good", "cpu-used": "4",
                                                  "row-mt": "1"}),
    # YCoCg-R (the reversible integer colour transform of H.264 FRExt / JPEG XR): luma 8 bits, the two
    # chroma planes 9 bits, coded as lossless 10-bit 4:4:4; undone exactly after decoding
    "x264 ycocg-r 10-bit": ("libx264", YCOCG, {"qp": "0", "preset": "medium"}),
    "x265 ycocg-r 10-bit": ("libx265", YCOCG, {"x265-params": "lossless=1:log-level=error", "preset": "medium"}),
}


def _frame(f: np.ndarray, pix_fmt: str):
    import av

    if pix_fmt != YCOCG:
        return av.VideoFrame.from_ndarray(f, format="rgb24")
    frame = av.VideoFrame(f.shape[2], f.shape[1], "yuv444p10le")  # PyAV has no from_ndarray for it
    for plane, values in zip(frame.planes, f):
        rows = np.zeros((f.shape[1], plane.line_size // 2), np.uint16)
        rows[:, : f.shape[2]] = values
        plane.update(rows.tobytes())
    return frame


def encode(frames: np.ndarray, codec: str, pix_fmt: str, options: dict) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska", container_options={"fflags": "+bitexact"}) as c:
        s = c.add_stream(codec, rate=16, options=dict(options))
        s.width, s.height = frames.shape[2], frames.shape[1]
        s.pix_fmt = "yuv444p10le" if pix_fmt == YCOCG else pix_fmt
        for f in ycocg_r(frames) if pix_fmt == YCOCG else frames:
            c.mux(s.encode(_frame(f, pix_fmt)))
        c.mux(s.encode())
    return buf.getvalue()


def decode(data: bytes, pix_fmt: str = "rgb24") -> np.ndarray:
    import av

    with av.open(io.BytesIO(data)) as c:
        if pix_fmt != YCOCG:
            return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
        planes = [np.stack([np.frombuffer(bytes(p), np.uint16).reshape(f.height, -1)[:, : f.width] for p in f.planes])
                  for f in c.decode(video=0)]
    return ycocg_r_inverse(np.stack(planes))


def candidates(name: str, frames: np.ndarray, png_bytes: int, repeats: int) -> dict:
    import av

    out = {}
    for cand, (codec, pix_fmt, options) in CANDIDATES.items():
        if codec not in av.codecs_available:
            continue
        data, enc = timed(lambda: encode(frames, codec, pix_fmt, options), repeats)
        dec_frames, dec = timed(lambda: decode(data, pix_fmt), repeats)
        exact = dec_frames.shape == frames.shape and np.array_equal(dec_frames, frames)
        out[cand] = (len(data) / png_bytes, exact, enc, dec)
    return out


def images(clips, tmp: Path) -> None:
    """Single frames: PNG (today) against the intra-only formats."""
    from PIL import Image

    sums: dict[str, float] = {}
    for _, frames, _ in clips:
        frame = frames[:1]
        b = io.BytesIO()
        Image.fromarray(frame[0]).save(b, format="PNG", compress_level=1)
        png = b.tell()
        sizes = {"png (level 9)": _png(frame[0], 9), "webp lossless": _webp(frame[0]),
                 "ffv1": len(encode(frame, *CANDIDATES["ffv1"])),
                 "x264rgb intra": len(encode(frame, *CANDIDATES["x264rgb medium"]))}
        for k, v in sizes.items():
            sums[k] = sums.get(k, 0.0) + v / png / len(clips)
    print("\nsingle frames (images), mean bytes / PNG compress_level=1 over the first frame of each video:")
    print("  " + "  ".join(f"{k} {v:.3f}" for k, v in sums.items()))


def _png(frame, level) -> int:
    from PIL import Image

    b = io.BytesIO()
    Image.fromarray(frame).save(b, format="PNG", compress_level=level)
    return b.tell()


def _webp(frame) -> int:
    from PIL import Image

    b = io.BytesIO()
    Image.fromarray(frame).save(b, format="WEBP", lossless=True, quality=100, method=4)
    return b.tell()


# -- report ----------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="240x416x33", help="synthetic video HxWxF (Wan's default: 480x832x81)")
    ap.add_argument("--sources", default="astronaut,coffee,rocket,retina,hubble_deep_field",
                    help="scikit-image photographs the camera moves over")
    ap.add_argument("--reference", type=int, default=4, help="held-out captions for the reference model (0: none)")
    ap.add_argument("--reference-size", default="", help="also generate at this HxWxF, e.g. 64x64x17")
    ap.add_argument("--repeats", type=int, default=1, help="timings: best of this many")
    ap.add_argument("--partner", choices=("cache", "offset"), default="cache",
                    help="the synthetic cached output: the baseline plus a smooth error of 3 levels RMS (~39 dB), "
                         "or the same shot with the camera a quarter pixel off (a worst case for the difference)")
    ap.add_argument("--candidates", action="store_true", help="also measure the other lossless codecs")
    ap.add_argument("--images", action="store_true", help="also compare single-frame formats")
    args = ap.parse_args(argv)
    h, w, f = (int(v) for v in args.size.split("x"))

    clips = []
    if args.reference:
        sizes = [(32, 32, 5)] + ([tuple(int(v) for v in args.reference_size.split("x"))] if args.reference_size else [])
        clips += reference_clips(args.reference, sizes)
    clips += list(synthetic_clips(h, w, f, [s for s in args.sources.split(",") if s], args.partner))

    import av

    print(f"lossless media: PNG per frame (compress_level=1, the format before) vs {media.VIDEO_FORMAT} "
          f"(libx264rgb qp 0, preset {media.X264_PRESET}); PyAV {av.__version__}, libavcodec "
          f"{'.'.join(map(str, av.library_versions['libavcodec']))}, {os.cpu_count()} CPUs")
    head = (f"{'video':34} {'PNG MB':>8} {'new MB':>8} {'bytes':>6} {'disk':>6} {'PNG enc':>8} {'new enc':>8} "
            f"{'PNG dec':>8} {'new dec':>8} {'dec fps':>8} {'dec MB/s':>8}  exact  same scores (psnr dB)  "
            f"cached: bytes, stored as")
    print(head)
    rows, cand_rows = [], {}
    with tempfile.TemporaryDirectory() as tmp_root:
        for i, (name, baseline, cached) in enumerate(clips):
            tmp = Path(tmp_root) / str(i)
            r = measure(name, baseline, cached, tmp, args.repeats)
            rows.append(r)
            print(f"{name:34} {r['png_bytes'] / 1e6:8.3f} {r['new_bytes'] / 1e6:8.3f} "
                  f"{r['new_bytes'] / r['png_bytes']:6.3f} {r['new_disk'] / r['png_disk']:6.3f} "
                  f"{r['png_enc_s']:7.2f}s {r['new_enc_s']:7.2f}s {r['png_dec_s']:7.2f}s {r['new_dec_s']:7.2f}s "
                  f"{r['frames'] / r['new_dec_s']:8.0f} {r['raw'] / r['new_dec_s'] / 1e6:8.1f}  "
                  f"{'yes' if r['png_exact'] and r['new_exact'] else 'NO':5}  "
                  f"{'yes' if r['same_scores'] else 'NO'} ({r['psnr']:.2f})  "
                  f"{r['new_cached_bytes'] / r['png_cached_bytes']:6.3f} "
                  f"{'difference' if r['cached_format'] == media.DELTA_FORMAT else 'itself'}", flush=True)
            if args.candidates:
                cand_rows[name] = candidates(name, baseline, r["png_bytes"], args.repeats)
            shutil.rmtree(tmp)
        groups: dict[str, list[dict]] = {}
        for r in rows:
            g = r["name"].split(" #")[0] if r["name"].startswith("reference") else \
                ("synthetic, grain" if "grain" in r["name"] else "synthetic, clean")
            groups.setdefault(g, []).append(r)
        print("\nsummary (sum of bytes over the group / sum of PNG bytes; decode speed = median over the group):")
        for g, rs in groups.items():
            if not rs:
                continue
            ratio = sum(r["new_bytes"] for r in rs) / sum(r["png_bytes"] for r in rs)
            disk = sum(r["new_disk"] for r in rs) / sum(r["png_disk"] for r in rs)
            enc = sum(r["new_enc_s"] for r in rs) / sum(r["png_enc_s"] for r in rs)
            fps = statistics.median(r["frames"] / r["new_dec_s"] for r in rs)
            png_fps = statistics.median(r["frames"] / r["png_dec_s"] for r in rs)
            cached = sum(r["new_cached_bytes"] for r in rs) / sum(r["png_cached_bytes"] for r in rs)
            cfps = statistics.median(r["frames"] / r["new_cached_dec_s"] for r in rs)
            print(f"  {g:24} baselines: bytes {ratio:.3f}x PNG, disk {disk:.3f}x, encode time {enc:.2f}x PNG's, "
                  f"decode {fps:.0f} frames/s (PNG {png_fps:.0f}); cached outputs: bytes {cached:.3f}x PNG "
                  f"({sum(r['cached_format'] == media.DELTA_FORMAT for r in rs)} of {len(rs)} stored as their "
                  f"difference), decode {cfps:.0f} frames/s; bit-exact {all(r['new_exact'] for r in rs)}, "
                  f"identical PSNR/SSIM {all(r['same_scores'] for r in rs)} ({len(rs)} videos)")
        if cand_rows:
            names = list(next(iter(cand_rows.values())))
            print("\ncandidates, bytes / PNG (! = decoded frames differ from the input), encode s, decode s:")
            print(f"{'video':34} " + " ".join(f"{n:>24}" for n in names))
            totals = {n: [0.0, True] for n in names}
            for name, res in cand_rows.items():
                cells = []
                for n in names:
                    ratio, exact, enc, dec = res[n]
                    cells.append(f"{ratio:6.3f}{'' if exact else '!'} {enc:6.2f}s {dec:6.2f}s".rjust(24))
                    png = next(r["png_bytes"] for r in rows if r["name"] == name)
                    totals[n][0] += ratio * png
                    totals[n][1] &= exact
                print(f"{name:34} " + " ".join(cells))
            png_total = sum(r["png_bytes"] for r in rows if r["name"] in cand_rows)
            print(f"{'all (bytes / PNG)':34} " + " ".join(
                f"{t / png_total:6.3f}{'' if ok else '!'}".rjust(24) for t, ok in totals.values()))
        if args.images:
            images(clips, Path(tmp_root))
    ok = all(r["new_exact"] and r["same_scores"] for r in rows)
    print("\nevery video bit-exact with identical scores" if ok else "\nMISMATCH: see the rows marked NO")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
