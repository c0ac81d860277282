"""Exceptions raised by the metrics package.

Both derive from built-in exceptions so callers that only know the standard
hierarchy (``ValueError`` for bad data, ``RuntimeError`` for an unusable
environment) still catch them.
"""

from __future__ import annotations

__all__ = ["InputError", "WeightsMissing"]


class InputError(ValueError):
    """Pixels or shapes that cannot be scored; the message names the offending item.

    >>> import numpy as np, metrics
    >>> try:
    ...     metrics.psnr(np.zeros((8, 8, 3), np.int32), np.zeros((8, 8, 3), np.int32))
    ... except metrics.InputError as e:
    ...     print(str(e).split(":")[0])
    a
    """

    exit_code = 2  # bad input, as for a bad spec (repro's CLI reads it from the type)


class WeightsMissing(RuntimeError):
    """Pretrained network weights are neither cached nor downloadable.

    The message names the file or model, the cache directory searched and the
    command that fetches the weights.
    """

    exit_code = 3  # missing weights, as for a missing model (repro's CLI reads it from the type)
