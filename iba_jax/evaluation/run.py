"""``evaluate``: every case of a split, every method, one resumable row each."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from iba_jax import distributed
from iba_jax.bundle import (
    ModelBundle,
    bundle_checksum,
    load_feature_stats,
    stats_checksum,
    stats_layers,
)
from iba_jax.data.building import DataSource
from iba_jax.data.preprocess import unit_range
from iba_jax.evaluation.cases import Case, cases
from iba_jax.evaluation.config import EvaluationConfig
from iba_jax.evaluation.scoring import case_scores, check_columns
from iba_jax.methods import target_key
from iba_jax.runner import ResumableRows, check_determining, maps_per_call
from iba_jax.stats import FeatureStats


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


def settings_path(results: Path) -> Path:
    """Where the settings of each model's rows in ``results`` are recorded."""
    return results.with_suffix(".settings.json")


def _check_settings(
    path: Path,
    model_name: str,
    bundle: ModelBundle,
    config: EvaluationConfig,
    stats: dict[str, FeatureStats],
    *,
    rows_exist: bool,
) -> None:
    """Records the checksums of the model and its statistics and the settings its rows are
    computed with, or, resuming, refuses to mix rows of other weights, statistics or settings
    into the file (``runner.check_determining``; methods, limit, cases per call and the
    settings' unroll and images per call may change: they choose rows, batching or
    compilation, not values)."""
    values = dataclasses.asdict(config)
    del values["methods"], values["limit"], values["cases_per_call"]
    values["settings"] = config.settings.determining()
    check_determining(
        settings_path(path),
        {
            "model_sha256": bundle_checksum(bundle),
            # Per layer: a resumed run may add methods, and with them more layers.
            **{f"stats_sha256/{layer}": stats_checksum({layer: stats[layer]}) for layer in stats},
            **values,
        },
        argument="results",
        subject=f"the rows of model {model_name!r} in {path}",
        advice="evaluate into a new file, or with the same model and settings.",
        entry=model_name,
        rows_exist=rows_exist,
    )


def _row_key(row: dict[str, Any]) -> tuple[str, int, int, str]:
    return (row["model"], int(row["index"]), int(row["target"]), row["method"])


class _Pending(NamedTuple):
    case: Case
    method: str
    x: jax.Array  # the image's model input (1, H, W, C)


def evaluate(
    bundle: ModelBundle,
    source: DataSource,
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
        (``settings_path``): once the model has rows, resuming with other weights or settings
        under the same model name is refused. In several processes, a folder that all of them see.
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
    rows = ResumableRows(path)
    done = {_row_key(row) for row in rows.earlier if row["model"] == model_name}
    _check_settings(path, model_name, bundle, config, stats, rows_exist=bool(done))
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
            _evaluate_cases(bundle, stats, config, pending, model_name, rows, mesh)
            pending = []
    _evaluate_cases(bundle, stats, config, pending, model_name, rows, mesh)
    rows.finish(
        key=_row_key,
        expected=lambda: (
            (model_name, index, case.target, method)
            for index in range(count)
            for case in cases(source[index], index, bundle.label_names)
            for method in config.methods
        ),
        order=lambda r: int(r["index"]),
    )
    return path


def _evaluate_cases(
    bundle: ModelBundle,
    stats: dict[str, FeatureStats],
    config: EvaluationConfig,
    pending: Sequence[_Pending],
    model_name: str,
    rows: ResumableRows,
    mesh: Mesh | None,
) -> None:
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
            [c.index for c in cases],
            seed=config.seed,
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
        scores = case_scores(bundle, x, targets, maps[i], case, config, key)
        row = {
            "model": model_name,
            "index": case.index,
            "target": case.target,
            "target_name": bundle.label_names[case.target],
            "method": method,
            **scores,
            "seconds": round(seconds[i] + time.perf_counter() - began, 4),
        }
        rows.append(row)
