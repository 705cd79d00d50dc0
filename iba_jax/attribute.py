"""The public IBA functions: inputs checked, the compiled loop run (``iba_jax.loop``), losses
and maps checked.

Public functions:
  :func:`attribute`       the general loop, composed: any model loss, bottleneck form,
                          information term, optimizer and targets;
  :func:`iba`             IBA (Schulz et al., 2020) with sigmoid BCE on the target class;
  :func:`inverse_iba`     Inverse IBA (Khakzar et al., 2021) with the bounded negated BCE;
  :func:`regression_iba`  Regression IBA with the MSE, RM or Deviation loss;
  :func:`multilayer_iba`  IBA at several layers, binarised and intersected.

``IBAConfig`` and ``AttributionAux`` (from ``iba_jax.loop``) are re-exported here. Defaults
are the reference's: β = 10, 10 Adam steps with learning rate 1, 10 samples per step, α₀ = 5,
smoothing σ = 1, min_std = 0.01, and the map read out from the capacity of the last evaluated λ.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Literal, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpy.typing import ArrayLike

from iba_jax import checks, memory
from iba_jax.bottleneck import Bottleneck, iba_bottleneck, inverse_bottleneck, mean_capacity
from iba_jax.diagnostics import warn_if_flat
from iba_jax.inputs import (
    batch_targets,
    check_finite,
    check_images,
    check_layer_stack,
    is_concrete,
    layer_draws,
    layer_keys,
    prepare_targets,
)
from iba_jax.loop import (
    AttributionAux,
    IBAConfig,
    InformationTerm,
    LoopPieces,
    compiled_attribution,
    optimise_alpha,
    read_out,
)
from iba_jax.maps import ThresholdRule, binarize
from iba_jax.models.protocol import Model, Variables, check_model, standard_layers
from iba_jax.objectives import (
    DEFAULT_NEGATION_BOUND,
    CleanPrediction,
    ModelLoss,
    Negated,
    RegressionMaximisation,
    SquaredError,
    TargetTransform,
    target_bce,
)
from iba_jax.stats import FeatureStats

__all__ = [  # the loop's and the checks' names that callers import from here
    "AttributionAux",
    "IBAConfig",
    "ImagesPerCall",
    "check_images",
    "check_layer_stack",
    "optimise_alpha",
    "prepare_targets",
    "read_out",
]


# How many images one compiled call takes: a number, "auto" (as many as fit in 80 % of the
# device's free memory, ``memory.images_per_call``) or None (the whole batch at once).
ImagesPerCall = int | Literal["auto"] | None
Outputs = TypeVar("Outputs")  # a pytree of arrays with the images on axis 0


# --------------------------------------------------------------------------- argument handling


def check_run_arguments(unroll: bool, images_per_call: ImagesPerCall) -> None:
    """Raises unless ``unroll`` is a bool and ``images_per_call`` a positive integer,
    ``"auto"`` or None."""
    if not isinstance(unroll, bool | np.bool_):
        raise ValueError(f"unroll: expected True or False; got {unroll!r}.")
    if images_per_call is None or images_per_call == "auto":
        return
    if (
        isinstance(images_per_call, bool)
        or not isinstance(images_per_call, int | np.integer)
        or images_per_call <= 0
    ):
        raise ValueError(
            "images_per_call: expected a positive integer, 'auto' or None; "
            f"got {images_per_call!r}."
        )


def call_in_chunks(
    compiled: Callable[..., Outputs], per_image: tuple[object, ...], images_per_call: int | None
) -> Outputs:
    """``compiled(*per_image)``, called on chunks of ``images_per_call`` images (every leaf of
    ``per_image`` has the images on axis 0) and concatenated; at once when None."""
    batch = jax.tree.leaves(per_image)[0].shape[0]
    size = images_per_call
    if size is None or batch <= size:
        return compiled(*per_image)
    parts = [
        compiled(*jax.tree.map(lambda a, i=i: a[i : i + size], per_image))
        for i in range(0, batch, size)
    ]
    return jax.tree.map(lambda *chunks: jnp.concatenate(chunks), *parts)


def check_maps(layer: str, maps: jax.Array, aux: AttributionAux, beta: float) -> None:
    """After a run: its losses finite (``check_losses``), its maps finite, and a warning when
    λ ended flat (``diagnostics.warn_if_flat``). Traced (under a caller's ``jit``), only what
    can be checked there is."""
    check_losses(layer, aux)
    if is_concrete(maps) and not np.all(np.isfinite(np.asarray(maps))):
        raise FloatingPointError(
            f"the {layer!r} maps contain NaN or infinite values: check the model loss "
            "(is it bounded below?) and the feature statistics."
        )
    warn_if_flat(layer, aux, beta)


def check_losses(layer: str, aux: AttributionAux) -> None:
    """Raises, naming the first image and step, when the optimisation's loss was NaN or
    infinite: the gradient of a NaN model term can still be finite (an index past the outputs
    reads NaN but passes no gradient), so α moves by the information term alone and the map
    looks plausible. Traced (under a caller's ``jit``), the maps are NaN instead
    (``optimise_alpha``)."""
    if not is_concrete(aux.loss):
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


def check_optimizer(optimizer: optax.GradientTransformation | None, config: IBAConfig) -> None:
    """A given optimizer replaces Adam with ``config.learning_rate``: a learning rate set in
    the config as well would be silently unused, so it is refused."""
    if optimizer is None:
        return
    if not isinstance(optimizer, optax.GradientTransformation):
        raise ValueError(
            f"optimizer: expected an optax.GradientTransformation; got {type(optimizer).__name__}."
        )
    if config.learning_rate != IBAConfig.learning_rate:
        raise ValueError(
            f"config.learning_rate: unused when an optimizer is given (set the rate in the "
            f"optimizer); got {config.learning_rate}."
        )


def _run(
    model: Model,
    variables: Variables,
    stats: Sequence[FeatureStats],
    images: jax.Array,
    targets: jax.Array | None,
    *,
    layers: tuple[str, ...],
    config: IBAConfig,
    model_loss: ModelLoss,
    keys: Sequence[jax.Array | None],
    noises: Sequence[jax.Array | None],
    target_transform: TargetTransform | None = None,
    bottleneck: Bottleneck = iba_bottleneck,
    information: InformationTerm = mean_capacity,
    optimizer: optax.GradientTransformation | None = None,
    unroll: bool = True,
    images_per_call: ImagesPerCall = None,
) -> tuple[tuple[jax.Array, ...], tuple[AttributionAux, ...]]:
    checks.check_names("layer", layers, model.layer_names)
    check_images(model, images)
    check_optimizer(optimizer, config)
    check_run_arguments(unroll, images_per_call)
    for layer_stats in stats:
        if not isinstance(layer_stats, FeatureStats):
            raise ValueError(
                f"stats: expected FeatureStats (from estimate_feature_stats); "
                f"got {type(layer_stats).__name__}."
            )
    if len({n is not None for n in noises}) != 1:
        raise ValueError("noise: give injected noise for every layer or for none.")
    batch = images.shape[0]
    draws = tuple(layer_draws(k, n, batch, config.steps) for k, n in zip(keys, noises, strict=True))
    compiled = functools.partial(
        compiled_attribution,
        variables,
        tuple(stats),
        model=model,
        layers=layers,
        model_loss=model_loss,
        target_transform=target_transform,
        bottleneck=bottleneck,
        information=information,
        optimizer=optimizer,
        unroll=bool(unroll),
    )
    if images_per_call == "auto":
        pieces = LoopPieces(model_loss, target_transform, bottleneck, information, optimizer)
        images_per_call = memory.images_per_call(
            model, layers, images.shape[1:3], config, pieces=pieces, unroll=unroll
        )
    maps, aux = call_in_chunks(
        lambda *per_image: compiled(*per_image, config),
        (jnp.asarray(images), targets, draws),
        images_per_call,
    )
    for layer, layer_maps, layer_aux in zip(layers, maps, aux, strict=True):
        check_maps(layer, layer_maps, layer_aux, config.beta)
    return maps, aux


# --------------------------------------------------------------------------- public API


def attribute(
    model: Model,
    variables: Variables,
    stats: FeatureStats,
    images: jax.Array,
    targets: ArrayLike | TargetTransform,
    *,
    model_loss: ModelLoss,
    layer: str | None = None,
    bottleneck: Bottleneck = iba_bottleneck,
    information: InformationTerm = mean_capacity,
    optimizer: optax.GradientTransformation | None = None,
    config: IBAConfig = IBAConfig(),
    unroll: bool = True,
    images_per_call: ImagesPerCall = None,
    key: jax.Array | None = None,
    noise: jax.Array | None = None,
) -> tuple[jax.Array, AttributionAux]:
    """The general per-image bottleneck optimisation, composed from its pieces.

    Minimises mean_s model_loss(Φ(Z_s), target) + β · information(capacity) over α, with
    Z = bottleneck(R, λ, ε), λ = smooth(sigmoid(α)) and ε drawn from the feature prior. Every
    function argument is static in the compiled loop: a module-level function or an object
    equal across calls (a frozen dataclass) reuses the compilation; a new lambda compiles anew.

    Args:
      model: the network.
      variables: its variables (not differentiated).
      stats: feature statistics of ``layer`` (see ``estimate_feature_stats``).
      images: model inputs ``(B, H, W, C)``, already normalised.
      targets: one target per image, as ``model_loss`` expects (a scalar is broadcast); or a
        target transform, a function of the clean images' outputs ``(B, K) -> (B, ...)``
        (``objectives.CleanPrediction`` for the Deviation loss).
      model_loss: ``(logits (S, K), target) -> (S,)`` per-sample losses (see ``objectives``).
      layer: where the bottleneck sits (default: the model's standard bottleneck layer,
        ``models.standard_layers``: DenseNet's denseblock3, as the paper, a ResNet's layer3).
      bottleneck: the form ``(R, λ, ε) -> Z``: ``bottleneck.iba_bottleneck`` (default),
        ``bottleneck.inverse_bottleneck`` or a function of your own. The capacity is the KL of
        the IBA form at λ either way (as the reference's Inverse IBA).
      information: the information term, a function of the capacity ``(h, w, c)`` (nats) to a
        scalar (default ``bottleneck.mean_capacity``, IBA's).
      optimizer: an optax transformation of α's gradient (build it once and reuse it);
        default Adam with ``config.learning_rate`` as torch computes it.
      config: the method's settings (its mathematics).
      unroll: unroll the loop over steps when compiling: about 2x faster on XLA:CPU, at the
        cost of compile time (see ``loop.optimise_alpha``). How it runs, not what it computes.
      images_per_call: run the compiled program on chunks of this many images (the last chunk
        may compile once more) instead of the whole batch at once. It bounds memory; on a
        2-core CPU 4 images per call are also fastest per image (benchmarks/README.md).
        ``"auto"``: as many as fit in 80 % of the device's free memory, from XLA's memory
        analysis of the program (``iba_jax.memory``; two compilations on first use).
      key: a PRNG key (split per image), or one key per image ``(B,)``.
      noise: instead of ``key``, standard-normal draws ``(B, steps, samples, h, w, c)``.

    Returns:
      ``(maps, aux)``: maps ``(B, H, W)`` in bits per pixel, and an :class:`AttributionAux`.
    """
    images = jnp.asarray(images)
    check_model(model)
    layer = standard_layers(model, "layer").bottleneck if layer is None else layer
    if callable(targets):
        transform, given = targets, None
    else:
        transform, given = None, prepare_targets(model, images, targets, model_loss)
    maps, aux = _run(
        model,
        variables,
        (stats,),
        images,
        given,
        layers=(layer,),
        config=config,
        model_loss=model_loss,
        keys=(key,),
        noises=(noise,),
        target_transform=transform,
        bottleneck=bottleneck,
        information=information,
        optimizer=optimizer,
        unroll=unroll,
        images_per_call=images_per_call,
    )
    return maps[0], aux[0]


def iba(
    model: Model,
    variables: Variables,
    stats: FeatureStats,
    images: jax.Array,
    targets: ArrayLike,
    *,
    layer: str | None = None,
    model_loss: ModelLoss = target_bce,
    information: InformationTerm = mean_capacity,
    optimizer: optax.GradientTransformation | None = None,
    config: IBAConfig = IBAConfig(),
    unroll: bool = True,
    images_per_call: ImagesPerCall = None,
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
      >>> maps, aux = iba(net, variables, stats, data[:2], targets=[0, 2],
      ...                 unroll=False, key=jax.random.key(2))  # rolled: quick to compile
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
        unroll=unroll,
        images_per_call=images_per_call,
        information=information,
        optimizer=optimizer,
        key=key,
        noise=noise,
    )


def inverse_iba(
    model: Model,
    variables: Variables,
    stats: FeatureStats,
    images: jax.Array,
    targets: ArrayLike,
    *,
    layer: str | None = None,
    model_loss: ModelLoss = target_bce,
    bound: float = DEFAULT_NEGATION_BOUND,
    information: InformationTerm = mean_capacity,
    optimizer: optax.GradientTransformation | None = None,
    config: IBAConfig = IBAConfig(),
    unroll: bool = True,
    images_per_call: ImagesPerCall = None,
    key: jax.Array | None = None,
    noise: jax.Array | None = None,
) -> tuple[jax.Array, AttributionAux]:
    """Inverse IBA maps: *all* features predictive of the target class.

    Minimises −min(model_loss(Z), bound) + β·capacity with Z = λε + (1 − λ)R (Khakzar et al.,
    2021): λ learns to remove the evidence. The model loss is capped at ``bound`` per sample
    before negation (see ``objectives.Negated``), so the objective has a floor. The other
    arguments (``information``, ``optimizer``, ``config``, ``unroll``, ``images_per_call``,
    ``key``, ``noise``) are :func:`attribute`'s.

    Example:
      >>> import jax
      >>> from iba_jax.models import DenseNet, densenet_tiny
      >>> from iba_jax.stats import estimate_feature_stats
      >>> net = DenseNet(densenet_tiny())
      >>> variables = net.init(jax.random.key(0), 64)
      >>> data = jax.random.normal(jax.random.key(1), (16, 64, 64, 3))
      >>> stats = estimate_feature_stats(net, variables, [data], "denseblock3")
      >>> maps, _ = inverse_iba(net, variables, stats, data[:1], 1, unroll=False,
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
        bottleneck=inverse_bottleneck,
        config=config,
        unroll=unroll,
        images_per_call=images_per_call,
        information=information,
        optimizer=optimizer,
        key=key,
        noise=noise,
    )


REGRESSION_LOSSES: tuple[str, ...] = ("mse", "rm", "deviation")


def regression_iba(
    model: Model,
    variables: Variables,
    stats: FeatureStats,
    images: jax.Array,
    targets: ArrayLike | None = None,
    *,
    loss: Literal["mse", "rm", "deviation"] = "mse",
    output: int = 0,
    layer: str | None = None,
    information: InformationTerm = mean_capacity,
    optimizer: optax.GradientTransformation | None = None,
    config: IBAConfig = IBAConfig(),
    unroll: bool = True,
    images_per_call: ImagesPerCall = None,
    key: jax.Array | None = None,
    noise: jax.Array | None = None,
) -> tuple[jax.Array, AttributionAux]:
    """Regression IBA maps for a score Φ = head(logits)[output] (e.g. BrixIA severity 0–18).

    Losses (Khakzar et al., 2021): ``"mse"`` (Φ(Z) − y)² with y = ``targets`` (a label or any
    score of interest); ``"rm"`` −Φ(Z)² (regression maximisation; no targets); ``"deviation"``
    (Φ(Z) − Φ(X))², with Φ(X) the prediction on the clean image, computed once from the clean
    features (no targets). Φ includes the model's head (ReLU for a regression head). The other
    arguments (``information``, ``optimizer``, ``config``, ``unroll``, ``images_per_call``,
    ``key``, ``noise``) are :func:`attribute`'s.

    Example:
      >>> import jax
      >>> from iba_jax.models import DenseNet, densenet_tiny
      >>> from iba_jax.stats import estimate_feature_stats
      >>> net = DenseNet(densenet_tiny(num_classes=1, head="relu"))
      >>> variables = net.init(jax.random.key(0), 64)
      >>> data = jax.random.normal(jax.random.key(1), (16, 64, 64, 3))
      >>> stats = estimate_feature_stats(net, variables, [data], "denseblock3")
      >>> maps, _ = regression_iba(net, variables, stats, data[:2], loss="deviation",
      ...                          unroll=False, key=jax.random.key(2))
      >>> maps.shape
      (2, 64, 64)
    """
    checks.check_choice("loss", loss, REGRESSION_LOSSES)
    if not 0 <= output < model.num_outputs:
        raise ValueError(
            f"output: expected an output index in [0, {model.num_outputs}); got {output}."
        )
    batch = np.shape(images)[0]
    link = model.link  # equal across calls: no recompilation
    wanted: jax.Array | CleanPrediction
    if loss == "mse":
        if targets is None:
            raise ValueError("targets: the 'mse' loss needs a target score per image; got None.")
        wanted = batch_targets(targets, batch, jnp.float32)
        check_finite("targets", wanted)
    elif targets is not None:
        raise ValueError(f"targets: the {loss!r} loss takes no targets; got {targets!r}.")
    elif loss == "rm":
        wanted = jnp.zeros((batch,), jnp.float32)
    else:
        wanted = CleanPrediction(output, link)
    model_loss = (
        RegressionMaximisation(output, link) if loss == "rm" else SquaredError(output, link)
    )
    return attribute(
        model,
        variables,
        stats,
        images,
        wanted,
        model_loss=model_loss,
        layer=layer,
        information=information,
        optimizer=optimizer,
        config=config,
        unroll=unroll,
        images_per_call=images_per_call,
        key=key,
        noise=noise,
    )


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


def multilayer_iba(
    model: Model,
    variables: Variables,
    stats: Mapping[str, FeatureStats],
    images: jax.Array,
    targets: ArrayLike,
    *,
    layers: Sequence[str] | None = None,
    rule: ThresholdRule = "l2",
    threshold: float | None = None,
    model_loss: ModelLoss = target_bce,
    bottleneck: Bottleneck = iba_bottleneck,
    information: InformationTerm = mean_capacity,
    optimizer: optax.GradientTransformation | None = None,
    config: IBAConfig = IBAConfig(),
    unroll: bool = True,
    images_per_call: ImagesPerCall = None,
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
      layers: the layers, finest first (default: the model's standard ones,
        ``models.standard_layers``: DenseNet's denseblock1-3, as the paper, a ResNet's
        layer1-3).
      rule, threshold: how the coarser maps are binarised (see ``maps.binarize``; the default
        is the reference's fixed threshold on L2-normalised maps, 0.9/√(H·W)).
      key: one PRNG key (split per layer and image).
      noise: instead of ``key``, ``{layer: (B, steps, samples, h, w, c)}`` standard normals.
      model_loss, bottleneck, information, optimizer: as :func:`attribute`'s, at every layer
        (``inverse_bottleneck`` with ``objectives.Negated(target_bce, bound)``: multi-layer
        Inverse IBA).
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
      >>> quick = IBAConfig(steps=3, samples=2)  # fast to compile, with unroll=False
      >>> result = multilayer_iba(net, variables, stats, data[:2], 0, config=quick,
      ...                         unroll=False, key=jax.random.key(2))
      >>> result.map.shape, result.mask.dtype
      ((2, 64, 64), dtype('bool'))
    """
    layers = check_layer_stack(model, layers, stats)
    targets = prepare_targets(model, images, targets, model_loss)
    if noise is not None:
        noises: tuple[jax.Array | None, ...] = tuple(noise[layer] for layer in layers)
        keys: tuple[jax.Array | None, ...] = (None,) * len(layers)
    else:
        noises = (None,) * len(layers)
        keys = layer_keys(key, len(layers)) if key is not None else noises
    maps, aux = _run(
        model,
        variables,
        tuple(stats[layer] for layer in layers),
        jnp.asarray(images),
        targets,
        layers=layers,
        config=config,
        model_loss=model_loss,
        keys=keys,
        noises=noises,
        bottleneck=bottleneck,
        information=information,
        optimizer=optimizer,
        unroll=unroll,
        images_per_call=images_per_call,
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
