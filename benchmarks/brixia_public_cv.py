"""Patient-grouped 5-fold cross-validation of the severity regressor on BrixIA's public images.

    .venv/bin/python benchmarks/brixia_public_cv.py --data-dir D --workdir runs/brixia_public_cv
        [--init-from iba_jax/pretrained/phantoms_reg]

D must hold the built ``brixia_public`` 128 (``iba-jax build-data brixia_public --config 128
--manual-dir DIR --data-dir D --on-bad-image skip``). For each fold, trains
``train/configs/brixia_public_reg.py:fold=K`` (resumable: a finished fold is not retrained) and
predicts the held-out fold with the **final** model (``best_model`` is chosen on that fold, so
its figures would be optimistic). Prints MAE, Pearson and Spearman of the out-of-fold
predictions against the senior radiologist's global score, beside the junior radiologist's own
agreement with the senior on the same images (the ceiling), and one JSON line.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.stats

from iba_jax.bundle import load_bundle
from iba_jax.data import building
from iba_jax.data.brixia_public import FOLDS
from iba_jax.data.preprocess import unit_range
from iba_jax.models.densenet import predict


def agreement(predicted: np.ndarray, senior: np.ndarray) -> dict[str, float]:
    return {
        "mae": float(np.mean(np.abs(predicted - senior))),
        "pearson": float(scipy.stats.pearsonr(predicted, senior)[0]),
        "spearman": float(scipy.stats.spearmanr(predicted, senior)[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--init-from", default=None)
    args = parser.parse_args()
    rows = []
    start = time.perf_counter()
    for k, fold in enumerate(FOLDS):
        workdir = args.workdir / fold
        if not (workdir / "final_model").is_dir():
            options = f"fold={k},data_dir={args.data_dir}"
            if args.init_from:
                options += f",init_from={args.init_from}"
            config = f"train/configs/brixia_public_reg.py:{options}"
            command = [sys.executable, "-m", "train.main", "--config", config]
            subprocess.run([*command, "--workdir", str(workdir)], check=True)
        bundle = load_bundle(workdir / "final_model")
        source = building.data_source("brixia_public", fold, config="128", data_dir=args.data_dir)
        examples = [source[i] for i in range(len(source))]
        images = np.stack([e["image"] for e in examples])
        x = bundle.input_spec.normalize(unit_range(images, 1))
        outputs = np.asarray(predict(bundle.model, bundle.variables, x))[:, 0]
        for e, out in zip(examples, outputs, strict=True):
            rows.append((fold, float(out), int(e["global_score"]), int(e["junior_global_score"])))
    folds, predicted, senior, junior = (np.array(c) for c in zip(*rows, strict=True))
    model, ceiling = agreement(predicted, senior), agreement(junior.astype(float), senior)
    print(f"{len(rows)} out-of-fold images, init_from={args.init_from}")
    print("| | MAE | Pearson | Spearman |\n| --- | --- | --- | --- |")
    for name, a in (("model (out of fold)", model), ("junior radiologist", ceiling)):
        print(f"| {name} | {a['mae']:.2f} | {a['pearson']:.3f} | {a['spearman']:.3f} |")
    per_fold = {f: agreement(predicted[folds == f], senior[folds == f])["mae"] for f in FOLDS}
    print("MAE per fold:", {f: round(v, 2) for f, v in per_fold.items()})
    print(
        json.dumps(
            {
                "model": model,
                "junior": ceiling,
                "mae_per_fold": per_fold,
                "images": len(rows),
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
