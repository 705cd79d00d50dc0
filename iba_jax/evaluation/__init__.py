"""Dataset-wide evaluation of attribution methods, one result row per image, target and method.

``evaluate`` explains every (image, positive target) case of a split with each method, scores
the map and appends the row to a CSV file the moment it is done. Run it again after a kill and
it skips the rows already there: finished work is never recomputed or lost. Several models (the
paper's BCE vs weighted BCE comparison) share one file: rows carry the model's name.

Rooms: ``cases`` (what is explained, against what truth), ``config`` (what a run is set to),
``scoring`` (the metrics of one map and the results file's columns), ``run`` (``evaluate``, and
the record of what determines its rows), ``report``
(``summary``, ``intervals`` and ``pivot`` turn the file into the paper's tables;
``write_report`` writes them all as Markdown, CSV and PNG plots).
"""

from iba_jax.evaluation.cases import Case, cases
from iba_jax.evaluation.config import CLASSIFICATION_METHODS, REGRESSION_METHODS, EvaluationConfig
from iba_jax.evaluation.report import (
    interval_markdown,
    intervals,
    markdown,
    pivot,
    summary,
    write_report,
)
from iba_jax.evaluation.run import (
    MissingStatsError,
    evaluate,
    load_stats,
    settings_path,
)
from iba_jax.evaluation.scoring import (
    COLUMNS,
    INTERVAL_METRICS,
    KEYS,
    MARKED_SHARE,
    METRICS,
    SENSITIVITY_COLUMNS,
    SENSITIVITY_FRACTIONS,
    case_scores,
    check_columns,
)

__all__ = [
    "CLASSIFICATION_METHODS",
    "COLUMNS",
    "INTERVAL_METRICS",
    "KEYS",
    "MARKED_SHARE",
    "METRICS",
    "REGRESSION_METHODS",
    "SENSITIVITY_COLUMNS",
    "SENSITIVITY_FRACTIONS",
    "Case",
    "EvaluationConfig",
    "MissingStatsError",
    "case_scores",
    "cases",
    "check_columns",
    "evaluate",
    "interval_markdown",
    "intervals",
    "load_stats",
    "markdown",
    "pivot",
    "settings_path",
    "summary",
    "write_report",
]
