"""Maps for many (image, target) pairs in calls of one shape: what ``evaluate`` and ``explain``
share.

Each call takes ``per_call`` pairs; the last is padded with copies of its last pair, so that
every call has the same shapes and the method compiles once. A pair's map depends only on its
image, its target and its key (``methods.target_key``), never on the pairs around it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from numpy.typing import ArrayLike

from iba_jax import checks
from iba_jax.methods import MethodSettings, attribution_maps
from iba_jax.models.protocol import Model, Variables
from iba_jax.sharding import pad_images
from iba_jax.stats import FeatureStats


class Call(NamedTuple):
    """One call's pairs (their positions in the given order), their maps ``(n, H, W)`` and
    the call's seconds (compilation included on the first)."""

    positions: range
    maps: np.ndarray
    seconds: float


def maps_per_call(
    method: str,
    model: Model,
    variables: Variables,
    stats: Mapping[str, FeatureStats],
    images: jax.Array,
    targets: ArrayLike,
    keys: jax.Array,
    *,
    per_call: int,
    settings: MethodSettings = MethodSettings(),
    labels: ArrayLike | None = None,
    mesh: Mesh | None = None,
) -> Iterator[Call]:
    """Method ``method``'s maps of the pairs ``(images[i], targets[i], keys[i])``, ``per_call``
    pairs per call (padded), call by call.

    Args:
      images: the pairs' model inputs ``(N, H, W, C)`` (an image explained for two targets
        appears twice).
      targets, keys: one output index and one PRNG key per pair.
      labels: one regression label per pair, for the methods that need them.
      See ``methods.attribution_maps`` for the others.
    """
    checks.check_positive_int("per_call", per_call)
    count = len(images)
    targets = jnp.asarray(targets)
    for start in range(0, count, per_call):
        positions = range(start, min(start + per_call, count))
        chunk = slice(positions.start, positions.stop)
        per_pair = [images[chunk], targets[chunk], keys[chunk]]
        if labels is not None:
            per_pair.append(jnp.asarray(labels, jnp.float32)[chunk])
        began = time.perf_counter()
        padded = pad_images(tuple(per_pair), per_call)
        padded_maps = attribution_maps(
            method,
            model,
            variables,
            stats,
            padded[0],
            padded[1],
            key=padded[2],
            settings=settings,
            labels=padded[3] if labels is not None else None,
            mesh=mesh,
        )
        maps = np.asarray(padded_maps)[: len(positions)]  # waits for the device
        yield Call(positions, maps, time.perf_counter() - began)
