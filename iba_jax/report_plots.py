"""Plots of an evaluation summary (PNG, via matplotlib's non-interactive Agg backend).

``insertion_deletion``: the paper's Fig. 2, each method's mean insertion AUC against its mean
deletion AUC (faithful methods sit top left). ``metric_bars``: one metric per method, e.g. the
IoU of Table 1 or the correlation with the severity map. ``sensitivity_n``: Fig. 3b.
``overlay``: an attribution map over its image, with a colour bar in the map's unit.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np

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


def overlay(
    pixels: np.ndarray,
    attribution: np.ndarray | None,
    unit: str,
    title: str,
    path: str | os.PathLike[str] | io.BytesIO,
    outline: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
) -> None:
    """The map ``(H, W)`` in colour (transparent where small) over the image ``(H, W, C)``
    (uint8, shown in gray), with a colour bar labelled ``unit``. The colours span the map's
    minimum to its 99.5th percentile, so that a few extreme pixels (gradients, LRP) do not
    leave the rest invisible. ``outline`` (a boolean mask) is drawn as a green contour and
    ``boxes`` (``(K, 4)`` normalised ymin, xmin, ymax, xmax) as green rectangles: the ground
    truth. Without a map: the image alone."""
    gray = np.asarray(pixels, np.float32).mean(axis=-1) / 255.0
    figure, axes = plt.subplots(figsize=(4.6, 4.0), dpi=100)
    axes.imshow(gray, cmap="gray", vmin=0.0, vmax=1.0)
    if attribution is not None:
        attribution = np.asarray(attribution, np.float32)
        low, high = float(attribution.min()), float(np.percentile(attribution, 99.5))
        if high <= low:
            high = float(attribution.max())
        span = high - low
        alpha = np.clip((attribution - low) / span, 0, 1) if span > 0 else 0 * attribution
        shown = axes.imshow(
            attribution, cmap="inferno", alpha=0.25 + 0.6 * alpha, vmin=low, vmax=high
        )
        bar = figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04)
        bar.set_label(unit)
    if outline is not None and np.any(outline):
        axes.contour(np.asarray(outline, np.float32), levels=[0.5], colors="lime", linewidths=1)
    height, width = gray.shape
    for ymin, xmin, ymax, xmax in np.reshape(boxes if boxes is not None else [], (-1, 4)):
        corner = (xmin * width - 0.5, ymin * height - 0.5)
        size = ((xmax - xmin) * width, (ymax - ymin) * height)
        axes.add_patch(plt.Rectangle(corner, *size, fill=False, edgecolor="lime", linewidth=1))
    axes.set_title(title, fontsize=9)
    axes.set_axis_off()
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)


def curves(
    fraction: np.ndarray,
    by_method: dict[str, tuple[np.ndarray, np.ndarray]],
    ylabel: str,
    path: str | os.PathLike[str] | io.BytesIO,
) -> None:
    """Insertion (left) and deletion (right) curves of one case, one line per method."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(8.4, 3.2), dpi=100, sharey=True)
    for method, (insertion, deletion) in by_method.items():
        left.plot(fraction, insertion, label=method)
        right.plot(fraction, deletion, label=method)
    for axes, name in ((left, "insertion"), (right, "deletion")):
        axes.set_title(name, fontsize=9)
        axes.set_xlabel("share of pixels")
        axes.grid(alpha=0.3)
    left.set_ylabel(ylabel)
    right.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)
