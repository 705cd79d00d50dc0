"""CoIBA-style shared bottleneck: one damping map for several layers, in one forward pass.

Beyond the paper. Hong et al. (CVPR 2025, "Comprehensive Information Bottleneck for Unveiling
Universal Attribution") insert the bottleneck at *all* target layers in the same forward pass,
with one shared damping ratio λ (one value per location, shared by all channels), and bound the
information of the whole stack by the KL at the first target layer only. For a CNN whose target
layers have different resolutions (DenseNet: 56², 28², 14² at 224 px), λ lives at the first
layer's resolution and is area-averaged down to each later layer's (exact for DenseNet, whose
transitions halve the resolution).

Per step and noise sample: Z₁ = λ₁R₁ + (1 − λ₁)ε₁ at the first layer; the network runs on from
Z₁ to the next target layer, whose output R₂ is bottlenecked with λ₂ = pool(λ₁) and fresh noise
ε₂, and so on; the logits come from the last one. Loss = model loss + β · mean KL at layer 1.
The map is the first layer's capacity (readout as in :func:`iba_jax.attribute.iba`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpy.typing import ArrayLike

from iba_jax.attribute import (
    call_in_chunks,
    check_maps,
    check_optimizer,
    check_run_arguments,
)
from iba_jax.bottleneck import (
    Bottleneck,
    damping,
    iba_bottleneck,
    mean_capacity,
    normalized_features,
    standard_normal,
)
from iba_jax.inputs import (
    check_images,
    check_layer_stack,
    check_stats_shape,
    layer_draws,
    prepare_targets,
)
from iba_jax.loop import (
    AttributionAux,
    IBAConfig,
    InformationTerm,
    Prior,
    bottlenecked,
    check_draws,
    information_of,
    optimise_alpha,
    optimizer_of,
    prior_of,
    read_out,
)
from iba_jax.maps import to_bits_map
from iba_jax.models.protocol import Model, SteppedModel, Variables, require
from iba_jax.objectives import ModelLoss, objective, target_bce
from iba_jax.stats import FeatureStats

Draws = jax.Array | tuple[jax.Array, ...]  # per step: a PRNG key, or one noise array per layer


def area_downsample(lam: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Averages ``lam`` ``(h, w, c)`` over blocks to ``shape``; h, w must be multiples of it."""
    h, w, c = lam.shape
    if h % shape[0] or w % shape[1]:
        raise ValueError(
            f"layers: a shared λ of {h}x{w} cannot be area-averaged to {shape[0]}x{shape[1]}; "
            "choose target layers whose resolutions divide the first one's."
        )
    fh, fw = h // shape[0], w // shape[1]
    return lam.reshape(shape[0], fh, shape[1], fw, c).mean(axis=(1, 3))


def _coiba_one(
    model: Model,
    variables: Variables,
    features: jax.Array,
    target: jax.Array,
    draws: Draws,
    priors: tuple[Prior, ...],
    *,
    layers: tuple[str, ...],
    shapes: tuple[tuple[int, ...], ...],
    config: IBAConfig,
    model_loss: ModelLoss,
    bottleneck: Bottleneck,
    information: InformationTerm,
    optimizer: optax.GradientTransformation,
    unroll: bool,
) -> tuple[jax.Array, AttributionAux]:
    first = priors[0]
    r = normalized_features(features, first.mean, first.std)

    def loss_fn(alpha: jax.Array, draw: Draws) -> tuple[jax.Array, tuple]:
        lam = damping(alpha, config.sigma)  # (h1, w1, 1): one value per location
        info, cap = information_of(information, r, lam, first)
        if isinstance(draw, tuple):  # injected: (samples, h, w, c) per layer
            normals = draw
        else:
            normals = tuple(
                standard_normal(key_i, (config.samples, *shape))
                for key_i, shape in zip(jax.random.split(draw, len(layers)), shapes, strict=True)
            )
        h = features[None]
        for i, (layer, prior, n) in enumerate(zip(layers, priors, normals, strict=True)):
            if i:
                h = cast(SteppedModel, model).run_between(variables, h, layers[i - 1], layer)
            lam_i = area_downsample(lam, shapes[i][:2]) if i else lam
            h = bottlenecked(bottleneck, h, lam_i, n, prior)
        logits = model.decode(variables, h, layers[-1])
        total, model_term = objective(model_loss, logits, target, info, config.beta)
        return total, (model_term, info, cap)

    alpha0 = jnp.full((*features.shape[:2], 1), config.initial_alpha, features.dtype)
    trajectory = optimise_alpha(
        loss_fn,
        alpha0,
        draws,
        optimizer=optimizer,
        unroll=unroll,
        capacity_shape=features.shape,  # λ is shared by the channels, the capacity is not
    )
    return read_out(trajectory, r, first.active, config=config)


_STATIC = ("model", "layers", "model_loss", "bottleneck", "information", "optimizer", "unroll")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _coiba_compiled(
    variables: Variables,
    stats: tuple[FeatureStats, ...],
    images: jax.Array,
    targets: jax.Array,
    draws: Draws,
    config: IBAConfig,
    *,
    model: Model,
    layers: tuple[str, ...],
    model_loss: ModelLoss,
    bottleneck: Bottleneck,
    information: InformationTerm,
    optimizer: optax.GradientTransformation | None,
    unroll: bool,
) -> tuple[jax.Array, AttributionAux]:
    features = model.encode(variables, images, layers[0])
    shapes = tuple(
        tuple(s.shape)
        for s in jax.eval_shape(lambda x: model.encode(variables, x, layers), images).values()
    )
    shapes = tuple(shape[1:] for shape in shapes)
    for layer, layer_stats, shape in zip(layers, stats, shapes, strict=True):
        check_stats_shape(layer, layer_stats, shape)
    if isinstance(draws, tuple):
        for layer, layer_noise, shape in zip(layers, draws, shapes, strict=True):
            check_draws(layer, layer_noise, images.shape[0], shape, config)
    priors = tuple(prior_of(s, config.min_std, features.dtype) for s in stats)
    one = functools.partial(
        _coiba_one,
        model,
        variables,
        layers=layers,
        shapes=shapes,
        config=config,
        model_loss=model_loss,
        bottleneck=bottleneck,
        information=information,
        optimizer=optimizer_of(config, optimizer),
        unroll=unroll,
    )
    cap, aux = jax.vmap(one, in_axes=(0, 0, 0, None))(features, targets, draws, priors)
    return to_bits_map(cap, images.shape[1:3]), aux


def coiba(
    model: Model,
    variables: Variables,
    stats: Mapping[str, FeatureStats],
    images: jax.Array,
    targets: ArrayLike,
    *,
    layers: Sequence[str] | None = None,
    model_loss: ModelLoss = target_bce,
    bottleneck: Bottleneck = iba_bottleneck,
    information: InformationTerm = mean_capacity,
    optimizer: optax.GradientTransformation | None = None,
    config: IBAConfig = IBAConfig(),
    unroll: bool = True,
    images_per_call: int | None = None,
    key: jax.Array | None = None,
    noise: Mapping[str, jax.Array] | None = None,
) -> tuple[jax.Array, AttributionAux]:
    """CoIBA-style maps: one λ shared by several layers, KL at the first (see the module doc).

    Args:
      stats: ``{layer: FeatureStats}`` for every layer in ``layers``.
      layers: the target layers, in network order (default: the model's standard multi-layer
        ones, ``models.standard_layers``); the map has the first one's resolution before
        resizing. Later layers' resolutions must divide the first one's.
      key: a PRNG key (split per image), or one key per image.
      noise: instead of ``key``, ``{layer: (B, steps, samples, h, w, c)}`` standard normals
        for every layer in ``layers`` (recorded noise, to replay a run).
      bottleneck, information, optimizer, unroll, images_per_call: as
        :func:`iba_jax.attribute.attribute`'s (a number of images or None: no ``"auto"``);
        the information term is of the first layer's capacity.
      See :func:`iba_jax.attribute.iba` for the others. ``aux.alpha`` and ``aux.lam`` have one
      channel (the shared damping).

    Example:
      >>> import jax
      >>> from iba_jax.models import DenseNet, densenet_tiny
      >>> from iba_jax.attribute import IBAConfig
      >>> from iba_jax.stats import estimate_feature_stats
      >>> net = DenseNet(densenet_tiny())
      >>> variables = net.init(jax.random.key(0), 64)
      >>> data = jax.random.normal(jax.random.key(1), (16, 64, 64, 3))
      >>> layers = ("denseblock1", "denseblock2", "denseblock3")
      >>> stats = estimate_feature_stats(net, variables, [data], layers)
      >>> quick = IBAConfig(steps=3, samples=2)  # fast to compile, with unroll=False
      >>> maps, aux = coiba(net, variables, stats, data[:2], 0, config=quick, unroll=False,
      ...                   key=jax.random.key(2))
      >>> maps.shape, aux.lam.shape
      ((2, 64, 64), (2, 16, 16, 1))
    """
    layers = check_layer_stack(model, layers, stats)
    if images_per_call == "auto":
        raise ValueError("images_per_call: coiba takes a number of images per call; got 'auto'.")
    check_run_arguments(unroll, images_per_call)
    if len(layers) > 1:
        require(model, "run_between", "CoIBA at several layers")
    check_images(model, images)
    check_optimizer(optimizer, config)
    targets = prepare_targets(model, images, targets, model_loss)
    batch = np.shape(images)[0]
    if noise is None:
        draws: Draws = layer_draws(key, None, batch, config.steps)
    else:
        missing = [layer for layer in layers if layer not in noise]
        if missing:
            raise ValueError(
                f"noise: expected standard normals for every layer; missing {missing}."
            )
        draws = tuple(layer_draws(None, noise[layer], batch, config.steps) for layer in layers)
    compiled = functools.partial(
        _coiba_compiled,
        variables,
        tuple(stats[layer] for layer in layers),
        model=model,
        layers=layers,
        model_loss=model_loss,
        bottleneck=bottleneck,
        information=information,
        optimizer=optimizer,
        unroll=bool(unroll),
    )
    maps, aux = call_in_chunks(
        lambda *per_image: compiled(*per_image, config),
        (jnp.asarray(images), targets, draws),
        images_per_call,
    )
    check_maps("+".join(layers), maps, aux, config.beta)
    return maps, aux
