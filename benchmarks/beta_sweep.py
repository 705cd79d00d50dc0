"""β sweep of IBA and Inverse IBA on a shipped phantom classifier: the model term against
β·information at the first and the last step, and the spread of the final λ.

    .venv/bin/python benchmarks/beta_sweep.py [--model phantoms_cls] [--images 8]

Validation images with at least one finding, each explained for its first finding's class; the
paper's settings with a rolled loop. Ends with one JSON line of the figures.
"""

import argparse
import json

import jax
import numpy as np

import iba_jax as ij
from iba_jax.data import phantoms
from iba_jax.data.preprocess import to_uint8, unit_range

BETAS = (0.01, 0.1, 1.0, 10.0, 30.0)


def validation_images(count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` validation phantoms with a finding, and each one's first finding."""
    pixels, targets = [], []
    index = 0
    while len(pixels) < count:
        phantom = phantoms.generate("classification", size, 0, "validation", index)
        index += 1
        if phantom.instances:
            pixels.append(to_uint8(phantom.image))
            targets.append(phantom.instances[0][0])
    return np.stack(pixels)[..., None], np.array(targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="phantoms_cls")
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()
    bundle = ij.load_pretrained(args.model)
    stats = ij.load_feature_stats(ij.pretrained_dir(args.model), "denseblock3")
    pixels, targets = validation_images(args.images, bundle.input_spec.image_size)
    images = bundle.input_spec.normalize(unit_range(pixels, 1))
    config = ij.IBAConfig(unroll=False)
    figures = {}
    for name, method in (("iba", ij.iba), ("inverse_iba", ij.inverse_iba)):
        run = lambda c, method=method: method(
            bundle.model, bundle.variables, stats, images, targets, config=c, key=jax.random.key(0)
        )
        points = ij.beta_sweep(run, BETAS, config)
        print(f"{name}, {args.model}, {args.images} validation images, denseblock3")
        print(ij.beta_markdown(points))
        figures[name] = [p._asdict() for p in points]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
