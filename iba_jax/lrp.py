"""Layer-wise Relevance Propagation (Bach et al., 2015) for the DenseNets and ResNets here.

LRP redistributes the target logit, layer by layer, onto the layer's inputs. For a layer with
inputs ``x``, outputs ``y`` and relevance ``R`` on the outputs, the two rules here are

* ε: ``R_x = x ⊙ Jᵀ (R / (y + ε·sign y))`` (J the layer's Jacobian, y with its bias);
* α1β0 (z⁺): ``R_x = x⁺ ⊙ W⁺ᵀ s + x⁻ ⊙ W⁻ᵀ s`` with ``s = R / z⁺`` and
  ``z⁺ = W⁺x⁺ + W⁻x⁻`` (the positive contributions only, bias ignored). Outputs with no
  positive contribution pass nothing on.

How they are computed: write the relevance of every tensor ``t`` as ``R = t ⊙ G``. ReLUs, max
pooling (winner takes all), average pooling, the global mean, concatenation and addition pass
``G`` on as their ordinary gradient, which is exactly what LRP does there (the densely connected
shortcuts therefore add up the relevance reaching a feature through every later layer; a
ResNet's residual addition y = a + b splits R_y into a ⊙ G and b ⊙ G, in proportion to the
summands, which conserves it). Each
Conv, Dense and BatchNorm layer (BatchNorm in inference mode is a per-channel affine map, a
linear layer with a diagonal weight) is intercepted (``flax.linen.intercept_methods``) and
returns ``z·sg(y/z) + sg(y − z·y/z)``, with ``sg`` the stop-gradient and ``z`` the rule's
denominator: the same value ``y`` forwards, while the gradient becomes ``Jzᵀ (G·y/z)``, which
is the rule above. The relevance of the input is then ``image ⊙ ∂ logit / ∂ image`` through
the modified network: one forward and one backward pass per batch, jit-compiled, with the
model's code untouched.

With no biases (and BatchNorm means at zero) and ε → 0, both rules conserve relevance: the
input relevance sums to the logit (for α1β0 when every BatchNorm scale is positive, so that no
relevance reaches an output without positive contributions). For a positive logit, α1β0
relevance is non-negative everywhere. In a ResNet only ε conserves: α1β0 stops the relevance of
a BatchNorm's negative outputs, and there (before a residual addition) no ReLU has already
stopped it.

References:
  Bach et al. On Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise
  Relevance Propagation. PLoS ONE 2015.
  Montavon, Binder, Lapuschkin, Samek, Müller. Layer-Wise Relevance Propagation: An Overview.
  In: Explainable AI, LNCS 11700, 2019.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import Any, Literal, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.module import InterceptorContext
from numpy.typing import ArrayLike

from iba_jax import checks
from iba_jax.baselines import class_targets, summed_target_logits
from iba_jax.models.densenet import DenseNet, Variables
from iba_jax.models.resnet import ResNet

Rule = Literal["epsilon", "alpha1beta0"]
RULES: tuple[str, ...] = ("epsilon", "alpha1beta0")

_LINEAR_LAYERS = (nn.Conv, nn.Dense, nn.BatchNorm)
# True while a rule evaluates a layer with modified weights (those calls are not intercepted).
_inside_rule: contextvars.ContextVar[bool] = contextvars.ContextVar("inside_rule", default=False)


def relevance_backward(y: jax.Array, z: jax.Array, epsilon: float = 0.0) -> jax.Array:
    """``y`` in the forward pass; in the backward pass the gradient of ``z`` times ``y / z``.

    ``z`` is a rule's denominator (``y`` itself for ε, ``z⁺`` for α1β0), stabilised by
    ``epsilon·sign(z)`` (sign 0 counted as +); where it is 0 the relevance stops.
    """
    sg = jax.lax.stop_gradient
    denominator = z + epsilon * jnp.where(z >= 0, 1.0, -1.0)
    zero = denominator == 0
    ratio = jnp.where(zero, 0.0, y / jnp.where(zero, 1.0, denominator))
    return z * sg(ratio) + sg(y - z * ratio)


def _call_plain(
    module: nn.Module, variables: dict[str, Any], x: jax.Array, **kwargs: Any
) -> jax.Array:
    """``module`` applied to ``x`` with the given variables, outside interception."""
    token = _inside_rule.set(True)
    try:
        return cast(jax.Array, module.clone(parent=None).apply(variables, x, **kwargs))
    finally:
        _inside_rule.reset(token)


def _positive_part(module: nn.Module, x: jax.Array, y: jax.Array, kwargs: dict) -> jax.Array:
    """z⁺ of a Conv or Dense layer (weights split by sign, no bias), or of a BatchNorm (one input
    per output: its linear part where positive)."""
    if isinstance(module, nn.BatchNorm):
        bias = _call_plain(module, dict(module.variables), jnp.zeros_like(x), **kwargs)
        return jax.nn.relu(y - bias)
    kernel: jax.Array = module.get_variable("params", "kernel")
    plain = module.clone(parent=None, use_bias=False)
    positive = _call_plain(plain, {"params": {"kernel": jnp.maximum(kernel, 0)}}, jax.nn.relu(x))
    negative = _call_plain(plain, {"params": {"kernel": jnp.minimum(kernel, 0)}}, -jax.nn.relu(-x))
    return positive + negative


def _interceptor(rule: str, epsilon: float) -> Callable:
    def intercept(
        next_fun: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        context: InterceptorContext,
    ) -> Any:
        module = context.module
        y = next_fun(*args, **kwargs)
        if (
            context.method_name != "__call__"
            or _inside_rule.get()
            or not isinstance(module, _LINEAR_LAYERS)
        ):
            return y
        if rule == "epsilon":
            return relevance_backward(y, y, epsilon)
        return relevance_backward(y, _positive_part(module, args[0], y, kwargs), epsilon)

    return intercept


@functools.partial(jax.jit, static_argnames=("model", "rule", "epsilon"))
def _relevance(
    model: DenseNet | ResNet,
    variables: Variables,
    x: jax.Array,
    targets: jax.Array,
    rule: Rule,
    epsilon: float,
) -> jax.Array:
    def target_logits(x: jax.Array) -> jax.Array:
        with nn.intercept_methods(_interceptor(rule, epsilon)):
            return summed_target_logits(model.apply(variables, x), targets)

    return x * jax.grad(target_logits)(x)


def lrp(
    model: DenseNet | ResNet,
    variables: Variables,
    images: ArrayLike,
    targets: ArrayLike,
    *,
    rule: Rule = "alpha1beta0",
    epsilon: float = 1e-6,
) -> jax.Array:
    """LRP relevance of each image's target logit, ``(N, H, W, C)``; sums to about the logit.

    Args:
      rule: ``"alpha1beta0"`` (default: non-negative maps of the evidence for the class) or
        ``"epsilon"``; applied to every Conv, Dense and BatchNorm layer.
      epsilon: the stabiliser of the denominators (the ε of the ε-rule; larger values absorb
        the relevance of weak, contradictory contributions and give smoother maps).

    Example:
      >>> import jax
      >>> from iba_jax.models import DenseNet, densenet_tiny
      >>> net = DenseNet(densenet_tiny())
      >>> variables = net.init(jax.random.key(0), 64)
      >>> x = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
      >>> relevance = lrp(net, variables, x, [0, 2], rule="epsilon", epsilon=1e-9)
      >>> logits = net.apply(variables, x)
      >>> bool(jax.numpy.allclose(relevance.sum(axis=(1, 2, 3)), logits[:, [0, 2]].diagonal()))
      True
    """
    if not isinstance(model, DenseNet | ResNet):  # its rules know these layers only
        raise ValueError(
            f"model: LRP's rules cover the layers of this package's DenseNet and ResNet; got "
            f"{type(model).__name__}."
        )
    checks.check_choice("rule", rule, RULES)
    epsilon = float(epsilon)
    if not epsilon >= 0:
        raise ValueError(f"epsilon: expected a number >= 0; got {epsilon!r}.")
    targets = class_targets(model, images, targets)
    return _relevance(model, variables, jnp.asarray(images, jnp.float32), targets, rule, epsilon)
