"""Faithfulness: insertion/deletion (Petsiuk et al., 2018) and Sensitivity-N (Ancona et al.,
2018), with every perturbed image batched through the model.

Both take a ``score_fn(batch, i)``: any function from a batch ``(B, H, W, C)`` of perturbed
copies of image ``i`` to one score per copy ``(B,)`` (``target_score`` builds the usual one: the
probability of image i's target class, or the regression output), so they work for any model,
objective or output.

References:
  Petsiuk, Das, Saenko. RISE: Randomized Input Sampling for Explanation of Black-box Models.
  BMVC 2018.
  Ancona, Ceolini, Öztireli, Gross. Towards better understanding of gradient-based attribution
  methods for deep neural networks. ICLR 2018.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from iba_jax import checks
from iba_jax.baselines import blurred
from iba_jax.metrics.ordering import pixel_ranks
from iba_jax.models.protocol import Model, Variables, predict

ScoreFn = Callable[[jax.Array, int], jax.Array]  # (copies of image i, i) -> scores


@functools.partial(jax.jit, static_argnames="model")
def _head_output_at(
    model: Model, variables: Variables, images: jax.Array, target: jax.Array
) -> jax.Array:
    outputs = predict(model, variables, images)
    return jnp.take_along_axis(outputs, target[:, None], axis=1)[:, 0]


def target_score(
    model: Model, variables: Variables, targets: jax.Array | int | None = None
) -> ScoreFn:
    """The model's score of each image: its head output (a probability for sigmoid heads) at
    the image's target class, or output 0 when ``targets`` is None (regression).

    ``targets`` holds one class per image; ``fn(batch, i)`` scores copies of image ``i`` for
    image i's target. One compiled function serves every call with the same shapes.
    """
    chosen = np.zeros(1, np.int32) if targets is None else np.ravel(np.asarray(targets))

    def fn(images: jax.Array, image_index: int = 0) -> jax.Array:
        target = jnp.full((images.shape[0],), int(chosen[image_index]), jnp.int32)
        return _head_output_at(model, variables, images, target)

    return fn


class Curves(NamedTuple):
    """Per-image insertion and deletion curves and their areas.

    Attributes:
      fraction: ``(S + 1,)`` share of the pixels inserted/deleted at each point, 0 to 1.
      insertion, deletion: ``(N, S + 1)`` scores along the way.
      insertion_auc, deletion_auc: ``(N,)`` trapezoidal areas over ``fraction`` in [0, 1]:
        in [0, 1] for scores in [0, 1] (probabilities). Higher insertion and lower deletion
        areas mean a more faithful map.
    """

    fraction: np.ndarray
    insertion: np.ndarray
    deletion: np.ndarray
    insertion_auc: np.ndarray
    deletion_auc: np.ndarray


def _baseline(images: jax.Array, baseline: str | jax.Array, blur_sigma: float) -> jax.Array:
    if isinstance(baseline, str):
        checks.check_choice("baseline", baseline, ("blur", "zero"))
        return blurred(images, blur_sigma) if baseline == "blur" else jnp.zeros_like(images)
    baseline = jnp.asarray(baseline, jnp.float32)
    if baseline.shape != images.shape:
        raise ValueError(
            f"baseline: expected the images' shape {tuple(images.shape)}; got {baseline.shape}."
        )
    return baseline


def _check_maps(images: jax.Array, maps: jax.Array) -> None:
    if maps.shape != images.shape[:3]:
        raise ValueError(
            f"maps: expected one map per image of shape {tuple(images.shape[:3])}; got "
            f"{tuple(maps.shape)}."
        )
    if not np.all(np.isfinite(np.asarray(maps))):
        raise ValueError("maps: expected finite values; got NaN or infinity.")


def _scores_in_chunks(score_fn: ScoreFn, batch: jax.Array, index: int, chunk: int) -> np.ndarray:
    return np.concatenate(
        [np.asarray(score_fn(batch[s : s + chunk], index)) for s in range(0, len(batch), chunk)]
    )


def insertion_deletion(
    score_fn: ScoreFn,
    images: jax.Array,
    maps: jax.Array,
    *,
    pixels_per_step: int | None = None,
    baseline: Literal["blur", "zero"] | jax.Array = "blur",
    blur_sigma: float = 10.0,
    batch_size: int = 64,
) -> Curves:
    """Insertion and deletion curves of each map.

    Deletion starts from the image and replaces its pixels, most important first, by the
    baseline's; insertion starts from the baseline and puts the image's pixels back in the same
    order. ``pixels_per_step`` pixels move per step (default: 1/50 of the image, the last step
    may move fewer); every step's image of one image goes through ``score_fn`` in batches of
    ``batch_size``.

    Args:
      score_fn: ``(copies of image i (B, H, W, C), i)`` -> scores ``(B,)``.
      images: ``(N, H, W, C)``; maps: ``(N, H, W)``.
      baseline: ``"blur"`` (Gaussian, ``blur_sigma`` pixels; the paper: 10), ``"zero"`` or an
        array like ``images``.
    """
    images = jnp.asarray(images, jnp.float32)
    maps = jnp.asarray(maps, jnp.float32)
    _check_maps(images, maps)
    n, h, w, _ = images.shape
    step = pixels_per_step or max(1, math.ceil(h * w / 50))
    checks.check_positive_int("pixels_per_step", step)
    counts = np.minimum(np.arange(0, h * w + step, step), h * w)
    counts = np.unique(np.append(counts, h * w))
    fraction = counts / (h * w)
    reference = _baseline(images, baseline, blur_sigma)
    ranks = pixel_ranks(maps)
    inserted_scores, deleted_scores = [], []
    for i in range(n):
        moved = ranks[i][None, :, :, None] < jnp.asarray(counts)[:, None, None, None]
        inserted = jnp.where(moved, images[i][None], reference[i][None])
        deleted = jnp.where(moved, reference[i][None], images[i][None])
        inserted_scores.append(_scores_in_chunks(score_fn, inserted, i, batch_size))
        deleted_scores.append(_scores_in_chunks(score_fn, deleted, i, batch_size))
    insertion, deletion = np.stack(inserted_scores), np.stack(deleted_scores)
    return Curves(
        fraction=fraction,
        insertion=insertion,
        deletion=deletion,
        insertion_auc=np.trapezoid(insertion, fraction, axis=1),
        deletion_auc=np.trapezoid(deletion, fraction, axis=1),
    )


def sensitivity_n(
    score_fn: ScoreFn,
    images: jax.Array,
    maps: jax.Array,
    key: jax.Array,
    *,
    ns: tuple[int, ...] | None = None,
    samples: int = 100,
    baseline: Literal["blur", "zero"] | jax.Array = "zero",
    blur_sigma: float = 10.0,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivity-N: for each n, the Pearson correlation over ``samples`` random subsets of n
    pixels between the map's sum over the subset and the score's drop when the subset is
    replaced by the baseline.

    Args:
      ns: subset sizes (default: 10 log-spaced sizes from 1 % to 80 % of the pixels).
      key: PRNG key of the subsets.

    Returns:
      ``(ns, correlations)``: the sizes ``(K,)`` and the correlations ``(N, K)``.
    """
    images = jnp.asarray(images, jnp.float32)
    maps = jnp.asarray(maps, jnp.float32)
    _check_maps(images, maps)
    checks.check_positive_int("samples", samples)
    n_images, h, w, _ = images.shape
    pixels = h * w
    if ns is None:
        ns = tuple(np.unique(np.geomspace(0.01 * pixels, 0.8 * pixels, 10).astype(int)))
    reference = _baseline(images, baseline, blur_sigma)
    result = np.zeros((n_images, len(ns)))
    sizes = jnp.asarray(ns, jnp.int32)
    for i in range(n_images):
        full = float(score_fn(images[i][None], i)[0])
        masks = _random_subsets(jax.random.fold_in(key, i), sizes, samples, h, w)
        masses = np.asarray((maps[i][None, None] * masks).sum(axis=(2, 3)))  # (K, samples)
        for j in range(len(ns)):
            perturbed = jnp.where(masks[j][..., None], reference[i][None], images[i][None])
            drops = full - _scores_in_chunks(score_fn, perturbed, i, batch_size)
            result[i, j] = _pearson(masses[j], drops)
    return np.asarray(ns), result


@functools.partial(jax.jit, static_argnames=("samples", "height", "width"))
def _random_subsets(
    key: jax.Array, sizes: jax.Array, samples: int, height: int, width: int
) -> jax.Array:
    """Masks ``(K, samples, H, W)``: for each ``sizes[j]``, ``samples`` subsets of exactly that
    many pixels, drawn under ``fold_in(key, j)``.

    A subset is the pixels with the largest sort keys, a key being random bits above the
    pixel's index (so that keys are unique and a threshold picks exactly n pixels): one sort of
    values per subset, four times cheaper than ranking the pixels. The random part has
    32 − ⌈log2(H·W)⌉ bits (18 at 128 px, 16 at 224 px); only pixels whose random parts tie at
    the threshold are chosen by index.
    """
    pixels = height * width
    index_bits = max(1, (pixels - 1).bit_length())
    if index_bits > 24:
        raise ValueError(f"maps: expected at most 2**24 pixels; got {height}x{width}.")
    index = jnp.arange(pixels, dtype=jnp.uint32)

    def subsets(j: jax.Array, size: jax.Array) -> jax.Array:
        bits = jax.random.bits(jax.random.fold_in(key, j), (samples, pixels), jnp.uint32)
        keys = ((bits >> index_bits) << index_bits) | index[None]
        threshold = jnp.sort(keys, axis=1)[:, pixels - size]
        return (keys >= threshold[:, None]).reshape(samples, height, width)

    return jax.vmap(subsets)(jnp.arange(len(sizes)), sizes)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
