"""Quality metrics for cached diffusion outputs versus their uncached baselines.

Standalone package (no dependency on ``repro`` or ``experiments``). Importing
it only imports numpy; torch, lpips and open_clip are imported when a metric
that needs them runs.

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

from .clip_similarity import clip_score
from .errors import InputError, WeightsMissing
from .folders import score_folders
from .lpips_distance import lpips
from .psnr_db import PSNR_CAP_DB, psnr
from .scorer import METRICS, Scorer
from .ssim_index import ssim
from .stats import aggregate, bootstrap_ci
from .weights import fetch_weights

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
