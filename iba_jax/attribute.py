"""Per-image bottleneck optimisation, compiled once and vmapped over images.

For each image the network is cut at ``layer``: the features before the cut are computed once
(``encode``); a per-element α of the feature shape is optimised by Adam through the rest of the
network only (``decode``), with no gradient with respect to the model's weights. Every step draws
``samples`` noise samples of the same image, so one step evaluates the tail on ``samples``
bottlenecked copies; ``vmap`` over images folds images × samples into one convolution batch. The
whole loop (encode, ``lax.scan`` over the steps, readout) is one ``jax.jit`` compilation; a
second call with the same shapes and settings does not recompile, and β is a traced value, so a
sweep over β does not recompile either.

Public functions:
  :func:`attribute`       the general loop: any model loss, IBA or inverse bottleneck;
  :func:`iba`             IBA (Schulz et al., 2020) with sigmoid BCE on the target class;
  :func:`inverse_iba`     Inverse IBA (Khakzar et al., 2021) with the bounded negated BCE;
  :func:`regression_iba`  Regression IBA with the MSE, RM or Deviation loss;
  :func:`multilayer_iba`  IBA at several layers, binarised and intersected.

Defaults are the reference's: β = 10, 10 Adam steps with learning rate 1, 10 samples per step,
α₀ = 5, smoothing σ = 1, min_std = 0.01, and the map read out from the capacity of the last
evaluated λ (that of α after 9 of its 10 updates), as the reference implementation does.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
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
    noise_from_standard_normal,
    normalized_features,
    standard_normal,
)
from iba_jax.diagnostics import warn_if_flat
from iba_jax.maps import ThresholdRule, binarize, to_bits_map
from iba_jax.models.densenet import DenseNet, Variables, head_function
from iba_jax.objectives import (
    DEFAULT_NEGATION_BOUND,
    ModelLoss,
    Negated,
    RegressionMaximisation,
    SquaredError,
    check_output_index,
    objective,
    softmax_cross_entropy,
    target_bce,
)
from iba_jax.optim import adam
from iba_jax.stats import FeatureStats

Readout = Literal["last", "final"]
_INDEX_LOSSES = (target_bce, softmax_cross_entropy)


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
      information_loss: its information term (mean capacity, nats) ``(B, steps)``.
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


class _Prior(NamedTuple):
    mean: jax.Array
    std: jax.Array
    active: jax.Array


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
    prior: _Prior,
    *,
    config: IBAConfig,
    model_loss: ModelLoss,
    inverse: bool,
    injected: bool,
) -> tuple[jax.Array, AttributionAux]:
    """Optimises α for one image's ``features`` ``(h, w, c)``; returns (capacity, aux)."""
    r = normalized_features(features, prior.mean, prior.std)
    bottleneck = inverse_bottleneck if inverse else iba_bottleneck

    def loss_fn(alpha: jax.Array, draw: jax.Array) -> tuple[jax.Array, tuple]:
        lam = damping(alpha, config.sigma)
        cap = capacity(r, lam) * prior.active
        information = jnp.mean(cap)
        n = draw if injected else standard_normal(draw, (config.samples, *features.shape))
        # n is (samples, h, w, c); everything else gets an explicit leading samples axis.
        eps = noise_from_standard_normal(n, prior.mean[None], prior.std[None])
        z = bottleneck(features[None], lam[None], eps) * prior.active[None]
        total, model_term = objective(model_loss, tail(z), target, information, beta)
        return total, (model_term, information, cap)

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
    prior = _Prior(stats.mean, jnp.maximum(stats.std, config.min_std), stats.active)
    prior = _Prior(*(jnp.asarray(a, features.dtype) for a in prior))
    one = functools.partial(
        _optimise_one,
        tail,
        config=config,
        model_loss=model_loss,
        inverse=inverse,
        injected=injected,
    )
    cap, aux = jax.vmap(one, in_axes=(0, 0, 0, None, None))(features, targets, draws, beta, prior)
    return to_bits_map(cap, image_shape), aux


_STATIC = ("model", "layers", "config", "model_loss", "inverse", "injected", "clean_targets")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _attribute_compiled(
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
            inverse=inverse,
            injected=injected,
            clean_targets=clean_targets,
        )
        for layer, layer_stats, layer_draws in zip(layers, stats, draws, strict=True)
    ]
    return tuple(m for m, _ in results), tuple(a for _, a in results)


# --------------------------------------------------------------------------- argument handling


def check_stats_shape(layer: str, stats: FeatureStats, feature_shape: tuple[int, ...]) -> None:
    """Raises unless ``stats`` have the shape ``(h, w, c)`` of ``layer``'s features."""
    if tuple(stats.mean.shape) != tuple(feature_shape):
        raise ValueError(
            f"stats: expected statistics of the {layer!r} feature shape {tuple(feature_shape)} "
            f"(h, w, c) for these images; got {tuple(stats.mean.shape)}. Estimate them at "
            "the same layer and image size."
        )


def check_layer_stack(
    model: DenseNet, layers: Sequence[str], stats: Mapping[str, FeatureStats]
) -> tuple[str, ...]:
    """Checks that ``layers`` are distinct, in network order, and all have statistics."""
    layers = tuple(layers)
    checks.check_names("layers", layers, model.layer_names)
    order = [model.layer_names.index(layer) for layer in layers]
    if order != sorted(set(order)):
        raise ValueError(f"layers: expected distinct layers in network order; got {layers}.")
    missing = [layer for layer in layers if layer not in stats]
    if missing:
        raise ValueError(f"stats: expected FeatureStats for every layer; missing {missing}.")
    return layers


def static_config(config: IBAConfig) -> IBAConfig:
    """The part of ``config`` that the compiled function depends on: β is traced (so a sweep
    over β does not recompile) and the chunking happens outside."""
    return dataclasses.replace(config, beta=0.0, images_per_call=None)


def call_in_chunks(compiled: Any, per_image: tuple[Any, ...], config: IBAConfig) -> Any:
    """``compiled(*per_image)``, called on chunks of ``config.images_per_call`` images (every
    leaf of ``per_image`` has the images on axis 0) and concatenated; at once when None."""
    batch = jax.tree.leaves(per_image)[0].shape[0]
    size = config.images_per_call
    if size is None or batch <= size:
        return compiled(*per_image)
    parts = [
        compiled(*jax.tree.map(lambda a, i=i: a[i : i + size], per_image))
        for i in range(0, batch, size)
    ]
    return jax.tree.map(lambda *chunks: jnp.concatenate(chunks), *parts)


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_losses(layer: str, aux: AttributionAux) -> None:
    """Raises, naming the first image and step, when the optimisation's loss was NaN or
    infinite: the gradient of a NaN model term can still be finite (an index past the outputs
    reads NaN but passes no gradient), so α moves by the information term alone and the map
    looks plausible. Traced (under a caller's ``jit``), the maps are NaN instead
    (``optimise_alpha``)."""
    if not _is_concrete(aux.loss):
        return
    finite = np.isfinite(np.asarray(aux.model_loss)) & np.isfinite(np.asarray(aux.loss))
    if not finite.all():
        image, step = np.argwhere(~finite)[0]
        value = np.asarray(aux.model_loss)[image, step]
        raise FloatingPointError(
            f"model_loss: expected a finite loss; got {value} at step {step} of image {image} "
            f"(bottleneck at {layer!r}). Check the objective: are its class indices within the "
            "model's outputs, and is it bounded below?"
        )


def _check_finite(name: str, x: Any) -> None:
    if _is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(np.asarray(x))))
        raise ValueError(f"{name}: expected finite values; got {bad} NaN or infinite entries.")


def _batch_targets(targets: Any, batch: int, dtype: Any) -> jax.Array:
    targets = jnp.asarray(targets, dtype)
    if targets.ndim == 0:
        targets = jnp.broadcast_to(targets, (batch,))
    if targets.shape[0] != batch:
        raise ValueError(
            f"targets: expected one target per image ({batch}); got shape {tuple(targets.shape)}."
        )
    return targets


def _check_class_targets(given: Any, targets: jax.Array, num_classes: int) -> None:
    """``targets`` (``given`` as cast to int32) must be one whole class index per image."""
    if targets.ndim != 1:
        raise ValueError(
            f"targets: expected one integer class index per image; got shape "
            f"{tuple(targets.shape)}."
        )
    if _is_concrete(given):
        values = np.asarray(given)
        whole = np.issubdtype(values.dtype, np.integer) or (
            np.issubdtype(values.dtype, np.floating) and np.all(values == np.round(values))
        )
        if values.dtype == bool or not whole:
            raise ValueError(
                f"targets: expected integer class indices; got {values.dtype} {values.tolist()}."
            )
    check_output_index("targets", targets, num_classes)


def prepare_targets(model: DenseNet, images: Any, targets: Any, model_loss: ModelLoss) -> jax.Array:
    """One target per image; class indices are checked against the outputs for the losses
    that take them (``target_bce``, ``softmax_cross_entropy``). The images' shape is checked
    first, since it says how many targets there must be."""
    checks.check_image_batch(
        "images", images, channels=model.config.in_channels, min_size=model.config.min_image_size
    )
    batch = np.shape(images)[0]
    if model_loss in _INDEX_LOSSES:
        given = targets
        targets = _batch_targets(targets, batch, jnp.int32)
        _check_class_targets(given, targets, model.config.num_classes)
        return targets
    return _batch_targets(targets, batch, jnp.asarray(targets).dtype)


def check_images(model: DenseNet, images: Any) -> None:
    """Images must be a finite channels-last batch the model accepts."""
    checks.check_image_batch(
        "images", images, channels=model.config.in_channels, min_size=model.config.min_image_size
    )
    _check_finite("images", images)


def _typed_key(key: jax.Array) -> jax.Array:
    """A typed PRNG key (array): raw uint32 keys from ``jax.random.PRNGKey`` are wrapped."""
    key = jnp.asarray(key)
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    return key


def _layer_keys(key: jax.Array, count: int) -> tuple[jax.Array, ...]:
    """``count`` keys from one key, or from one key per image (then one per image each)."""
    key = _typed_key(key)
    if key.ndim == 0:
        return tuple(jax.random.split(key, count))
    per_image = jax.vmap(lambda k: jax.random.split(k, count))(key)  # (images, count)
    return tuple(per_image[:, j] for j in range(count))


def _layer_draws(
    key: jax.Array | None, noise: jax.Array | None, batch: int, steps: int, name: str
) -> jax.Array:
    """Per image: ``steps`` PRNG keys, or the injected noise (checked against shapes later)."""
    if noise is not None:
        _check_finite("noise", noise)
        return jnp.asarray(noise, jnp.float32)
    if key is None:
        raise ValueError(
            f"{name}: expected a PRNG key (jax.random.key(seed)) or injected noise; got neither."
        )
    key = _typed_key(key)
    keys = jax.random.split(key, batch) if key.ndim == 0 else key
    if keys.shape != (batch,):
        raise ValueError(
            f"{name}: expected one key or one key per image ({batch}); got shape {keys.shape}."
        )
    return jax.vmap(lambda k: jax.random.split(k, steps))(keys)


def _run(
    model: DenseNet,
    variables: Variables,
    stats: Sequence[FeatureStats],
    images: jax.Array,
    targets: jax.Array,
    *,
    layers: tuple[str, ...],
    config: IBAConfig,
    model_loss: ModelLoss,
    inverse: bool,
    keys: Sequence[jax.Array | None],
    noises: Sequence[jax.Array | None],
    clean_targets: bool = False,
) -> tuple[tuple[jax.Array, ...], tuple[AttributionAux, ...]]:
    checks.check_names("layer", layers, model.layer_names)
    check_images(model, images)
    for layer_stats in stats:
        if not isinstance(layer_stats, FeatureStats):
            raise ValueError(
                f"stats: expected FeatureStats (from estimate_feature_stats); "
                f"got {type(layer_stats).__name__}."
            )
    injected = {n is not None for n in noises}
    if len(injected) != 1:
        raise ValueError("noise: give injected noise for every layer or for none.")
    batch = images.shape[0]
    draws = tuple(
        _layer_draws(k, n, batch, config.steps, "key") for k, n in zip(keys, noises, strict=True)
    )
    compiled = functools.partial(
        _attribute_compiled,
        variables,
        tuple(stats),
        beta=jnp.float32(config.beta),
        model=model,
        layers=layers,
        config=static_config(config),
        model_loss=model_loss,
        inverse=inverse,
        injected=injected.pop(),
        clean_targets=clean_targets,
    )
    if config.images_per_call == "auto":
        from iba_jax import memory  # here: memory imports this module (its program)

        fitting = memory.images_per_call(model, layers, images.shape[1:3], config)
        config = dataclasses.replace(config, images_per_call=fitting)
    maps, aux = call_in_chunks(compiled, (jnp.asarray(images), targets, draws), config)
    for layer, layer_maps, layer_aux in zip(layers, maps, aux, strict=True):
        check_losses(layer, layer_aux)
        if _is_concrete(layer_maps) and not np.all(np.isfinite(np.asarray(layer_maps))):
            raise FloatingPointError(
                f"the {layer!r} maps contain NaN or infinite values: check the model loss "
                "(is it bounded below?) and the feature statistics."
            )
        warn_if_flat(layer, layer_aux, config.beta)
    return maps, aux


# --------------------------------------------------------------------------- public API


def attribute(
    model: DenseNet,
    variables: Variables,
    stats: FeatureStats,
    images: jax.Array,
    targets: Any,
    *,
    model_loss: ModelLoss,
    layer: str = "denseblock3",
    inverse: bool = False,
    config: IBAConfig = IBAConfig(),
    key: jax.Array | None = None,
    noise: jax.Array | None = None,
) -> tuple[jax.Array, AttributionAux]:
    """The general per-image bottleneck optimisation: any model loss, IBA or inverse bottleneck.

    Args:
      model: the network.
      variables: its variables (not differentiated).
      stats: feature statistics of ``layer`` (see ``estimate_feature_stats``).
      images: model inputs ``(B, H, W, C)``, already normalised.
      targets: one target per image, as ``model_loss`` expects (a scalar is broadcast).
      model_loss: ``(logits (S, K), target) -> (S,)`` per-sample losses (see ``objectives``).
      layer: where the bottleneck sits.
      inverse: use the inverse bottleneck Z = λε + (1 − λ)R.
      config: optimisation settings.
      key: a PRNG key (split per image), or one key per image ``(B,)``.
      noise: instead of ``key``, standard-normal draws ``(B, steps, samples, h, w, c)``.

    Returns:
      ``(maps, aux)``: maps ``(B, H, W)`` in bits per pixel, and an :class:`AttributionAux`.
    """
    images = jnp.asarray(images)
    targets = prepare_targets(model, images, targets, model_loss)
    maps, aux = _run(
        model,
        variables,
        (stats,),
        images,
        targets,
        layers=(layer,),
        config=config,
        model_loss=model_loss,
        inverse=inverse,
        keys=(key,),
        noises=(noise,),
    )
    return maps[0], aux[0]


def iba(
    model: DenseNet,
    variables: Variables,
    stats: FeatureStats,
    images: jax.Array,
    targets: Any,
    *,
    layer: str = "denseblock3",
    model_loss: ModelLoss = target_bce,
    config: IBAConfig = IBAConfig(),
    key: jax.Array | None = None,
    noise: jax.Array | None = None,
) -> tuple[jax.Array, AttributionAux]:
    """IBA maps: the features *sufficient* for the target class.

    Minimises model_loss(Z) + β·capacity with Z = λR + (1 − λ)ε. The default model loss is the
    sigmoid BCE of the target class (multi-label X-ray models); pass ``model_loss=vector_bce``
    with one-hot targets for the reference's all-class BCE, or ``softmax_cross_entropy`` for a
    single-label model.

    Args:
      targets: the class index of each image ``(B,)`` (or one index for all), or what a custom
        ``model_loss`` expects.
      See :func:`attribute` for the others.

    Example:
      >>> import jax
      >>> from iba_jax.models import DenseNet, densenet_tiny
      >>> from iba_jax.stats import estimate_feature_stats
      >>> net = DenseNet(densenet_tiny())
      >>> variables = net.init(jax.random.key(0), 64)
      >>> data = jax.random.normal(jax.random.key(1), (16, 64, 64, 3))
      >>> stats = estimate_feature_stats(net, variables, [data], "denseblock3")
      >>> rolled = IBAConfig(unroll=False)  # the paper's 10 steps; compiles in a fraction
      >>> maps, aux = iba(net, variables, stats, data[:2], targets=[0, 2], config=rolled,
      ...                 key=jax.random.key(2))
      >>> maps.shape, aux.loss.shape
      ((2, 64, 64), (2, 10))
    """
    return attribute(
        model,
        variables,
        stats,
        images,
        targets,
        model_loss=model_loss,
        layer=layer,
        config=config,
        key=key,
        noise=noise,
    )


def inverse_iba(
    model: DenseNet,
    variables: Variables,
    stats: FeatureStats,
    images: jax.Array,
    targets: Any,
    *,
    layer: str = "denseblock3",
    model_loss: ModelLoss = target_bce,
    bound: float = DEFAULT_NEGATION_BOUND,
    config: IBAConfig = IBAConfig(),
    key: jax.Array | None = None,
    noise: jax.Array | None = None,
) -> tuple[jax.Array, AttributionAux]:
    """Inverse IBA maps: *all* features predictive of the target class.

    Minimises −min(model_loss(Z), bound) + β·capacity with Z = λε + (1 − λ)R (Khakzar et al.,
    2021): λ learns to remove the evidence. The model loss is capped at ``bound`` per sample
    before negation (see ``objectives.Negated``), so the objective has a floor.

    Example:
      >>> import jax
      >>> from iba_jax.models import DenseNet, densenet_tiny
      >>> from iba_jax.stats import estimate_feature_stats
      >>> net = DenseNet(densenet_tiny())
      >>> variables = net.init(jax.random.key(0), 64)
      >>> data = jax.random.normal(jax.random.key(1), (16, 64, 64, 3))
      >>> stats = estimate_feature_stats(net, variables, [data], "denseblock3")
      >>> rolled = IBAConfig(unroll=False)  # compiles in a fraction of the time
      >>> maps, _ = inverse_iba(net, variables, stats, data[:1], 1, config=rolled,
      ...                       key=jax.random.key(2))
      >>> maps.shape
      (1, 64, 64)
    """
    targets = prepare_targets(model, images, targets, model_loss)  # before the negation
    return attribute(
        model,
        variables,
        stats,
        images,
        targets,
        model_loss=Negated(model_loss, bound),
        layer=layer,
        inverse=True,
        config=config,
        key=key,
        noise=noise,
    )


REGRESSION_LOSSES: tuple[str, ...] = ("mse", "rm", "deviation")


def regression_iba(
    model: DenseNet,
    variables: Variables,
    stats: FeatureStats,
    images: jax.Array,
    targets: Any = None,
    *,
    loss: Literal["mse", "rm", "deviation"] = "mse",
    output: int = 0,
    layer: str = "denseblock3",
    config: IBAConfig = IBAConfig(),
    key: jax.Array | None = None,
    noise: jax.Array | None = None,
) -> tuple[jax.Array, AttributionAux]:
    """Regression IBA maps for a score Φ = head(logits)[output] (e.g. BrixIA severity 0–18).

    Losses (Khakzar et al., 2021): ``"mse"`` (Φ(Z) − y)² with y = ``targets`` (a label or any
    score of interest); ``"rm"`` −Φ(Z)² (regression maximisation; no targets); ``"deviation"``
    (Φ(Z) − Φ(X))², with Φ(X) the prediction on the clean image, computed once from the clean
    features (no targets). Φ includes the model's head (ReLU for a regression head).

    Example:
      >>> import jax
      >>> from iba_jax.models import DenseNet, densenet_tiny
      >>> from iba_jax.stats import estimate_feature_stats
      >>> net = DenseNet(densenet_tiny(num_classes=1, head="relu"))
      >>> variables = net.init(jax.random.key(0), 64)
      >>> data = jax.random.normal(jax.random.key(1), (16, 64, 64, 3))
      >>> stats = estimate_feature_stats(net, variables, [data], "denseblock3")
      >>> rolled = IBAConfig(unroll=False)  # compiles in a fraction of the time
      >>> maps, _ = regression_iba(net, variables, stats, data[:2], loss="deviation",
      ...                          config=rolled, key=jax.random.key(2))
      >>> maps.shape
      (2, 64, 64)
    """
    checks.check_choice("loss", loss, REGRESSION_LOSSES)
    if not 0 <= output < model.config.num_classes:
        raise ValueError(
            f"output: expected an output index in [0, {model.config.num_classes}); got {output}."
        )
    batch = np.shape(images)[0]
    link = head_function(model.config.head)  # equal across calls: no recompilation
    if loss == "mse":
        if targets is None:
            raise ValueError("targets: the 'mse' loss needs a target score per image; got None.")
        targets = _batch_targets(targets, batch, jnp.float32)
        _check_finite("targets", targets)
        model_loss: ModelLoss = SquaredError(output, link)
    elif targets is not None:
        raise ValueError(f"targets: the {loss!r} loss takes no targets; got {targets!r}.")
    elif loss == "rm":
        targets = jnp.zeros((batch,), jnp.float32)
        model_loss = RegressionMaximisation(output, link)
    else:
        targets = jnp.zeros((batch, model.config.num_classes), jnp.float32)  # replaced by Φ(X)
        model_loss = SquaredError(output, link, target_is_logits=True)
    maps, aux = _run(
        model,
        variables,
        (stats,),
        jnp.asarray(images),
        targets,
        layers=(layer,),
        config=config,
        model_loss=model_loss,
        inverse=False,
        keys=(key,),
        noises=(noise,),
        clean_targets=loss == "deviation",
    )
    return maps[0], aux[0]


class MultiLayerResult(NamedTuple):
    """Multi-layer IBA.

    Attributes:
      map: the finest layer's map gated by ``mask`` ``(B, H, W)``.
      mask: intersection of the binarised maps of the coarser layers ``(B, H, W)``.
      layer_maps: each layer's IBA map ``{layer: (B, H, W)}``.
      aux: each layer's :class:`AttributionAux`.
    """

    map: jax.Array
    mask: jax.Array
    layer_maps: dict[str, jax.Array]
    aux: dict[str, AttributionAux]


DEFAULT_MULTILAYER = ("denseblock1", "denseblock2", "denseblock3")


def multilayer_iba(
    model: DenseNet,
    variables: Variables,
    stats: Mapping[str, FeatureStats],
    images: jax.Array,
    targets: Any,
    *,
    layers: Sequence[str] = DEFAULT_MULTILAYER,
    rule: ThresholdRule = "l2",
    threshold: float | None = None,
    model_loss: ModelLoss = target_bce,
    config: IBAConfig = IBAConfig(),
    key: jax.Array | None = None,
    noise: Mapping[str, jax.Array] | None = None,
) -> MultiLayerResult:
    """Multi-layer IBA (Khakzar et al., 2021): IBA at several layers, intersected.

    IBA runs independently at each layer with its own statistics (the features of all layers
    come from one forward pass, and all layers' loops are one compilation). The result is the
    map of the finest (first, in network order) layer, kept where every coarser layer's map is
    above its threshold: T(IBA_L1) ∩ T(IBA_L2) ∩ ... with the first map's values retained.

    Args:
      stats: ``{layer: FeatureStats}`` for every layer in ``layers``.
      layers: the layers, finest first (default denseblock1, denseblock2, denseblock3).
      rule, threshold: how the coarser maps are binarised (see ``maps.binarize``; the default
        is the reference's fixed threshold on L2-normalised maps, 0.9/√(H·W)).
      key: one PRNG key (split per layer and image).
      noise: instead of ``key``, ``{layer: (B, steps, samples, h, w, c)}`` standard normals.
      See :func:`iba` for the others.

    Example:
      >>> import jax
      >>> from iba_jax.models import DenseNet, densenet_tiny
      >>> from iba_jax.stats import estimate_feature_stats
      >>> net = DenseNet(densenet_tiny())
      >>> variables = net.init(jax.random.key(0), 64)
      >>> data = jax.random.normal(jax.random.key(1), (16, 64, 64, 3))
      >>> layers = ("denseblock1", "denseblock2", "denseblock3")
      >>> stats = estimate_feature_stats(net, variables, [data], layers)
      >>> quick = IBAConfig(steps=3, samples=2, unroll=False)  # fast to compile
      >>> result = multilayer_iba(net, variables, stats, data[:2], 0, config=quick,
      ...                         key=jax.random.key(2))
      >>> result.map.shape, result.mask.dtype
      ((2, 64, 64), dtype('bool'))
    """
    layers = check_layer_stack(model, layers, stats)
    targets = prepare_targets(model, images, targets, model_loss)
    if noise is not None:
        noises = tuple(noise[layer] for layer in layers)
        keys: tuple[jax.Array | None, ...] = (None,) * len(layers)
    else:
        noises = (None,) * len(layers)
        keys = _layer_keys(key, len(layers)) if key is not None else noises
    maps, aux = _run(
        model,
        variables,
        tuple(stats[layer] for layer in layers),
        jnp.asarray(images),
        targets,
        layers=layers,
        config=config,
        model_loss=model_loss,
        inverse=False,
        keys=keys,
        noises=noises,
    )
    mask = jnp.ones(maps[0].shape, bool)
    for coarse in maps[1:]:
        mask = mask & binarize(coarse, rule, threshold)
    return MultiLayerResult(
        map=jnp.where(mask, maps[0], 0.0),
        mask=mask,
        layer_maps=dict(zip(layers, maps, strict=True)),
        aux=dict(zip(layers, aux, strict=True)),
    )
