"""Writes ``amt_golden.npz``: VBench's own motion-smoothness code run on small fixed clips.

What it runs: ``vbench/motion_smoothness.py`` and ``vbench/third_party/amt`` (AMT-S) from the
VBench 0.1.5 wheel (PyPI ``vbench-0.1.5-py3-none-any.whl``), imported straight from the wheel's
files; nothing of VBench is installed. ``MotionSmoothness(config, ckpt, 'cpu')`` is built by
VBench's own ``__init__`` / ``load_model`` (``OmegaConf.load`` of ``cfgs/AMT-S.yaml``,
``build_from_cfg``, ``torch.load(ckpt)['state_dict']``, strict ``load_state_dict``) from a checkpoint
holding the state dict of :func:`metrics.amt.build_amt` (seeded random weights): that strict load
is what proves the parameter names match. The score is VBench's ``motion_score`` on a folder of
lossless PNGs (``get_frames_from_img_folder``: ``cv2.imread`` then BGR -> RGB), so the channel
order the network sees is VBench's.

VBench imports some modules that are not needed here. ``vbench/__init__.py`` and
``vbench/utils.py`` (decord, the dimension registry) are replaced by empty stand-ins. cv2 and
omegaconf are used when importable; if not, minimal stand-ins are used (``cv2.absdiff`` as
``|a - b|`` on uint8, ``OmegaConf.load`` as ``yaml.safe_load`` with attribute access) and the frames
are handed to ``motion_score`` in memory instead of through PNGs; the npz records which.

Run from the repository root (about 10 s on 2 CPU cores)::

    mkdir -p /tmp/vb_dl && pip download vbench==0.1.5 --no-deps -d /tmp/vb_dl
    # optional, for the real cv2 / omegaconf (not installed into the project venv):
    .venv/bin/python -m pip install --no-deps --target /tmp/vbdeps \
        opencv-python-headless omegaconf antlr4-python3-runtime==4.9.3
    PYTHONPATH=$PWD:/tmp/vbdeps .venv/bin/python tests/metrics/data/make_amt_golden.py \
        --wheel /tmp/vb_dl/vbench-0.1.5-py3-none-any.whl

The clips are built by :func:`make_frames` from small seeded canvases stored in the npz (integer
arithmetic only, so the test rebuilds the same bytes anywhere); the test imports this file for it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import sys
import tempfile
import types
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(__file__).with_name("amt_golden.npz")
# (name, frames k, H, W, step per frame (dy, dx), canvas seed). H, W of at least 128 after
# padding to 16: smaller frames shrink AMT-S's 4-level correlation pyramid to 1 px, where
# VBench's bilinear_sampler divides by zero (see test_small_frames_refused).
CASES = [("a", 5, 117, 130, (1, 2), 1), ("b", 4, 128, 144, (2, -1), 2)]
UPSAMPLE = 8
SAMPLE_EVERY = 97  # flat index stride of the float values stored per predicted frame


def canvas_for(k: int, h: int, w: int, step: tuple[int, int], seed: int) -> np.ndarray:
    """Seeded coarse uint8 canvas ``[3, ch, cw]`` big enough for ``k`` crops moving by ``step``."""
    need_h, need_w = h + (k - 1) * abs(step[0]), w + (k - 1) * abs(step[1])
    ch, cw = -(-(need_h - 1) // UPSAMPLE) + 1, -(-(need_w - 1) // UPSAMPLE) + 1
    return np.random.default_rng(seed).integers(0, 256, size=(3, ch, cw), dtype=np.uint8)


def _upsample(c: np.ndarray, axis: int) -> np.ndarray:
    # exact integer linear interpolation by UPSAMPLE along one axis
    n = c.shape[axis]
    i = np.arange((n - 1) * UPSAMPLE + 1)
    i0 = np.minimum(i // UPSAMPLE, n - 2)
    f = i - i0 * UPSAMPLE
    a, b = np.take(c, i0, axis=axis), np.take(c, i0 + 1, axis=axis)
    shape = [1] * c.ndim
    shape[axis] = -1
    f = f.reshape(shape)
    return (a * (UPSAMPLE - f) + b * f) // UPSAMPLE


def make_frames(canvas: np.ndarray, k: int, h: int, w: int, step: tuple[int, int]) -> np.ndarray:
    """``[k, 3, h, w]`` uint8 RGB: a smooth image (the canvas upsampled) translating by ``step`` per frame."""
    big = _upsample(_upsample(canvas.astype(np.int64), 1), 2)
    y0 = 0 if step[0] >= 0 else (k - 1) * -step[0]
    x0 = 0 if step[1] >= 0 else (k - 1) * -step[1]
    out = [big[:, y0 + t * step[0]: y0 + t * step[0] + h, x0 + t * step[1]: x0 + t * step[1] + w] for t in range(k)]
    return np.stack(out).astype(np.uint8)


def frames_digest(frames: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest()


def pred_stats(pred: np.ndarray) -> dict[str, np.ndarray]:
    """Checksums of float predictions ``[m, 3, H, W]`` (the npz must stay small)."""
    flat = pred.reshape(pred.shape[0], -1).astype(np.float64)
    return {
        "pred_mean": flat.mean(axis=1),
        "pred_std": flat.std(axis=1),
        "pred_chmean": pred.astype(np.float64).mean(axis=(2, 3)),
        "pred_sample": flat[:, ::SAMPLE_EVERY].astype(np.float32),
    }


# ------------------------------------------------------------------------------ VBench from the wheel


def _stub_modules(root: Path) -> list[str]:
    """Stand-ins for what VBench imports but this run does not use; returns the names stubbed."""
    stubbed = []
    pkg = types.ModuleType("vbench")
    pkg.__path__ = [str(root / "vbench")]  # submodules load from the wheel's files; __init__ is skipped
    sys.modules["vbench"] = pkg
    utils = types.ModuleType("vbench.utils")  # decord, torchvision; only load_dimension_info is imported

    def load_dimension_info(*a: Any, **k: Any) -> Any:
        raise RuntimeError("not used here")

    utils.load_dimension_info = load_dimension_info
    sys.modules["vbench.utils"] = utils
    stubbed.append("vbench.utils")
    try:
        import cv2  # noqa: F401
    except ImportError:
        cv2 = types.ModuleType("cv2")
        cv2.absdiff = lambda a, b: np.abs(a.astype(np.int16) - b.astype(np.int16)).astype(np.uint8)
        sys.modules["cv2"] = cv2
        stubbed.append("cv2")
    try:
        import omegaconf  # noqa: F401
    except ImportError:
        import yaml

        class _Cfg(dict):
            def __getattr__(self, name: str) -> Any:
                return self[name]

        def _wrap(x: Any) -> Any:
            return _Cfg({k: _wrap(v) for k, v in x.items()}) if isinstance(x, dict) else x

        om = types.ModuleType("omegaconf")
        om.OmegaConf = types.SimpleNamespace(load=lambda p: _wrap(yaml.safe_load(Path(p).read_text())))
        sys.modules["omegaconf"] = om
        stubbed.append("omegaconf")
    return stubbed


class _Recorder:
    """Stands in for ``MotionSmoothness.model``: calls VBench's AMT-S and keeps what it returned."""

    def __init__(self, model: Any) -> None:
        self.model, self.preds, self.calls = model, [], []

    def __call__(self, in_0: Any, in_1: Any, embt: Any, **kwargs: Any) -> dict:
        out = self.model(in_0, in_1, embt, **kwargs)
        self.preds.append(out["imgt_pred"].detach().cpu().clone())
        self.calls.append((tuple(in_0.shape), float(embt.flatten()[0]), float(kwargs["scale_factor"])))
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wheel", default="/tmp/vb_dl/vbench-0.1.5-py3-none-any.whl")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()

    import torch

    from metrics.amt import build_amt

    torch.set_num_threads(1)  # the tests run single-threaded; keep the same reduction order
    tmp = Path(tempfile.mkdtemp(prefix="amt_golden_"))
    with zipfile.ZipFile(args.wheel) as z:
        z.extractall(tmp, [n for n in z.namelist() if n.startswith("vbench/")])
    stubbed = _stub_modules(tmp)
    ms = importlib.import_module("vbench.motion_smoothness")
    from vbench.third_party.amt.utils.build_utils import build_from_cfg
    from vbench.third_party.amt.utils.utils import InputPadder as VBInputPadder

    ours = build_amt(None, "cpu")
    ckpt = tmp / "amt-s.pth"
    torch.save({"state_dict": ours.state_dict()}, ckpt)
    cfg = tmp / "vbench/third_party/amt/cfgs/AMT-S.yaml"
    motion = ms.MotionSmoothness(str(cfg), str(ckpt), "cpu")  # VBench's load_model: strict load

    # informational: VBench's network built under the same seed draws the same random weights
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vb_rand = build_from_cfg(ms.OmegaConf.load(str(cfg)).network)
    same_init = all(torch.equal(a, b) for a, b in zip(vb_rand.state_dict().values(), ours.state_dict().values()))
    print("VBench's seeded init equals ours:", same_init)

    real_io = "cv2" not in stubbed
    rec = _Recorder(motion.model)
    motion.model = rec
    diffs: list[float] = []
    get_diff = motion.get_diff
    motion.get_diff = lambda a, b: diffs.append(get_diff(a, b)) or diffs[-1]

    out: dict[str, Any] = {
        "wheel": os.path.basename(args.wheel),
        "stubbed": ",".join(stubbed),
        "param_sum": np.float64(sum(p.double().sum().item() for p in ours.parameters())),
        "param_abs_sum": np.float64(sum(p.double().abs().sum().item() for p in ours.parameters())),
    }
    for name, k, h, w, step, seed in CASES:
        canvas = canvas_for(k, h, w, step, seed)
        frames = make_frames(canvas, k, h, w, step)
        rgb = [np.ascontiguousarray(f.transpose(1, 2, 0)) for f in frames]  # HWC RGB, as VBench holds them
        folder = tmp / f"clip_{name}"
        folder.mkdir()
        if real_io:
            from PIL import Image  # written without cv2, so VBench's BGR -> RGB is exercised for real

            for t, f in enumerate(rgb):
                Image.fromarray(f).save(folder / f"{t:03d}.png")
        else:
            motion.fp.get_frames_from_img_folder = lambda _p, _rgb=rgb: _rgb
        rec.preds.clear(), rec.calls.clear(), diffs.clear()
        score = motion.motion_score(str(folder))
        assert all(c[1] == 0.5 and c[2] == 1.0 and c[0][0] == 1 for c in rec.calls), rec.calls
        padder = VBInputPadder((1, 3, h, w), 16)  # int(16 / scale) with scale 1, as asserted above
        preds = torch.cat([padder.unpad(p) for p in rec.preds]).numpy()
        u8 = np.stack([ms.tensor2img(torch.from_numpy(p[None])) for p in preds])
        print(f"{name}: k={k} {h}x{w} preds {preds.shape} d={np.round(diffs, 4)} score={score:.8f} "
              f"min/max {preds.min():.3f}/{preds.max():.3f}")
        out.update({f"{name}_canvas": canvas, f"{name}_meta": np.array([k, h, w, *step]),
                    f"{name}_frames_sha256": frames_digest(frames),
                    f"{name}_diffs": np.array(diffs, np.float64), f"{name}_score": np.float64(score),
                    f"{name}_pred_u8_sum": u8.reshape(len(u8), -1).astype(np.int64).sum(axis=1)})
        out.update({f"{name}_{key}": v for key, v in pred_stats(preds).items()})
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes); stubbed: {out['stubbed']}")


if __name__ == "__main__":
    main()
