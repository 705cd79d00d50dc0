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
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
from numpy.typing import ArrayLike

from iba_jax import baselines, checks, lrp
from iba_jax.attribute import (
    IBAConfig,
    ImagesPerCall,
    check_run_arguments,
    iba,
    inverse_iba,
    multilayer_iba,
    regression_iba,
)
from iba_jax.inputs import per_image_keys
from iba_jax.models.densenet import DenseNet
from iba_jax.models.protocol import Model, Variables, check_model, standard_layers
from iba_jax.models.resnet import ResNet
from iba_jax.sharding import IMAGE_AXIS, check_mesh, pad_images
from iba_jax.stats import FeatureStats

PAPER_LAYERS = DenseNet.standard_layers  # the paper's: denseblock3, denseblock1-3, norm5
# The reference code's β per method where it differs from IBA's 10: its Inverse IBA used 30.
REFERENCE_BETAS: tuple[tuple[str, float], ...] = (("inverse_iba", 30.0),)
BOTTLENECK_METHODS = (
    "iba",
    "inverse_iba",
    "regression_iba_mse",
    "regression_iba_rm",
    "regression_iba_deviation",
)
BETA_METHODS = (*BOTTLENECK_METHODS, "multilayer_iba")  # the methods whose β can be set apart


@dataclasses.dataclass(frozen=True)
class MethodSettings:
    """The settings of the methods (the paper's defaults, at DenseNet's layers; other models:
    :meth:`for_model`).

    Attributes:
      iba: the IBA family's optimisation settings.
      iba_layer: the bottleneck layer of the single-layer IBA methods (``BOTTLENECK_METHODS``;
        the paper's denseblock3).
      multilayer_layers: multi-layer IBA's layers, finest first (the paper's denseblock1-3).
      betas: ``(method, β)`` pairs that replace ``iba.beta`` for those methods, e.g.
        ``REFERENCE_BETAS`` (the reference code's Inverse IBA) or β calibrated per method and
        loss with ``beta_sweep``.
      ig_steps: Integrated Gradients' quadrature points (zero baseline).
      grad_cam_layer: Grad-CAM's layer (norm5, as the paper's code; a ResNet's is layer4).
      lrp_rule: LRP's rule (``lrp.RULES``).
      unroll, images_per_call: how the IBA family's compiled loop runs (see
        ``attribute.attribute``): they change the time and memory of a run, not its maps, and
        are left out of :meth:`determining`.
    """

    iba: IBAConfig = IBAConfig()
    iba_layer: str = PAPER_LAYERS.bottleneck
    multilayer_layers: tuple[str, ...] = PAPER_LAYERS.multilayer
    betas: tuple[tuple[str, float], ...] = ()
    ig_steps: int = 32
    grad_cam_layer: str = PAPER_LAYERS.grad_cam
    lrp_rule: str = "alpha1beta0"
    unroll: bool = True
    images_per_call: ImagesPerCall = None

    def __post_init__(self) -> None:
        checks.check_positive_int("ig_steps", self.ig_steps)
        check_run_arguments(self.unroll, self.images_per_call)
        if isinstance(self.multilayer_layers, str) or len(self.multilayer_layers) < 2:
            raise ValueError(
                f"multilayer_layers: expected a tuple of at least two layers; got "
                f"{self.multilayer_layers!r}."
            )
        checks.check_choice("lrp_rule", self.lrp_rule, lrp.RULES)
        names = [pair[0] for pair in self.betas]
        for name in names:
            checks.check_choice("betas", name, BETA_METHODS)
        if len(set(names)) != len(names):
            raise ValueError(f"betas: expected each method once; got {names}.")
        for name, beta in self.betas:
            if not (isinstance(beta, float) and np.isfinite(beta) and beta > 0):
                raise ValueError(f"betas: expected a finite float β > 0 for {name}; got {beta!r}.")

    @classmethod
    def for_model(cls, model: Model, **changes: Any) -> MethodSettings:
        """The settings at ``model``'s standard layers (``models.standard_layers``: a ResNet's
        layer3, layer1-3 and layer4), with ``changes`` (fields) over them and the defaults.

        Example:
          >>> from iba_jax.models import ResNet, resnet_tiny
          >>> settings = MethodSettings.for_model(ResNet(resnet_tiny()), betas=(("iba", 1.0),))
          >>> settings.iba_layer, settings.grad_cam_layer, settings.config_for("iba").beta
          ('layer3', 'layer4', 1.0)
        """
        layers = standard_layers(model, "model")
        standard = {
            "iba_layer": layers.bottleneck,
            "multilayer_layers": layers.multilayer,
            "grad_cam_layer": layers.grad_cam,
        }
        return cls(**{**standard, **changes})

    def determining(self) -> dict[str, object]:
        """The settings that determine the maps, as plain values (what ``evaluate`` and
        ``explain`` record beside their results and compare on resuming)."""
        values = dataclasses.asdict(self)
        del values["unroll"], values["images_per_call"]
        return values

    def config_for(self, method: str) -> IBAConfig:
        """The IBA settings of ``method``: ``iba`` with its β from ``betas`` if given."""
        beta = dict(self.betas).get(method)
        return self.iba if beta is None else dataclasses.replace(self.iba, beta=beta)


class MethodCall(NamedTuple):
    """What a method computes maps of: the model, its variables, the feature statistics of the
    method's layers, the images ``(N, H, W, C)``, one output index and one PRNG key per image,
    the settings, and each image's regression label (only the methods that need them)."""

    model: Model
    variables: Variables
    stats: Mapping[str, FeatureStats]
    images: jax.Array
    targets: jax.Array
    keys: jax.Array
    settings: MethodSettings
    labels: jax.Array | None


class Method(NamedTuple):
    """An attribution method: ``fn(MethodCall)`` -> maps ``(N, H, W)``; ``layers(settings)``,
    the layers whose feature statistics it needs; the unit of its values; whether it needs
    each image's regression label; ``cut_at(settings)``, the layers beyond ``layers`` where it
    cuts the model (Grad-CAM's)."""

    fn: Callable[[MethodCall], jax.Array]
    layers: Callable[[MethodSettings], tuple[str, ...]]
    unit: str
    needs_labels: bool = False
    cut_at: Callable[[MethodSettings], tuple[str, ...]] | None = None


def _bottleneck_layer(settings: MethodSettings) -> tuple[str, ...]:
    return (settings.iba_layer,)


def _multilayers(settings: MethodSettings) -> tuple[str, ...]:
    return settings.multilayer_layers


def _no_layer(settings: MethodSettings) -> tuple[str, ...]:
    return ()


def _grad_cam_layer(settings: MethodSettings) -> tuple[str, ...]:
    return (settings.grad_cam_layer,)


def _run(settings: MethodSettings) -> dict[str, Any]:
    """How the IBA family's loop runs (not what it computes)."""
    return {"unroll": settings.unroll, "images_per_call": settings.images_per_call}


def _iba(c: MethodCall) -> jax.Array:
    layer = c.settings.iba_layer
    return iba(
        c.model,
        c.variables,
        c.stats[layer],
        c.images,
        c.targets,
        layer=layer,
        config=c.settings.config_for("iba"),
        key=c.keys,
        **_run(c.settings),
    )[0]


def _inverse(c: MethodCall) -> jax.Array:
    layer = c.settings.iba_layer
    return inverse_iba(
        c.model,
        c.variables,
        c.stats[layer],
        c.images,
        c.targets,
        layer=layer,
        config=c.settings.config_for("inverse_iba"),
        key=c.keys,
        **_run(c.settings),
    )[0]


def _multilayer(c: MethodCall) -> jax.Array:
    return multilayer_iba(
        c.model,
        c.variables,
        c.stats,
        c.images,
        c.targets,
        layers=c.settings.multilayer_layers,
        config=c.settings.config_for("multilayer_iba"),
        key=c.keys,
        **_run(c.settings),
    ).map


def _regression(loss: Literal["mse", "rm", "deviation"]) -> Callable[[MethodCall], jax.Array]:
    name = f"regression_iba_{loss}"

    def method(c: MethodCall) -> jax.Array:
        layer = c.settings.iba_layer
        return regression_iba(
            c.model,
            c.variables,
            c.stats[layer],
            c.images,
            c.labels if loss == "mse" else None,
            loss=loss,
            layer=layer,
            config=c.settings.config_for(name),
            key=c.keys,
            **_run(c.settings),
        )[0]

    return method


def _gradients(c: MethodCall) -> jax.Array:
    return baselines.pixel_map(baselines.gradients(c.model, c.variables, c.images, c.targets))


def _integrated(c: MethodCall) -> jax.Array:
    attribution = baselines.integrated_gradients(
        c.model, c.variables, c.images, c.targets, steps=c.settings.ig_steps, baseline="zero"
    )
    return baselines.pixel_map(attribution)


def _grad_cam(c: MethodCall) -> jax.Array:
    return baselines.grad_cam(
        c.model, c.variables, c.images, c.targets, layer=c.settings.grad_cam_layer
    )


def _lrp(c: MethodCall) -> jax.Array:
    relevance = lrp.lrp(
        cast(DenseNet | ResNet, c.model),  # lrp refuses other models by name
        c.variables,
        c.images,
        c.targets,
        rule=cast(lrp.Rule, c.settings.lrp_rule),  # checked by MethodSettings
    )
    return baselines.pixel_map(relevance, reduce="sum")


def _random(c: MethodCall) -> jax.Array:
    return jax.vmap(lambda k: jax.random.uniform(k, c.images.shape[1:3]))(c.keys)


METHODS: dict[str, Method] = {
    "iba": Method(_iba, _bottleneck_layer, "bits"),
    "inverse_iba": Method(_inverse, _bottleneck_layer, "bits"),
    "multilayer_iba": Method(_multilayer, _multilayers, "bits"),
    "regression_iba_mse": Method(_regression("mse"), _bottleneck_layer, "bits", needs_labels=True),
    "regression_iba_rm": Method(_regression("rm"), _bottleneck_layer, "bits"),
    "regression_iba_deviation": Method(_regression("deviation"), _bottleneck_layer, "bits"),
    "gradients": Method(_gradients, _no_layer, "|gradient|"),
    "integrated_gradients": Method(_integrated, _no_layer, "|attribution|"),
    "grad_cam": Method(_grad_cam, _no_layer, "Grad-CAM", cut_at=_grad_cam_layer),
    "lrp": Method(_lrp, _no_layer, "relevance"),
    "random": Method(_random, _no_layer, "uniform noise"),
}


def target_key(seed_key: jax.Array, image_index: int, target: int) -> jax.Array:
    """The noise key of image ``image_index``'s ``target`` under ``seed_key``: one derivation
    for evaluate, explain and the demo, so an explanation is the same whatever the batching."""
    return jax.random.fold_in(jax.random.fold_in(seed_key, image_index), target)


def needed_layers(
    methods: Sequence[str], settings: MethodSettings = MethodSettings()
) -> tuple[str, ...]:
    """The layers whose feature statistics the methods need under ``settings``."""
    return tuple(sorted({layer for m in methods for layer in METHODS[m].layers(settings)}))


def method_stats(
    name: str, stats: Mapping[str, FeatureStats], settings: MethodSettings
) -> dict[str, FeatureStats]:
    """The feature statistics of the layers method ``name`` needs under ``settings``, out of
    ``stats``; raises, naming the missing ones, unless ``stats`` has them all."""
    layers = METHODS[name].layers(settings)
    missing = [layer for layer in layers if layer not in stats]
    if missing:
        raise ValueError(
            f"stats: {name} needs the feature statistics of {missing}; got "
            f"{sorted(stats) or 'none'}."
        )
    return {layer: stats[layer] for layer in layers}


def attribution_maps(
    name: str,
    model: Model,
    variables: Variables,
    stats: Mapping[str, FeatureStats],
    images: jax.Array,
    targets: ArrayLike,
    *,
    key: jax.Array,
    settings: MethodSettings = MethodSettings(),
    labels: ArrayLike | None = None,
    mesh: Mesh | None = None,
) -> jax.Array:
    """The maps ``(N, H, W)`` (float32) of method ``name`` for each image's target.

    Args:
      stats: feature statistics per layer, at least those of
        ``METHODS[name].layers(settings)``.
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
    check_model(model)
    method = METHODS[name]
    layers = method.layers(settings)
    cut_at = (*layers, *(method.cut_at(settings) if method.cut_at else ()))
    absent = [layer for layer in cut_at if layer not in model.layer_names]
    if absent:
        raise ValueError(
            f"settings: {name} runs at {absent}, which the model does not have (its layers: "
            f"{', '.join(model.layer_names)}); MethodSettings.for_model(model) takes its "
            "standard layers."
        )
    chosen = method_stats(name, stats, settings)
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
    if mesh is None:
        call = MethodCall(model, variables, chosen, images, targets, keys, settings, labels)
        maps = method.fn(call)
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
def _sharded_maps(
    variables: Variables,
    stats: Mapping[str, FeatureStats],
    images: jax.Array,
    targets: jax.Array,
    keys: jax.Array,
    labels: jax.Array,
    *,
    name: str,
    model: Model,
    settings: MethodSettings,
    mesh: Mesh,
) -> jax.Array:
    """Method ``name`` on each device's slice of the images (everything else replicated)."""

    def local(
        variables: Variables,
        stats: Mapping[str, FeatureStats],
        images: jax.Array,
        targets: jax.Array,
        keys: jax.Array,
        labels: jax.Array,
    ) -> jax.Array:
        call = MethodCall(model, variables, stats, images, targets, keys, settings, labels)
        return METHODS[name].fn(call)

    mine = P(IMAGE_AXIS)
    # check_vma=False: no gradient is taken with respect to the replicated values, so none has
    # to be summed over the devices (with it, the transposes would all-reduce unused ones).
    sharded = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(), P(), mine, mine, mine, mine),
        out_specs=mine,
        check_vma=False,
    )
    return sharded(variables, stats, images, targets, keys, labels)
