"""The results file as the paper's tables: summaries, intervals, pivots, Markdown, plots."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from iba_jax import checks, report_plots
from iba_jax.evaluation.scoring import (
    INTERVAL_METRICS,
    KEYS,
    METRICS,
    SENSITIVITY_COLUMNS,
    SENSITIVITY_FRACTIONS,
    check_columns,
)
from iba_jax.metrics.intervals import mean_interval
from iba_jax.records import read_rows, write_rows


def _groups(results: str | os.PathLike[str], by: Sequence[str]) -> dict[tuple, list[dict]]:
    """The rows of ``results`` grouped by the columns ``by`` (of ``KEYS``), in the order groups
    first appear."""
    checks.check_names("by", tuple(by), KEYS)
    check_columns(Path(results))
    groups: dict[tuple[str, ...], list[dict[str, str]]] = {}
    for row in read_rows(Path(results)):
        groups.setdefault(tuple(row[k] for k in by), []).append(row)
    return groups


def summary(
    results: str | os.PathLike[str], by: Sequence[str] = ("method",)
) -> list[dict[str, Any]]:
    """One row per group of results (``by``: columns of ``KEYS``), in the order groups first
    appear: the number of cases, each metric's mean over the cases that have it, and
    ``seconds``' median (the first case of a method includes its compilation)."""
    table = []
    for group, mine in _groups(results, by).items():
        entry: dict[str, Any] = {**dict(zip(by, group, strict=True)), "cases": len(mine)}
        for metric in METRICS:
            values = np.array([float(r[metric]) for r in mine])
            finite = values[~np.isnan(values)]
            if not len(finite):
                entry[metric] = math.nan
            else:
                middle = np.median(finite) if metric == "seconds" else finite.mean()
                entry[metric] = round(float(middle), 4)
        table.append(entry)
    return table


def intervals(
    results: str | os.PathLike[str],
    by: Sequence[str] = ("model", "method"),
    confidence: float = 0.95,
) -> list[dict[str, Any]]:
    """Per group of results and metric of ``INTERVAL_METRICS`` that the group has: the mean
    over the cases, its confidence interval (Student's t, ``metrics.intervals``) and n."""
    table = []
    for group, mine in _groups(results, by).items():
        for metric in INTERVAL_METRICS:
            stat = mean_interval([float(r[metric]) for r in mine], confidence)
            if stat.n:
                table.append(
                    {**dict(zip(by, group, strict=True)), "metric": metric, **stat._asdict()}
                )
    return table


def interval_markdown(table: Sequence[dict[str, Any]], by: Sequence[str]) -> str:
    """``intervals``' rows as one Markdown row per group, a ``mean [low, high]`` cell per
    metric (n in the group's ``cases`` column: the largest n of its metrics)."""
    metrics = [m for m in INTERVAL_METRICS if any(r["metric"] == m for r in table)]
    rows: dict[tuple, dict[str, Any]] = {}
    for r in table:
        group = tuple(r[k] for k in by)
        entry = rows.setdefault(group, {**{k: r[k] for k in by}, "cases": 0})
        entry["cases"] = max(entry["cases"], r["n"])
        entry[r["metric"]] = f"{r['mean']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"
    columns = (*by, "cases", *metrics)
    return markdown([{c: e.get(c, "") for c in columns} for e in rows.values()])


def pivot(table: Sequence[dict[str, Any]], rows: str, columns: str, value: str) -> list[dict]:
    """A summary ``table`` (grouped by ``rows`` and ``columns``) as one row per ``rows`` value
    and one column per ``columns`` value holding ``value``: e.g. the IoU of each method per
    detector (Table 2) or per model (Table 3)."""
    names = list(dict.fromkeys(str(r[columns]) for r in table))
    out: dict[str, dict[str, Any]] = {}
    for r in table:
        entry = out.setdefault(str(r[rows]), {rows: r[rows], **dict.fromkeys(names, math.nan)})
        entry[str(r[columns])] = r[value]
    return list(out.values())


def markdown(table: Sequence[dict[str, Any]]) -> str:
    """A table as Markdown."""
    columns = list(table[0]) if table else ["method"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in table]
    return "\n".join(lines) + "\n"


def write_report(results: str | os.PathLike[str], out: str | os.PathLike[str]) -> str:
    """Every table and plot of a results file into the folder ``out``; returns the Markdown.

    * ``summary.md`` / ``summary.csv``: per model and method, every metric (Table 1's IoU,
      Fig. 2's AUCs, Fig. 3b's Sensitivity-N, the PCC table) and the seconds per case;
    * ``intervals.csv`` (and a table in ``summary.md``): per model and method, the mean of each
      of ``INTERVAL_METRICS`` with its 95 % interval and n (``intervals``);
    * ``iou_by_target.csv``: IoU per method and target class or detector (Table 2), one file
      per model (``iou_by_target_MODEL.csv``) when the file holds several;
    * ``iou_by_model.csv``: IoU per method and model, when the file holds several (Table 3);
    * plots: ``insertion_deletion.png`` (Fig. 2), ``iou.png``, ``pcc.png`` (severity models),
      ``sensitivity_n.png`` (Fig. 3b), one set per model.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    per_method = summary(results, ("model", "method"))
    if not per_method:
        raise ValueError(f"results: {results} holds no row to summarise.")
    models = list(dict.fromkeys(r["model"] for r in per_method))
    sections = ["## Per model and method\n", markdown(per_method)]
    write_rows(out / "summary.csv", per_method)
    spread = intervals(results, ("model", "method"))
    sections += [
        "\n## Means with 95 % intervals (Student's t; n: cases with the metric)\n",
        interval_markdown(spread, ("model", "method")),
    ]
    write_rows(out / "intervals.csv", spread)
    by_target = summary(results, ("model", "method", "target_name"))
    for model in models:
        mine = [r for r in by_target if r["model"] == model]
        targets = pivot(mine, "method", "target_name", "iou")
        heading = "IoU per target and method" + ("" if len(models) == 1 else f": {model}")
        sections += [f"\n## {heading}\n", markdown(targets)]
        suffix = "" if len(models) == 1 else f"_{model}"
        write_rows(out / f"iou_by_target{suffix}.csv", targets)
    if len(models) > 1:
        by_model = pivot(per_method, "method", "model", "iou")
        sections += ["\n## IoU per model and method\n", markdown(by_model)]
        write_rows(out / "iou_by_model.csv", by_model)
    for model in models:
        mine = [r for r in per_method if r["model"] == model]
        suffix = "" if len(models) == 1 else f"_{model}"
        report_plots.insertion_deletion(mine, out / f"insertion_deletion{suffix}.png")
        for metric in ("iou", "pcc"):
            if any(not math.isnan(float(r[metric])) for r in mine):
                report_plots.metric_bars(mine, metric, out / f"{metric}{suffix}.png")
        if any(not math.isnan(float(r[SENSITIVITY_COLUMNS[0]])) for r in mine):
            report_plots.sensitivity_n(
                mine, SENSITIVITY_FRACTIONS, SENSITIVITY_COLUMNS, out / f"sensitivity_n{suffix}.png"
            )
    text = "".join(sections)
    (out / "summary.md").write_text(text)
    return text
