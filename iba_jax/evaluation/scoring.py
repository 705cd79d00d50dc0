"""The metrics of one case's map, and the columns of a results file.

Per case: IoU with the ground truth after binarising the map (``iou_rule``; "area", the default
of the tables, keeps as many pixels as the ground truth has), pointing game, mass inside,
insertion and deletion AUC, Sensitivity-N at ``SENSITIVITY_FRACTIONS`` of the pixels, the
Pearson correlation with a per-pixel severity map (severity models; over the image, and within
the lungs only, where a map's grading counts and not its lying on the lungs), the fraction of
the target's instances that the binarised map marks (images with two or more), and the seconds
the case took (map and metrics; set by the runner).
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from iba_jax.bundle import ModelBundle
from iba_jax.evaluation.cases import Case
from iba_jax.evaluation.config import EvaluationConfig
from iba_jax.metrics import correlation, faithfulness, localisation
from iba_jax.records import header_of

# Sensitivity-N's subset sizes, as fractions of the pixels (log-spaced, 1 % to 80 %).
SENSITIVITY_FRACTIONS = (0.01, 0.025, 0.06, 0.15, 0.35, 0.8)
SENSITIVITY_COLUMNS = tuple(f"sensitivity_n@{f}" for f in SENSITIVITY_FRACTIONS)
# An instance is marked when the binarised map covers at least this share of its pixels.
MARKED_SHARE = 0.5
METRICS = (
    "iou",
    "pointing_game",
    "mass_inside",
    "insertion_auc",
    "deletion_auc",
    *SENSITIVITY_COLUMNS,
    "pcc",
    "pcc_lungs",
    "instances_marked",
    "seconds",
)
# The metrics reported with a confidence interval (write_report): all but Sensitivity-N's
# correlations and the seconds.
INTERVAL_METRICS = tuple(m for m in METRICS if m not in (*SENSITIVITY_COLUMNS, "seconds"))
KEYS = ("model", "index", "target", "target_name", "method")
COLUMNS = (*KEYS, *METRICS)  # of the results file, in order


def check_columns(path: Path) -> None:
    """Refuses a results file whose columns are not this version's (an older file lacks the
    metrics added since): its rows could be neither resumed nor summarised."""
    if not path.exists():
        return
    header = header_of(path)
    if tuple(header) != COLUMNS:
        missing = [c for c in COLUMNS if c not in header] or "another order"
        raise ValueError(
            f"results: {path} has the columns of another version of iba-jax (missing: "
            f"{missing}); evaluate into a new file."
        )


def rounded(value: float | np.floating | jax.Array) -> float:
    return round(float(value), 6)


def case_scores(
    bundle: ModelBundle,
    x: jax.Array,
    targets: jax.Array,
    maps: jax.Array,
    case: Case,
    config: EvaluationConfig,
    key: jax.Array,
) -> dict[str, float]:
    """The metrics of one case's map ``maps`` ``(1, H, W)`` (see the module doc)."""
    truth = jnp.asarray(case.truth)[None]
    binary = localisation.binarize_for(maps, truth, config.iou_rule)
    score = faithfulness.target_score(bundle.model, bundle.variables, targets)
    curves = faithfulness.insertion_deletion(
        score,
        x,
        maps,
        pixels_per_step=config.pixels_per_step,
        baseline=config.baseline,
        blur_sigma=config.blur_sigma,
    )
    sensitivity = [math.nan] * len(SENSITIVITY_FRACTIONS)
    if config.sensitivity_samples:
        pixels = case.truth.size
        sizes = tuple(max(1, round(f * pixels)) for f in SENSITIVITY_FRACTIONS)
        subsets_key = jax.random.fold_in(key, 1)
        _, correlations = faithfulness.sensitivity_n(
            score,
            x,
            maps,
            subsets_key,
            ns=sizes,
            samples=config.sensitivity_samples,
            baseline=config.baseline,
            blur_sigma=config.blur_sigma,
        )
        sensitivity = correlations[0]
    marked = math.nan
    if case.instances is not None and len(case.instances) >= 2:
        marked = localisation.instances_marked(binary[0], case.instances, MARKED_SHARE)
    pcc = pcc_lungs = math.nan
    if case.severity is not None:
        severity = jnp.asarray(case.severity)[None]
        pcc = float(correlation.pearson(maps, severity)[0])
        pcc_lungs = float(correlation.pearson(maps, severity, jnp.asarray(case.lungs)[None])[0])
    return {
        "iou": rounded(localisation.iou(binary, truth)[0]),
        "pointing_game": int(localisation.pointing_game(maps, truth)[0]),
        "mass_inside": rounded(localisation.mass_inside(maps, truth)[0]),
        "insertion_auc": rounded(curves.insertion_auc[0]),
        "deletion_auc": rounded(curves.deletion_auc[0]),
        **{c: rounded(v) for c, v in zip(SENSITIVITY_COLUMNS, sensitivity, strict=True)},
        "pcc": rounded(pcc),
        "pcc_lungs": rounded(pcc_lungs),
        "instances_marked": rounded(marked),
    }
