"""Augmentation on the accelerator: random resized crop, rotation and translation in one map."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def random_affine(
    key: jax.Array,
    images: jax.Array,
    *,
    crop_scale: tuple[float, float],
    rotate_degrees: float,
    translate: float,
) -> jax.Array:
    """Resamples each image ``(B, H, W, C)`` through its own random affine map (bilinear).

    Per image: a square crop covering a share of the area drawn from ``crop_scale``, placed at a
    random position inside the image, rotated by up to ``rotate_degrees`` and shifted by up to
    ``translate`` of the side, then stretched back to the full size. Borders repeat the edge.
    """
    batch, height, width, _ = images.shape
    keys = jax.random.split(key, batch)
    return jax.vmap(
        lambda k, x: _affine_one(k, x, crop_scale, rotate_degrees, translate, height, width)
    )(keys, images)


def _affine_one(key, image, crop_scale, rotate_degrees, translate, height, width):
    k_scale, k_angle, k_place, k_shift = jax.random.split(key, 4)
    side = jnp.sqrt(jax.random.uniform(k_scale, (), minval=crop_scale[0], maxval=crop_scale[1]))
    angle = jnp.deg2rad(jax.random.uniform(k_angle, (), minval=-1, maxval=1) * rotate_degrees)
    place = jax.random.uniform(k_place, (2,), minval=-1, maxval=1) * (1 - side) / 2
    shift = jax.random.uniform(k_shift, (2,), minval=-1, maxval=1) * translate
    size = jnp.array([height, width], jnp.float32)
    centre = (size - 1) / 2
    rows, cols = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
    grid = jnp.stack([rows, cols]).reshape(2, -1).astype(jnp.float32) - centre[:, None]
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    rotation = jnp.array([[cos, -sin], [sin, cos]])
    source = side * rotation @ grid + ((place + shift) * size + centre)[:, None]

    def channel(c):
        return jax.scipy.ndimage.map_coordinates(c, list(source), order=1, mode="nearest")

    out = jax.vmap(channel, in_axes=-1, out_axes=-1)(image)
    return out.reshape(image.shape)
