"""A mean with its confidence interval: how far a table's figure can be trusted.

``mean_interval`` gives the mean of the finite values and the two-sided interval of Student's t
(``mean ± t(1 - (1 - confidence) / 2, n - 1) · s / √n``, s the sample standard deviation), the
interval a paper's "mean (95 % CI)" usually means. NaN values (a metric a case does not have)
are left out and not counted. For two methods on the same cases, compare them paired
(``metrics.paired``), not by whether their intervals overlap.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.stats
from numpy.typing import ArrayLike


class MeanInterval(NamedTuple):
    """``mean`` and its interval ``[low, high]`` over ``n`` finite values (``low`` and ``high``
    are NaN under two values; all three are NaN without one)."""

    mean: float
    low: float
    high: float
    n: int


def mean_interval(values: ArrayLike, confidence: float = 0.95) -> MeanInterval:
    """The mean of the finite ``values`` and its t interval at ``confidence``.

    Example:
      >>> mean_interval([1.0, 2.0, 3.0, 4.0, float("nan")])
      MeanInterval(mean=2.5, low=0.445..., high=4.554..., n=4)
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: expected a share in (0, 1); got {confidence!r}.")
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return MeanInterval(math.nan, math.nan, math.nan, 0)
    mean = float(v.mean())
    if len(v) < 2:
        return MeanInterval(mean, math.nan, math.nan, 1)
    half = scipy.stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return MeanInterval(mean, mean - float(half), mean + float(half), len(v))
