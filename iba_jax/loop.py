"""The compiled per-image optimisation of α: the loop under every IBA method.

Per-image bottleneck optimisation, compiled once and vmapped over images, from public pieces:
``IBAConfig`` holds the method's settings (a pytree whose one leaf is β, so a sweep over β
compiles once), ``optimise_alpha`` runs any optax optimizer on any per-step loss of α (a
``lax.scan``), ``read_out`` turns its :class:`Trajectory` into the capacity a map is made of,
and ``compiled_attribution`` is the whole program (encode, then per layer a ``vmap`` over
images of: loss from the bottleneck form, model loss and information term; optimise; read out).
The public functions of ``iba_jax.attribute`` check their inputs and call it; ``iba_jax.coiba``
builds another bottleneck from the same pieces.

Defaults are the reference's: β = 10, 10 Adam steps with learning rate 1, 10 samples per step,
α₀ = 5, smoothing σ = 1, min_std = 0.01, and the map read out from the capacity of the last
evaluated λ (that of α after 9 of its 10 updates), as the reference implementation does.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import DTypeLike

from iba_jax import checks
from iba_jax.bottleneck import (
    Bottleneck,
    capacity,
    damping,
    iba_bottleneck,
    mean_capacity,
    noise_from_standard_normal,
    normalized_features,
    standard_normal,
)
from iba_jax.inputs import check_batch_targets, check_stats_shape
from iba_jax.maps import to_bits_map
from iba_jax.models.protocol import Model, Variables
from iba_jax.objectives import ModelLoss, TargetTransform, objective, target_bce
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


def _flatten_config(config: IBAConfig) -> tuple[tuple[Any], IBAConfig]:
    # β is the only leaf (traced: a sweep over β compiles once), always float32 so that a Python
    # float and a NumPy one give the same program; the rest is the static part.
    beta: Any = config.beta
    if isinstance(beta, (int, float, np.number)):
        beta = np.float32(beta)
    return (beta,), dataclasses.replace(config, beta=0.0)


def _unflatten_config(static: IBAConfig, leaves: tuple[Any]) -> IBAConfig:
    config = object.__new__(IBAConfig)  # no __post_init__: β may be a tracer here
    for field in dataclasses.fields(IBAConfig):
        object.__setattr__(config, field.name, getattr(static, field.name))
    object.__setattr__(config, "beta", leaves[0])
    return config


jax.tree_util.register_pytree_node(IBAConfig, _flatten_config, _unflatten_config)


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


class LoopPieces(NamedTuple):
    """The pluggable functions of ``compiled_attribution`` (its static arguments of that name;
    the defaults are IBA's): what a memory estimate compiles to size the user's program."""

    model_loss: ModelLoss = target_bce
    target_transform: TargetTransform | None = None
    bottleneck: Bottleneck = iba_bottleneck
    information: InformationTerm = mean_capacity
    optimizer: optax.GradientTransformation | None = None


class Prior(NamedTuple):
    """The noise prior of one layer's bottleneck, as the loop uses it (``prior_of``)."""

    mean: jax.Array
    std: jax.Array
    active: jax.Array


def prior_of(stats: FeatureStats, min_std: float, dtype: DTypeLike) -> Prior:
    """The layer's feature statistics as its noise prior: σ floored at ``min_std``, in the
    features' ``dtype``."""
    prior = Prior(stats.mean, jnp.maximum(stats.std, min_std), stats.active)
    return Prior(*(jnp.asarray(a, dtype) for a in prior))


class Trajectory(NamedTuple):
    """One image's optimisation of α (:func:`optimise_alpha`).

    Attributes:
      alpha: α after the last update.
      capacity: the capacity (nats) of the last λ the loss evaluated (that of α before the last
        update), as the loss function returned it.
      loss, model_loss, information_loss: the loss and its two terms at each step ``(steps,)``.
    """

    alpha: jax.Array
    capacity: jax.Array
    loss: jax.Array
    model_loss: jax.Array
    information_loss: jax.Array


Draw = TypeVar("Draw")  # one step's randomness: a PRNG key, noise, or a tuple of them
LossFunction = Callable[[jax.Array, Draw], tuple[jax.Array, tuple[Any, Any, jax.Array]]]
"""``(alpha, draw) -> (total, (model term, information term, capacity))`` of one step."""


def optimizer_of(
    config: IBAConfig, optimizer: optax.GradientTransformation | None = None
) -> optax.GradientTransformation:
    """``optimizer``, or by default Adam with ``config.learning_rate``, as torch computes it
    (``iba_jax.optim.adam``)."""
    return adam(config.learning_rate) if optimizer is None else optimizer


def optimise_alpha(
    loss_fn: LossFunction[Draw],
    alpha0: jax.Array,
    draws: Draw,
    *,
    optimizer: optax.GradientTransformation,
    unroll: bool = True,
    capacity_shape: tuple[int, ...] | None = None,
) -> Trajectory:
    """Minimises ``loss_fn`` over α, one ``optimizer`` step per entry of ``draws`` (a
    ``lax.scan``).

    Args:
      loss_fn: the loss of one step, see :data:`LossFunction`; differentiated in α.
      alpha0: the initial α.
      draws: one entry per step on axis 0 (PRNG keys, injected noise, or a tuple of them:
        every leaf has the steps first), each step's passed to ``loss_fn``.
      optimizer: any optax transformation of α's gradient.
      unroll: unroll the scan over steps when compiling. XLA:CPU runs a rolled loop (a while
        loop) about 2x slower than the unrolled one (benchmarks/attribution.py); unrolling
        costs compile time (about 15 s for DenseNet-121), which ``unroll=False`` saves. It
        changes how the loop runs, not what it computes.
      capacity_shape: the shape of the capacity ``loss_fn`` returns; α's by default.

    Returns:
      The :class:`Trajectory`; :func:`read_out` turns it into the map's capacity.
    """

    def step(carry: tuple, draw: Draw) -> tuple[tuple, tuple]:
        alpha, opt_state, _ = carry
        (total, (model_term, information, cap)), grad = jax.value_and_grad(loss_fn, has_aux=True)(
            alpha, draw
        )
        updates, opt_state = optimizer.update(grad, opt_state, alpha)
        alpha = optax.apply_updates(alpha, updates)
        return (alpha, opt_state, cap), (total, model_term, information)

    shape = alpha0.shape if capacity_shape is None else capacity_shape
    init = (alpha0, optimizer.init(alpha0), jnp.zeros(shape, alpha0.dtype))
    (alpha, _, last_cap), (totals, model_terms, informations) = jax.lax.scan(
        step, init, draws, unroll=unroll
    )
    return Trajectory(alpha, last_cap, totals, model_terms, informations)


def read_out(
    trajectory: Trajectory, r: jax.Array, active: jax.Array, *, config: IBAConfig
) -> tuple[jax.Array, AttributionAux]:
    """The capacity (nats) a map is made from, and the image's :class:`AttributionAux`.

    ``config.readout``: ``"last"`` the capacity of the last evaluated λ (the reference),
    ``"final"`` that of λ after the last update, from the normalised features ``r`` and the
    ``active`` mask. A trajectory whose loss was not finite at some step gives NaN: never a
    plausible-looking map of a broken objective.
    """
    lam = damping(trajectory.alpha, config.sigma)
    cap = trajectory.capacity if config.readout == "last" else capacity(r, lam) * active
    cap = jnp.where(jnp.all(jnp.isfinite(trajectory.loss)), cap, jnp.nan)
    aux = AttributionAux(
        trajectory.loss,
        trajectory.model_loss,
        trajectory.information_loss,
        trajectory.alpha,
        lam,
        cap if config.return_capacity else None,
    )
    return cap, aux


def is_injected(draws: jax.Array) -> bool:
    """Whether ``draws`` are injected standard normals rather than PRNG keys."""
    return not jnp.issubdtype(draws.dtype, jax.dtypes.prng_key)


def check_draws(
    layer: str, draws: jax.Array, batch: int, feature_shape: tuple[int, ...], config: IBAConfig
) -> None:
    """``draws`` at ``layer`` must be, per image, ``config.steps`` PRNG keys or injected
    standard normals ``(steps, samples, *feature_shape)``."""
    per_image = (
        (config.steps, config.samples, *feature_shape) if is_injected(draws) else (config.steps,)
    )
    if tuple(draws.shape) != (batch, *per_image):
        raise ValueError(
            f"noise: expected standard-normal draws of shape (images, steps, samples, h, w, c) "
            f"= {(batch, *per_image)} at {layer!r}; got {tuple(draws.shape)}."
        )


def information_of(
    information: InformationTerm, r: jax.Array, lam: jax.Array, prior: Prior
) -> tuple[jax.Array, jax.Array]:
    """``(information term, capacity)`` of one image: the capacity (nats per element) of the
    normalised features ``r`` ``(h, w, c)`` under the damping ``lam`` (broadcast to ``r``),
    zero where the feature is inactive, and ``information`` of it, which must be a scalar."""
    cap = capacity(r, lam) * prior.active
    info = information(cap)
    if jnp.shape(info) != ():
        raise ValueError(
            f"information: expected a scalar (one image's information term) from {cap.shape} "
            f"capacities; got shape {jnp.shape(info)}."
        )
    return info, cap


def bottlenecked(
    bottleneck: Bottleneck, features: jax.Array, lam: jax.Array, n: jax.Array, prior: Prior
) -> jax.Array:
    """Z of one image for each noise sample: ``bottleneck(features, lam, ε)`` with ε drawn
    from the prior by the standard normals ``n`` ``(samples, h, w, c)``, zero where the
    feature is inactive. ``features`` and ``lam`` are one image's (``(h, w, c)`` or one sample
    ``(1, h, w, c)``, broadcast); Z must have ε's shape, or one sample of it (a form that
    ignores the noise)."""
    features = features if features.ndim == n.ndim else features[None]
    lam = lam if lam.ndim == n.ndim else lam[None]
    eps = noise_from_standard_normal(n, prior.mean[None], prior.std[None])
    z = bottleneck(features, lam, eps)
    if (
        jnp.ndim(z) != eps.ndim
        or jnp.shape(z)[0] not in (1, eps.shape[0])
        or (jnp.shape(z)[1:] != eps.shape[1:])
    ):
        raise ValueError(
            f"bottleneck: expected Z of the noise's shape (samples, h, w, c) = {eps.shape} (or "
            f"one sample, {(1, *eps.shape[1:])}); got shape {jnp.shape(z)}."
        )
    return jnp.broadcast_to(z, eps.shape) * prior.active[None]


def _optimise_one(
    tail: Callable[[jax.Array], jax.Array],
    features: jax.Array,
    target: jax.Array,
    draws: jax.Array,
    prior: Prior,
    *,
    config: IBAConfig,
    model_loss: ModelLoss,
    bottleneck: Bottleneck,
    information: InformationTerm,
    optimizer: optax.GradientTransformation,
    unroll: bool,
) -> tuple[jax.Array, AttributionAux]:
    """Optimises α for one image's ``features`` ``(h, w, c)``; returns (capacity, aux)."""
    r = normalized_features(features, prior.mean, prior.std)
    injected = is_injected(draws)

    def loss_fn(alpha: jax.Array, draw: jax.Array) -> tuple[jax.Array, tuple]:
        lam = damping(alpha, config.sigma)
        info, cap = information_of(information, r, lam, prior)
        n = draw if injected else standard_normal(draw, (config.samples, *features.shape))
        z = bottlenecked(bottleneck, features, lam, n, prior)
        total, model_term = objective(model_loss, tail(z), target, info, config.beta)
        return total, (model_term, info, cap)

    alpha0 = jnp.full(features.shape, config.initial_alpha, features.dtype)
    trajectory = optimise_alpha(loss_fn, alpha0, draws, optimizer=optimizer, unroll=unroll)
    return read_out(trajectory, r, prior.active, config=config)


def _optimise_layer(
    model: Model,
    variables: Variables,
    layer: str,
    features: jax.Array,
    stats: FeatureStats,
    targets: jax.Array | None,
    draws: jax.Array,
    image_shape: tuple[int, ...],
    *,
    config: IBAConfig,
    model_loss: ModelLoss,
    target_transform: TargetTransform | None,
    bottleneck: Bottleneck,
    information: InformationTerm,
    optimizer: optax.GradientTransformation | None,
    unroll: bool,
) -> tuple[jax.Array, AttributionAux]:
    """Maps ``(B, H, W)`` and aux for a batch of features of ``layer``."""
    feature_shape = tuple(features.shape[1:])
    check_stats_shape(layer, stats, feature_shape)
    check_draws(layer, draws, features.shape[0], feature_shape, config)
    tail = functools.partial(model.decode, variables, layer=layer)
    if target_transform is not None:  # e.g. the Deviation loss's Φ(X), computed once
        targets = target_transform(jax.lax.stop_gradient(tail(features)))
    if targets is None:
        raise ValueError(
            "targets: expected one target per image; got None (only a target_transform makes "
            "the targets from the clean outputs)."
        )
    argument = "targets" if target_transform is None else "target_transform"
    check_batch_targets(argument, targets, features.shape[0], model_loss)
    prior = prior_of(stats, config.min_std, features.dtype)
    one = functools.partial(
        _optimise_one,
        tail,
        config=config,
        model_loss=model_loss,
        bottleneck=bottleneck,
        information=information,
        optimizer=optimizer_of(config, optimizer),
        unroll=unroll,
    )
    cap, aux = jax.vmap(one, in_axes=(0, 0, 0, None))(features, targets, draws, prior)
    return to_bits_map(cap, image_shape), aux


_STATIC = (
    "model",
    "layers",
    "model_loss",
    "target_transform",
    "bottleneck",
    "information",
    "optimizer",
    "unroll",
)


@functools.partial(jax.jit, static_argnames=_STATIC)
def compiled_attribution(
    variables: Variables,
    stats: tuple[FeatureStats, ...],
    images: jax.Array,
    targets: jax.Array | None,
    draws: tuple[jax.Array, ...],
    config: IBAConfig,
    *,
    model: Model,
    layers: tuple[str, ...],
    model_loss: ModelLoss,
    target_transform: TargetTransform | None = None,
    bottleneck: Bottleneck = iba_bottleneck,
    information: InformationTerm = mean_capacity,
    optimizer: optax.GradientTransformation | None = None,
    unroll: bool = True,
) -> tuple[tuple[jax.Array, ...], tuple[AttributionAux, ...]]:
    """Encodes ``images`` once, then per layer optimises every image's bottleneck (``vmap``).

    ``config`` is a pytree whose only leaf is β: a sweep over β reuses the compilation. The
    static arguments (the model, layers, the pluggable functions and ``unroll``, see
    :func:`optimise_alpha`) must be hashable and equal across calls for a call to reuse the
    compiled program. ``targets`` are ignored (pass None)
    when ``target_transform`` makes them from the clean outputs.
    """
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
            images.shape[1:3],
            config=config,
            model_loss=model_loss,
            target_transform=target_transform,
            bottleneck=bottleneck,
            information=information,
            optimizer=optimizer,
            unroll=unroll,
        )
        for layer, layer_stats, layer_draws in zip(layers, stats, draws, strict=True)
    ]
    return tuple(m for m, _ in results), tuple(a for _, a in results)
