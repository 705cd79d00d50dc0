"""Device memory of the per-image bottleneck optimisation, and how many images fit in one call.

Memory grows linearly with the images of a call: ``fixed + images × per_image``. The fixed part
is the model's variables and the feature statistics; per image, the backward pass through the
network's tail keeps the activations of ``samples`` noisy copies of the image (the tail runs on
all of them at once), plus a few arrays of the feature shape (α, Adam's two moments, the
capacity, the noise). So the earlier the bottleneck, the longer the tail and the larger the
feature maps: per image, about ``samples × tail activations``.

``iba_memory`` reads both numbers off XLA's own memory analysis of the compiled program for one
and two images (abstract shapes: nothing is run or allocated), on the device that will run it:
its buffer assignment is what the device allocates, fusion and rematerialisation included.
``images_per_call`` divides a device's free memory by it; ``iba(..., images_per_call="auto")``
uses it. The linear model predicts a third compilation (3 images) within 1 % for DenseNet-121.

DenseNet-121 at 224 px, 10 samples, rolled loop, XLA:CPU (``benchmarks/memory.py``, figures in
``benchmarks/README.md``): about 0.70 GB per image at denseblock1, 0.39 GB at denseblock2 and
0.11 GB at denseblock3 (the residuals that autodiff saves for the tail's backward, 10 samples,
are 0.49, 0.24 and 0.05 GB of these; the rest is the backward's temporaries and the encoder).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import NamedTuple, cast

import jax
import jax.numpy as jnp

from iba_jax.loop import IBAConfig, LoopPieces, compiled_attribution
from iba_jax.models.protocol import AbstractModel, Model, require
from iba_jax.objectives import takes_class_index
from iba_jax.stats import FeatureStats

ImageSize = int | tuple[int, ...]


class MemoryEstimate(NamedTuple):
    """Device bytes of one call: ``fixed_bytes + images × bytes_per_image``."""

    fixed_bytes: int
    bytes_per_image: int

    def bytes_for(self, images: int) -> int:
        """Bytes of a call on ``images`` images."""
        return self.fixed_bytes + images * self.bytes_per_image


def _image_shape(image_size: ImageSize) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def _images(
    model: Model, count: int, image_size: ImageSize, **kw: jax.sharding.Sharding
) -> jax.ShapeDtypeStruct:
    shape = (count, *_image_shape(image_size), model.in_channels)
    return jax.ShapeDtypeStruct(shape, jnp.float32, **kw)


def _feature_shapes(
    model: AbstractModel, layers: Sequence[str], image_size: ImageSize
) -> dict[str, jax.ShapeDtypeStruct]:
    return jax.eval_shape(
        lambda v, x: model.encode(v, x, tuple(layers)),
        model.abstract_variables(),
        _images(model, 1, image_size),
    )


def _compiled_bytes(
    model: AbstractModel,
    layers: Sequence[str],
    image_size: ImageSize,
    config: IBAConfig,
    pieces: LoopPieces,
    unroll: bool,
    images: int,
    device: jax.Device,
) -> int:
    """XLA's bytes (arguments, outputs and temporaries) of the IBA program for ``images``."""
    shape = jax.ShapeDtypeStruct
    features = _feature_shapes(model, layers, image_size)
    stats = tuple(
        FeatureStats._make(  # abstract arrays, for lowering
            (
                shape(features[layer].shape[1:], jnp.float32),
                shape(features[layer].shape[1:], jnp.float32),
                shape(features[layer].shape[1:], jnp.bool_),
                shape((), jnp.int32),
            )
        )
        for layer in layers
    )
    key = jax.random.key(0).dtype
    target_dtype = jnp.int32 if takes_class_index(pieces.model_loss) else jnp.float32
    sharding = jax.sharding.SingleDeviceSharding(device)
    lowered = compiled_attribution.lower(
        jax.tree.map(
            lambda a: shape(a.shape, a.dtype, sharding=sharding), model.abstract_variables()
        ),
        stats,
        _images(model, images, image_size, sharding=sharding),
        None if pieces.target_transform else shape((images,), target_dtype, sharding=sharding),
        tuple(shape((images, config.steps), key, sharding=sharding) for _ in layers),
        config,
        model=model,
        layers=tuple(layers),
        unroll=unroll,
        **pieces._asdict(),
    )
    analysis = lowered.compile().memory_analysis()
    if analysis is None:
        raise RuntimeError(f"device: {device} reports no memory analysis of compiled programs.")
    return int(
        analysis.argument_size_in_bytes
        + analysis.output_size_in_bytes
        + analysis.temp_size_in_bytes
        - analysis.alias_size_in_bytes
    )


@functools.lru_cache(maxsize=64)
def _estimate(
    model: AbstractModel,
    layers: tuple[str, ...],
    image_size: tuple[int, int],
    program: jax.tree_util.PyTreeDef,
    pieces: LoopPieces,
    unroll: bool,
    device: jax.Device,
) -> MemoryEstimate:
    config = jax.tree.unflatten(program, [0.0])  # the program depends on all but β
    one, two = (
        _compiled_bytes(model, layers, image_size, config, pieces, unroll, n, device)
        for n in (1, 2)
    )
    return MemoryEstimate(fixed_bytes=max(0, 2 * one - two), bytes_per_image=two - one)


def iba_memory(
    model: Model,
    layers: str | Sequence[str],
    image_size: ImageSize,
    config: IBAConfig | None = None,
    *,
    pieces: LoopPieces = LoopPieces(),
    unroll: bool = True,
    device: jax.Device | None = None,
) -> MemoryEstimate:
    """The device memory of IBA (any single- or multi-layer bottleneck) as XLA compiles it.

    Args:
      model: the network.
      layers: the bottleneck layer(s) (several: Multi-layer IBA's one program).
      image_size: the input's side in pixels, or (height, width).
      config: the ``IBAConfig`` (its samples and steps matter); the defaults when None.
      pieces: the loop's model loss, target transform, bottleneck form, information term and
        optimizer (an optimizer's state and a heavier form take memory too); IBA's by default.
      unroll: whether the loop is unrolled (XLA:CPU keeps more buffers alive in an unrolled
        loop).
      device: the device that will run it (default: the first local one).

    Returns:
      A :class:`MemoryEstimate`; two compilations on first use, then cached.
    """
    layers = (layers,) if isinstance(layers, str) else tuple(layers)
    require(model, "abstract_variables", "the memory estimate (images_per_call='auto')")
    program = jax.tree.structure(config or IBAConfig())  # the settings but β
    device = device or jax.local_devices()[0]
    return _estimate(
        cast(AbstractModel, model),
        layers,
        _image_shape(image_size),
        program,
        pieces,
        unroll,
        device,
    )


def device_memory_bytes(device: jax.Device | None = None) -> int:
    """Bytes the device's allocator may hand out (accelerators), or the host's physical
    memory (CPU, which reports none)."""
    device = device or jax.local_devices()[0]
    stats = device.memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def images_per_call(
    model: Model,
    layers: str | Sequence[str],
    image_size: ImageSize,
    config: IBAConfig | None = None,
    *,
    pieces: LoopPieces = LoopPieces(),
    unroll: bool = True,
    device: jax.Device | None = None,
    fraction: float = 0.8,
) -> int:
    """The most images one call fits in ``fraction`` of the device's memory (at least 1);
    ``pieces`` as :func:`iba_memory`'s."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction: expected a share of memory in (0, 1]; got {fraction}.")
    estimate = iba_memory(
        model, layers, image_size, config, pieces=pieces, unroll=unroll, device=device
    )
    budget = fraction * device_memory_bytes(device) - estimate.fixed_bytes
    return max(1, int(budget // max(1, estimate.bytes_per_image)))
