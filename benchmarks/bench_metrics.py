"""Benchmark: metrics.Scorer versus a per-frame loop as public eval scripts write it.

Scores ``--videos`` synthetic videos (default 2 x 81 frames at 480x832) with
PSNR + SSIM + LPIPS(alex), once with ``metrics.Scorer`` (frames batched, torch)
and once with a straightforward loop (scikit-image PSNR/SSIM per frame in
numpy, ``lpips`` one frame at a time), in one process, and prints both times,
their ratio and the largest difference between the two sets of values.

The process runs the way the ``repro`` and ``python -m metrics`` commands run:
short OpenMP spin (see ``metrics.device.prefer_short_openmp_spin``), which the
Scorer's NNPACK convolutions need and which costs the loop a few percent. So
the loop is also timed once more in a child process under default OpenMP
settings, and the reported speed-up is against the faster of the two loops.

LPIPS runs on random backbone weights when the pretrained AlexNet is not
cached (both sides use the same network weights; speed does not depend on
them, and the output says which it was).

    python benchmarks/bench_metrics.py                      # full size
    python benchmarks/bench_metrics.py --frames 8 --height 128 --width 224
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from metrics.device import prefer_short_openmp_spin  # noqa: E402

# --loop-only is the child that times the loop under default OpenMP settings.
LOOP_ONLY = "--loop-only" in sys.argv
USER_OPENMP = "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ
SHORT_SPIN = not LOOP_ONLY and not USER_OPENMP and prefer_short_openmp_spin()


def synthetic_video(frames: int, h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(cached, baseline) uint8 [F, H, W, 3]: moving gradients + texture; cached adds noise and a shift."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, h, dtype=np.float32), np.linspace(0, 1, w, dtype=np.float32), indexing="ij")
    texture = rng.random((h, w, 3), dtype=np.float32)
    base = np.empty((frames, h, w, 3), np.uint8)
    cached = np.empty_like(base)
    for f in range(frames):
        t = f / max(frames, 1)
        img = np.stack([np.sin(6 * xx + 3 * t), np.cos(5 * yy - 2 * t), np.sin(4 * (xx + yy) + t)], -1) * 0.35 + 0.5
        img = np.clip(img + 0.15 * np.roll(texture, f, axis=1), 0, 1)
        base[f] = (img * 255 + 0.5).astype(np.uint8)
        noisy = img + rng.normal(0, 0.02, img.shape).astype(np.float32)
        cached[f] = (np.clip(np.roll(noisy, 1, axis=0), 0, 1) * 255 + 0.5).astype(np.uint8)
    return cached, base


def loop_scores(videos, lpips_net) -> dict[str, list[float]]:
    """The common per-frame loop: numpy + scikit-image per frame, LPIPS one frame at a time."""
    import torch
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    out = {"psnr": [], "ssim": [], "lpips": []}
    for cached, base in videos:
        for f in range(cached.shape[0]):
            a = cached[f].astype(np.float64) / 255.0
            b = base[f].astype(np.float64) / 255.0
            out["psnr"].append(peak_signal_noise_ratio(b, a, data_range=1.0))
            out["ssim"].append(structural_similarity(b, a, gaussian_weights=True, sigma=1.5,
                                                     use_sample_covariance=False, data_range=1.0, channel_axis=-1))
            ta = torch.from_numpy(a).permute(2, 0, 1)[None].float() * 2 - 1
            tb = torch.from_numpy(b).permute(2, 0, 1)[None].float() * 2 - 1
            with torch.no_grad():
                out["lpips"].append(float(lpips_net(ta, tb)))
    return out


def reference_net(scorer_net, device: str):
    """A plain ``lpips.LPIPS`` (default convolutions, default layout) with the Scorer's weights."""
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_net = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    ref_net.load_state_dict(scorer_net.module.state_dict())  # identical weights on both sides
    return ref_net.to(device)


def time_loop(videos, ref_net, repeat: int) -> list[float]:
    loop_scores([(videos[0][0][:1], videos[0][1][:1])], ref_net)  # warm-up (oneDNN kernels per shape)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        loop_scores(videos, ref_net)
        times.append(time.perf_counter() - t)
    return times


def loop_in_child(argv: list[str]) -> float | None:
    """Best loop time from a child process with default OpenMP settings (None if it failed)."""
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}  # ours: only called when SHORT_SPIN
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--loop-only"],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"(default-OpenMP loop in a child process failed: {proc.stderr.strip()[-300:]})")
        return None
    return min(json.loads(proc.stdout.strip().splitlines()[-1])["loop_s"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=2)
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=1, help="alternate the two runs this many times, report the best")
    p.add_argument("--threads", type=int, default=0, help="torch threads for both sides (0: torch default)")
    p.add_argument("--no-child-loop", action="store_true", help="skip the default-OpenMP loop in a child process")
    p.add_argument("--loop-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    import metrics
    from metrics.lpips_distance import load_lpips

    videos = [synthetic_video(args.frames, args.height, args.width, seed=i) for i in range(args.videos)]
    if args.loop_only:
        ref_net = reference_net(load_lpips("alex", args.device, allow_random_weights=True), args.device)
        print(json.dumps({"loop_s": time_loop(videos, ref_net, args.repeat)}))
        return

    print(f"{args.videos} videos x {args.frames} frames at {args.height}x{args.width}, device {args.device}, "
          f"torch threads {torch.get_num_threads()}, cpu count {os.cpu_count()}, "
          f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'default')}")
    t = time.perf_counter()
    scorer = metrics.Scorer(names=("psnr", "ssim", "lpips"), device=args.device, batch_size=args.batch_size,
                            allow_random_weights=True)
    t_build = time.perf_counter() - t
    weights = "RANDOM backbone weights (pretrained AlexNet not cached)" if scorer.random_weights["lpips"] else "pretrained weights"
    nnpack = sum(type(m).__name__ == "NnpackConv2d" for m in scorer._lpips.module.modules())
    print(f"LPIPS alex on {weights}; label {scorer.labels['lpips']}; {nnpack} backbone convolutions on NNPACK")
    ref_net = reference_net(scorer._lpips, args.device)

    # Warm-up on one frame each (oneDNN builds its kernels for a new shape on first use).
    scorer.score_pairs([(videos[0][0][:1], videos[0][1][:1], None)])
    loop_scores([(videos[0][0][:1], videos[0][1][:1])], ref_net)

    ours_t, loop_t = [], []
    for r in range(args.repeat):
        t, c = time.perf_counter(), time.process_time()
        res = scorer.score_pairs([(c_, b_, None) for c_, b_ in videos])
        ours_t.append(time.perf_counter() - t)
        ours_cpu = time.process_time() - c
        t, c = time.perf_counter(), time.process_time()
        ref = loop_scores(videos, ref_net)
        loop_t.append(time.perf_counter() - t)
        loop_cpu = time.process_time() - c
        print(f"run {r + 1}: Scorer {ours_t[-1]:.2f} s (cpu {ours_cpu:.1f} s), per-frame loop {loop_t[-1]:.2f} s "
              f"(cpu {loop_cpu:.1f} s), ratio {loop_t[-1] / ours_t[-1]:.2f}x; load avg {os.getloadavg()[0]:.2f}")

    n_frames = args.videos * args.frames
    diffs = {k: float(np.max(np.abs(np.concatenate([r[k]["per_frame"] for r in res]) - np.array(ref[k]))))
             for k in ("psnr", "ssim", "lpips")}
    best_ours, best_loop = min(ours_t), min(loop_t)
    child = None
    if not args.no_child_loop and SHORT_SPIN:
        child = loop_in_child(sys.argv[1:])
    print(f"Scorer construction (LPIPS network): {t_build:.2f} s (not included below)")
    print(f"Scorer:         {best_ours:8.2f} s  ({1000 * best_ours / n_frames:.0f} ms/frame)")
    print(f"per-frame loop: {best_loop:8.2f} s  ({1000 * best_loop / n_frames:.0f} ms/frame), this process")
    if child is not None:
        print(f"per-frame loop: {child:8.2f} s  ({1000 * child / n_frames:.0f} ms/frame), "
              "child process, default OpenMP settings")
        best_loop = min(best_loop, child)
    print(f"speed-up:       {best_loop / best_ours:8.2f}x  (against the faster loop)")
    print("max |difference| Scorer vs loop: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))


if __name__ == "__main__":
    main()
