"""Is the evidence of a repeated finding redundant (either instance suffices) or additive (each
carries part of it)? The condition on which the paper's claim (a) rests.

    .venv/bin/python benchmarks/instance_redundancy.py [--images 40]

IBA keeps the least information that preserves the prediction, Inverse IBA removes the least
that destroys it. If either of two instances suffices (redundant evidence), IBA can keep one and
Inverse IBA must remove both: Inverse IBA marks more instances, as the paper claims. If each
instance carries part of the evidence (additive), IBA must keep both and removing one may be
enough: the claim reverses. For validation phantoms with two or more instances of their first
finding (from index 8 on: those the β sweeps did not see), at each model's bottleneck layer, the
target's probability clean, with the features under one instance replaced by IBA's prior noise,
and with those under every instance replaced (16 draws each, averaged in logit space), and the
share of the logit's drop that one instance accounts for (1/2 for additive evidence of two
instances, near 0 for redundant, near 1 when one instance alone decides). Ends with one JSON
line.
"""

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

import iba_jax as ij
from iba_jax.data import phantoms
from iba_jax.data.preprocess import to_uint8, unit_range

SETTINGS = (  # model, layer: the bottleneck of benchmarks/phantom_evaluation.py
    ("phantoms_cls_noisy", "denseblock1"),
    ("phantoms_cls", "denseblock1"),
    ("phantoms_cls_noisy", "denseblock3"),
    ("phantoms_cls_noisy_224", "denseblock3"),
    ("phantoms_cls_noisy_224", "denseblock1"),
)
DRAWS = 16


def repeated_findings(size: int, count: int):
    """Images, targets and per-instance masks of validation phantoms from index 8 on whose
    first finding has two or more instances."""
    found = []
    index = 8
    while len(found) < count:
        phantom = phantoms.generate("classification", size, 0, "validation", index)
        index += 1
        if not phantom.instances:
            continue
        target = phantom.instances[0][0]
        masks = [m for finding, m in phantom.instances if finding == target]
        if len(masks) >= 2:
            found.append((to_uint8(phantom.image), target, np.stack(masks)))
    return found


def cells(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """The grid cells that hold any pixel of ``mask``."""
    return ij.locality.cells_under(mask[None], grid)[0]


def measure(model_name: str, layer: str, count: int, key: jax.Array) -> dict:
    bundle = ij.load_pretrained(model_name)
    stats = ij.load_feature_stats(ij.pretrained_dir(model_name), layer)
    net, variables = bundle.model, bundle.variables
    found = repeated_findings(bundle.input_spec.image_size, count)
    x = bundle.input_spec.normalize(unit_range(np.stack([f[0] for f in found])[..., None], 1))
    features = net.encode(variables, x, layer)
    decode = jax.jit(lambda h: net.decode(variables, h, layer))
    std = jnp.maximum(stats.std, 0.01)
    rows = []
    for k, (_, target, masks) in enumerate(found):
        h = features[k]
        grid = h.shape[:2]
        noise = stats.mean + std * jax.random.normal(jax.random.fold_in(key, k), (DRAWS, *h.shape))
        one = cells(masks[0], grid)[..., None]
        every = cells(masks.any(axis=0), grid)[..., None]
        logit = lambda z, target=target: decode(z)[:, target]
        clean = float(logit(h[None])[0])
        first = float(logit(jnp.where(one, noise, h)).mean())
        both = float(logit(jnp.where(every, noise, h)).mean())
        rows.append((clean, first, both))
    clean, first, both = np.array(rows).T
    sigmoid = lambda z: 1 / (1 + np.exp(-z))
    drop = clean - both
    kept = drop > 0.1 * np.abs(clean).mean()  # where blocking every instance matters
    return {
        "cases": len(rows),
        "p_clean": float(np.median(sigmoid(clean))),
        "p_one_blocked": float(np.median(sigmoid(first))),
        "p_all_blocked": float(np.median(sigmoid(both))),
        "share_of_one": float(np.median((clean - first)[kept] / drop[kept])),
        "cases_with_a_drop": int(kept.sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    args = parser.parse_args()
    print(
        "| model | layer | cases | p clean | p, one instance noised | p, all noised | "
        "share of the logit drop from one instance |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    figures = {}
    for model, layer in SETTINGS:
        f = measure(model, layer, args.images, jax.random.key(0))
        figures[f"{model}/{layer}"] = f
        print(
            f"| {model} | {layer} | {f['cases']} | {f['p_clean']:.3f} | "
            f"{f['p_one_blocked']:.3f} | {f['p_all_blocked']:.3f} | "
            f"{f['share_of_one']:.2f} (of {f['cases_with_a_drop']}) |",
            flush=True,
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
