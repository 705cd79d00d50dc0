"""Dataset-wide evaluation of attribution methods, one result row per image, target and method.

``evaluate`` explains every (image, positive target class) case of a split with each method,
scores the map (IoU with the ground truth, pointing game, mass inside, insertion and deletion
AUC) and appends the row to a CSV file the moment it is done. Run it again after a kill and it
skips the rows already there: finished work is never recomputed or lost. ``summary`` turns the
file into the mean of each metric per method (the paper's Table 1 and Fig. 2 in one table).

Ground truth per case: the union of the pixel masks of the target class's instances where the
data set has masks (cxr_phantoms), else of its boxes (NIH ChestX-ray14).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from iba_jax import baselines, checks
from iba_jax.attribute import IBAConfig, iba, inverse_iba, multilayer_iba, regression_iba
from iba_jax.bundle import ModelBundle, load_feature_stats, stats_layers
from iba_jax.data.preprocess import unit_range
from iba_jax.metrics import correlation, faithfulness, localisation
from iba_jax.records import append_row, read_rows
from iba_jax.stats import FeatureStats

MethodFn = Callable[..., jax.Array]
IBA_LAYER = "denseblock3"
MULTILAYER = ("denseblock1", "denseblock2", "denseblock3")


def _iba(model, variables, stats, x, targets, key, cfg, case):
    return iba(model, variables, stats[IBA_LAYER], x, targets, config=cfg.iba, key=key)[0]


def _inverse(model, variables, stats, x, targets, key, cfg, case):
    return inverse_iba(model, variables, stats[IBA_LAYER], x, targets, config=cfg.iba, key=key)[0]


def _multilayer(model, variables, stats, x, targets, key, cfg, case):
    chosen = {layer: stats[layer] for layer in MULTILAYER}
    return multilayer_iba(model, variables, chosen, x, targets, config=cfg.iba, key=key).map


def _gradients(model, variables, stats, x, targets, key, cfg, case):
    return baselines.pixel_map(baselines.gradients(model, variables, x, targets))


def _integrated(model, variables, stats, x, targets, key, cfg, case):
    attribution = baselines.integrated_gradients(
        model, variables, x, targets, steps=cfg.ig_steps, baseline="zero"
    )
    return baselines.pixel_map(attribution)


def _grad_cam(model, variables, stats, x, targets, key, cfg, case):
    return baselines.grad_cam(model, variables, x, targets)


def _random(model, variables, stats, x, targets, key, cfg, case):
    return jax.random.uniform(key, x.shape[:3])


def _regression(loss):
    def method(model, variables, stats, x, targets, key, cfg, case):
        label = None if loss != "mse" else jnp.asarray([case.label], jnp.float32)
        layer_stats = stats[IBA_LAYER]
        return regression_iba(
            model, variables, layer_stats, x, label, loss=loss, config=cfg.iba, key=key
        )[0]

    return method


# name -> (function, feature-stat layers it needs)
METHODS: dict[str, tuple[MethodFn, tuple[str, ...]]] = {
    "iba": (_iba, (IBA_LAYER,)),
    "inverse_iba": (_inverse, (IBA_LAYER,)),
    "multilayer_iba": (_multilayer, MULTILAYER),
    "gradients": (_gradients, ()),
    "integrated_gradients": (_integrated, ()),
    "grad_cam": (_grad_cam, ()),
    "random": (_random, ()),
    "regression_iba_mse": (_regression("mse"), (IBA_LAYER,)),
    "regression_iba_rm": (_regression("rm"), (IBA_LAYER,)),
    "regression_iba_deviation": (_regression("deviation"), (IBA_LAYER,)),
}
CLASSIFICATION_METHODS = (
    "iba",
    "inverse_iba",
    "multilayer_iba",
    "gradients",
    "integrated_gradients",
    "grad_cam",
    "random",
)
REGRESSION_METHODS = (
    "regression_iba_mse",
    "regression_iba_rm",
    "regression_iba_deviation",
    "gradients",
    "integrated_gradients",
    "grad_cam",
    "random",
)
METRICS = ("iou", "pointing_game", "mass_inside", "insertion_auc", "deletion_auc", "pcc")


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """Settings of an evaluation run.

    Attributes:
      methods: names from ``METHODS`` (``CLASSIFICATION_METHODS`` by default;
        ``REGRESSION_METHODS`` for severity models).
      iou_rule: how maps are binarised for IoU (``localisation.RULES``; "area" keeps as many
        pixels as the ground truth has).
      pixels_per_step: insertion/deletion step (default 1/50 of the image).
      blur_sigma: the blurred baseline of insertion/deletion (pixels; the paper: 10).
      ig_steps: Integrated Gradients' quadrature points.
      iba: the IBA settings (the paper's defaults).
      seed: the PRNG seed of the noise of IBA and of the random maps (one key per image).
      limit: evaluate only the first N images of the split.
    """

    methods: tuple[str, ...] = CLASSIFICATION_METHODS
    iou_rule: str = "area"
    pixels_per_step: int | None = None
    blur_sigma: float = 10.0
    ig_steps: int = 32
    iba: IBAConfig = IBAConfig()
    seed: int = 0
    limit: int | None = None

    def __post_init__(self) -> None:
        checks.check_names("methods", self.methods, tuple(METHODS))
        checks.check_choice("iou_rule", self.iou_rule, localisation.RULES)


def needed_layers(methods: Sequence[str]) -> tuple[str, ...]:
    """The layers whose feature statistics the methods need."""
    return tuple(sorted({layer for m in methods for layer in METHODS[m][1]}))


def load_stats(
    bundle_dir: str | os.PathLike[str], layers: Sequence[str]
) -> dict[str, FeatureStats]:
    """The bundle's feature statistics of ``layers``; names the command that makes missing ones."""
    have = set(stats_layers(bundle_dir))
    missing = [layer for layer in layers if layer not in have]
    if missing:
        raise FileNotFoundError(
            f"--model: {bundle_dir} has no feature statistics of {missing} (it has "
            f"{sorted(have) or 'none'}); estimate them with `iba-jax estimate --model "
            f"{bundle_dir} DATASET --config CONFIG --layers {','.join(missing)}`."
        )
    return {layer: load_feature_stats(bundle_dir, layer) for layer in layers}


@dataclasses.dataclass(frozen=True)
class Case:
    """One explanation to evaluate: an image, a target class and where its evidence is."""

    index: int
    target: int
    truth: np.ndarray  # bool (H, W)
    label: float = float("nan")  # the regression target (severity score)
    severity: np.ndarray | None = None  # per-pixel severity map (H, W)


def cases(example: dict[str, Any], index: int) -> list[Case]:
    """The cases of one example.

    Classification: each positive label with ground truth (instance masks, else boxes), the
    truth being the union of that class's instances. Regression (examples with a ``zone_map``,
    BrixIA-like): one case, output 0, the truth being the zones with a positive score, with
    the global score as label and the per-pixel severity map for the correlation (an image
    scored 0 has no case).
    """
    if "zone_map" in example:
        zones = np.asarray(example["zone_map"])[..., 0]
        scores = np.concatenate([[0], np.asarray(example["zone_scores"])])
        if not scores.any():
            return []  # nothing to localise or correlate with
        return [
            Case(
                index,
                0,
                scores[zones] > 0,
                float(example["global_score"]),
                np.asarray(example["severity_map"])[..., 0].astype(np.float32),
            )
        ]
    objects = example.get("objects", {})
    labels = np.atleast_1d(np.asarray(objects.get("label", [])))
    height, width = example["image"].shape[:2]
    found = []
    for target in np.nonzero(np.asarray(example["labels"]))[0]:
        mine = np.nonzero(labels == target)[0]
        if not len(mine):
            continue
        if "mask" in objects:
            truth = np.any([np.asarray(objects["mask"][k])[..., 0] > 0 for k in mine], axis=0)
        else:
            boxes = np.asarray(objects["bbox"])[mine]
            truth = localisation.box_mask(boxes, height, width)
        found.append(Case(index, int(target), truth))
    return found


def _done(path: Path) -> set[tuple[int, int, str]]:
    return {(int(r["index"]), int(r["target"]), r["method"]) for r in read_rows(path)}


def evaluate(
    bundle: ModelBundle,
    source: Sequence[dict[str, Any]],
    results: str | os.PathLike[str],
    config: EvaluationConfig,
    stats: dict[str, FeatureStats],
    *,
    progress: Callable[[Iterator], Iterator] = lambda it: it,
) -> Path:
    """Evaluates ``config.methods`` on every case of ``source`` into the CSV ``results``.

    Args:
      bundle: the model (its input spec turns stored images into inputs).
      source: a data source of a split (``iba_jax.data.building.data_source``): examples with
        ``image`` (uint8), multi-hot ``labels`` and ``objects`` (masks or boxes).
      results: the CSV file; rows already in it are skipped.
      stats: feature statistics per layer (``load_stats``).
      progress: wraps the loop over images (a progress bar in the CLI).

    Returns:
      The path of the results file.
    """
    path = Path(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = _done(path)
    model, variables = bundle.model, bundle.variables
    count = len(source) if config.limit is None else min(config.limit, len(source))
    base_key = jax.random.key(config.seed)
    for index in progress(iter(range(count))):
        example = source[index]
        todo = [
            (case, method)
            for case in cases(example, index)
            for method in config.methods
            if (index, case.target, method) not in done
        ]
        if not todo:
            continue
        x = bundle.input_spec.normalize(
            unit_range(example["image"][None], model.config.in_channels)
        )
        for case, method in todo:
            targets = jnp.asarray([case.target])
            key = jax.random.fold_in(jax.random.fold_in(base_key, index), case.target)
            fn, _ = METHODS[method]
            maps = jnp.asarray(
                fn(model, variables, stats, x, targets, key, config, case), jnp.float32
            )
            append_row(
                path,
                {
                    "index": index,
                    "target": case.target,
                    "method": method,
                    **_scores(bundle, x, targets, maps, case, config),
                },
            )
    return path


def _scores(bundle, x, targets, maps, case, config) -> dict[str, float]:
    truth = jnp.asarray(case.truth)[None]
    binary = localisation.binarize_for(maps, truth, config.iou_rule)
    score = faithfulness.target_score(bundle.model, bundle.variables, targets)
    curves = faithfulness.insertion_deletion(
        score, x, maps, pixels_per_step=config.pixels_per_step, blur_sigma=config.blur_sigma
    )
    return {
        "iou": round(float(localisation.iou(binary, truth)[0]), 6),
        "pointing_game": int(localisation.pointing_game(maps, truth)[0]),
        "mass_inside": round(float(localisation.mass_inside(maps, truth)[0]), 6),
        "insertion_auc": round(float(curves.insertion_auc[0]), 6),
        "deletion_auc": round(float(curves.deletion_auc[0]), 6),
        "pcc": float("nan")
        if case.severity is None
        else round(float(correlation.pearson(maps, jnp.asarray(case.severity)[None])[0]), 6),
    }


def summary(results: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Mean of each metric per method (rows in the order methods first appear), with the
    number of cases."""
    rows = read_rows(Path(results))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    table = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        entry: dict[str, Any] = {"method": method, "cases": len(mine)}
        for metric in METRICS:
            values = np.array([float(r[metric]) for r in mine])
            finite = values[~np.isnan(values)]
            entry[metric] = round(float(finite.mean()), 4) if len(finite) else float("nan")
        table.append(entry)
    return table


def markdown(table: list[dict[str, Any]]) -> str:
    """A summary table as Markdown."""
    columns = list(table[0]) if table else ["method"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in table]
    return "\n".join(lines) + "\n"


def write_csv(table: list[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """A summary table as CSV (replacing the file)."""
    path = Path(path)
    path.unlink(missing_ok=True)
    for row in table:
        append_row(path, row)
