"""Dataset-wide evaluation of attribution methods, one result row per image, target and method.

``evaluate`` explains every (image, positive target) case of a split with each method, scores
the map and appends the row to a CSV file the moment it is done. Run it again after a kill and
it skips the rows already there: finished work is never recomputed or lost. Several models (the
paper's BCE vs weighted BCE comparison) share one file: rows carry the model's name.

Metrics per row: IoU with the ground truth after binarising the map (``iou_rule``; "area", the
default of the tables, keeps as many pixels as the ground truth has), pointing game, mass
inside, insertion and deletion AUC, Sensitivity-N at ``SENSITIVITY_FRACTIONS`` of the pixels,
the Pearson correlation with a per-pixel severity map (severity models; over the image, and
within the lungs only, where a map's grading counts and not its lying on the lungs), the
fraction of the target's instances that the binarised map marks (images with two or more), and
the seconds the case took (map and metrics).

Cases and their ground truth, by data set and model:

* classification (NIH ChestX-ray14, cxr_phantoms classification): each positive label with
  instances; truth = the union of that class's instance masks (phantoms) or boxes (NIH);
* severity regression (BrixIA-like examples, with a ``zone_map``; a one-output model): one case,
  truth = the zones scored above 0, with the global score and the severity map;
* BrixIA's three detectors (a model whose outputs are ``brixia.DETECTOR_LABELS``): each detector
  that fires; truth = the zones it is about (scored 0-1, 2 or 3).

An image whose zone map is empty (its lung mask, annotated or predicted, holds no lung) has
no case: nothing to localise or correlate with.

``summary``, ``intervals`` and ``pivot`` turn the file into the paper's tables;
``write_report`` writes them all as Markdown, CSV and PNG plots.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from iba_jax import checks, distributed, report_plots
from iba_jax.bundle import (
    ModelBundle,
    bundle_checksum,
    load_feature_stats,
    stats_checksum,
    stats_layers,
)
from iba_jax.data.brixia import DETECTOR_LABELS, detector_zones
from iba_jax.data.preprocess import unit_range
from iba_jax.methods import METHODS, MethodSettings, target_key
from iba_jax.metrics import correlation, faithfulness, localisation
from iba_jax.metrics.intervals import mean_interval
from iba_jax.records import append_row, header_of, read_rows, write_rows
from iba_jax.runner import maps_per_call
from iba_jax.stats import FeatureStats

# Sensitivity-N's subset sizes, as fractions of the pixels (log-spaced, 1 % to 80 %).
SENSITIVITY_FRACTIONS = (0.01, 0.025, 0.06, 0.15, 0.35, 0.8)
SENSITIVITY_COLUMNS = tuple(f"sensitivity_n@{f}" for f in SENSITIVITY_FRACTIONS)
# An instance is marked when the binarised map covers at least this share of its pixels.
MARKED_SHARE = 0.5
CLASSIFICATION_METHODS = (
    "iba",
    "inverse_iba",
    "multilayer_iba",
    "gradients",
    "integrated_gradients",
    "grad_cam",
    "lrp",
    "random",
)
REGRESSION_METHODS = (
    "regression_iba_mse",
    "regression_iba_rm",
    "regression_iba_deviation",
    "gradients",
    "integrated_gradients",
    "grad_cam",
    "lrp",
    "random",
)
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


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """Settings of an evaluation run.

    Attributes:
      methods: names from ``METHODS`` (``CLASSIFICATION_METHODS`` by default;
        ``REGRESSION_METHODS`` for severity models).
      iou_rule: how maps are binarised for IoU and for marking instances
        (``localisation.RULES``; "area" keeps as many pixels as the ground truth has).
      pixels_per_step: insertion/deletion step (default 1/50 of the image).
      baseline: what replaces removed pixels in insertion/deletion and Sensitivity-N: "blur"
        (a Gaussian blur of ``blur_sigma`` pixels, the paper's choice) or "zero". Blurring
        hardly changes a diffuse opacity, so severity models are better probed with "zero".
      blur_sigma: the blurred baseline's sigma (pixels; the paper: 10).
      sensitivity_samples: random pixel subsets per size of Sensitivity-N (0 skips it; each
        costs one forward pass per size).
      settings: the methods' settings (the paper's defaults).
      seed: the PRNG seed of the noise of IBA, of the random maps and of Sensitivity-N's subsets
        (one key per image and target).
      limit: evaluate only the first N images of the split.
      cases_per_call: cases whose maps one call computes, per method (a multiple of the
        devices, to use them all; it changes no value, beyond float rounding).
    """

    methods: tuple[str, ...] = CLASSIFICATION_METHODS
    iou_rule: str = "area"
    pixels_per_step: int | None = None
    baseline: str = "blur"
    blur_sigma: float = 10.0
    sensitivity_samples: int = 32
    settings: MethodSettings = MethodSettings()
    seed: int = 0
    limit: int | None = None
    cases_per_call: int = 1

    def __post_init__(self) -> None:
        checks.check_names("methods", self.methods, tuple(METHODS))
        checks.check_positive_int("cases_per_call", self.cases_per_call)
        checks.check_choice("iou_rule", self.iou_rule, localisation.RULES)
        checks.check_choice("baseline", self.baseline, ("blur", "zero"))
        if not (isinstance(self.sensitivity_samples, int) and self.sensitivity_samples >= 0):
            raise ValueError(
                "sensitivity_samples: expected an int >= 0 (0 skips Sensitivity-N); got "
                f"{self.sensitivity_samples!r}."
            )


class MissingStatsError(FileNotFoundError):
    """A bundle without the feature statistics of some layers (attributes: ``bundle_dir``,
    ``missing``, ``have``)."""

    def __init__(self, bundle_dir: str, missing: tuple[str, ...], have: tuple[str, ...]) -> None:
        self.bundle_dir, self.missing, self.have = bundle_dir, missing, have
        super().__init__(
            f"bundle_dir: {bundle_dir} has no feature statistics of {list(missing)} (it has "
            f"{list(have) or 'none'}); estimate them with estimate_feature_stats and "
            "save_feature_stats."
        )


def load_stats(
    bundle_dir: str | os.PathLike[str], layers: Sequence[str], *, allow_other_model: bool = False
) -> dict[str, FeatureStats]:
    """The bundle's feature statistics of ``layers``; names the command that makes missing ones.
    ``allow_other_model``: see ``bundle.load_feature_stats``."""
    have = set(stats_layers(bundle_dir))
    missing = [layer for layer in layers if layer not in have]
    if missing:
        raise MissingStatsError(os.fspath(bundle_dir), tuple(missing), tuple(sorted(have)))
    return {
        layer: load_feature_stats(bundle_dir, layer, allow_other_model=allow_other_model)
        for layer in layers
    }


@dataclasses.dataclass(frozen=True)
class Case:
    """One explanation to evaluate: an image, a target output and where its evidence is."""

    index: int
    target: int
    truth: np.ndarray  # bool (H, W)
    label: float = float("nan")  # the regression target (severity score)
    severity: np.ndarray | None = None  # per-pixel severity map (H, W)
    lungs: np.ndarray | None = None  # bool (H, W): the lungs (severity cases), for pcc_lungs
    instances: np.ndarray | None = None  # bool (K, H, W): the target's instances, one by one


def cases(example: dict[str, Any], index: int, label_names: Sequence[str] = ()) -> list[Case]:
    """The cases of one example for a model with outputs ``label_names`` (see the module
    docstring); an image without a finding to localise has none."""
    if "zone_map" not in example:
        if "labels" not in example:
            raise ValueError(
                "source: expected examples with multi-hot `labels` and `objects` (boxes or "
                "masks) or with a `zone_map` of BrixIA's six lung zones; got keys "
                f"{sorted(example)}. A brixia build older than version 1.1.0 has no zone maps: "
                "rebuild it (the builder now segments the lungs)."
            )
        return _classification_cases(example, index)
    zones = np.asarray(example["zone_map"])[..., 0]  # 0 outside the lungs, zone k + 1 inside
    if not zones.any():
        return []  # the mask holds no lung: no zones to score
    scores = np.asarray(example["zone_scores"])
    in_zones = lambda chosen: np.concatenate([[False], chosen])[zones]
    if tuple(label_names) == DETECTOR_LABELS:
        chosen = detector_zones(scores)
        return [Case(index, k, in_zones(chosen[k])) for k in range(len(chosen)) if chosen[k].any()]
    if not scores.any():
        return []  # nothing to localise or correlate with
    severity = np.asarray(example["severity_map"])[..., 0].astype(np.float32)
    label = float(example["global_score"])
    return [Case(index, 0, in_zones(scores > 0), label, severity, lungs=zones > 0)]


def _classification_cases(example: dict[str, Any], index: int) -> list[Case]:
    objects = example.get("objects", {})
    labels = np.atleast_1d(np.asarray(objects.get("label", [])))
    height, width = example["image"].shape[:2]
    found = []
    for target in np.nonzero(np.asarray(example["labels"]))[0]:
        mine = np.nonzero(labels == target)[0]
        if not len(mine):
            continue
        if "mask" in objects:
            instances = np.stack([np.asarray(objects["mask"][k])[..., 0] > 0 for k in mine])
        else:
            boxes = np.asarray(objects["bbox"])[mine]
            instances = np.stack([localisation.box_mask(b[None], height, width) for b in boxes])
        found.append(
            Case(index, int(target), np.asarray(instances.any(axis=0)), instances=instances)
        )
    return found


def settings_path(results: Path) -> Path:
    """Where the settings of each model's rows in ``results`` are recorded."""
    return results.with_suffix(".settings.json")


def _check_settings(
    path: Path,
    model_name: str,
    bundle: ModelBundle,
    config: EvaluationConfig,
    stats: dict[str, FeatureStats],
):
    """Records the checksums of the model and its statistics and the settings its rows are
    computed with (process 0), or, resuming, refuses to mix rows of other weights, statistics
    or settings into the file (methods, limit and cases per call may change: they choose rows
    or batching, not values)."""
    recorded_path = settings_path(path)
    recorded = json.loads(recorded_path.read_text()) if recorded_path.exists() else {}
    values = dataclasses.asdict(config)
    del values["methods"], values["limit"], values["cases_per_call"]
    mine = {
        "model_sha256": bundle_checksum(bundle),
        # Per layer: a resumed run may add methods, and with them the statistics of more layers.
        **{f"stats_sha256/{layer}": stats_checksum({layer: stats[layer]}) for layer in stats},
        **values,
    }
    mine = json.loads(json.dumps(mine))  # as it reads back (tuples as lists)
    before = recorded.get(model_name, {})
    # A layer's statistics are compared only where both runs used that layer.
    compared = {
        k
        for k in (set(before) | set(mine) if before else ())
        if not k.startswith("stats_sha256/") or (k in before and k in mine)
    }
    changed = sorted(k for k in compared if before.get(k) != mine.get(k))
    if changed:
        raise ValueError(
            f"results: the rows of model {model_name!r} in {path} were computed with other "
            f"{', '.join(changed)} ({', '.join(f'{k}={before.get(k)!r}' for k in changed)}"
            "); evaluate into a new file, or with the same model and settings."
        )
    if jax.process_index() != 0 or set(mine) <= set(before):
        return
    recorded[model_name] = {**mine, **before}
    partial = recorded_path.with_suffix(".json.partial")
    partial.write_text(json.dumps(recorded, indent=2, sort_keys=True))
    partial.replace(recorded_path)


def _row_key(row: dict[str, Any]) -> tuple[str, int, int, str]:
    return (row["model"], int(row["index"]), int(row["target"]), row["method"])


class _Pending(NamedTuple):
    case: Case
    method: str
    x: jax.Array  # the image's model input (1, H, W, C)


def evaluate(
    bundle: ModelBundle,
    source: Sequence[dict[str, Any]],
    results: str | os.PathLike[str],
    config: EvaluationConfig,
    stats: dict[str, FeatureStats],
    *,
    model_name: str = "model",
    progress: Callable[[Iterator], Iterator] = lambda it: it,
    mesh: Mesh | None = None,
) -> Path:
    """Evaluates ``config.methods`` on every case of ``source`` into the CSV ``results``.

    Maps are computed ``config.cases_per_call`` cases at a time per method (split across the
    devices of ``mesh``); each case is then scored and its row appended. In a job of several
    processes (``jax.distributed``), each process evaluates its share of the images
    (``distributed.process_share``) into its own part file, and process 0 merges the parts
    into ``results`` when all are done (checking that no row is missing or there twice).

    Args:
      bundle: the model (its input spec turns stored images into inputs, its label names name
        the targets and tell detector models apart).
      source: a data source of a split (``iba_jax.data.building.data_source``): examples with
        ``image`` (uint8) and either multi-hot ``labels`` and ``objects`` (masks or boxes) or
        BrixIA's ``zone_map``, ``zone_scores`` (and ``global_score``, ``severity_map``).
      results: the CSV file; rows already in it or in its part files (same model name) are
        skipped. The model's checksum and the settings are recorded beside it
        (``settings_path``): resuming with other weights or settings under the same model name
        is refused. In several processes, a folder that all of them see.
      stats: feature statistics per layer (``load_stats``).
      model_name: the ``model`` column, to compare several models in one file.
      progress: wraps the loop over this process's images (a progress bar in the CLI).
      mesh: the devices to split each call's cases across (``sharding.local_mesh()``).

    Returns:
      The path of the results file.
    """
    path = Path(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    check_columns(path)
    _check_settings(path, model_name, bundle, config, stats)
    done = {_row_key(row) for row in distributed.all_rows(path)}
    out = distributed.part_path(path)
    count = len(source) if config.limit is None else min(config.limit, len(source))
    pending: list[_Pending] = []
    for index in progress(iter(distributed.process_share(count))):
        example = source[index]
        todo = [
            (case, method)
            for case in cases(example, index, bundle.label_names)
            for method in config.methods
            if (model_name, index, case.target, method) not in done
        ]
        if todo:
            x = bundle.input_spec.normalize(
                unit_range(example["image"][None], bundle.config.in_channels)
            )
            pending += [_Pending(case, method, x) for case, method in todo]
        if len(pending) >= config.cases_per_call * len(config.methods):
            _evaluate_cases(bundle, stats, config, pending, model_name, out, mesh)
            pending = []
    _evaluate_cases(bundle, stats, config, pending, model_name, out, mesh)
    distributed.barrier(f"evaluate {path} {model_name}: rows written")
    if jax.process_index() == 0 and distributed.part_files(path):
        expected = [
            (model_name, index, case.target, method)
            for index in range(count)
            for case in cases(source[index], index, bundle.label_names)
            for method in config.methods
        ]
        distributed.merge_records(path, _row_key, expected, order=lambda r: int(r["index"]))
    distributed.barrier(f"evaluate {path} {model_name}: merged")
    return path


def _evaluate_cases(bundle, stats, config, pending, model_name, out, mesh) -> None:
    """Maps for the ``pending`` cases, ``cases_per_call`` at a time per method
    (``runner.maps_per_call``), then one row per case in the given order."""
    base_key = jax.random.key(config.seed)
    maps, seconds = {}, {}
    for method in dict.fromkeys(p.method for p in pending):
        mine = [i for i, p in enumerate(pending) if p.method == method]
        cases = [pending[i].case for i in mine]
        labels = jnp.asarray([c.label for c in cases], jnp.float32)
        calls = maps_per_call(
            method,
            bundle.model,
            bundle.variables,
            stats,
            jnp.concatenate([pending[i].x for i in mine]),
            [c.target for c in cases],
            jnp.stack([target_key(base_key, c.index, c.target) for c in cases]),
            per_call=config.cases_per_call,
            settings=config.settings,
            labels=None if np.isnan(labels).any() else labels,
            mesh=mesh,
        )
        for call in calls:
            for position, m in zip(call.positions, call.maps, strict=True):
                maps[mine[position]] = m[None]
                seconds[mine[position]] = call.seconds / len(call.positions)
    for i, (case, method, x) in enumerate(pending):
        began = time.perf_counter()
        targets = jnp.asarray([case.target])
        key = target_key(base_key, case.index, case.target)
        scores = _scores(bundle, x, targets, maps[i], case, config, key)
        row = {
            "model": model_name,
            "index": case.index,
            "target": case.target,
            "target_name": bundle.label_names[case.target],
            "method": method,
            **scores,
            "seconds": round(seconds[i] + time.perf_counter() - began, 4),
        }
        append_row(out, row)


def _round(value: Any) -> float:
    return round(float(value), 6)


def _scores(bundle, x, targets, maps, case, config, key) -> dict[str, float]:
    truth = jnp.asarray(case.truth)[None]
    binary = localisation.binarize_for(maps, truth, config.iou_rule)
    score = faithfulness.target_score(bundle.model, bundle.variables, targets)
    perturbation = {"baseline": config.baseline, "blur_sigma": config.blur_sigma}
    curves = faithfulness.insertion_deletion(
        score, x, maps, pixels_per_step=config.pixels_per_step, **perturbation
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
            **perturbation,
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
        "iou": _round(localisation.iou(binary, truth)[0]),
        "pointing_game": int(localisation.pointing_game(maps, truth)[0]),
        "mass_inside": _round(localisation.mass_inside(maps, truth)[0]),
        "insertion_auc": _round(curves.insertion_auc[0]),
        "deletion_auc": _round(curves.deletion_auc[0]),
        **{c: _round(v) for c, v in zip(SENSITIVITY_COLUMNS, sensitivity, strict=True)},
        "pcc": _round(pcc),
        "pcc_lungs": _round(pcc_lungs),
        "instances_marked": _round(marked),
    }


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
