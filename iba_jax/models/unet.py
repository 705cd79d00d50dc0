"""A small U-Net (Ronneberger et al., MICCAI 2015) for lung masks, as pure functions.

Each level is two 3x3 convolutions with group normalisation and ReLU; the encoder halves the
grid by 2x2 max-pooling, the decoder doubles it by a 2x2 transposed convolution and
concatenates the encoder's map of that size; a 1x1 convolution gives one logit per pixel.
Group normalisation (not batch normalisation) keeps the model stateless: ``apply`` is the same
function in training and inference, whatever the batch.

>>> import jax
>>> net = UNet(UNetConfig(features=(4, 8)))
>>> variables = net.init(jax.random.key(0), 32)
>>> net.apply(variables, jax.numpy.zeros((2, 32, 32, 1))).shape
(2, 32, 32)
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import flax.linen as nn
import jax
import jax.numpy as jnp

Variables = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """Channels per level (the last is the bottom) and input channels."""

    features: tuple[int, ...] = (16, 32, 64, 128)
    in_channels: int = 1

    def __post_init__(self) -> None:
        if len(self.features) < 2 or min(self.features) < 1:
            raise ValueError(
                f"features: expected two or more positive channel counts; got {self.features}."
            )

    @property
    def multiple(self) -> int:
        """Image sides must be multiples of this (one halving per level above the bottom)."""
        return 2 ** (len(self.features) - 1)

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "in_channels": self.in_channels}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetConfig:
        return cls(features=tuple(d["features"]), in_channels=int(d["in_channels"]))


class _Level(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for k in range(2):
            x = nn.Conv(self.features, (3, 3), padding="SAME", name=f"conv{k}")(x)
            x = nn.GroupNorm(num_groups=min(8, self.features), name=f"norm{k}")(x)
            x = nn.relu(x)
        return x


class _UNetModule(nn.Module):
    config: UNetConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        *upper, bottom = self.config.features
        skips = []
        for k, features in enumerate(upper):
            x = _Level(features, name=f"down{k}")(x)
            skips.append(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = _Level(bottom, name="bottom")(x)
        for k in reversed(range(len(upper))):
            x = nn.ConvTranspose(upper[k], (2, 2), strides=(2, 2), name=f"up{k}")(x)
            x = _Level(upper[k], name=f"merge{k}")(jnp.concatenate([x, skips[k]], axis=-1))
        return nn.Conv(1, (1, 1), name="logits")(x)[..., 0]


@dataclasses.dataclass(frozen=True)
class UNet:
    """A frozen, hashable description; ``init`` and ``apply`` are pure functions."""

    config: UNetConfig = UNetConfig()

    def init(self, key: jax.Array, image_size: int) -> Variables:
        """Initial variables (``{"params"}``), traced on one ``image_size`` image."""
        self._check_size(image_size)
        x = jnp.zeros((1, image_size, image_size, self.config.in_channels))
        return dict(_UNetModule(self.config).init(key, x))

    def apply(self, variables: Variables, x: jax.Array) -> jax.Array:
        """Per-pixel logits ``(N, H, W)`` of images ``(N, H, W, C)``."""
        if x.ndim != 4 or x.shape[-1] != self.config.in_channels:
            raise ValueError(
                f"x: expected images (N, H, W, {self.config.in_channels}); got shape {x.shape}."
            )
        self._check_size(x.shape[1], x.shape[2])
        return cast(jax.Array, _UNetModule(self.config).apply(variables, x))

    def _check_size(self, *sides: int) -> None:
        if any(side % self.config.multiple for side in sides):
            raise ValueError(
                f"x: expected image sides that are multiples of {self.config.multiple}; got "
                f"{sides}."
            )
