"""A batch of images split across the local devices along its image axis.

Every attribution method explains each image on its own: the model runs in inference mode (no
batch statistics), each image has its own α, its own noise and its own loss. So a batch splits
across devices with no communication at all: ``jax.shard_map`` runs the method on each device's
slice of the images while the model's variables and the feature statistics are replicated. A
batch that the devices do not divide is padded with copies of its last image, whose results
are dropped. ``methods.attribution_maps(..., mesh=local_mesh())`` is the way in.

With one key per image (``inputs.per_image_keys``), an image's map does not depend on the device it
lands on nor on the batch around it, so a sharded run gives the single-device maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

PerImage = TypeVar("PerImage")  # a pytree of arrays with the images on axis 0

IMAGE_AXIS = "images"


def local_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh (``IMAGE_AXIS``) over ``devices``, by default all of this process's."""
    devices = list(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices: expected at least one device; got none.")
    return Mesh(np.array(devices), (IMAGE_AXIS,))


def check_mesh(mesh: object) -> None:
    """``mesh`` must be a ``Mesh`` with the image axis (see ``local_mesh``)."""
    if not isinstance(mesh, Mesh) or IMAGE_AXIS not in mesh.axis_names:
        raise ValueError(
            f"mesh: expected a jax.sharding.Mesh with an {IMAGE_AXIS!r} axis (local_mesh()); "
            f"got {mesh!r}."
        )


def pad_images(per_image: PerImage, multiple: int) -> PerImage:
    """Every leaf of ``per_image`` (images on axis 0) padded to a multiple of ``multiple``
    images with copies of its last image."""
    count = jax.tree.leaves(per_image)[0].shape[0]
    extra = -count % multiple
    if not extra:
        return per_image
    return jax.tree.map(
        lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], extra, axis=0)]), per_image
    )
