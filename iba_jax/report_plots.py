"""Plots of an evaluation summary (PNG, via matplotlib's non-interactive Agg backend).

``insertion_deletion``: the paper's Fig. 2, each method's mean insertion AUC against its mean
deletion AUC (faithful methods sit top left). ``metric_bars``: one metric per method, e.g. the
IoU of Table 1 or the correlation with the severity map. ``sensitivity_n``: Fig. 3b.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt


def insertion_deletion(table: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Scatter of mean deletion AUC (x) against mean insertion AUC (y), one point per method."""
    figure, axes = plt.subplots(figsize=(5, 4.2), dpi=120)
    for row in table:
        axes.scatter(row["deletion_auc"], row["insertion_auc"], s=36)
        axes.annotate(
            row["method"],
            (row["deletion_auc"], row["insertion_auc"]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=8,
        )
    axes.set_xlabel("deletion AUC (lower is better)")
    axes.set_ylabel("insertion AUC (higher is better)")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def metric_bars(table: Sequence[dict[str, Any]], metric: str, path: str | os.PathLike[str]) -> None:
    """A bar per method of the mean ``metric`` (methods without a value are left out)."""
    rows = [r for r in table if not math.isnan(float(r[metric]))]
    figure, axes = plt.subplots(figsize=(1.0 + 0.8 * max(len(rows), 1), 3.6), dpi=120)
    axes.bar([r["method"] for r in rows], [float(r[metric]) for r in rows], color="#4c72b0")
    axes.set_ylabel(metric)
    axes.tick_params(axis="x", labelrotation=35, labelsize=8)
    for label in axes.get_xticklabels():
        label.set_horizontalalignment("right")
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def sensitivity_n(
    table: Sequence[dict[str, Any]],
    fractions: Sequence[float],
    columns: Sequence[str],
    path: str | os.PathLike[str],
) -> None:
    """Fig. 3b: each method's mean Sensitivity-N correlation (y) against the share of pixels
    removed (x, log scale), one line per method."""
    figure, axes = plt.subplots(figsize=(5.5, 4.2), dpi=120)
    for row in table:
        axes.plot(fractions, [float(row[c]) for c in columns], marker="o", label=row["method"])
    axes.set_xscale("log")
    axes.set_xlabel("share of pixels removed (n / pixels)")
    axes.set_ylabel("Pearson correlation (Sensitivity-N)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
