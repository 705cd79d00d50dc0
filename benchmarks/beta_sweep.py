"""β sweeps on the shipped phantom models: IBA and Inverse IBA on the classifier, Regression
IBA with each loss (MSE, RM, Deviation) on the regressor; the model term against β·information
at the first and the last step, the spread of the final λ and the β that ``ij.recommended_beta``
recommends (without scores: the largest β whose λ is flat in no image and spreads by 0.3 or more).

    .venv/bin/python benchmarks/beta_sweep.py [--images 8] [--layers denseblock1,denseblock3]
        [--classifier phantoms_cls] [--regressor phantoms_reg]

(a model is a shipped model's name or a bundle folder with its feature statistics)

Validation images (for the classifier, those with a finding, each explained for its first
finding's class; for the regressor, MSE to the image's own score); the paper's settings with a
rolled loop. Ends with one JSON line of the figures.
"""

import argparse
import json

import jax
import numpy as np

import iba_jax as ij
from iba_jax.data import phantoms
from iba_jax.data.preprocess import to_uint8, unit_range
from iba_jax.pretrained import model_dir

BETAS = (0.01, 0.1, 1.0, 10.0, 30.0)


def validation_images(task: str, count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` validation phantoms of a task with a finding, and each one's target:
    its first finding (classification) or its global score (regression)."""
    pixels, targets = [], []
    index = 0
    while len(pixels) < count:
        phantom = phantoms.generate(task, size, 0, "validation", index)
        index += 1
        if task == "regression":
            pixels.append(to_uint8(phantom.image))
            targets.append(float(phantom.zone_scores.sum()))
        elif phantom.instances:
            pixels.append(to_uint8(phantom.image))
            targets.append(phantom.instances[0][0])
    return np.stack(pixels)[..., None], np.array(targets)


def sweep(model: str, task: str, count: int, methods: dict, layer: str) -> dict:
    """Each method's sweep on ``model`` at ``layer``, printed as a table; the figures by
    method."""
    folder = model_dir(model)
    bundle = ij.load_bundle(folder)
    stats = ij.load_feature_stats(folder, layer)
    pixels, targets = validation_images(task, count, bundle.input_spec.image_size)
    images = bundle.input_spec.normalize(unit_range(pixels, 1))
    figures = {}
    for name, method in methods.items():
        run = lambda c, method=method: method(
            bundle.model,
            bundle.variables,
            stats,
            images,
            targets,
            layer=layer,
            config=c,
            unroll=False,
            key=jax.random.key(0),
        )
        points = ij.beta_sweep(run, BETAS)
        print(f"{name}, {model}, {count} validation images, {layer}")
        print(ij.beta_markdown(points))
        print(f"recommended β (largest whose λ spreads): {ij.recommended_beta(points)}")
        figures[name] = [p._asdict() for p in points]
    return figures


def regression(loss: str):
    """Regression IBA with ``loss``: MSE to the image's own score; RM and Deviation take none."""
    return lambda m, v, s, x, score, **k: ij.regression_iba(
        m, v, s, x, score if loss == "mse" else None, loss=loss, **k
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--layers", default="denseblock3", help="comma-separated cut points")
    parser.add_argument("--classifier", default="phantoms_cls", help="iba, inverse_iba; '' skips")
    parser.add_argument("--regressor", default="phantoms_reg", help="regression_iba_*; '' skips")
    args = parser.parse_args()
    classifier = {"iba": ij.iba, "inverse_iba": ij.inverse_iba}
    regressor = {f"regression_iba_{loss}": regression(loss) for loss in ("mse", "rm", "deviation")}
    figures = {}
    for layer in args.layers.split(","):
        figures[layer] = {}
        for model, task, swept in (
            (args.classifier, "classification", classifier),
            (args.regressor, "regression", regressor),
        ):
            if model:  # '' skips
                figures[layer] |= sweep(model, task, args.images, swept, layer)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
