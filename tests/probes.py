"""A model of known locality for the locality and β tools' tests (no weights, no training)."""

import dataclasses

import jax.numpy as jnp
import numpy as np

from iba_jax.models.protocol import identity
from iba_jax.stats import FeatureStats

CELL = 8  # pixels per cell side of the probe's 8 x 8 grid over 64 px images


@dataclasses.dataclass(frozen=True)
class LocalAndGlobalProbe:
    """Two layers of known locality over 64 px images, and an output that sums their cells.

    ``cells`` keeps each 8 x 8 patch's mean where the patch is (a cell sees its patch only);
    ``pooled`` gives every cell the whole image's mean (every cell sees everything).
    """

    layer_names = ("cells", "pooled")
    num_outputs = 1
    in_channels = 1
    min_image_size = 64
    link = staticmethod(identity)

    def receptive_field(self, layer):
        return {"cells": CELL, "pooled": 64}[layer]

    def apply(self, variables, x):
        return self.decode(variables, self.encode(variables, x, "cells"), "cells")

    def encode(self, variables, x, layer):
        if isinstance(layer, tuple):  # several cuts: a dict, as DenseNet.encode
            return {name: self.encode(variables, x, name) for name in layer}
        del variables
        n, size = x.shape[0], x.shape[1] // CELL
        patches = x.reshape(n, size, CELL, size, CELL, 1).mean(axis=(2, 4))
        if layer == "cells":
            return patches
        return jnp.broadcast_to(patches.mean(axis=(1, 2), keepdims=True), patches.shape)

    def decode(self, variables, h, layer):
        del variables, layer
        return h.sum(axis=(1, 2, 3))[:, None]


def probe_setting(count=6):
    """Dark images with one bright 16 x 16 square each (4 cells), the squares as masks, and
    prior statistics N(0, 0.01) for both layers."""
    rng = np.random.default_rng(0)
    images = np.zeros((count, 64, 64, 1), np.float32)
    masks = np.zeros((count, 64, 64), bool)
    for i in range(count):
        r, c = CELL * rng.integers(0, 7, size=2)
        images[i, r : r + 16, c : c + 16] = 1.0
        masks[i, r : r + 16, c : c + 16] = True
    prior = FeatureStats(
        mean=jnp.zeros((8, 8, 1)),
        std=jnp.full((8, 8, 1), 0.01),
        active=jnp.ones((8, 8, 1), bool),
        count=jnp.asarray(1000),
    )
    return images, masks, {"cells": prior, "pooled": prior}
