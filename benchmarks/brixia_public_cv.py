"""Patient-grouped 5-fold cross-validation on BrixIA's public images: the severity regressor
or the three detectors.

    .venv/bin/python benchmarks/brixia_public_cv.py --data-dir D --workdir runs/brixia_public_cv
        [--task regression|detectors] [--init-from iba_jax/pretrained/phantoms_reg]

D must hold the built ``brixia_public`` 128 (``iba-jax build-data brixia_public --config 128
--manual-dir DIR --data-dir D --on-bad-image skip``). For each fold, trains
``train/configs/brixia_public_reg.py:fold=K`` (or ``brixia_public_detectors.py``; resumable: a
finished fold is not retrained) and predicts the held-out fold with the **final** model
(``best_model`` is chosen on that fold, so its figures would be optimistic). Regression: MAE,
Pearson and Spearman of the out-of-fold predictions against the senior radiologist's global
score, beside the junior radiologist's own agreement with the senior on the same images (the
ceiling). Detectors: each detector's out-of-fold ROC AUC against the senior's labels, beside
the junior's labels read as scores. Writes ``out_of_fold.csv`` (one row per image) into the
workdir and prints one JSON line.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.stats
from sklearn.metrics import roc_auc_score

from iba_jax.bundle import load_bundle
from iba_jax.data import building
from iba_jax.data.brixia import DETECTOR_LABELS, detector_labels
from iba_jax.data.brixia_public import FOLDS
from iba_jax.data.preprocess import unit_range
from iba_jax.models import predict
from iba_jax.records import write_rows

CONFIGS = {
    "regression": "train/configs/brixia_public_reg.py",
    "detectors": "train/configs/brixia_public_detectors.py",
}


def agreement(predicted: np.ndarray, senior: np.ndarray) -> dict[str, float]:
    return {
        "mae": float(np.mean(np.abs(predicted - senior))),
        "pearson": float(scipy.stats.pearsonr(predicted, senior)[0]),
        "spearman": float(scipy.stats.spearmanr(predicted, senior)[0]),
    }


def train_fold(task: str, k: int, data_dir: str, init_from: str | None, workdir: Path) -> None:
    """Trains fold ``k`` into ``workdir`` unless its final model is already there."""
    if (workdir / "final_model").is_dir():
        return
    options = f"fold={k},data_dir={data_dir}" + (f",init_from={init_from}" if init_from else "")
    command = [sys.executable, "-m", "train.main", "--config", f"{CONFIGS[task]}:{options}"]
    subprocess.run([*command, "--workdir", str(workdir)], check=True)


def out_of_fold(task: str, args: argparse.Namespace) -> list[dict]:
    """One row per image: its fold, the model's outputs and the two readers' targets."""
    rows = []
    for k, fold in enumerate(FOLDS):
        train_fold(task, k, args.data_dir, args.init_from, args.workdir / fold)
        bundle = load_bundle(args.workdir / fold / "final_model")
        source = building.data_source("brixia_public", fold, config="128", data_dir=args.data_dir)
        examples = [source[i] for i in range(len(source))]
        images = np.stack([e["image"] for e in examples])
        x = bundle.input_spec.normalize(unit_range(images, bundle.config.in_channels))
        outputs = np.asarray(predict(bundle.model, bundle.variables, x))
        for e, out in zip(examples, outputs, strict=True):
            senior = map(bool, e["detector_labels"])
            junior = detector_labels(np.asarray(e["junior_zone_scores"]))
            rows.append(
                {
                    "filename": e["filename"].decode(),
                    "fold": fold,
                    **{
                        f"output/{name}": float(v)
                        for name, v in zip(bundle.label_names, out, strict=True)
                    },
                    "senior_global": int(e["global_score"]),
                    "junior_global": int(e["junior_global_score"]),
                    **{f"senior/{n}": v for n, v in zip(DETECTOR_LABELS, senior, strict=True)},
                    **{f"junior/{n}": v for n, v in zip(DETECTOR_LABELS, junior, strict=True)},
                }
            )
    return rows


def regression_report(rows: list[dict]) -> dict:
    folds = np.array([r["fold"] for r in rows])
    predicted = np.array([r["output/global_score"] for r in rows])
    senior = np.array([r["senior_global"] for r in rows], float)
    junior = np.array([r["junior_global"] for r in rows], float)
    model, ceiling = agreement(predicted, senior), agreement(junior, senior)
    print("| | MAE | Pearson | Spearman |\n| --- | --- | --- | --- |")
    for name, a in (("model (out of fold)", model), ("junior radiologist", ceiling)):
        print(f"| {name} | {a['mae']:.2f} | {a['pearson']:.3f} | {a['spearman']:.3f} |")
    per_fold = {f: agreement(predicted[folds == f], senior[folds == f])["mae"] for f in FOLDS}
    print("MAE per fold:", {f: round(v, 2) for f, v in per_fold.items()})
    return {"model": model, "junior": ceiling, "mae_per_fold": per_fold}


def detectors_report(rows: list[dict]) -> dict:
    print("| detector | positives / images | model AUC (out of fold) | junior reader's AUC |")
    print("| --- | --- | --- | --- |")
    report = {}
    for name in DETECTOR_LABELS:
        truth = np.array([r[f"senior/{name}"] for r in rows])
        model = float(roc_auc_score(truth, [r[f"output/{name}"] for r in rows]))
        junior = float(roc_auc_score(truth, [float(r[f"junior/{name}"]) for r in rows]))
        print(f"| {name} | {truth.sum()} / {len(truth)} | {model:.3f} | {junior:.3f} |")
        report[name] = {"auc": model, "junior_auc": junior, "positives": int(truth.sum())}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--task", choices=tuple(CONFIGS), default="regression")
    parser.add_argument("--init-from", default=None)
    args = parser.parse_args()
    start = time.perf_counter()
    rows = out_of_fold(args.task, args)
    write_rows(args.workdir / "out_of_fold.csv", rows)
    print(f"{len(rows)} out-of-fold images, task={args.task}, init_from={args.init_from}")
    report = (regression_report if args.task == "regression" else detectors_report)(rows)
    seconds = round(time.perf_counter() - start, 1)
    print(json.dumps({"task": args.task, **report, "images": len(rows), "seconds": seconds}))


if __name__ == "__main__":
    main()
