"""Correlation of a map with a per-pixel severity map (BrixIA-like data), with a control."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def pearson(maps: jax.Array, targets: jax.Array, within: jax.Array | None = None) -> jax.Array:
    """Pearson correlation per image between two stacks of maps ``(N, H, W)`` (NaN where
    either is constant), over every pixel or, with ``within`` (booleans ``(N, H, W)``, e.g. the
    lungs), over the pixels inside only: whole-image correlation with a severity map that is 0
    outside the lungs mostly rewards a map for lying on the lungs (a plain lung mask scores
    0.84 on the phantoms), within the lungs only its grading counts.

    Example:
      >>> import jax.numpy as jnp
      >>> severity = jnp.array([[[0.0, 0.0, 1.0, 3.0]]])  # outside, outside, two zones
      >>> on_the_lungs = jnp.array([[[0.0, 0.0, 1.0, 1.0]]])
      >>> lungs = severity > 0
      >>> round(float(pearson(on_the_lungs, severity)[0]), 3)  # right place, no grading
      0.816
      >>> bool(jnp.isnan(pearson(on_the_lungs, severity, lungs)[0]))  # constant on the lungs
      True
    """
    a = maps.reshape(maps.shape[0], -1).astype(jnp.float32)
    b = targets.reshape(targets.shape[0], -1).astype(jnp.float32)
    w = jnp.ones_like(a) if within is None else within.reshape(a.shape).astype(jnp.float32)
    count = jnp.maximum(w.sum(axis=1, keepdims=True), 1.0)
    a = (a - (w * a).sum(axis=1, keepdims=True) / count) * w
    b = (b - (w * b).sum(axis=1, keepdims=True) / count) * w
    denominator = jnp.sqrt((a**2).sum(axis=1) * (b**2).sum(axis=1))
    return jnp.where(
        denominator > 0, (a * b).sum(axis=1) / jnp.where(denominator > 0, denominator, 1.0), jnp.nan
    )


def random_map_pearson(key: jax.Array, targets: jax.Array) -> jax.Array:
    """The control: Pearson correlation of uniform random maps with the targets (near 0)."""
    return pearson(jax.random.uniform(key, targets.shape), targets)
