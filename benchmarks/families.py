"""Seconds per image of a forward pass and of IBA, DenseNet-121 against ResNet-50, 224 px.

Run: ``.venv/bin/python benchmarks/families.py [--images 4] [--repeats 2]``.
Both with random weights (the speed does not depend on them), 14 outputs, the paper's IBA
defaults (β = 10, 10 Adam steps, 10 samples per step), the bottleneck after DenseNet's
denseblock3 and after ResNet's layer3 (both 14 x 14 at 224 px: 1024 channels each). For each:
the first call (compile + run) and the best of ``--repeats`` further calls, per image; the
ratio ResNet/DenseNet is measured in the same run. The last line is a JSON object of all
figures.
"""

import argparse
import json
import os
import platform

import jax
from attribution import timed  # the same first-call and best-of-repeats timing

from iba_jax.attribute import iba
from iba_jax.models import DenseNet, ResNet, densenet121, predict, resnet50
from iba_jax.stats import estimate_feature_stats

MODELS = {
    "densenet121": (DenseNet(densenet121(num_classes=14)), "denseblock3"),
    "resnet50": (ResNet(resnet50(num_classes=14)), "layer3"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    figures = {
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "jax": jax.__version__,
        "images": args.images,
    }
    data = jax.random.normal(jax.random.key(1), (16, 224, 224, 3))
    images = data[: args.images]
    for name, (net, layer) in MODELS.items():
        variables = net.init(jax.random.key(0))
        stats = estimate_feature_stats(net, variables, [data[:8], data[8:]], layer)
        forward = timed(lambda i, v=variables, n=net: predict(n, v, images + i), args.repeats)
        attribution = timed(
            lambda i, v=variables, n=net, s=stats, cut=layer: iba(
                n, v, s, images, 0, layer=cut, key=jax.random.key(i)
            )[0],
            args.repeats,
        )
        for what, (first, best) in (("forward", forward), ("iba", attribution)):
            figures[f"{name}_{what}_first_s"] = round(first / args.images, 4)
            figures[f"{name}_{what}_s_per_image"] = round(best / args.images, 4)
            print(
                f"{name:12s} {what:8s} first call {first / args.images:7.3f} s/image, "
                f"then {best / args.images:7.3f} s/image",
                flush=True,
            )
    for what in ("forward", "iba"):
        ratio = figures[f"resnet50_{what}_s_per_image"] / figures[f"densenet121_{what}_s_per_image"]
        figures[f"ratio_resnet50_to_densenet121_{what}"] = round(ratio, 3)
        print(f"ResNet-50 / DenseNet-121, {what}: {ratio:.2f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
