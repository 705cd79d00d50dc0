"""Feature statistics of a layer over a data set: the prior N(μ_R, σ_R) of the bottleneck.

Per element (location AND channel) of a layer's output: mean, unbiased standard deviation, the
``active`` mask (the fraction of samples where the feature is non-zero exceeds a threshold) and
the sample count. Batches are reduced on the device by one compiled function (for several layers
from a single forward pass) and merged on the host in float64 with the exact parallel formula of
Chan, Golub and LeVeque (1979), so the result does not depend on how the data set is batched.

``min_std`` is not applied here: the bottleneck clamps σ at use time (see ``attribute``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from iba_jax import checks
from iba_jax.models.protocol import Model, Variables


class FeatureStats(NamedTuple):
    """Statistics of one layer's output, each of the feature shape ``(h, w, c)``.

    Attributes:
      mean: per-element mean.
      std: per-element unbiased standard deviation (not clamped).
      active: boolean mask: fraction of non-zero samples > the estimation threshold.
      count: number of samples (a scalar).
    """

    mean: jax.Array
    std: jax.Array
    active: jax.Array
    count: jax.Array  # type: ignore[assignment]  # a field named as tuple.count, by design


class Moments(NamedTuple):
    """Running sums of a stream of feature maps (float64, on the host)."""

    count: int  # type: ignore[assignment]  # a field named as tuple.count, by design
    mean: np.ndarray
    m2: np.ndarray
    nonzero: np.ndarray


def batch_moments(features: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Mean, sum of squared deviations and non-zero count over the batch axis (axis 0)."""
    mean = jnp.mean(features, axis=0, keepdims=True)
    m2 = jnp.sum((features - mean) ** 2, axis=0)
    mean = mean[0]
    nonzero = jnp.sum(features != 0, axis=0)
    return mean, m2, nonzero


@functools.partial(jax.jit, static_argnums=(0, 1))
def _reduce_batch(
    model: Model, names: tuple[str, ...], variables: Variables, images: jax.Array
) -> dict[str, tuple]:
    """One batch's moments for each layer in ``names``, from one forward pass (compiled once per
    model, layers and batch shape, across calls)."""
    features = model.encode(variables, images, names)
    return {name: batch_moments(features[name]) for name in names}


def merge_moments(a: Moments | None, b: Moments) -> Moments:
    """Exact merge of the moments of two disjoint sets of samples (Chan et al., 1979)."""
    if a is None or a.count == 0:
        return b
    count = a.count + b.count
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.count / count)
    m2 = a.m2 + b.m2 + delta**2 * (a.count * b.count / count)
    return Moments(count, mean, m2, a.nonzero + b.nonzero)


def finalize(moments: Moments, *, active_threshold: float = 0.01) -> FeatureStats:
    """The statistics of the merged moments; needs at least two samples."""
    if moments.count < 2:
        raise ValueError(
            f"batches: expected at least 2 samples to estimate a standard deviation; "
            f"got {moments.count}."
        )
    std = np.sqrt(moments.m2 / (moments.count - 1))
    active = moments.nonzero / moments.count > active_threshold
    return FeatureStats(
        mean=jnp.asarray(moments.mean, jnp.float32),
        std=jnp.asarray(std, jnp.float32),
        active=jnp.asarray(active),
        count=jnp.asarray(moments.count, jnp.int32),
    )


def _images_of(batch: Any) -> Any:
    """The images of a batch given as an array, a (images, ...) tuple or a dict with "image"."""
    if isinstance(batch, Mapping):
        if "image" not in batch:
            raise ValueError(
                f"batches: a dict batch needs an 'image' entry; got keys {sorted(batch)}."
            )
        return batch["image"]
    if isinstance(batch, tuple | list):
        return batch[0]
    return batch


def estimate_feature_stats(
    model: Model,
    variables: Variables,
    batches: Iterable[Any],
    layers: str | Sequence[str],
    *,
    max_samples: int | None = None,
    active_threshold: float = 0.01,
) -> FeatureStats | dict[str, FeatureStats]:
    """Streams ``batches`` through the model and estimates the statistics of ``layers``.

    Args:
      model: the network.
      variables: its variables.
      batches: an iterable of image batches ``(N, H, W, C)`` (model inputs, already normalised),
        given as arrays, tuples whose first entry is the images, or dicts with an ``"image"``.
      layers: one layer name, or several (estimated together from one forward pass per batch).
      max_samples: stop after this many images (the last batch is truncated); all when None.
      active_threshold: an element is active when its fraction of non-zero values exceeds it.

    Returns:
      ``FeatureStats`` for one layer name, a dict ``{layer: FeatureStats}`` for several.

    Example:
      >>> import jax
      >>> from iba_jax.models import DenseNet, densenet_tiny
      >>> net = DenseNet(densenet_tiny())
      >>> variables = net.init(jax.random.key(0), 64)
      >>> images = jax.random.normal(jax.random.key(1), (8, 64, 64, 3))
      >>> stats = estimate_feature_stats(net, variables, [images[:5], images[5:]], "denseblock3")
      >>> stats.mean.shape, int(stats.count)
      ((4, 4, 32), 8)
    """
    names = (layers,) if isinstance(layers, str) else tuple(layers)
    checks.check_names("layers", names, model.layer_names)
    if max_samples is not None:
        checks.check_positive_int("max_samples", max_samples)

    moments: dict[str, Moments | None] = dict.fromkeys(names)
    seen = 0
    for batch in batches:
        images = _images_of(batch)
        if max_samples is not None:
            images = images[: max_samples - seen]
        n = int(np.shape(images)[0])
        if n == 0:
            break
        reduced = jax.device_get(_reduce_batch(model, names, variables, images))
        for name, (mean, m2, nonzero) in reduced.items():
            batch_stats = Moments(n, mean.astype(np.float64), m2.astype(np.float64), nonzero)
            moments[name] = merge_moments(moments[name], batch_stats)
        seen += n
        if max_samples is not None and seen >= max_samples:
            break
    if seen == 0:
        raise ValueError("batches: expected at least one non-empty batch of images; got none.")
    stats = {
        name: finalize(m, active_threshold=active_threshold)
        for name, m in moments.items()
        if m is not None
    }
    return stats[names[0]] if isinstance(layers, str) else stats
