"""Every attribution method by name, with one signature: images in, one map per image out.

``attribution_maps(name, model, variables, stats, images, targets, key=..., settings=...)``
returns ``(N, H, W)`` maps at the images' resolution for any method of ``METHODS``; the
evaluation and the ``explain`` command both go through it, so a method means the same thing in
both. ``Method.unit`` says what the values are: bits (the IBA family: the information that
passes the bottleneck, per pixel) or the method's own scale. With ``mesh=sharding.local_mesh()``
the batch is split across the local devices (``iba_jax.sharding``); the maps are the same.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from iba_jax import baselines, checks, lrp
from iba_jax.attribute import IBAConfig, iba, inverse_iba, multilayer_iba, regression_iba
from iba_jax.models.densenet import DenseNet, Variables
from iba_jax.sharding import IMAGE_AXIS, check_mesh, pad_images, per_image_keys
from iba_jax.stats import FeatureStats

IBA_LAYER = "denseblock3"
MULTILAYER = ("denseblock1", "denseblock2", "denseblock3")


@dataclasses.dataclass(frozen=True)
class MethodSettings:
    """The settings of the methods (the paper's defaults).

    Attributes:
      iba: the IBA family's optimisation settings.
      ig_steps: Integrated Gradients' quadrature points (zero baseline).
      grad_cam_layer: Grad-CAM's layer (norm5, as the paper's code).
      lrp_rule: LRP's rule (``lrp.RULES``).
    """

    iba: IBAConfig = IBAConfig()
    ig_steps: int = 32
    grad_cam_layer: str = "norm5"
    lrp_rule: str = "alpha1beta0"

    def __post_init__(self) -> None:
        checks.check_positive_int("ig_steps", self.ig_steps)
        checks.check_choice("lrp_rule", self.lrp_rule, lrp.RULES)


class Method(NamedTuple):
    """An attribution method: ``fn(model, variables, stats, images, targets, key, settings,
    labels)`` -> ``(N, H, W)``; the layers whose feature statistics it needs; the unit of its
    values; whether it needs each image's regression label."""

    fn: Callable[..., jax.Array]
    layers: tuple[str, ...]
    unit: str
    needs_labels: bool = False


def _iba(model, variables, stats, x, targets, key, settings, labels):
    return iba(model, variables, stats[IBA_LAYER], x, targets, config=settings.iba, key=key)[0]


def _inverse(model, variables, stats, x, targets, key, settings, labels):
    layer_stats = stats[IBA_LAYER]
    return inverse_iba(model, variables, layer_stats, x, targets, config=settings.iba, key=key)[0]


def _multilayer(model, variables, stats, x, targets, key, settings, labels):
    chosen = {layer: stats[layer] for layer in MULTILAYER}
    return multilayer_iba(model, variables, chosen, x, targets, config=settings.iba, key=key).map


def _regression(loss):
    def method(model, variables, stats, x, targets, key, settings, labels):
        layer_stats = stats[IBA_LAYER]
        wanted = labels if loss == "mse" else None
        return regression_iba(
            model, variables, layer_stats, x, wanted, loss=loss, config=settings.iba, key=key
        )[0]

    return method


def _gradients(model, variables, stats, x, targets, key, settings, labels):
    return baselines.pixel_map(baselines.gradients(model, variables, x, targets))


def _integrated(model, variables, stats, x, targets, key, settings, labels):
    attribution = baselines.integrated_gradients(
        model, variables, x, targets, steps=settings.ig_steps, baseline="zero"
    )
    return baselines.pixel_map(attribution)


def _grad_cam(model, variables, stats, x, targets, key, settings, labels):
    return baselines.grad_cam(model, variables, x, targets, layer=settings.grad_cam_layer)


def _lrp(model, variables, stats, x, targets, key, settings, labels):
    relevance = lrp.lrp(model, variables, x, targets, rule=settings.lrp_rule)
    return baselines.pixel_map(relevance, reduce="sum")


def _random(model, variables, stats, x, targets, key, settings, labels):
    return jax.vmap(lambda k: jax.random.uniform(k, x.shape[1:3]))(key)


METHODS: dict[str, Method] = {
    "iba": Method(_iba, (IBA_LAYER,), "bits"),
    "inverse_iba": Method(_inverse, (IBA_LAYER,), "bits"),
    "multilayer_iba": Method(_multilayer, MULTILAYER, "bits"),
    "regression_iba_mse": Method(_regression("mse"), (IBA_LAYER,), "bits", needs_labels=True),
    "regression_iba_rm": Method(_regression("rm"), (IBA_LAYER,), "bits"),
    "regression_iba_deviation": Method(_regression("deviation"), (IBA_LAYER,), "bits"),
    "gradients": Method(_gradients, (), "|gradient|"),
    "integrated_gradients": Method(_integrated, (), "|attribution|"),
    "grad_cam": Method(_grad_cam, (), "Grad-CAM"),
    "lrp": Method(_lrp, (), "relevance"),
    "random": Method(_random, (), "uniform noise"),
}


def target_key(seed_key: jax.Array, image_index: int, target: int) -> jax.Array:
    """The noise key of image ``image_index``'s ``target`` under ``seed_key``: one derivation
    for evaluate, explain and the demo, so an explanation is the same whatever the batching."""
    return jax.random.fold_in(jax.random.fold_in(seed_key, image_index), target)


def needed_layers(methods: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The layers whose feature statistics the methods need."""
    return tuple(sorted({layer for m in methods for layer in METHODS[m].layers}))


def attribution_maps(
    name: str,
    model: DenseNet,
    variables: Variables,
    stats: Mapping[str, FeatureStats],
    images: jax.Array,
    targets: Any,
    *,
    key: jax.Array,
    settings: MethodSettings = MethodSettings(),
    labels: Any = None,
    mesh: Mesh | None = None,
) -> jax.Array:
    """The maps ``(N, H, W)`` (float32) of method ``name`` for each image's target.

    Args:
      stats: feature statistics per layer, at least those of ``METHODS[name].layers``.
      targets: one output index per image (regression models: 0).
      key: PRNG key of the bottleneck noise (and of the random map): one key, split into one
        per image, or one key per image ``(N,)``. Image i's map depends only on image i, its
        target and its key: not on the batch around it nor on the devices.
      labels: each image's regression target ``(N,)`` (only ``regression_iba_mse``).
      mesh: split the batch across these devices (``sharding.local_mesh()``: all local
        devices); padded with copies of the last image when they do not divide it. The
        settings are then static (another β compiles again).

    Example:
      >>> import jax
      >>> from iba_jax.models import DenseNet, densenet_tiny
      >>> from iba_jax.sharding import local_mesh
      >>> from iba_jax.stats import estimate_feature_stats
      >>> net = DenseNet(densenet_tiny())
      >>> variables = net.init(jax.random.key(0), 64)
      >>> data = jax.random.normal(jax.random.key(1), (16, 64, 64, 3))
      >>> stats = {"denseblock3": estimate_feature_stats(net, variables, [data], "denseblock3")}
      >>> maps = attribution_maps("iba", net, variables, stats, data[:3], [0, 1, 2],
      ...                         key=jax.random.key(2), mesh=local_mesh())
      >>> maps.shape
      (3, 64, 64)
    """
    checks.check_choice("method", name, tuple(METHODS))
    method = METHODS[name]
    missing = [layer for layer in method.layers if layer not in stats]
    if missing:
        raise ValueError(f"stats: {name} needs the feature statistics of {missing}; got none.")
    if method.needs_labels and labels is None:
        raise ValueError(f"labels: {name} needs each image's regression target; got None.")
    images = jnp.asarray(images)
    targets = baselines.class_targets(model, images, targets)
    count = images.shape[0]
    if labels is not None:
        labels = jnp.asarray(labels, jnp.float32).reshape(-1)
        if labels.shape != (count,) or not np.all(np.isfinite(np.asarray(labels))):
            raise ValueError(
                f"labels: expected one finite regression target per image ({count}); got "
                f"{np.asarray(labels).tolist()}."
            )
    keys = per_image_keys(key, count)
    chosen = {layer: stats[layer] for layer in method.layers}
    if mesh is None:
        maps = method.fn(model, variables, chosen, images, targets, keys, settings, labels)
    else:
        check_mesh(mesh)
        if labels is None:
            labels = jnp.zeros((count,), jnp.float32)  # unused by the methods without labels
        per_image = pad_images((images, targets, keys, labels), mesh.shape[IMAGE_AXIS])
        maps = _sharded_maps(
            variables, chosen, *per_image, name=name, model=model, settings=settings, mesh=mesh
        )[:count]
    maps = jnp.asarray(maps, jnp.float32)
    if not np.all(np.isfinite(np.asarray(maps))):
        raise FloatingPointError(
            f"{name}: the maps contain NaN or infinite values; check the model, its loss and "
            "the feature statistics."
        )
    return maps


@functools.partial(jax.jit, static_argnames=("name", "model", "settings", "mesh"))
def _sharded_maps(variables, stats, images, targets, keys, labels, *, name, model, settings, mesh):
    """Method ``name`` on each device's slice of the images (everything else replicated)."""

    def local(variables, stats, images, targets, keys, labels):
        fn = METHODS[name].fn
        return fn(model, variables, stats, images, targets, keys, settings, labels)

    mine = P(IMAGE_AXIS)
    # check_vma=False: no gradient is taken with respect to the replicated values, so none has
    # to be summed over the devices (with it, the transposes would all-reduce unused ones).
    specs = {"in_specs": (P(), P(), mine, mine, mine, mine), "out_specs": mine}
    return jax.shard_map(local, mesh=mesh, check_vma=False, **specs)(
        variables, stats, images, targets, keys, labels
    )
