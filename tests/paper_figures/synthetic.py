"""Synthetic `points`/`items`/`calibrations` tables that follow the store's export contract."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

METRICS = ("lpips", "psnr", "ssim", "clip_delta")
HIGHER = {"lpips": False, "psnr": True, "ssim": True, "clip_delta": True}
N_STEPS = 28


def _row(pid: str, method: str, label: str, key: float | None, speedup: float, t: float, rng) -> dict:
    lat_base = 12.0
    latency = lat_base / speedup
    row = {
        "point_id": pid,
        "method": method,
        "label": label,
        "params": json.dumps({"threshold": key} if key is not None else {}),
        "key_param": "threshold" if key is not None else None,
        "key_value": key if key is not None else math.nan,
        "optimization": "none",
        "status": "ok",
        "error": None,
        "n_items": 4,
        "latency_s": latency,
        "latency_q25_s": latency * 0.98,
        "latency_q75_s": latency * 1.03,
        "denoise_s": latency - 1.6,
        "speedup": speedup,
        "speedup_ci_low": speedup * 0.97 if method != "baseline" else 1.0,
        "speedup_ci_high": speedup * 1.03 if method != "baseline" else 1.0,
        "speedup_denoise": (lat_base - 1.6) / (latency - 1.6),
        "compute_fraction": 1.0 / speedup,
        "peak_memory_mb": 30500.0 + 120 * t * 10,
        "text_encode_s": 0.35,
        "vae_decode_s": 0.9,
        "inter_step_gap_s": 0.2 + 0.1 * t,
        "transformer_s": latency - 1.6 - (0.3 + 0.1 * t),
        "loop_overhead_s": 0.3 + 0.1 * t,
        "other_s": 0.15,
        "compile_s": math.nan,
    }
    if method == "baseline":
        vals = {"lpips": math.nan, "psnr": math.nan, "ssim": math.nan, "clip_delta": math.nan, "reference": True}
    else:
        vals = {
            "lpips": 0.02 + 0.9 * t**1.3 + rng.normal(0, 0.004),
            "psnr": 38.0 - 45.0 * t + rng.normal(0, 0.3),
            "ssim": 0.985 - 0.9 * t + rng.normal(0, 0.004),
            "clip_delta": -0.3 * t + rng.normal(0, 0.01),
        }
    for m, v in vals.items():
        row[m] = v
        w = 0.0 if method == "baseline" else abs(v) * 0.08 + 0.003
        row[f"{m}_ci_low"] = v - w
        row[f"{m}_ci_high"] = v + w
    frac = max(0.0, min(1.0, 1.0 / speedup))
    steps = [1.0 if (s < 3 or s == N_STEPS - 1 or (s * frac) % 1 < frac) else 0.0 for s in range(N_STEPS)]
    if method == "first_block_cache":  # FBC always computes the first block, so never exactly 0
        steps = [v if v == 1.0 else 1.0 / 57 for v in steps]
    row["step_computed"] = json.dumps([round(v, 4) for v in steps])
    return row


def add_fronts(points: pd.DataFrame) -> pd.DataFrame:
    """on_front_<m>: not dominated in (speedup up, metric better) among non-failed rows."""
    ok = points["status"] != "failed"
    for m in METRICS:
        flags = []
        for i, r in points.iterrows():
            if not ok[i] or not np.isfinite(r["speedup"]) or pd.isna(r[m]):
                flags.append(False)
                continue
            dominated = False
            for j, o in points[ok].iterrows():
                if j == i:
                    continue
                better_q = o[m] >= r[m] if HIGHER[m] else o[m] <= r[m]
                strictly = o["speedup"] > r["speedup"] or (o[m] > r[m] if HIGHER[m] else o[m] < r[m])
                if o["speedup"] >= r["speedup"] and better_q and strictly:
                    dominated = True
                    break
            flags.append(not dominated)
        points[f"on_front_{m}"] = flags
    return points


def make_points(random_lpips: bool = False, with_failed: bool = True, seed: int = 0,
                fbc=(0.05, 0.08, 0.1, 0.12, 0.15, 0.2), mag=(0.06, 0.12, 0.24)) -> pd.DataFrame:
    """Baseline + first_block_cache and mag_cache sweeps (+ one OOM-failed point)."""
    rng = np.random.default_rng(seed)
    rows = [_row("p000", "baseline", "baseline", None, 1.0, 0.0, rng)]
    for k, t in enumerate(fbc):
        speedup = 1.0 + 9.0 * t - 8.0 * t * t + rng.normal(0, 0.02)
        rows.append(_row(f"fbc{k}", "first_block_cache", f"t={t:g}", t, speedup, t, rng))
    for k, t in enumerate(mag):
        speedup = 1.2 + 6.0 * t + rng.normal(0, 0.02)
        rows.append(_row(f"mag{k}", "mag_cache", f"t={t:g} r=0.2", t, speedup, t * 0.6, rng))
    if with_failed:
        bad = _row("fbc_fail", "first_block_cache", "t=0.3", 0.3, 1.0, 0.3, rng)
        for col in list(bad):
            if col not in ("point_id", "method", "label", "params", "key_param", "key_value", "optimization", "step_computed"):
                bad[col] = math.nan
        bad.update(status="failed", error="torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
                   n_items=0, step_computed=None)
        rows.append(bad)
    points = add_fronts(pd.DataFrame(rows))
    points.attrs["metric_labels"] = {
        "lpips": "LPIPS (alex)" + (" [random weights]" if random_lpips else ""),
        "psnr": "PSNR (dB)",
        "ssim": "SSIM",
        "clip_delta": "ΔCLIP score",
    }
    points.attrs["title"] = "fbc_vs_mag · FLUX.1-dev"
    return points


def write_frames(folder: Path, n: int, size: tuple[int, int], seed: int) -> None:
    """Small deterministic PNG frames: a moving gradient, shifted per output.

    No pixel noise: noise makes every PNG/SVG/PDF encode of the grids slow, and
    the tests check structure, not image statistics.
    """
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    shift = seed % 97
    for f in range(n):
        r = (xx * 255 // max(1, w - 1) + 9 * f + shift) % 256
        g = (yy * 255 // max(1, h - 1)) % 256
        b = ((xx + yy + 5 * f) * 3 + shift) % 256
        img = np.stack([r, g, b], axis=-1).astype(np.int16)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"frame_{f:05d}.png")


def make_items(points: pd.DataFrame, root: Path, kind: str = "image", n_prompts: int = 2, seeds=(0, 1),
               n_frames: int | None = None, size: tuple[int, int] = (64, 48)) -> pd.DataFrame:
    n_frames = n_frames or (1 if kind == "image" else 9)
    rows = []
    for k, (_, p) in enumerate(points.iterrows()):
        for pi in range(n_prompts):
            for s in seeds:
                failed = p["status"] == "failed"
                folder = root / f"{p['point_id']}_p{pi}_s{s}"
                if not failed:
                    write_frames(folder, n_frames, size, seed=1000 * k + 10 * pi + s)
                rows.append({
                    "point_id": p["point_id"], "method": p["method"], "label": p["label"],
                    "prompt_index": pi, "prompt": f"a red fox jumping over a $5 fence, prompt {pi}",
                    "seed": s, "kind": kind, "frames_dir": None if failed else str(folder),
                    "mp4": None, "speedup": p["speedup"], "lpips": p["lpips"], "psnr": p["psnr"],
                    "ssim": p["ssim"], "clip_delta": p["clip_delta"], "status": p["status"],
                })
    return pd.DataFrame(rows)


def make_calibrations() -> list[dict]:
    steps = N_STEPS
    x = np.linspace(0, 1, steps)
    cond = (1.0 - 0.12 * x**2 + 0.05 * np.exp(-20 * x)).round(4).tolist()
    uncond = (1.0 - 0.15 * x**2 + 0.07 * np.exp(-20 * x)).round(4).tolist()
    return [{"key": "flux-dev-28", "ratios": {"cond": cond, "uncond": uncond}, "used": "cond",
             "steps": steps, "model": "FLUX.1-dev"}]
