"""Objectives of the bottleneck optimisation, built from small pure parts.

A **model loss** maps the model's logits for the noisy samples of one image, ``(S, K)``, and that
image's target to one loss per sample, ``(S,)``; the attribution loop averages it over the
samples. An **objective** adds the information term:

  loss = mean_s model_loss(logits_s, target) + β · mean(capacity)

Ready-made model losses: :func:`target_bce` (sigmoid BCE on the target class, the multi-label
default), :func:`vector_bce` (BCE against a target vector over all classes, as the reference
code), :func:`softmax_cross_entropy`, and the regression losses :class:`SquaredError` (MSE to a
target; against the clean prediction, :class:`CleanPrediction`, it is the Deviation loss) and
:class:`RegressionMaximisation` (RM). :class:`Negated` turns a loss into the bounded negative
used by Inverse IBA. A new objective is a few lines, for example a weighted sum over two
classes::

    def two_findings(logits, target):
        del target  # fixed classes (an index past the model's outputs is refused)
        return 0.7 * target_bce(logits, 0) + 0.3 * target_bce(logits, 2)

    maps, aux = iba(net, variables, stats, images, targets, layer="denseblock3",
                    model_loss=two_findings)

and it runs in the same compiled loop. A loss whose target is one class index per image says so
with :func:`class_index_loss`; the targets are then checked against the model's outputs before
the loop runs (an index past them is refused, a fractional one too).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from iba_jax.models.protocol import identity

ModelLoss = Callable[[jax.Array, jax.Array], jax.Array]
"""(logits (S, K), target) -> per-sample losses (S,)."""

TargetTransform = Callable[[jax.Array], jax.Array]
"""The model's outputs on the clean images (logits (B, K)) -> one target per image (B, ...):
targets made by the model itself (:class:`CleanPrediction` for the Deviation loss)."""

DEFAULT_NEGATION_BOUND = 10.0


def check_output_index(name: str, index: object, outputs: int) -> None:
    """Raises unless a class or output index known at trace time is in ``[0, outputs)``.

    JAX does not raise on an index past the end: ``x[..., K]`` reads the last output and
    ``jnp.take`` fills with NaN, either of which would give a map of the wrong objective. An
    index that is traced (one target per image inside the compiled loop) is checked where the
    targets are prepared, and a NaN loss stops the attribution (``attribute.check_losses``).
    """
    if isinstance(index, jax.core.Tracer):
        return
    values = np.asarray(index)
    if values.size and (values.min() < 0 or values.max() >= outputs):
        raise ValueError(
            f"{name}: expected an index in [0, {outputs}) (the model's outputs); got "
            f"{values.tolist()}."
        )


def class_index_loss(loss: ModelLoss) -> ModelLoss:
    """Marks ``loss`` as one whose target is an integer class index per image (as
    :func:`target_bce`): the attribution functions then check the targets against the model's
    outputs. A loss class says so with a class attribute ``takes_class_index = True``.

    Example:
      >>> @class_index_loss
      ... def margin(logits, target):
      ...     return -jnp.take(logits, target, axis=-1)
      >>> takes_class_index(margin), takes_class_index(vector_bce)
      (True, False)
    """
    loss.takes_class_index = True  # type: ignore[attr-defined]
    return loss


def takes_class_index(loss: ModelLoss) -> bool:
    """Whether ``loss`` takes a class index per image (:func:`class_index_loss`)."""
    return bool(getattr(loss, "takes_class_index", False))


@class_index_loss
def target_bce(logits: jax.Array, target: jax.Array) -> jax.Array:
    """Sigmoid binary cross-entropy of class ``target`` (an integer index) against label 1.

    Example:
      >>> float(target_bce(jnp.array([[0.0, 3.0]]), 0)[0])  # -log(sigmoid(0)) = log 2
      0.693147...
    """
    check_output_index("target", target, logits.shape[-1])
    chosen = jnp.take(logits, jnp.asarray(target, jnp.int32), axis=-1)
    return optax.sigmoid_binary_cross_entropy(chosen, jnp.ones_like(chosen))


def vector_bce(logits: jax.Array, target: jax.Array) -> jax.Array:
    """Sigmoid BCE against a target vector ``(K,)`` (e.g. one-hot), averaged over the K classes.

    This is the reference code's choice for multi-label models: it also pushes every other class
    towards its label in ``target``.
    """
    labels = jnp.broadcast_to(jnp.asarray(target, logits.dtype), logits.shape)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels), axis=-1)


@class_index_loss
def softmax_cross_entropy(logits: jax.Array, target: jax.Array) -> jax.Array:
    """Softmax cross-entropy of class ``target`` (an integer index), for single-label models."""
    check_output_index("target", target, logits.shape[-1])
    labels = jnp.broadcast_to(jnp.asarray(target, jnp.int32), logits.shape[:-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


# The parametrised losses are frozen dataclasses, not closures: equal settings hash equal, so
# the compiled attribution loop (which takes the loss as a static argument) is reused.


@dataclasses.dataclass(frozen=True)
class Negated:
    """−min(loss, bound): a loss to *maximise*, bounded below by −bound (Inverse IBA).

    −BCE has no floor (it falls without limit as the target logit → −∞), which would let the
    model term drown the information term. Each sample's loss is therefore capped at ``bound``
    (default 10 nats: a target probability of e^−10 ≈ 4.5·10^−5) before negation; beyond it the
    sample's gradient is zero and only the information term moves λ.

    Example:
      >>> loss = Negated(target_bce)
      >>> [round(float(v), 4) for v in loss(jnp.array([[0.0], [-30.0]]), 0)]
      [-0.6931, -10.0]
    """

    loss: ModelLoss
    bound: float = DEFAULT_NEGATION_BOUND

    @property
    def takes_class_index(self) -> bool:
        """As the negated loss (its targets are checked alike)."""
        return takes_class_index(self.loss)

    def __call__(self, logits: jax.Array, target: jax.Array) -> jax.Array:
        return -jnp.minimum(self.loss(logits, target), self.bound)


@dataclasses.dataclass(frozen=True)
class SquaredError:
    """(Φ(Z) − y)² with Φ = ``link(logits)[..., output]`` and y the target.

    With y a label this is Regression IBA's MSE loss; with y = Φ(X), the prediction on the clean
    image (targets from :class:`CleanPrediction`), it is the Deviation loss. ``link`` is the
    model's head (ReLU for BrixIA regression), identity by default: pass ``model.link``, a
    module-level function, so that equal models give equal losses and the compiled loop is
    reused.
    """

    output: int = 0
    link: Callable[[jax.Array], jax.Array] = identity

    def __call__(self, logits: jax.Array, target: jax.Array) -> jax.Array:
        check_output_index("output", self.output, logits.shape[-1])
        return (self.link(logits)[..., self.output] - target) ** 2


@dataclasses.dataclass(frozen=True)
class CleanPrediction:
    """A target transform: each image's target is its clean prediction Φ(X) =
    ``link(logits)[..., output]``, computed once before the optimisation (the Deviation loss is
    ``SquaredError`` against it).

    Example:
      >>> CleanPrediction(1)(jnp.array([[0.5, 2.0], [1.0, -3.0]]))
      Array([ 2., -3.], dtype=float32)
    """

    output: int = 0
    link: Callable[[jax.Array], jax.Array] = identity

    def __call__(self, logits: jax.Array) -> jax.Array:
        check_output_index("output", self.output, logits.shape[-1])
        return self.link(logits)[..., self.output]


@dataclasses.dataclass(frozen=True)
class RegressionMaximisation:
    """RM: −Φ(Z)², minimised, so the score Φ = ``link(logits)[..., output]`` is maximised."""

    output: int = 0
    link: Callable[[jax.Array], jax.Array] = identity

    def __call__(self, logits: jax.Array, target: jax.Array) -> jax.Array:
        del target
        check_output_index("output", self.output, logits.shape[-1])
        return -(self.link(logits)[..., self.output] ** 2)


def objective(
    model_loss: ModelLoss,
    logits: jax.Array,
    target: jax.Array,
    information: jax.Array,
    beta: jax.Array | float,
) -> tuple[jax.Array, jax.Array]:
    """``(total, model term)``: mean of the per-sample model loss + β · information. The
    loss must give one value per sample (per row of ``logits``)."""
    per_sample = model_loss(logits, target)
    if jnp.shape(per_sample) != logits.shape[:1]:
        raise ValueError(
            f"model_loss: expected one loss per sample, shape {logits.shape[:1]} for logits of "
            f"shape {logits.shape}; got shape {jnp.shape(per_sample)}."
        )
    model_term = jnp.mean(per_sample)
    return model_term + beta * information, model_term
