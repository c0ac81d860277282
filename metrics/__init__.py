"""Quality metrics for cached diffusion outputs versus their uncached baselines.

Standalone package (no dependency on ``repro`` or ``experiments``). Importing
it imports nothing heavy; numpy, torch, lpips and open_clip are imported when a
metric that needs them runs.

>>> import numpy as np, metrics
>>> a = np.zeros((32, 32, 3), np.uint8)
>>> float(metrics.psnr(a, a + 1)[0]) > 48
True

Modules: :mod:`~metrics.inputs` (input rules), :mod:`~metrics.psnr_db`,
:mod:`~metrics.ssim_index`, :mod:`~metrics.lpips_distance`,
:mod:`~metrics.clip_similarity`, :mod:`~metrics.scorer`, :mod:`~metrics.stats`,
:mod:`~metrics.weights`, :mod:`~metrics.folders`, :mod:`~metrics.fast_conv`
(NNPACK convolutions for LPIPS on CPU); ``python -m metrics`` is the CLI.
"""

import importlib
import importlib.util

from .errors import InputError, WeightsMissing

# Each name is imported from its module on first use (PEP 562), so importing the package (e.g. for
# metrics.registry while a spec is validated) imports neither numpy nor any network code.
_HOME = {"clip_score": "clip_similarity", "score_folders": "folders", "lpips": "lpips_distance",
         "PSNR_CAP_DB": "psnr_db", "psnr": "psnr_db", "METRICS": "scorer", "Scorer": "scorer", "ssim": "ssim_index",
         "aggregate": "stats", "bootstrap_ci": "stats", "fetch_weights": "weights"}

__all__ = [
    "METRICS",
    "PSNR_CAP_DB",
    "InputError",
    "Scorer",
    "WeightsMissing",
    "aggregate",
    "bootstrap_ci",
    "clip_score",
    "fetch_weights",
    "lpips",
    "psnr",
    "score_folders",
    "ssim",
]


def __getattr__(name: str):
    if name in _HOME:
        value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")  # a submodule, as an eager import would have set it
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
