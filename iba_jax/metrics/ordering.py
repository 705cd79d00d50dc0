"""Ranking the pixels of a map, with a stable order on ties."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def pixel_ranks(maps: jax.Array) -> jax.Array:
    """Rank of every pixel of each map ``(N, H, W)``: 0 for the most important.

    Ties keep raster order (row by row): of two equal values, the one read first ranks first,
    so results never depend on the sort implementation. (The paper's code ranked maps stored as
    uint8 PNGs, where ties are everywhere; ranking the float maps stably avoids that.)
    """
    n, h, w = maps.shape
    flat = maps.reshape(n, h * w)
    order = jnp.argsort(-flat, axis=1, stable=True)
    ranks = jnp.zeros_like(order).at[jnp.arange(n)[:, None], order].set(jnp.arange(h * w))
    return ranks.reshape(n, h, w)


def top_pixels(maps: jax.Array, counts: jax.Array) -> jax.Array:
    """Boolean masks of the ``counts[i]`` highest-ranked pixels of each map (stable ties)."""
    counts = jnp.asarray(counts).reshape(-1, 1, 1)
    return pixel_ranks(maps) < counts
