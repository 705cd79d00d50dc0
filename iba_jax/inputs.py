"""The checks every attribution method makes of what it is given, and its PRNG keys.

Images (a finite channels-last batch the model accepts), targets (one per image; class indices
within the outputs for the losses that take them), feature statistics (the layer's shape),
layers (distinct, in network order) and keys (one key, or one per image; raw ``PRNGKey`` data
is wrapped). Each refuses bad input with a one-line error naming the argument; under a
caller's ``jit`` (traced values) the value checks are skipped and the maps come out NaN instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike
from numpy.typing import ArrayLike

from iba_jax import checks
from iba_jax.models.protocol import Model, check_model, standard_layers
from iba_jax.objectives import ModelLoss, check_output_index, takes_class_index
from iba_jax.stats import FeatureStats


def check_stats_shape(layer: str, stats: FeatureStats, feature_shape: tuple[int, ...]) -> None:
    """Raises unless ``stats`` have the shape ``(h, w, c)`` of ``layer``'s features."""
    if tuple(stats.mean.shape) != tuple(feature_shape):
        raise ValueError(
            f"stats: expected statistics of the {layer!r} feature shape {tuple(feature_shape)} "
            f"(h, w, c) for these images; got {tuple(stats.mean.shape)}. Estimate them at "
            "the same layer and image size."
        )


def check_layer_stack(
    model: Model, layers: Sequence[str] | None, stats: Mapping[str, FeatureStats]
) -> tuple[str, ...]:
    """Checks that ``layers`` (None: the model's standard multi-layer ones) are distinct, in
    network order, and all have statistics."""
    check_model(model)
    layers = standard_layers(model, "layers").multilayer if layers is None else tuple(layers)
    checks.check_names("layers", layers, model.layer_names)
    order = [model.layer_names.index(layer) for layer in layers]
    if order != sorted(set(order)):
        raise ValueError(f"layers: expected distinct layers in network order; got {layers}.")
    missing = [layer for layer in layers if layer not in stats]
    if missing:
        raise ValueError(f"stats: expected FeatureStats for every layer; missing {missing}.")
    return layers


def is_concrete(x: object) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_finite(name: str, x: ArrayLike) -> None:
    if is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(np.asarray(x))))
        raise ValueError(f"{name}: expected finite values; got {bad} NaN or infinite entries.")


def batch_targets(targets: ArrayLike, batch: int, dtype: DTypeLike) -> jax.Array:
    targets = jnp.asarray(targets, dtype)
    if targets.ndim == 0:
        targets = jnp.broadcast_to(targets, (batch,))
    if targets.shape[0] != batch:
        raise ValueError(
            f"targets: expected one target per image ({batch}); got shape {tuple(targets.shape)}."
        )
    return targets


def _check_class_targets(given: ArrayLike, targets: jax.Array, num_classes: int) -> None:
    """``targets`` (``given`` as cast to int32) must be one whole class index per image."""
    if targets.ndim != 1:
        raise ValueError(
            f"targets: expected one integer class index per image; got shape "
            f"{tuple(targets.shape)}."
        )
    if is_concrete(given):
        values = np.asarray(given)
        whole = np.issubdtype(values.dtype, np.integer) or (
            np.issubdtype(values.dtype, np.floating) and np.all(values == np.round(values))
        )
        if values.dtype == bool or not whole:
            raise ValueError(
                f"targets: expected integer class indices; got {values.dtype} {values.tolist()}."
            )
    check_output_index("targets", targets, num_classes)


def prepare_targets(
    model: Model, images: ArrayLike, targets: ArrayLike, model_loss: ModelLoss
) -> jax.Array:
    """One target per image; class indices are checked against the outputs for the losses
    that take them (``objectives.takes_class_index``: ``target_bce``, ``softmax_cross_entropy``,
    any marked with ``class_index_loss``). The images' shape is checked
    first, since it says how many targets there must be."""
    check_model(model)
    checks.check_image_batch(
        "images", images, channels=model.in_channels, min_size=model.min_image_size
    )
    batch = np.shape(images)[0]
    if takes_class_index(model_loss):
        given = targets
        targets = batch_targets(targets, batch, jnp.int32)
        _check_class_targets(given, targets, model.num_outputs)
        return targets
    return batch_targets(targets, batch, jnp.asarray(targets).dtype)


def check_batch_targets(
    argument: str, targets: jax.Array, batch: int, model_loss: ModelLoss
) -> None:
    """Targets made inside the compiled loop (a target transform's; shapes are known when it
    traces): one per image, and integers for the losses that take a class index."""
    if jnp.ndim(targets) < 1 or jnp.shape(targets)[0] != batch:
        raise ValueError(
            f"{argument}: expected one target per image (a leading axis of {batch}); got shape "
            f"{jnp.shape(targets)}."
        )
    if takes_class_index(model_loss) and not jnp.issubdtype(targets.dtype, jnp.integer):
        raise ValueError(
            f"{argument}: the model loss takes class indices (integers); got {targets.dtype} "
            "targets."
        )


def check_images(model: Model, images: ArrayLike) -> None:
    """The model must be a :class:`~iba_jax.models.Model`, the images a finite channels-last
    batch it accepts."""
    check_model(model)
    checks.check_image_batch(
        "images", images, channels=model.in_channels, min_size=model.min_image_size
    )
    check_finite("images", images)


def typed_key(key: jax.Array) -> jax.Array:
    """A typed PRNG key (array): raw uint32 keys from ``jax.random.PRNGKey`` are wrapped."""
    key = jnp.asarray(key)
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    return key


def per_image_keys(key: jax.Array, count: int) -> jax.Array:
    """One PRNG key per image: a single key is split into ``count``; ``count`` keys are kept."""
    key = typed_key(key)
    if key.ndim == 0:
        return jax.random.split(key, count)
    if key.shape != (count,):
        raise ValueError(
            f"key: expected one key or one key per image ({count}); got shape {key.shape}."
        )
    return key


def layer_keys(key: jax.Array, count: int) -> tuple[jax.Array, ...]:
    """``count`` keys from one key, or from one key per image (then one per image each)."""
    key = typed_key(key)
    if key.ndim == 0:
        return tuple(jax.random.split(key, count))
    per_image = jax.vmap(lambda k: jax.random.split(k, count))(key)  # (images, count)
    return tuple(per_image[:, j] for j in range(count))


def layer_draws(
    key: jax.Array | None, noise: jax.Array | None, batch: int, steps: int
) -> jax.Array:
    """Per image: ``steps`` PRNG keys, or the injected noise (checked against shapes later)."""
    if noise is not None:
        check_finite("noise", noise)
        return jnp.asarray(noise, jnp.float32)
    if key is None:
        raise ValueError(
            "key: expected a PRNG key (jax.random.key(seed)) or injected noise; got neither."
        )
    return jax.vmap(lambda k: jax.random.split(k, steps))(per_image_keys(key, batch))
