"""The paper's evaluation on the phantoms with the shipped models, and its claims as measured.

Run: ``.venv/bin/python benchmarks/phantom_evaluation.py --data-dir D --out runs/phantoms_eval
[--limit N] [--write docs/results.md]``

Six ``iba-jax evaluate`` runs on cxr_phantoms (built into ``--data-dir`` if needed), resumable
like the command itself, each at the bottleneck layer and β that the tools of issue 15 chose
(``iba-jax layer-locality`` and ``iba-jax beta-sweep`` on the first 8 validation images; the
measurements are in docs/results.md and the README, "Which layer?" and "Which β?"):

1. ``classification``: phantoms_cls_noisy (the less confident classifier) and phantoms_cls, every
   classification method, on the test split: Table 1, Fig. 2, IoU per finding, claims (a), (c),
   (d). Bottleneck at denseblock1 (the deepest layer where blocking one of two instances keeps
   the target and blocking both removes it), IBA β = 0.1, Inverse IBA β = 1.
2. ``classification_validation``: the same for IBA, Inverse IBA and Multi-layer IBA on the
   validation images from index 8 on (those the sweeps did not see), so that claims (a) and (c)
   have 100 cases or more.
3. ``classification_224`` and ``classification_224_validation``: the same three methods and
   images with phantoms_cls_noisy_224, the same classifier at 224 px, where denseblock3 (the
   paper's layer) is local: the bottleneck there, IBA β = 0.1, Inverse IBA β = 1 (the sweep's
   best IoU among the βs whose λ is flat in no image).
4. ``severity``: phantoms_reg, the regression methods, the zero baseline (a blur hardly changes a
   diffuse opacity): claim (b), Fig. 3b. Bottleneck at denseblock2 (denseblock3 is not local),
   β per loss as ``iba-jax beta-sweep --score pcc`` recommends: MSE 1, RM 30, Deviation 0.1.
5. ``detectors``: phantoms_detectors, the classification methods: Table 2. Denseblock3 is local
   for the detectors' large zones; β = 0.1 for IBA and Inverse IBA (recommended by the sweep:
   the best IoU among the βs whose λ is flat in no image).

Sensitivity-N is not computed: on these models it is uninformative (docs/results.md). Then the
claims of the paper, each as measured here, with the mean ± standard error over the cases and
their number, and paired by case (the mean difference with its 95 % bootstrap interval and the
sign test, ``metrics.paired``): (a) the fraction of instances marked by Inverse IBA vs IBA on
images with two or more instances of the target finding; (b) Regression IBA's PCC with the
severity map per loss vs a random map, over the image and within the lungs, beside the lung
mask itself; (c) Multi-layer vs single-layer IBA IoU on nodules; (d) each method's insertion and
deletion AUC vs a random map's. ``--write`` puts everything into one Markdown file, keeping
the hand-written notes of the file it replaces (from "## Reading these results" on). The last
line printed is a JSON object of the claims' figures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from iba_jax import cli, evaluation
from iba_jax.data import building
from iba_jax.metrics import correlation
from iba_jax.metrics.paired import PairedComparison, paired_comparison, paired_markdown
from iba_jax.records import read_rows

CLASSIFIERS = ("phantoms_cls_noisy", "phantoms_cls")
# Claims (a) and (c): each classifier's cases from the test and validation runs.
CLAIM_RUNS = {
    "phantoms_cls_noisy": ("classification", "classification_validation"),
    "phantoms_cls": ("classification", "classification_validation"),
    "phantoms_cls_noisy_224": ("classification_224", "classification_224_validation"),
}
ALL_IBA = ("iba", "inverse_iba", "multilayer_iba")


class Run(NamedTuple):
    """One ``iba-jax evaluate`` run: rows from image index ``first`` on are the run's cases."""

    models: tuple[str, ...]
    config: str
    split: str
    images: int
    baseline: str
    bottleneck: tuple[str, ...]
    methods: tuple[str, ...] = ()  # () : every method of the task
    first: int = 0


_CLS_BOTTLENECK = ("--layer", "denseblock1", "--beta", "0.1", "--method-beta", "inverse_iba=1")
_224_BOTTLENECK = ("--layer", "denseblock3", "--beta", "0.1", "--method-beta", "inverse_iba=1")
RUNS = {
    "classification": Run(CLASSIFIERS, "classification_128", "test", 200, "blur", _CLS_BOTTLENECK),
    "classification_validation": Run(
        CLASSIFIERS, "classification_128", "validation", 208, "blur", _CLS_BOTTLENECK, ALL_IBA, 8
    ),
    "classification_224": Run(
        ("phantoms_cls_noisy_224",),
        "classification_224",
        "test",
        200,
        "blur",
        _224_BOTTLENECK,
        ALL_IBA,
    ),
    "classification_224_validation": Run(
        ("phantoms_cls_noisy_224",),
        "classification_224",
        "validation",
        208,
        "blur",
        _224_BOTTLENECK,
        ALL_IBA,
        8,
    ),
    "severity": Run(
        ("phantoms_reg",),
        "regression_128",
        "test",
        200,
        "zero",
        (
            "--layer",
            "denseblock2",
            *("--method-beta", "regression_iba_mse=1"),
            *("--method-beta", "regression_iba_rm=30"),
            *("--method-beta", "regression_iba_deviation=0.1"),
        ),
    ),
    "detectors": Run(
        ("phantoms_detectors",),
        "regression_128",
        "test",
        100,
        "blur",
        ("--layer", "denseblock3", "--beta", "0.1"),
    ),
}


def evaluate_args(name: str, run: Run, data_dir: str, out: Path, limit: int | None) -> list[str]:
    """``iba-jax evaluate``'s arguments for a run (``limit``: at most that many images)."""
    args = ["evaluate"]
    for model in run.models:
        args += ["--model", model]
    images = run.images if limit is None else min(run.images, run.first + limit)
    args += ["cxr_phantoms", "--config", run.config, "--split", run.split]
    args += ["--data-dir", data_dir, "--limit", str(images), "--baseline", run.baseline]
    args += ["--sensitivity-samples", "0", *run.bottleneck, "--out", str(out / name)]
    if run.methods:
        args += ["--methods", ",".join(run.methods)]
    return args


def run_evaluations(data_dir: str, out: Path, limit: int | None) -> dict[str, float]:
    """Runs (or resumes) the evaluations; returns the seconds each took."""
    seconds = {}
    for name, run in RUNS.items():
        args = evaluate_args(name, run, data_dir, out, limit)
        print("iba-jax " + shlex.join(args), flush=True)
        start = time.perf_counter()
        if cli.main(args) != 0:
            raise SystemExit(f"iba-jax evaluate failed for {name}")
        seconds[name] = round(time.perf_counter() - start, 1)
    return seconds


def rows_of(out: Path, name: str) -> list[dict]:
    """A run's result rows from its first counted image on."""
    first = RUNS[name].first
    return [r for r in read_rows(out / name / "results.csv") if int(r["index"]) >= first]


def mean_and_error(values: list[float]) -> tuple[float, float, int]:
    """Mean, standard error and count of the finite values."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return math.nan, math.nan, 0
    error = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
    return float(v.mean()), error, len(v)


def values(rows, metric, **where) -> list[float]:
    return [float(r[metric]) for r in rows if all(r[k] == v for k, v in where.items())]


def paired_by_case(rows, metric: str, a: str, b: str, **where) -> PairedComparison | None:
    """Method ``b`` against ``a`` on ``metric``, paired by case (model, run, image, target);
    None when fewer than two cases have both values."""
    case = lambda r: (r["model"], r.get("run", ""), r["index"], r["target"])
    chosen = [r for r in rows if all(r[k] == v for k, v in where.items())]
    of = {m: {case(r): float(r[metric]) for r in chosen if r["method"] == m} for m in (a, b)}
    shared = [c for c in sorted(set(of[a]) & set(of[b])) if np.isfinite([of[a][c], of[b][c]]).all()]
    if len(shared) < 2:
        return None
    return paired_comparison(
        np.array([of[a][c] for c in shared]), np.array([of[b][c] for c in shared])
    )


def paired_section(comparisons: dict, names: tuple[str, str], figures: dict, key: str) -> str:
    """The comparisons' table (those with two or more cases), their figures under ``key``."""
    kept = {label: c for label, c in comparisons.items() if c is not None}
    figures |= {f"paired/{key}/{label}": c._asdict() for label, c in kept.items()}
    missing = [label for label, c in comparisons.items() if c is None]
    parts = [paired_markdown(kept, names)] if kept else []
    if missing:
        parts.append(f"Not compared (fewer than 2 cases with both values): {', '.join(missing)}")
    return "\nPaired by case:\n\n" + "\n\n".join(parts) + "\n"


def fmt(stat: tuple[float, float, int]) -> str:
    mean, error, n = stat
    return f"{mean:.3f} ± {error:.3f} (n = {n})"


def lung_mask_pcc(data_dir: str, rows) -> list[float]:
    """The baseline map of claim (b): each severity case's lung mask, correlated with its
    severity map over the whole image."""
    run = RUNS["severity"]
    source = building.data_source("cxr_phantoms", run.split, config=run.config, data_dir=data_dir)
    found = []
    for index in sorted({int(r["index"]) for r in rows}):
        (case,) = evaluation.cases(source[index], index)
        mask, severity = jnp.asarray(case.lungs, jnp.float32)[None], jnp.asarray(case.severity)
        found.append(float(correlation.pearson(mask, severity[None])[0]))
    return found


def claims(out: Path, data_dir: str) -> tuple[str, dict]:
    """The four claims as Markdown and as figures."""
    test = rows_of(out, "classification")
    both = [
        r | {"run": name}
        for name in dict.fromkeys(n for runs in CLAIM_RUNS.values() for n in runs)
        for r in rows_of(out, name)
        if r["model"] in CLAIM_RUNS and name in CLAIM_RUNS[r["model"]]
    ]
    sev = rows_of(out, "severity")
    lines, figures = [], {}

    lines.append("**(a) Inverse IBA marks more of a finding's instances than IBA.** Cases with ")
    lines.append("two or more instances of the target finding (test and validation images); an ")
    lines.append("instance is marked when the map, binarised to the ground truth's area, covers ")
    lines.append("at least half of it.\n\n| model | method | instances marked |\n|---|---|---|\n")
    paired = {}
    for model in CLAIM_RUNS:
        for method in ("iba", "inverse_iba", "multilayer_iba"):
            stat = mean_and_error(values(both, "instances_marked", model=model, method=method))
            figures[f"instances_marked/{model}/{method}"] = stat
            lines.append(f"| {model} | {method} | {fmt(stat)} |\n")
        paired[f"instances marked, {model}"] = paired_by_case(
            both, "instances_marked", "iba", "inverse_iba", model=model
        )
    lines.append(paired_section(paired, ("iba", "inverse_iba"), figures, "inverse_iba-iba"))

    lines.append("\n**(b) Regression IBA's maps correlate with the severity map; a random map's ")
    lines.append("do not.** Pearson correlation per case (phantoms_reg), over the image and ")
    lines.append("within the lungs only; the lung mask itself as a map is the baseline of the ")
    lines.append("first (within the lungs it is constant).\n\n")
    lines.append("| method | PCC with the severity map | PCC within the lungs |\n|---|---|---|\n")
    lung_mask = mean_and_error(lung_mask_pcc(data_dir, sev))
    figures["pcc/lung_mask"] = lung_mask
    lines.append(f"| lung mask | {fmt(lung_mask)} | (constant) |\n")
    for method in dict.fromkeys(r["method"] for r in sev):
        stat = mean_and_error(values(sev, "pcc", method=method))
        inside = mean_and_error(values(sev, "pcc_lungs", method=method))
        figures[f"pcc/{method}"], figures[f"pcc_lungs/{method}"] = stat, inside
        lines.append(f"| {method} | {fmt(stat)} | {fmt(inside)} |\n")
    regression = [m for m in dict.fromkeys(r["method"] for r in sev) if m != "random"]
    paired = {
        f"{label}, {m}": paired_by_case(sev, metric, "random", m)
        for metric, label in (("pcc", "PCC"), ("pcc_lungs", "PCC within the lungs"))
        for m in regression
    }
    lines.append(paired_section(paired, ("random", "method"), figures, "method-random"))

    lines.append("\n**(c) Multi-layer IBA localises small findings better than IBA.** IoU on ")
    lines.append("the Nodule cases (test and validation images), and on all cases.\n\n")
    lines.append("| model | method | IoU, nodules | IoU, all findings |\n|---|---|---|---|\n")
    paired = {}
    for model in CLAIM_RUNS:
        for method in ("iba", "multilayer_iba", "inverse_iba"):
            mine = dict(model=model, method=method)
            nodules = mean_and_error(values(both, "iou", target_name="Nodule", **mine))
            every = mean_and_error(values(both, "iou", **mine))
            figures[f"iou_nodule/{model}/{method}"] = nodules
            lines.append(f"| {model} | {method} | {fmt(nodules)} | {fmt(every)} |\n")
        paired[f"IoU, nodules, {model}"] = paired_by_case(
            both, "iou", "iba", "multilayer_iba", model=model, target_name="Nodule"
        )
        paired[f"IoU, all findings, {model}"] = paired_by_case(
            both, "iou", "iba", "multilayer_iba", model=model
        )
    lines.append(paired_section(paired, ("iba", "multilayer_iba"), figures, "multilayer_iba-iba"))

    lines.append("\n**(d) Insertion and deletion AUC of each method vs a random map** ")
    lines.append("(test images; the target's probability; blurred baseline, σ = 10 px; ")
    lines.append("insertion: higher is better, deletion: lower).\n\n")
    lines.append("| model | method | insertion AUC | deletion AUC |\n|---|---|---|---|\n")
    paired = {}
    for model in CLASSIFIERS:
        mine = [r for r in test if r["model"] == model]
        for method in dict.fromkeys(r["method"] for r in mine):
            insertion = mean_and_error(values(mine, "insertion_auc", method=method))
            deletion = mean_and_error(values(mine, "deletion_auc", method=method))
            figures[f"insertion_auc/{model}/{method}"] = insertion
            figures[f"deletion_auc/{model}/{method}"] = deletion
            lines.append(f"| {model} | {method} | {fmt(insertion)} | {fmt(deletion)} |\n")
        for metric in ("insertion_auc", "deletion_auc"):
            for m in dict.fromkeys(r["method"] for r in mine):
                if m != "random":
                    label = f"{metric.removesuffix('_auc')}, {model}, {m}"
                    paired[label] = paired_by_case(mine, metric, "random", m)
    lines.append(paired_section(paired, ("random", "method"), figures, "method-random"))
    return "".join(lines), figures


def speed(out: Path) -> str:
    """Median seconds per case of each method (map and all metrics), from the results."""
    lines = ["| run | method | median seconds per case | cases per second |\n|---|---|---|---|\n"]
    for name in RUNS:
        rows = rows_of(out, name)
        for method in dict.fromkeys(r["method"] for r in rows):
            median = float(np.median(values(rows, "seconds", method=method)))
            lines.append(f"| {name} | {method} | {median:.3f} | {1 / median:.2f} |\n")
    return "".join(lines)


def compute_seconds(out: Path) -> dict[str, float]:
    """Per run, the sum of the per-case seconds in its results (compilation included): the
    compute time, whether the run was done in one go or resumed."""
    return {name: round(sum(values(rows_of(out, name), "seconds")), 1) for name in RUNS}


def report(out: Path, command: str, seconds: dict[str, float], claims_text: str) -> str:
    parts = [
        "# Results on the phantoms\n\n",
        "Produced by\n\n```\n" + command + "\n```\n\n",
        f"on {datetime.date.today()}, {platform.machine()} with {jax.device_count()} "
        f"{jax.devices()[0].platform.upper()} device(s), jax {jax.__version__}. Compute time per "
        f"run (seconds, the sum over its cases, compilation included): {compute_seconds(out)}; "
        f"wall time of this invocation per run: {seconds}. The runs:\n\n",
        "| run | models | images | bottleneck |\n|---|---|---|---|\n",
        *(
            f"| {name} | {', '.join(run.models)} | {run.split} {run.first}-{run.images - 1} "
            f"| {' '.join(run.bottleneck)} |\n"
            for name, run in RUNS.items()
        ),
        "\n## The paper's claims, as measured on the phantoms\n\n",
        claims_text,
    ]
    for name in RUNS:
        text = (out / name / "summary.md").read_text().replace("## ", "### ")
        parts += [f"\n## {name}\n\n", text]
    parts += ["\n## Speed of the full evaluation per method\n\n", speed(out)]
    return "".join(parts)


NOTES = "## Reading these results"


def kept_notes(path: Path) -> str:
    """The hand-written notes at the end of an earlier report (from ``NOTES`` on), which a
    rerun keeps below the regenerated tables."""
    text = path.read_text() if path.exists() else ""
    return "\n" + text[text.index(NOTES) :] if NOTES in text else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", default="runs/phantoms_eval")
    parser.add_argument("--limit", type=int, default=None, help="at most N images per run")
    parser.add_argument("--write", default=None, help="write the report to this Markdown file")
    args = parser.parse_args()
    out = Path(args.out)
    seconds = run_evaluations(args.data_dir, out, args.limit)
    claims_text, figures = claims(out, args.data_dir)
    command = shlex.join([".venv/bin/python", "benchmarks/phantom_evaluation.py", *sys.argv[1:]])
    text = report(out, command, seconds, claims_text)
    print(text)
    if args.write:
        Path(args.write).write_text(text + kept_notes(Path(args.write)))
    print(json.dumps({k: v if isinstance(v, dict) else v[0] for k, v in figures.items()}))


if __name__ == "__main__":
    main()
