"""Device memory of IBA on DenseNet-121 at 224 px: per bottleneck layer, per image, batch 32.

Run: ``.venv/bin/python benchmarks/memory.py [--batch 32] [--check 4]``.

For each layer (denseblock1, 2, 3) and loop setting (rolled, unrolled): XLA's memory analysis
of the compiled IBA program (the paper's defaults: 10 steps, 10 samples), as fixed bytes plus
bytes per image (``iba_jax.memory.iba_memory``), the total for ``--batch`` images, and the
images per call that ``iba(..., images_per_call="auto")`` picks on this device. Then a check:
IBA runs on ``--check`` images at denseblock3 and the peak the device reports (accelerators:
``peak_bytes_in_use``; CPU: the growth of the process's peak resident memory, which also holds
the compiler's own memory) is printed beside the prediction. The last line is a JSON object.
"""

import argparse
import json
import platform
import resource
import time

import jax

from iba_jax import memory
from iba_jax.attribute import iba
from iba_jax.models import DenseNet, densenet121
from iba_jax.stats import estimate_feature_stats

LAYERS = ("denseblock1", "denseblock2", "denseblock3")
GB = 1e9


def peak_bytes(device) -> int:
    stats = device.memory_stats()
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--check", type=int, default=4, help="images of the check run (0: none)")
    args = parser.parse_args()
    device = jax.local_devices()[0]
    net = DenseNet(densenet121(num_classes=14))
    figures = {
        "device": device.device_kind,
        "platform": device.platform,
        "machine": platform.machine(),
        "jax": jax.__version__,
        "batch": args.batch,
        "device_memory_gb": round(memory.device_memory_bytes(device) / GB, 2),
        "layers": {},
    }
    print(f"{figures['device']} ({figures['platform']}), {figures['device_memory_gb']} GB free")
    for layer in LAYERS:
        for unroll in (False, True):
            start = time.perf_counter()
            estimate = memory.iba_memory(net, layer, 224, unroll=unroll)
            seconds = time.perf_counter() - start
            fits = memory.images_per_call(net, layer, 224, unroll=unroll)
            row = {
                "fixed_gb": round(estimate.fixed_bytes / GB, 3),
                "per_image_gb": round(estimate.bytes_per_image / GB, 3),
                f"batch_{args.batch}_gb": round(estimate.bytes_for(args.batch) / GB, 2),
                "auto_images_per_call": fits,
                "analysis_seconds": round(seconds, 1),
            }
            loop = "unrolled" if unroll else "rolled"
            figures["layers"][f"{layer}/{loop}"] = row
            print(
                f"{layer:12s} {loop:9s} fixed {row['fixed_gb']:6.3f} GB + "
                f"{row['per_image_gb']:6.3f} GB/image -> batch {args.batch}: "
                f"{row[f'batch_{args.batch}_gb']:7.2f} GB; auto images per call {fits} "
                f"(analysis {seconds:.0f} s)"
            )
    if args.check:
        layer, unroll = "denseblock3", device.platform != "cpu"
        variables = net.init(jax.random.key(0))
        data = jax.random.normal(jax.random.key(1), (args.check, 224, 224, 3))
        stats = estimate_feature_stats(net, variables, [data], layer)
        before = peak_bytes(device)
        maps, _ = iba(net, variables, stats, data, 0, unroll=unroll, key=jax.random.key(2))
        jax.block_until_ready(maps)
        measured = peak_bytes(device) - (0 if device.platform != "cpu" else before)
        predicted = memory.iba_memory(net, layer, 224, unroll=unroll).bytes_for(args.check)
        figures["check"] = {
            "layer": layer,
            "images": args.check,
            "unroll": unroll,
            "predicted_gb": round(predicted / GB, 3),
            "measured_peak_gb": round(measured / GB, 3),
        }
        print(
            f"check: IBA at {layer}, {args.check} images: predicted {predicted / GB:.3f} GB, "
            f"measured peak {measured / GB:.3f} GB"
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
