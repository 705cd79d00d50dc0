"""The paper's evaluation on the phantoms with the shipped models, and its claims as measured.

Run: ``.venv/bin/python benchmarks/phantom_evaluation.py --data-dir D --out runs/phantoms_eval
[--limit N] [--write docs/results.md] [--layer L] [--beta B] [--method-beta METHOD=B ...]``
(the bottleneck arguments go to ``iba-jax evaluate``).

Three ``iba-jax evaluate`` runs on the cxr_phantoms test split (built into ``--data-dir`` if
needed), resumable like the command itself:

1. ``classification``: phantoms_cls (BCE) and phantoms_cls_weighted (weighted BCE), the
   classification methods: Table 1, Table 3, Fig. 2, IoU per finding;
2. ``severity``: phantoms_reg, the regression methods with the zero baseline (a blur hardly
   changes a diffuse opacity): the PCC table and Fig. 3b;
3. ``detectors``: phantoms_detectors, the classification methods: Table 2.

Then the claims of the paper, each as measured here, with the mean ± standard error over the
cases and their number: (a) the fraction of instances marked by Inverse IBA vs IBA on images
with two or more instances of the target finding; (b) Regression IBA's PCC with the severity
map per loss vs a random map; (c) Multi-layer vs single-layer IBA IoU on nodules; (d) each
method's insertion and deletion AUC vs a random map's; each also paired by case (the mean
difference with its 95 % bootstrap interval and the sign test, ``metrics.paired``).
``--write`` puts everything into one Markdown file. The last line printed is a JSON object of
the claims' figures.
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

import jax
import jax.numpy as jnp
import numpy as np

from iba_jax import cli, evaluation
from iba_jax.data import building
from iba_jax.metrics import correlation
from iba_jax.metrics.paired import PairedComparison, paired_comparison, paired_markdown
from iba_jax.pretrained import pretrained_dir
from iba_jax.records import read_rows

RUNS = {
    "classification": (("phantoms_cls", "phantoms_cls_weighted"), "classification_128", "blur"),
    "severity": (("phantoms_reg",), "regression_128", "zero"),
    "detectors": (("phantoms_detectors",), "regression_128", "blur"),
}


def run_evaluations(
    data_dir: str, out: Path, limit: int | None, bottleneck: list[str]
) -> dict[str, float]:
    """Runs (or resumes) the three evaluations, with ``bottleneck`` (``iba-jax evaluate``'s
    --layer, --beta and --method-beta arguments); returns the seconds each took."""
    seconds = {}
    for name, (models, config, baseline) in RUNS.items():
        args = ["evaluate"]
        for model in models:
            args += ["--model", str(pretrained_dir(model))]
        args += ["cxr_phantoms", "--config", config, "--data-dir", data_dir]
        args += ["--baseline", baseline, "--out", str(out / name), *bottleneck]
        if limit is not None:
            args += ["--limit", str(limit)]
        print("iba-jax " + shlex.join(args), flush=True)
        start = time.perf_counter()
        if cli.main(args) != 0:
            raise SystemExit(f"iba-jax evaluate failed for {name}")
        seconds[name] = round(time.perf_counter() - start, 1)
    return seconds


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
    """Method ``b`` against ``a`` on ``metric``, paired by case (model, image, target); None
    when fewer than two cases have both values."""
    case = lambda r: (r["model"], r["index"], r["target"])
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
    _, config, _ = RUNS["severity"]
    source = building.data_source("cxr_phantoms", "test", config=config, data_dir=data_dir)
    found = []
    for index in sorted({int(r["index"]) for r in rows}):
        (case,) = evaluation.cases(source[index], index)
        mask, severity = jnp.asarray(case.lungs, jnp.float32)[None], jnp.asarray(case.severity)
        found.append(float(correlation.pearson(mask, severity[None])[0]))
    return found


def claims(out: Path, data_dir: str) -> tuple[str, dict]:
    """The four claims as Markdown and as figures."""
    cls = read_rows(out / "classification" / "results.csv")
    bce = [r for r in cls if r["model"] == "phantoms_cls"]
    sev = read_rows(out / "severity" / "results.csv")
    lines, figures = [], {}

    lines.append("**(a) Inverse IBA marks more of a finding's instances than IBA.** Cases with ")
    lines.append("two or more instances of the target finding (phantoms_cls); an instance is ")
    lines.append("marked when the map, binarised to the ground truth's area, covers at least ")
    lines.append("half of it.\n\n| method | instances marked |\n|---|---|\n")
    for method in ("iba", "inverse_iba", "multilayer_iba", "grad_cam", "random"):
        stat = mean_and_error(values(bce, "instances_marked", method=method))
        figures[f"instances_marked/{method}"] = stat
        lines.append(f"| {method} | {fmt(stat)} |\n")
    paired = {"instances marked": paired_by_case(bce, "instances_marked", "iba", "inverse_iba")}
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
    lines.append("the Nodule cases (phantoms_cls), and on all cases.\n\n")
    lines.append("| method | IoU, nodules | IoU, all findings |\n|---|---|---|\n")
    for method in ("iba", "multilayer_iba", "inverse_iba"):
        nodules = mean_and_error(values(bce, "iou", method=method, target_name="Nodule"))
        every = mean_and_error(values(bce, "iou", method=method))
        figures[f"iou_nodule/{method}"] = nodules
        lines.append(f"| {method} | {fmt(nodules)} | {fmt(every)} |\n")
    paired = {
        "IoU, nodules": paired_by_case(bce, "iou", "iba", "multilayer_iba", target_name="Nodule"),
        "IoU, all findings": paired_by_case(bce, "iou", "iba", "multilayer_iba"),
    }
    lines.append(paired_section(paired, ("iba", "multilayer_iba"), figures, "multilayer_iba-iba"))

    lines.append("\n**(d) Insertion and deletion AUC of each method vs a random map** ")
    lines.append("(phantoms_cls; the target's probability; blurred baseline, σ = 10 px; ")
    lines.append("insertion: higher is better, deletion: lower).\n\n")
    lines.append("| method | insertion AUC | deletion AUC |\n|---|---|---|\n")
    for method in dict.fromkeys(r["method"] for r in bce):
        insertion = mean_and_error(values(bce, "insertion_auc", method=method))
        deletion = mean_and_error(values(bce, "deletion_auc", method=method))
        figures[f"insertion_auc/{method}"] = insertion
        figures[f"deletion_auc/{method}"] = deletion
        lines.append(f"| {method} | {fmt(insertion)} | {fmt(deletion)} |\n")
    paired = {
        f"{metric.removesuffix('_auc')}, {m}": paired_by_case(bce, metric, "random", m)
        for metric in ("insertion_auc", "deletion_auc")
        for m in dict.fromkeys(r["method"] for r in bce)
        if m != "random"
    }
    lines.append(paired_section(paired, ("random", "method"), figures, "method-random"))
    return "".join(lines), figures


def speed(out: Path) -> str:
    """Median seconds per case of each method (map and all metrics), from the results."""
    lines = ["| run | method | median seconds per case | cases per second |\n|---|---|---|---|\n"]
    for name in RUNS:
        rows = read_rows(out / name / "results.csv")
        for method in dict.fromkeys(r["method"] for r in rows):
            median = float(np.median(values(rows, "seconds", method=method)))
            lines.append(f"| {name} | {method} | {median:.3f} | {1 / median:.2f} |\n")
    return "".join(lines)


def compute_seconds(out: Path) -> dict[str, float]:
    """Per run, the sum of the per-case seconds in its results (compilation included): the
    compute time, whether the run was done in one go or resumed."""
    return {
        name: round(sum(values(read_rows(out / name / "results.csv"), "seconds")), 1)
        for name in RUNS
    }


def report(out: Path, command: str, seconds: dict[str, float], claims_text: str) -> str:
    parts = [
        "# Results on the phantoms\n\n",
        "Produced by\n\n```\n" + command + "\n```\n\n",
        f"on {datetime.date.today()}, {platform.machine()} with {jax.device_count()} "
        f"{jax.devices()[0].platform.upper()} device(s), jax {jax.__version__}. Compute time per "
        f"run (seconds, the sum over its cases, compilation included): {compute_seconds(out)}; "
        f"wall time of this invocation per run: {seconds}.\n\n",
        "## The paper's claims, as measured on the phantoms\n\n",
        claims_text,
    ]
    for name in RUNS:
        text = (out / name / "summary.md").read_text().replace("## ", "### ")
        parts += [f"\n## {name}\n\n", text]
    parts += ["\n## Speed of the full evaluation per method\n\n", speed(out)]
    return "".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", default="runs/phantoms_eval")
    parser.add_argument("--limit", type=int, default=None, help="first N test images")
    parser.add_argument("--write", default=None, help="write the report to this Markdown file")
    args, bottleneck = parser.parse_known_args()  # the rest: --layer, --beta, --method-beta
    out = Path(args.out)
    seconds = run_evaluations(args.data_dir, out, args.limit, bottleneck)
    claims_text, figures = claims(out, args.data_dir)
    command = shlex.join([".venv/bin/python", "benchmarks/phantom_evaluation.py", *sys.argv[1:]])
    text = report(out, command, seconds, claims_text)
    print(text)
    if args.write:
        Path(args.write).write_text(text)
    print(json.dumps({k: v if isinstance(v, dict) else v[0] for k, v in figures.items()}))


if __name__ == "__main__":
    main()
