"""The compiled per-image optimisation of α: the loop under every IBA method.

Per-image bottleneck optimisation, compiled once and vmapped over images.

``IBAConfig`` holds the settings, ``optimise_alpha`` is one image's Adam loop and readout,
``compiled_attribution`` the whole program (encode, then per layer a ``vmap`` of the loop over
images). The public functions of ``iba_jax.attribute`` check their inputs and call it.

Defaults are the reference's: β = 10, 10 Adam steps with learning rate 1, 10 samples per step,
α₀ = 5, smoothing σ = 1, min_std = 0.01, and the map read out from the capacity of the last
evaluated λ (that of α after 9 of its 10 updates), as the reference implementation does.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from iba_jax import checks
from iba_jax.bottleneck import (
    capacity,
    damping,
    iba_bottleneck,
    inverse_bottleneck,
    mean_capacity,
    noise_from_standard_normal,
    normalized_features,
    standard_normal,
)
from iba_jax.inputs import check_stats_shape
from iba_jax.maps import to_bits_map
from iba_jax.models.densenet import DenseNet, Variables
from iba_jax.objectives import ModelLoss, objective
from iba_jax.optim import adam
from iba_jax.stats import FeatureStats

Readout = Literal["last", "final"]


@dataclasses.dataclass(frozen=True)
class IBAConfig:
    """Settings of the per-image optimisation (the reference's defaults).

    Attributes:
      beta: weight β of the information term (≥ 0).
      steps: Adam steps per image.
      samples: noise samples per step (the model loss is their mean).
      learning_rate: Adam's learning rate (β₁ = 0.9, β₂ = 0.999, ε = 1e-8 as torch).
      initial_alpha: α₀; λ = sigmoid(5) ≈ 0.993 lets nearly all signal through at the start.
      sigma: width of the Gaussian smoothing of λ (0 = none).
      min_std: the feature std is clamped below at this value.
      readout: ``"last"`` reads the map from the capacity of the last evaluated λ (the
        reference), ``"final"`` from λ after the last update.
      return_capacity: also return the per-element capacity (nats) in the aux record.
      unroll: unroll the loop over steps when compiling. XLA:CPU runs a rolled loop (a while
        loop) about 2x slower than the unrolled one (benchmarks/attribution.py); unrolling costs
        compile time (about 15 s for DenseNet-121), which ``unroll=False`` saves.
      images_per_call: run the compiled function on chunks of this many images (the last chunk
        may compile once more) instead of the whole batch at once. It bounds memory; on a
        2-core CPU 4 images per call are also fastest per image (benchmarks/README.md).
        ``"auto"``: as many as fit in 80 % of the device's free memory, from XLA's memory
        analysis of the program (``iba_jax.memory``; two compilations on first use).
    """

    beta: float = 10.0
    steps: int = 10
    samples: int = 10
    learning_rate: float = 1.0
    initial_alpha: float = 5.0
    sigma: float = 1.0
    min_std: float = 0.01
    readout: Readout = "last"
    return_capacity: bool = False
    unroll: bool = True
    images_per_call: int | Literal["auto"] | None = None

    def __post_init__(self) -> None:
        if not (np.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"beta: expected a finite value >= 0; got {self.beta}.")
        checks.check_positive_int("steps", self.steps)
        checks.check_positive_int("samples", self.samples)
        for name in ("learning_rate", "min_std"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name}: expected a finite value > 0; got {value}.")
        if not (np.isfinite(self.sigma) and self.sigma >= 0):
            raise ValueError(f"sigma: expected a finite value >= 0; got {self.sigma}.")
        if not np.isfinite(self.initial_alpha):
            raise ValueError(f"initial_alpha: expected a finite value; got {self.initial_alpha}.")
        checks.check_choice("readout", self.readout, ("last", "final"))
        if self.images_per_call not in (None, "auto"):
            checks.check_positive_int("images_per_call", self.images_per_call)


class AttributionAux(NamedTuple):
    """What the optimisation leaves besides the maps; leading axis: images.

    Attributes:
      loss: total loss of each step ``(B, steps)``.
      model_loss: its model term ``(B, steps)``.
      information_loss: its information term (by default the mean capacity, nats) ``(B, steps)``.
      alpha: α after the last update ``(B, h, w, c)``.
      lam: λ = smooth(sigmoid(α)) after the last update ``(B, h, w, c)``.
      capacity: the capacity the map was read from, nats ``(B, h, w, c)``; None unless asked.
    """

    loss: jax.Array
    model_loss: jax.Array
    information_loss: jax.Array
    alpha: jax.Array
    lam: jax.Array
    capacity: jax.Array | None


InformationTerm = Callable[[jax.Array], jax.Array]
"""The capacity of one image's bottleneck ``(h, w, c)``, nats -> the scalar that β weighs."""


class Prior(NamedTuple):
    """The noise prior of one layer's bottleneck, as the loop uses it (``prior_of``)."""

    mean: jax.Array
    std: jax.Array
    active: jax.Array


def prior_of(stats: FeatureStats, min_std: float, dtype: Any) -> Prior:
    """The layer's feature statistics as its noise prior: σ floored at ``min_std``, in the
    features' ``dtype``."""
    prior = Prior(stats.mean, jnp.maximum(stats.std, min_std), stats.active)
    return Prior(*(jnp.asarray(a, dtype) for a in prior))


def optimise_alpha(
    loss_fn: Any,
    alpha0: jax.Array,
    draws: jax.Array,
    r: jax.Array,
    active: jax.Array,
    *,
    config: IBAConfig,
) -> tuple[jax.Array, AttributionAux]:
    """Runs Adam on α over the steps (``lax.scan`` over ``draws``) and reads out the capacity.

    Args:
      loss_fn: ``(alpha, draw) -> (total, (model term, information, capacity))`` of one step;
        the capacity is that of the λ it evaluated.
      alpha0: the initial α.
      draws: one entry per step (a PRNG key or injected noise), passed to ``loss_fn``.
      r, active: normalised features and active mask, for the ``"final"`` readout.
      config: steps, learning rate, smoothing, readout.

    Returns:
      (capacity read out in nats, :class:`AttributionAux` of this image).
    """
    optimiser = adam(config.learning_rate)

    def step(carry: tuple, draw: jax.Array) -> tuple[tuple, tuple]:
        alpha, opt_state, _ = carry
        (total, (model_term, information, cap)), grad = jax.value_and_grad(loss_fn, has_aux=True)(
            alpha, draw
        )
        updates, opt_state = optimiser.update(grad, opt_state)
        alpha = optax.apply_updates(alpha, updates)
        return (alpha, opt_state, cap), (total, model_term, information)

    init = (alpha0, optimiser.init(alpha0), jnp.zeros_like(r))
    (alpha, _, last_cap), (totals, model_terms, informations) = jax.lax.scan(
        step, init, draws, unroll=config.unroll
    )
    lam = damping(alpha, config.sigma)
    cap = last_cap if config.readout == "last" else capacity(r, lam) * active
    # A map of an objective that was not finite at some step is not a map: NaN, never silent.
    cap = jnp.where(jnp.all(jnp.isfinite(totals)), cap, jnp.nan)
    aux = AttributionAux(
        totals, model_terms, informations, alpha, lam, cap if config.return_capacity else None
    )
    return cap, aux


def _optimise_one(
    tail: Any,
    features: jax.Array,
    target: jax.Array,
    draws: jax.Array,
    beta: jax.Array,
    prior: Prior,
    *,
    config: IBAConfig,
    model_loss: ModelLoss,
    information: InformationTerm,
    inverse: bool,
    injected: bool,
) -> tuple[jax.Array, AttributionAux]:
    """Optimises α for one image's ``features`` ``(h, w, c)``; returns (capacity, aux)."""
    r = normalized_features(features, prior.mean, prior.std)
    bottleneck = inverse_bottleneck if inverse else iba_bottleneck

    def loss_fn(alpha: jax.Array, draw: jax.Array) -> tuple[jax.Array, tuple]:
        lam = damping(alpha, config.sigma)
        cap = capacity(r, lam) * prior.active
        info = information(cap)
        n = draw if injected else standard_normal(draw, (config.samples, *features.shape))
        # n is (samples, h, w, c); everything else gets an explicit leading samples axis.
        eps = noise_from_standard_normal(n, prior.mean[None], prior.std[None])
        z = bottleneck(features[None], lam[None], eps) * prior.active[None]
        total, model_term = objective(model_loss, tail(z), target, info, beta)
        return total, (model_term, info, cap)

    alpha0 = jnp.full(features.shape, config.initial_alpha, features.dtype)
    return optimise_alpha(loss_fn, alpha0, draws, r, prior.active, config=config)


def _optimise_layer(
    model: DenseNet,
    variables: Variables,
    layer: str,
    features: jax.Array,
    stats: FeatureStats,
    targets: jax.Array,
    draws: jax.Array,
    beta: jax.Array,
    image_shape: tuple[int, int],
    *,
    config: IBAConfig,
    model_loss: ModelLoss,
    information: InformationTerm,
    inverse: bool,
    injected: bool,
    clean_targets: bool,
) -> tuple[jax.Array, AttributionAux]:
    """Maps ``(B, H, W)`` and aux for a batch of features of ``layer``."""
    feature_shape = tuple(features.shape[1:])
    check_stats_shape(layer, stats, feature_shape)
    expected_draws = (config.steps, config.samples, *feature_shape) if injected else (config.steps,)
    if tuple(draws.shape[1:]) != expected_draws:
        raise ValueError(
            f"noise: expected standard-normal draws of shape (images, steps, samples, h, w, c) "
            f"= {(features.shape[0], *expected_draws)}; got {tuple(draws.shape)}."
        )
    tail = functools.partial(model.decode, variables, layer=layer)
    if clean_targets:  # the Deviation loss: targets are the clean image's outputs, computed once
        targets = jax.lax.stop_gradient(tail(features))
    prior = prior_of(stats, config.min_std, features.dtype)
    one = functools.partial(
        _optimise_one,
        tail,
        config=config,
        model_loss=model_loss,
        information=information,
        inverse=inverse,
        injected=injected,
    )
    cap, aux = jax.vmap(one, in_axes=(0, 0, 0, None, None))(features, targets, draws, beta, prior)
    return to_bits_map(cap, image_shape), aux


_STATIC = (
    "model",
    "layers",
    "config",
    "model_loss",
    "information",
    "inverse",
    "injected",
    "clean_targets",
)


@functools.partial(jax.jit, static_argnames=_STATIC)
def compiled_attribution(
    variables: Variables,
    stats: tuple[FeatureStats, ...],
    images: jax.Array,
    targets: jax.Array,
    draws: tuple[jax.Array, ...],
    *,
    beta: jax.Array,
    model: DenseNet,
    layers: tuple[str, ...],
    config: IBAConfig,
    model_loss: ModelLoss,
    information: InformationTerm = mean_capacity,
    inverse: bool,
    injected: bool,
    clean_targets: bool,
) -> tuple[tuple[jax.Array, ...], tuple[AttributionAux, ...]]:
    features = model.encode(variables, images, layers)
    results = [
        _optimise_layer(
            model,
            variables,
            layer,
            features[layer],
            layer_stats,
            targets,
            layer_draws,
            beta,
            images.shape[1:3],
            config=config,
            model_loss=model_loss,
            information=information,
            inverse=inverse,
            injected=injected,
            clean_targets=clean_targets,
        )
        for layer, layer_stats, layer_draws in zip(layers, stats, draws, strict=True)
    ]
    return tuple(m for m, _ in results), tuple(a for _, a in results)


def static_config(config: IBAConfig) -> IBAConfig:
    """The part of ``config`` that the compiled function depends on: β is traced (so a sweep
    over β does not recompile) and the chunking happens outside."""
    return dataclasses.replace(config, beta=0.0, images_per_call=None)
