"""Two methods on the same cases: the paired difference, its bootstrap interval, a sign test.

A claim such as "Inverse IBA marks more instances than IBA" compares two numbers per case.
Comparing the two means with their standard errors ignores that the cases are shared (the
same hard cases are hard for both); the paired difference does not. ``paired_comparison``
reports the mean difference ``b - a`` with a 95 % bootstrap interval (BCa, SciPy), and the
two-sided sign test on the cases where the two differ (exact binomial, SciPy), which needs no
assumption on the differences' distribution. Pairs where either value is NaN are left out and
counted.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.stats


class PairedComparison(NamedTuple):
    """``b`` against ``a`` on the same cases.

    Attributes:
      n: pairs compared (both values finite).
      dropped: pairs left out (a NaN or infinite value).
      mean_a, mean_b: the means over the pairs compared.
      difference: the mean of ``b - a``.
      low, high: its bootstrap confidence interval (95 % by default).
      wins, losses: cases where ``b > a`` and ``b < a`` (ties are neither).
      sign_p: two-sided p-value of the sign test (wins against losses, ties dropped); 1.0 when
        every pair is tied.
    """

    n: int
    dropped: int
    mean_a: float
    mean_b: float
    difference: float
    low: float
    high: float
    wins: int
    losses: int
    sign_p: float


def paired_comparison(
    a: np.ndarray,
    b: np.ndarray,
    *,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> PairedComparison:
    """Compares ``b`` with ``a``, two values per case in the same order.

    Example:
      >>> import numpy as np
      >>> a = np.array([0.2, 0.4, 0.1, 0.5, 0.3, np.nan])
      >>> b = np.array([0.5, 0.6, 0.1, 0.9, 0.4, 0.7])
      >>> c = paired_comparison(a, b)
      >>> c.n, c.dropped, round(c.difference, 3), (c.wins, c.losses), round(c.sign_p, 3)
      (5, 1, 0.2, (4, 0), 0.125)
      >>> bool(c.low <= c.difference <= c.high)
      True
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(
            f"a, b: expected two 1-D arrays of the same length (one value per case); got "
            f"shapes {a.shape} and {b.shape}."
        )
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a level in (0, 1); got {confidence}.")
    kept = np.isfinite(a) & np.isfinite(b)
    a, b = a[kept], b[kept]
    if len(a) < 2:
        raise ValueError(f"a, b: expected at least 2 pairs of finite values; got {len(a)}.")
    difference = b - a
    mean = float(difference.mean())
    if np.ptp(difference) == 0:  # every case moved alike: no spread to resample
        low = high = mean
    else:
        interval = scipy.stats.bootstrap(
            (difference,),
            np.mean,
            confidence_level=confidence,
            n_resamples=resamples,
            method="BCa",
            rng=np.random.default_rng(seed),
        ).confidence_interval
        low, high = float(interval.low), float(interval.high)
    wins, losses = int(np.sum(difference > 0)), int(np.sum(difference < 0))
    sign_p = 1.0 if wins + losses == 0 else scipy.stats.binomtest(wins, wins + losses).pvalue
    return PairedComparison(
        n=len(a),
        dropped=int(np.sum(~kept)),
        mean_a=float(a.mean()),
        mean_b=float(b.mean()),
        difference=mean,
        low=low,
        high=high,
        wins=wins,
        losses=losses,
        sign_p=float(sign_p),
    )


def paired_markdown(comparisons: dict[str, PairedComparison], names: tuple[str, str]) -> str:
    """Comparisons as a Markdown table, one row per label; ``names`` are ``a`` and ``b``. The
    counts are the cases where ``b`` is higher / lower than ``a`` (better or worse depending on
    the metric: for a deletion AUC, lower is better)."""
    a, b = names
    rows = [
        f"| comparison | n | {a} | {b} | {b} − {a} (95 % CI) | {b} higher / lower | sign test p |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, c in comparisons.items():
        rows.append(
            f"| {label} | {c.n} | {c.mean_a:.3f} | {c.mean_b:.3f} | {c.difference:+.3f} "
            f"({c.low:+.3f}, {c.high:+.3f}) | {c.wins} / {c.losses} | {c.sign_p:.3g} |"
        )
    return "\n".join(rows)
