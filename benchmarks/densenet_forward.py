"""DenseNet-121 forward throughput and compile time on the default JAX device.

Run: ``make bench`` or ``.venv/bin/python benchmarks/densenet_forward.py [--repeats N]``.
Prints one line per figure, then a JSON object of all figures as the last line.
"""

import argparse
import json
import os
import platform
import time

import jax

from iba_jax.models import DenseNet, densenet121


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    net = DenseNet(densenet121(num_classes=14))
    variables = net.init(jax.random.key(0), args.image_size)
    forward = jax.jit(net.apply)
    figures = {
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "jax": jax.__version__,
        "image_size": args.image_size,
    }
    for batch in args.batch_sizes:
        x = jax.random.normal(jax.random.key(1), (batch, args.image_size, args.image_size, 3))
        start = time.perf_counter()
        compiled = forward.lower(variables, x).compile()
        figures[f"compile_s_batch{batch}"] = round(time.perf_counter() - start, 3)
        jax.block_until_ready(compiled(variables, x))  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            jax.block_until_ready(compiled(variables, x))
            times.append(time.perf_counter() - start)
        best = min(times)
        figures[f"images_per_s_batch{batch}"] = round(batch / best, 2)
        figures[f"ms_per_call_batch{batch}"] = round(best * 1e3, 1)
        print(
            f"batch {batch:3d}: compile {figures[f'compile_s_batch{batch}']:.2f} s, "
            f"best of {args.repeats}: {best * 1e3:.1f} ms/call = {batch / best:.1f} images/s"
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
