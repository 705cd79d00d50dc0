"""Every attribution method by name, with one signature: images in, one map per image out.

``attribution_maps(name, model, variables, stats, images, targets, key=..., settings=...)``
returns ``(N, H, W)`` maps at the images' resolution for any method of ``METHODS``; the
evaluation and the ``explain`` command both go through it, so a method means the same thing in
both. ``Method.unit`` says what the values are: bits (the IBA family: the information that
passes the bottleneck, per pixel) or the method's own scale.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from iba_jax import baselines, checks, lrp
from iba_jax.attribute import IBAConfig, iba, inverse_iba, multilayer_iba, regression_iba
from iba_jax.models.densenet import DenseNet, Variables
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
    if key.ndim == 1:  # one key per image
        return jax.vmap(lambda k: jax.random.uniform(k, x.shape[1:3]))(key)
    return jax.random.uniform(key, x.shape[:3])


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
) -> jax.Array:
    """The maps ``(N, H, W)`` (float32) of method ``name`` for each image's target.

    Args:
      stats: feature statistics per layer, at least those of ``METHODS[name].layers``.
      targets: one output index per image (regression models: 0).
      key: PRNG key of the bottleneck noise (and of the random map), or one key per image.
      labels: each image's regression target ``(N,)`` (only ``regression_iba_mse``).
    """
    checks.check_choice("method", name, tuple(METHODS))
    method = METHODS[name]
    missing = [layer for layer in method.layers if layer not in stats]
    if missing:
        raise ValueError(f"stats: {name} needs the feature statistics of {missing}; got none.")
    if method.needs_labels and labels is None:
        raise ValueError(f"labels: {name} needs each image's regression target; got None.")
    if labels is not None:
        labels = jnp.asarray(labels, jnp.float32).reshape(-1)
    maps = method.fn(model, variables, stats, images, targets, key, settings, labels)
    return jnp.asarray(maps, jnp.float32)
