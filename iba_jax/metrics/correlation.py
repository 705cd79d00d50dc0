"""Correlation of a map with a per-pixel severity map (BrixIA-like data), with a control."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def pearson(maps: jax.Array, targets: jax.Array) -> jax.Array:
    """Pearson correlation per image between two stacks of maps ``(N, H, W)`` (NaN where
    either is constant)."""
    a = maps.reshape(maps.shape[0], -1).astype(jnp.float32)
    b = targets.reshape(targets.shape[0], -1).astype(jnp.float32)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denominator = jnp.sqrt((a**2).sum(axis=1) * (b**2).sum(axis=1))
    return jnp.where(
        denominator > 0, (a * b).sum(axis=1) / jnp.where(denominator > 0, denominator, 1.0), jnp.nan
    )


def random_map_pearson(key: jax.Array, targets: jax.Array) -> jax.Array:
    """The control: Pearson correlation of uniform random maps with the targets (near 0)."""
    return pearson(jax.random.uniform(key, targets.shape), targets)
