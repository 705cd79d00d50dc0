"""Seconds per image of IBA, Inverse, Multi-layer IBA and CoIBA on DenseNet-121 at 224 px.

Run: ``.venv/bin/python benchmarks/attribution.py [--batches 1 4 16] [--quick]``.
Defaults of the paper (β = 10, 10 Adam steps, 10 samples per step), bottleneck after
denseblock3, random weights (the speed does not depend on them). For each setting: the first
call (compile + run) and the best of ``--repeats`` further calls. The last line is a JSON object
of all figures.
"""

import argparse
import json
import os
import platform
import time

import jax

from iba_jax.attribute import iba, inverse_iba, multilayer_iba
from iba_jax.coiba import coiba
from iba_jax.models import DenseNet, densenet121
from iba_jax.stats import estimate_feature_stats

LAYERS = ("denseblock1", "denseblock2", "denseblock3")


def timed(run, repeats):
    start = time.perf_counter()
    jax.block_until_ready(run(0))
    first = time.perf_counter() - start
    best = float("inf")
    for i in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run(i + 1))
        best = min(best, time.perf_counter() - start)
    return first, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rolled", action="store_true", help="also time unroll=False")
    parser.add_argument(
        "--images-per-call",
        type=int,
        default=4,
        help="also time batches larger than this "
        "in chunks of this many images (iba's images_per_call)",
    )
    args = parser.parse_args()

    net = DenseNet(densenet121(num_classes=14))
    variables = net.init(jax.random.key(0))
    data = jax.random.normal(jax.random.key(1), (16, 224, 224, 3))
    stats = estimate_feature_stats(net, variables, [data[:8], data[8:]], LAYERS)
    figures = {
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "jax": jax.__version__,
    }

    def report(name, batch, first, best):
        figures[f"{name}_s_per_image_batch{batch}"] = round(best / batch, 3)
        figures[f"{name}_first_call_s_batch{batch}"] = round(first, 1)
        print(
            f"{name:14s} batch {batch:2d}: {best / batch:6.3f} s/image (first call {first:5.1f} s)"
        )

    def images(batch, seed):
        return jax.random.normal(jax.random.key(100 + seed), (batch, 224, 224, 3))

    for batch in args.batches:
        run = lambda i, b=batch: iba(
            net, variables, stats["denseblock3"], images(b, i), 0, key=jax.random.key(i)
        )[0]
        report("iba", batch, *timed(run, args.repeats))
        if batch > args.images_per_call:
            run = lambda i, b=batch: iba(
                net,
                variables,
                stats["denseblock3"],
                images(b, i),
                0,
                images_per_call=args.images_per_call,
                key=jax.random.key(i),
            )[0]
            report(f"iba_per_call{args.images_per_call}", batch, *timed(run, args.repeats))
        if args.rolled:
            run = lambda i, b=batch: iba(
                net,
                variables,
                stats["denseblock3"],
                images(b, i),
                0,
                unroll=False,
                key=jax.random.key(i),
            )[0]
            report("iba_rolled", batch, *timed(run, args.repeats))
    batch = max(b for b in args.batches if b <= 4)
    run = lambda i: inverse_iba(
        net, variables, stats["denseblock3"], images(batch, i), 0, key=jax.random.key(i)
    )[0]
    report("inverse_iba", batch, *timed(run, args.repeats))
    run = lambda i: (
        multilayer_iba(net, variables, stats, images(batch, i), 0, key=jax.random.key(i)).map
    )
    report("multilayer_iba", batch, *timed(run, args.repeats))
    run = lambda i: coiba(net, variables, stats, images(batch, i), 0, key=jax.random.key(i))[0]
    report("coiba", batch, *timed(run, args.repeats))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
