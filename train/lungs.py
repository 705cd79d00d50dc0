"""Trains the lung segmenter on BrixIA's public images and their real lung masks.

    python -m train.lungs --data DIR --out iba_jax/pretrained/lung_segmenter [--size 128]
        [--epochs 40] [--folds 5]

DIR is the BrixIA public folder (``public-annotations.csv``, the images in
``public-cohen-subset/`` or ``images/``, the masks in ``lung_masks/``; see the README, "Using
the real data sets"). With ``--folds 5`` (the default) it first cross-validates by patient
(``brixia_public.assign_folds``): for each fold, a U-Net trained on the other four segments the
fold's images at their own size (``segmentation.segment_lungs``) and is scored by Dice against
their masks; then it trains on every image and writes the segmenter with those figures.
Whole images are resized to ``--size`` (not cropped: lungs may reach the border). Augmented per
step: rotation ±10°, scale 0.9-1.1, shift ±8 %, contrast, brightness and gamma, a mirror image
half of the time (AP and PA views, either side up to the scanner). Deterministic given
``--seed``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from iba_jax.data import brixia_public, preprocess
from iba_jax.models.unet import UNet, UNetConfig
from iba_jax.segmentation import Segmenter, dice, save_segmenter, segment_lungs, segmentation_loss


def read_pairs(root: Path) -> list[tuple[str, Path, Path]]:
    """(file name, image, mask) of every annotated image that has a mask."""
    records = brixia_public.read_annotations(root / brixia_public.ANNOTATIONS_FILE)
    folder = brixia_public.image_folder(root)
    masks = root / brixia_public.MASK_FOLDER
    return [
        (r.filename, folder / r.filename, masks / r.filename)
        for r in records
        if (folder / r.filename).is_file() and (masks / r.filename).is_file()
    ]


def read_pair(image: Path, mask: Path) -> tuple[np.ndarray, np.ndarray]:
    """The image (grayscale, [0, 1]) and its mask (bool), both at the image's own size."""
    gray = preprocess.grayscale(preprocess.read_image(image))
    return gray, brixia_public.read_lung_mask(mask, gray.shape)


def training_arrays(pairs, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, S, S)`` and masks ``(N, S, S)`` resized whole to ``size``."""
    images, masks = [], []
    for _, image, mask in pairs:
        gray, lungs = read_pair(image, mask)
        images.append(preprocess.resize(gray, size))
        masks.append(preprocess.resize(lungs.astype(np.float32), size) > 0.5)
    return np.stack(images).astype(np.float32), np.stack(masks)


def augment(key: jax.Array, image: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One random affine warp (the same for the image and its mask) and intensity change."""
    keys = jax.random.split(key, 7)
    size = image.shape[0]
    angle = jax.random.uniform(keys[0], minval=-10, maxval=10) * jnp.pi / 180
    scale = jax.random.uniform(keys[1], minval=0.9, maxval=1.1)
    shift = jax.random.uniform(keys[2], (2,), minval=-0.08, maxval=0.08) * size
    mirror = jnp.where(jax.random.bernoulli(keys[3]), -1.0, 1.0)
    centre = (size - 1) / 2
    rows, cols = jnp.meshgrid(jnp.arange(size), jnp.arange(size), indexing="ij")
    y, x = rows - centre - shift[0], (cols - centre - shift[1]) * mirror
    cos, sin = jnp.cos(angle) / scale, jnp.sin(angle) / scale
    source = jnp.stack([cos * y - sin * x + centre, sin * y + cos * x + centre])
    warp = lambda a: jax.scipy.ndimage.map_coordinates(a, list(source), order=1, mode="nearest")
    contrast = jax.random.uniform(keys[4], minval=0.8, maxval=1.2)
    brightness = jax.random.uniform(keys[5], minval=-0.1, maxval=0.1)
    gamma = jnp.exp(jax.random.uniform(keys[6], minval=-0.3, maxval=0.3))
    warped = jnp.clip(warp(image), 0, 1) ** gamma
    image = jnp.clip((warped - 0.5) * contrast + 0.5 + brightness, 0, 1)
    return image, warp(mask.astype(jnp.float32)) > 0.5


def train(
    images: np.ndarray,
    masks: np.ndarray,
    model: UNet,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
) -> dict:
    """Adam with a cosine schedule on the augmented pairs; returns the variables."""
    steps_per_epoch = math.ceil(len(images) / batch_size)
    schedule = optax.cosine_decay_schedule(learning_rate, epochs * steps_per_epoch)
    optimizer = optax.adam(schedule)
    key = jax.random.key(seed)
    variables = model.init(jax.random.fold_in(key, 0), images.shape[1])
    state = optimizer.init(variables)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(variables, state, x, y, key):
        x, y = jax.vmap(augment)(jax.random.split(key, len(x)), x, y)
        loss_of = lambda v: jnp.mean(segmentation_loss(model.apply(v, x[..., None]), y))
        loss, grads = jax.value_and_grad(loss_of)(variables)
        updates, state = optimizer.update(grads, state, variables)
        return optax.apply_updates(variables, updates), state, loss

    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        order = rng.permutation(len(images))
        losses = []
        for k in range(steps_per_epoch):
            chosen = np.resize(order[k * batch_size : (k + 1) * batch_size], batch_size)
            step_key = jax.random.fold_in(key, 1 + epoch * steps_per_epoch + k)
            variables, state, loss = step(variables, state, images[chosen], masks[chosen], step_key)
            losses.append(float(loss))
        print(f"  epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.4f}", flush=True)
    return variables


def held_out_dice(segmenter: Segmenter, pairs) -> list[float]:
    """Dice of each held-out image's predicted mask at its own size."""
    found = []
    for _, image, mask in pairs:
        gray, lungs = read_pair(image, mask)
        (predicted,) = segment_lungs([gray], segmenter)
        found.append(dice(predicted, lungs))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--features", default="16,32,64,128")
    parser.add_argument("--folds", type=int, default=5, choices=(0, 5), help="0: no CV")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = UNet(UNetConfig(features=tuple(int(f) for f in args.features.split(","))))
    settings = dict(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
    )
    pairs = read_pairs(args.data)
    print(f"{len(pairs)} images with masks in {args.data}", flush=True)
    images, masks = training_arrays(pairs, args.size)
    fold_of = brixia_public.assign_folds([name for name, _, _ in pairs], seed=0)
    folds = {}
    start = time.perf_counter()
    for fold in brixia_public.FOLDS[: args.folds]:
        held = np.array([fold_of[name] == fold for name, _, _ in pairs])
        print(f"{fold}: training on {(~held).sum()} images, scoring {held.sum()}", flush=True)
        variables = train(images[~held], masks[~held], model, **settings)
        segmenter = Segmenter(model, variables, args.size)
        scores = held_out_dice(segmenter, [p for p, h in zip(pairs, held, strict=True) if h])
        folds[fold] = {
            "images": len(scores),
            "dice_mean": float(np.mean(scores)),
            "dice_min": float(np.min(scores)),
        }
        print(f"{fold}: Dice {np.mean(scores):.4f} (min {np.min(scores):.4f})", flush=True)
    print("training on every image", flush=True)
    variables = train(images, masks, model, **settings)
    every = [s for f in folds.values() for s in [f["dice_mean"]] * f["images"]]
    notes = {
        "trained_on": f"{len(pairs)} images of BrixIA's public annotations with V7 Labs masks",
        "settings": {**settings, "size": args.size, "features": list(model.config.features)},
        "cross_validation": folds,
        "cv_dice_mean": float(np.mean(every)) if every else None,
        "seconds": round(time.perf_counter() - start, 1),
    }
    checksum = save_segmenter(args.out, Segmenter(model, variables, args.size, notes))
    print(json.dumps(notes, indent=2))
    print(f"segmenter written to {args.out} (sha256 {checksum[:16]}...)")


if __name__ == "__main__":
    main()
