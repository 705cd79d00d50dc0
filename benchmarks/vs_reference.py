"""Our IBA against the reference PyTorch IBA: the same weights, images and settings, one run.

Run: ``.venv/bin/python benchmarks/vs_reference.py [--images 4] [--estimation 32]``.

The reference side needs torch, torchvision and a checkout of BioroboticsLab/IBA, none of which
is a dependency of iba-jax. Point at them with two environment variables:

  IBA_REFERENCE_PATH    the checkout (the folder that holds the ``IBA`` package)
  IBA_REFERENCE_PYTHON  a Python with torch and torchvision (default: this one)

With both, ``reference_worker.py`` (in that Python) builds torchvision's DenseNet-121 (14
classes, seeded), has the reference estimate the feature statistics on the estimation images
and analyse every image, recording its noise draws; this script converts the weights with
``iba_jax.models.torch_import``, estimates its own statistics on the same images and runs our
IBA on all images in one call. Printed: seconds per image of both and their ratio, the
agreement of the statistics, and the Spearman rank correlation of the maps, per image, with
the reference's own noise injected into ours (``noise=``) and with independent noise (beside
our own two independent runs: the agreement that noise alone allows). Without the reference,
our figures only, and what was skipped and why.

Images: cxr_phantoms classification test phantoms with a finding (gray, repeated to RGB,
ImageNet normalisation), each explained for its first finding's index; estimation: training
phantoms. The paper's settings: bottleneck after denseblock3, β = 10, 10 Adam steps with
learning rate 1, 10 samples, α₀ = 5, σ = 1, min_std = 0.01. The last line is a JSON object.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import scipy.stats

from iba_jax.attribute import IBAConfig, iba
from iba_jax.bundle import InputSpec
from iba_jax.data import phantoms
from iba_jax.data.preprocess import to_uint8, unit_range
from iba_jax.models import DenseNet, densenet121
from iba_jax.models.torch_import import variables_from_state_dict
from iba_jax.stats import estimate_feature_stats

WORKER = Path(__file__).with_name("reference_worker.py")
PREFIX = "state_dict/"


def phantom_inputs(split: str, count: int, size: int, with_findings: bool):
    """``count`` phantoms as normalised RGB inputs (N, H, W, 3) and their first finding."""
    chosen, index = [], 0
    while len(chosen) < count:
        phantom = phantoms.generate("classification", size, 0, split, index)
        index += 1
        if phantom.labels.any() or not with_findings:
            chosen.append(phantom)
    pixels = np.stack([to_uint8(p.image)[..., None] for p in chosen])
    x = InputSpec.named("imagenet", size).normalize(unit_range(pixels, 3))
    targets = np.array([int(np.argmax(p.labels)) for p in chosen], np.int32)
    return np.asarray(x), targets


def spearman(a: np.ndarray, b: np.ndarray) -> list[float]:
    """Spearman's rank correlation of each pair of maps."""
    pairs = zip(np.asarray(a), np.asarray(b), strict=True)
    return [float(scipy.stats.spearmanr(x.ravel(), y.ravel()).statistic) for x, y in pairs]


def run_reference(python: str, x, targets, estimation, settings, workdir: Path):
    """The worker's outputs, or (None, the reason it was skipped)."""
    env = dict(os.environ)
    probe = subprocess.run(
        [python, str(WORKER), "--probe"], capture_output=True, text=True, env=env
    )
    if probe.returncode != 0:
        reason = (probe.stdout + probe.stderr).strip().splitlines()
        return None, reason[-1] if reason else f"{python} exited {probe.returncode}"
    inputs, outputs = workdir / "in.npz", workdir / "out.npz"
    np.savez(
        inputs,
        images=np.moveaxis(x, -1, 1),
        estimation=np.moveaxis(estimation, -1, 1),
        targets=targets,
        settings=json.dumps(settings),
    )
    done = subprocess.run([python, str(WORKER), str(inputs), str(outputs)], env=env)
    if done.returncode != 0:
        raise RuntimeError(f"the reference worker failed (exit {done.returncode}); see above")
    with np.load(outputs) as archive:
        return {k: archive[k] for k in archive.files}, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="images to explain")
    parser.add_argument("--estimation", type=int, default=32, help="images for the statistics")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=2, help="timed calls after the first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--beta",
        type=float,
        default=10.0,
        help="β (10, the paper's; a small β lets the model term, and so the noise, matter more)",
    )
    parser.add_argument(
        "--reference-python", default=os.environ.get("IBA_REFERENCE_PYTHON", sys.executable)
    )
    args = parser.parse_args()
    layer, config = "denseblock3", IBAConfig(beta=args.beta)
    settings = {
        "seed": args.seed,
        "layer": layer,
        "num_classes": 14,
        "beta": config.beta,
        "steps": config.steps,
        "samples": config.samples,
        "learning_rate": config.learning_rate,
        "initial_alpha": config.initial_alpha,
        "sigma": config.sigma,
        "min_std": config.min_std,
    }
    x, targets = phantom_inputs("test", args.images, args.size, with_findings=True)
    estimation, _ = phantom_inputs("train", args.estimation, args.size, with_findings=False)
    figures = {
        "images": args.images,
        "image_size": args.size,
        "estimation_images": args.estimation,
        "settings": settings,
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "jax": jax.__version__,
    }

    with tempfile.TemporaryDirectory() as workdir:
        reference, skipped = run_reference(
            args.reference_python, x, targets, estimation, settings, Path(workdir)
        )
    if reference is None:
        net = DenseNet(densenet121(num_classes=14))
        variables = net.init(jax.random.key(args.seed), args.size)
        print(f"reference: skipped ({skipped}); our IBA only, on randomly initialised weights")
        figures["reference"] = None
        figures["reference_skipped"] = skipped
    else:
        state_dict = {k[len(PREFIX) :]: v for k, v in reference.items() if k.startswith(PREFIX)}
        variables, net_config = variables_from_state_dict(state_dict)
        net = DenseNet(net_config)

    stats = estimate_feature_stats(net, variables, [estimation], layer)
    run = lambda key: iba(net, variables, stats, x, targets, config=config, key=key)[0]
    start = time.perf_counter()
    ours = jax.block_until_ready(run(jax.random.key(1)))
    first = time.perf_counter() - start
    best = float("inf")
    for i in range(args.repeats):
        start = time.perf_counter()
        again = jax.block_until_ready(run(jax.random.key(2 + i)))
        best = min(best, time.perf_counter() - start)
    figures["ours"] = {
        "seconds_per_image": round(best / args.images, 4),
        "first_call_seconds": round(first, 2),
        "images_per_call": args.images,
        "spearman_between_own_independent_runs": round(float(np.mean(spearman(ours, again))), 6),
    }
    print(
        f"ours: {best / args.images:.3f} s per image ({args.images} images per call, best of "
        f"{args.repeats}; first call {first:.1f} s with compilation)"
    )
    own = figures["ours"]["spearman_between_own_independent_runs"]
    print(f"ours, two independent noise draws: Spearman {own:.6f} (mean)")

    if reference is not None:
        versions = json.loads(str(reference["versions"]))
        seconds = reference["seconds"]
        ref_mean = np.moveaxis(reference["mean"], 0, -1)
        ref_std = np.moveaxis(reference["std"], 0, -1)
        ref_active = np.moveaxis(reference["active"], 0, -1)
        noise = np.moveaxis(reference["noise"], -3, -1)  # (N, steps, samples, h, w, c)
        same_noise = iba(net, variables, stats, x, targets, config=config, noise=noise)[0]
        same = spearman(np.asarray(same_noise), reference["maps"])
        independent = spearman(np.asarray(ours), reference["maps"])
        scale = float(np.abs(reference["maps"]).max())
        figures["reference"] = {
            **versions,
            "seconds_per_image": round(float(np.median(seconds)), 4),
            "seconds_per_image_each": [round(float(s), 3) for s in seconds],
            "speedup": round(float(np.median(seconds)) / (best / args.images), 2),
            "stats_max_abs_diff_mean": float(np.abs(ref_mean - stats.mean).max()),
            "stats_max_rel_diff_std": float(
                np.abs(ref_std - stats.std).max() / np.abs(ref_std).max()
            ),
            "active_equal": bool(np.array_equal(ref_active, stats.active)),
            "spearman_same_noise": [round(s, 6) for s in same],
            "spearman_independent_noise": [round(s, 6) for s in independent],
            "max_abs_diff_same_noise_relative": float(
                np.abs(np.asarray(same_noise) - reference["maps"]).max() / scale
            ),
        }
        r = figures["reference"]
        print(
            f"reference (torch {versions['torch']}, {versions['threads']} threads): "
            f"{r['seconds_per_image']:.3f} s per image (median of {len(seconds)}, one image "
            f"per call); ours is {r['speedup']:.1f}x faster"
        )
        print(
            f"statistics: mean max |diff| {r['stats_max_abs_diff_mean']:.2e}, std max rel diff "
            f"{r['stats_max_rel_diff_std']:.2e}, active masks equal: {r['active_equal']}"
        )
        print(
            f"maps, same noise: Spearman {min(same):.6f} (lowest of {len(same)}), max |diff| "
            f"{r['max_abs_diff_same_noise_relative']:.2e} of the largest value; independent "
            f"noise: Spearman {np.mean(independent):.6f} (mean)"
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
