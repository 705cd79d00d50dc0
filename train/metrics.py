"""Validation metrics: ROC AUC and average precision per class, MAE, RMSE and Pearson r."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def classification_metrics(
    scores: np.ndarray, labels: np.ndarray, label_names: tuple[str, ...]
) -> dict[str, float]:
    """Per-class ``auc/NAME`` and ``ap/NAME`` and their means over the classes that have both
    positive and negative examples (a class without one of them has no AUC: it is left out and
    reported as NaN)."""
    metrics: dict[str, float] = {}
    aucs, aps = [], []
    for c, name in enumerate(label_names):
        y = labels[:, c]
        if 0 < y.sum() < len(y):
            aucs.append(roc_auc_score(y, scores[:, c]))
            aps.append(average_precision_score(y, scores[:, c]))
            metrics[f"auc/{name}"], metrics[f"ap/{name}"] = aucs[-1], aps[-1]
        else:
            metrics[f"auc/{name}"] = metrics[f"ap/{name}"] = float("nan")
    metrics["mean_auc"] = float(np.mean(aucs)) if aucs else float("nan")
    metrics["mean_ap"] = float(np.mean(aps)) if aps else float("nan")
    return metrics


def regression_metrics(predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and Pearson r (NaN when either side is constant)."""
    p, t = np.ravel(predictions).astype(np.float64), np.ravel(targets).astype(np.float64)
    error = p - t
    pearson = float(np.corrcoef(p, t)[0, 1]) if p.std() > 0 and t.std() > 0 else float("nan")
    return {
        "mae": float(np.abs(error).mean()),
        "rmse": float(np.sqrt((error**2).mean())),
        "pearson": pearson,
    }
