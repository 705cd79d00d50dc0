"""The paper's BrixIA evaluation on BrixIA's public radiographs, every image out of fold.

Run after the two cross-validations of ``benchmarks/brixia_public_cv.py`` (regression and
detectors):

    .venv/bin/python benchmarks/brixia_public_evaluation.py --data-dir D \\
        --regression-cv runs/brixia_public_cv --detectors-cv runs/brixia_public_detectors_cv \\
        --out runs/brixia_public_eval \\
        --regression-bottleneck "--layer denseblock2 --beta 1" \\
        --detectors-bottleneck "--layer denseblock3 --beta 0.1" \\
        [--bottleneck-of regression:fold1="--layer denseblock2 --beta 10" ...]

For each fold K and each task, the model trained without fold K (``CV/foldK/final_model``)
gets feature statistics estimated on its own training folds (``iba-jax estimate``, once), then
``iba-jax evaluate`` explains the images of fold K (resumable like the command itself), with
the bottleneck arguments given (chosen beforehand for each fold's model with ``iba-jax
layer-locality`` and ``iba-jax beta-sweep`` on its training folds: docs/results_real.md;
``--bottleneck-of TASK:FOLD=ARGS`` replaces a task's arguments for one fold).
Insertion/deletion replace pixels with zeros (as the phantom severity run: a blur hardly
changes a diffuse opacity); Sensitivity-N is not computed. Then, over the 5 folds' rows:

* severity (Table 1's severity column): per method, the mean PCC of the map with the severity
  map over the image and within the lungs, the zone IoU (zones scored > 0) and the
  insertion/deletion AUCs, each with its 95 % interval (t) and n; the lung mask as a map (the
  baseline of whole-image PCC); each method against the random map, paired by image; PCC
  again by the mask's source (annotated by V7 Labs, or predicted by the shipped segmenter:
  there the severity map itself is drawn on a predicted mask);
* detectors (Table 2): IoU per detector and method with n, and each method against random.

Prints Markdown and, last, one JSON line of the figures; ``--write FILE`` also writes the
Markdown there.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from phantom_evaluation import paired_by_case, paired_section, values

from iba_jax import cli, evaluation
from iba_jax.bundle import load_bundle, stats_layers
from iba_jax.data import building
from iba_jax.data.brixia_public import FOLDS, MASK_SOURCES
from iba_jax.data.preprocess import unit_range
from iba_jax.metrics import correlation
from iba_jax.metrics.intervals import MeanInterval, mean_interval
from iba_jax.models import predict
from iba_jax.records import read_rows

LAYERS = ("denseblock1", "denseblock2", "denseblock3")
TASKS = ("regression", "detectors")


def training_split(fold: str) -> str:
    return "+".join(f for f in FOLDS if f != fold)


def run_cli(args: list[str]) -> None:
    print("iba-jax " + shlex.join(args), flush=True)
    if cli.main(args) != 0:
        raise SystemExit(f"iba-jax {args[0]} failed")


def evaluate_fold(task: str, fold: str, cv: Path, args: argparse.Namespace) -> Path:
    """Statistics (once) and ``iba-jax evaluate`` of one fold; returns its results file."""
    model = cv / fold / "final_model"
    data = ["brixia_public", "--config", "128", "--data-dir", args.data_dir]
    if set(LAYERS) - set(stats_layers(model)):
        layers = ",".join(LAYERS)
        split = training_split(fold)
        run_cli(["estimate", "--model", str(model), *data, "--split", split, "--layers", layers])
    out = args.out / task / fold
    command = ["evaluate", "--model", str(model), *data, "--split", fold, "--out", str(out)]
    command += ["--baseline", "zero", "--sensitivity-samples", "0"]
    command += shlex.split(bottleneck_of(args, task, fold))
    if args.limit:
        command += ["--limit", str(args.limit)]
    run_cli(command)
    return out / "results.csv"


def bottleneck_of(args: argparse.Namespace, task: str, fold: str) -> str:
    """The IBA arguments of ``task`` on ``fold``: its ``--bottleneck-of``, else the task's."""
    for item in args.bottleneck_of:
        where, sep, value = item.partition("=")
        given_task, _, given_fold = where.partition(":")
        if not sep or given_task not in TASKS or given_fold not in FOLDS:
            raise SystemExit(
                f"--bottleneck-of: expected TASK:FOLD=ARGS with TASK in {TASKS} and FOLD in "
                f"{FOLDS}; got {item!r}."
            )
        if where == f"{task}:{fold}":
            return value
    return getattr(args, f"{task}_bottleneck")


def image_facts(example: dict, index: int, task: str) -> dict:
    """What the tables need of one image besides its rows: its file name and mask source, and
    for severity cases the PCC of its lung mask (as a map) with its severity map."""
    facts = {
        "filename": example["filename"].decode(),
        "mask_source": MASK_SOURCES[example["mask_source"]],
    }
    if task == "regression":
        (case,) = evaluation.cases(example, index)
        mask = jnp.asarray(case.lungs, jnp.float32)[None]
        pcc = correlation.pearson(mask, jnp.asarray(case.severity)[None])[0]
        facts["lung_mask_pcc"] = float(pcc)
    return facts


def rows_with_images(task: str, args: argparse.Namespace) -> list[dict]:
    """Every fold's rows, each with its fold and its image's facts (``image_facts``; each
    image read once); ``model`` is the fold, so that pairing by case stays within one model's
    rows."""
    cv = getattr(args, f"{task}_cv")
    errors = {}
    if task == "regression" and (cv / "out_of_fold.csv").exists():
        errors = {
            r["filename"]: abs(float(r["output/global_score"]) - float(r["senior_global"]))
            for r in read_rows(cv / "out_of_fold.csv")
        }
    rows = []
    for fold in FOLDS:
        source = building.data_source("brixia_public", fold, config="128", data_dir=args.data_dir)
        facts: dict[int, dict] = {}
        for row in read_rows(evaluate_fold(task, fold, cv, args)):
            index = int(row["index"])
            if index not in facts:
                facts[index] = image_facts(source[index], index, task)
                if errors:
                    facts[index]["abs_error"] = errors[facts[index]["filename"]]
            rows.append(row | {"model": fold} | facts[index])
    return rows


def fmt(stat: MeanInterval) -> str:
    mean, low, high, _ = stat
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


REMOVED_SHARES = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)


def removal_response(args: argparse.Namespace) -> str:
    """The regressor's mean out-of-fold prediction when a random share of each image's pixels
    is set to zero (insertion/deletion's baseline): what a random map's curves measure."""
    key = jax.random.key(0)
    predicted = {share: [] for share in REMOVED_SHARES}
    for fold in FOLDS:
        bundle = load_bundle(args.regression_cv / fold / "final_model")
        source = building.data_source("brixia_public", fold, config="128", data_dir=args.data_dir)
        images = np.stack([source[i]["image"] for i in range(len(source))])
        x = bundle.input_spec.normalize(unit_range(images, bundle.config.in_channels))
        for share in REMOVED_SHARES:
            key, draw = jax.random.split(key)
            kept = jax.random.uniform(draw, (*x.shape[:3], 1)) >= share
            out = predict(bundle.model, bundle.variables, jnp.where(kept, x, 0.0))
            predicted[share] += np.asarray(out)[:, 0].tolist()
    lines = [
        "| share of pixels set to zero | " + " | ".join(f"{s:g}" for s in REMOVED_SHARES) + " |"
    ]
    lines.append("|---" * (len(REMOVED_SHARES) + 1) + "|")
    means = [f"{np.mean(predicted[s]):.2f}" for s in REMOVED_SHARES]
    lines.append("| mean predicted score (out of fold) | " + " | ".join(means) + " |")
    return "\n".join(lines) + "\n"


def severity_section(rows: list[dict], figures: dict) -> str:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    metrics = ("pcc", "pcc_lungs", "iou", "mass_inside", "insertion_auc", "deletion_auc")
    lines = [
        "| method | n | PCC with the severity map | PCC within the lungs | zone IoU | "
        "share of the map on the scored zones | insertion AUC | deletion AUC |\n"
        "|---|---|---|---|---|---|---|---|\n"
    ]
    per_image = {(r["model"], r["index"]): r["lung_mask_pcc"] for r in rows}
    lung_mask = mean_interval(list(per_image.values()))
    figures["pcc/lung_mask"] = lung_mask
    lines.append(f"| lung mask | {lung_mask.n} | {fmt(lung_mask)} | (constant) | | | | |\n")
    for method in methods:
        stats = {m: mean_interval(values(rows, m, method=method)) for m in metrics}
        figures |= {f"{m}/{method}": s for m, s in stats.items()}
        cells = " | ".join(fmt(stats[m]) for m in metrics)
        lines.append(f"| {method} | {stats['pcc'][3]} | {cells} |\n")
    paired = {
        f"{metric}, {m}": paired_by_case(rows, metric, "random", m)
        for metric in metrics
        for m in methods
        if m != "random"
    }
    lines.append(paired_section(paired, ("random", "method"), figures, "method-random"))
    iba = [m for m in methods if m.startswith("regression_iba_")]
    if "gradients" in methods:
        paired = {
            f"{metric}, {m}": paired_by_case(rows, metric, "gradients", m)
            for metric in ("pcc", "pcc_lungs")
            for m in iba
        }
        lines.append(paired_section(paired, ("gradients", "method"), figures, "method-gradients"))
    lines.append("\nPCC by the lung mask's source (the severity map is painted on that mask):\n\n")
    lines.append(split_table(rows, methods, "mask_source", figures))
    if "abs_error" in rows[0]:
        median = float(np.median([r["abs_error"] for r in rows]))
        for r in rows:
            r["model_error"] = f"error {'≤' if r['abs_error'] <= median else '>'} {median:.2f}"
        lines.append(
            "\nPCC by how well the model scores the image (its out-of-fold absolute error "
            "against the senior reader, split at the median):\n\n"
        )
        lines.append(split_table(rows, methods, "model_error", figures))
    return "".join(lines)


def split_table(rows: list[dict], methods: list[str], column: str, figures: dict) -> str:
    """Each method's PCC per value of ``column`` (mean [95 % interval] (n))."""
    groups = sorted({r[column] for r in rows})
    lines = ["| method | " + " | ".join(f"{g}: PCC (n)" for g in groups) + " |\n"]
    lines.append("|---" * (len(groups) + 1) + "|\n")
    for method in methods:
        cells = []
        for group in groups:
            stat = mean_interval(values(rows, "pcc", method=method, **{column: group}))
            figures[f"pcc/{method}/{group}"] = stat
            cells.append(f"{fmt(stat)} ({stat.n})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |\n")
    return "".join(lines)


def detectors_section(rows: list[dict], figures: dict) -> str:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    detectors = list(dict.fromkeys(r["target_name"] for r in rows))
    lines = ["| method | " + " | ".join(f"{d} IoU (n)" for d in detectors) + " | all |\n"]
    lines.append("|---" * (len(detectors) + 2) + "|\n")
    for method in methods:
        cells = []
        for detector in detectors:
            stat = mean_interval(values(rows, "iou", method=method, target_name=detector))
            figures[f"iou/{detector}/{method}"] = stat
            cells.append(f"{fmt(stat)} ({stat[3]})")
        every = mean_interval(values(rows, "iou", method=method))
        figures[f"iou/all/{method}"] = every
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {fmt(every)} ({every[3]}) |\n")
    paired = {
        f"IoU, {m}": paired_by_case(rows, "iou", "random", m) for m in methods if m != "random"
    }
    lines.append(paired_section(paired, ("random", "method"), figures, "iou-random"))
    return "".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--regression-cv", type=Path)
    parser.add_argument("--detectors-cv", type=Path)
    parser.add_argument("--tasks", default=",".join(TASKS), help="regression,detectors")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--regression-bottleneck", default="", help="evaluate's IBA arguments")
    parser.add_argument("--detectors-bottleneck", default="", help="evaluate's IBA arguments")
    parser.add_argument(
        "--bottleneck-of", action="append", default=[], help="TASK:FOLD=ARGS, repeatable"
    )
    parser.add_argument("--limit", type=int, default=None, help="images per fold at most")
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    args.tasks = args.tasks.split(",")
    for task in args.tasks:
        if task not in TASKS or getattr(args, f"{task}_cv") is None:
            parser.error(f"--tasks: expected {' or '.join(TASKS)}, each with its --TASK-cv")
    figures: dict = {}
    text = ""
    if "regression" in args.tasks:
        severity = rows_with_images("regression", args)
        images = len({(r["model"], r["index"]) for r in severity})
        text += (
            f"## Severity: Regression IBA and the baselines ({images} images out of fold; means "
            "with 95 % intervals)\n\n"
            + severity_section(severity, figures)
            + "\nThe regressor with random pixels removed (the random map's insertion and "
            "deletion):\n\n" + removal_response(args)
        )
    if "detectors" in args.tasks:
        detectors = rows_with_images("detectors", args)
        text += (
            f"\n## Detectors: IoU with each detector's zones ({len(detectors)} rows)\n\n"
            + detectors_section(detectors, figures)
        )
    print(text)
    if args.write:
        args.write.write_text(text)
    print(json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in figures.items()}))


if __name__ == "__main__":
    sys.exit(main())
