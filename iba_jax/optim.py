"""Adam for the per-image α, with the bias corrections computed accurately in float32.

``optax.adam`` evaluates the bias correction 1 − β₂ᵗ as ``1 - 0.999**t`` in float32, which for
t = 1 is 0.00099999 (relative error 1.3·10⁻⁵; 0.999 is not a float32). Over IBA's ten steps of
learning rate 1 that moves α by ~5·10⁻⁵ away from torch's Adam, which computes the corrections in
double. Here 1 − βᵗ = −expm1(t·log1p(−(1 − β))), accurate to float32 rounding, and the rest is
optax's own ``ScaleByAdamState`` and moment updates, chained with ``scale_by_learning_rate``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def _one_minus_power(beta: float, count: jax.Array) -> jax.Array:
    """1 − βᵗ without the cancellation of ``1 - beta**count`` in float32."""
    return -jnp.expm1(count.astype(jnp.float32) * jnp.log1p(jnp.float32(-(1.0 - beta))))


def scale_by_adam_accurate(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> optax.GradientTransformation:
    """Adam's scaling m̂/(√v̂ + ε) with accurate bias corrections (torch's update order)."""

    def init_fn(params: optax.Params) -> optax.ScaleByAdamState:
        zeros = optax.tree.zeros_like(params)
        return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=zeros, nu=zeros)

    def update_fn(
        updates: optax.Updates,
        state: optax.ScaleByAdamState,
        params: optax.Params | None = None,
    ) -> tuple[optax.Updates, optax.ScaleByAdamState]:
        del params
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count = state.count + 1
        correction1 = _one_minus_power(b1, count)
        sqrt_correction2 = jnp.sqrt(_one_minus_power(b2, count))
        scaled = jax.tree.map(
            lambda m, v: (m / correction1) / (jnp.sqrt(v) / sqrt_correction2 + eps), mu, nu
        )
        return scaled, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def adam(
    learning_rate: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> optax.GradientTransformationExtraArgs:
    """Adam (Kingma and Ba, 2015) as torch computes it, as an optax transformation.

    Example:
      >>> opt = adam(1.0)
      >>> params = jnp.zeros(3)
      >>> updates, _ = opt.update(jnp.array([1.0, -2.0, 0.5]), opt.init(params))
      >>> [round(float(u), 4) for u in updates]  # the first step moves by lr·sign(g)
      [-1.0, 1.0, -1.0]
    """
    return optax.chain(
        scale_by_adam_accurate(b1, b2, eps), optax.scale_by_learning_rate(learning_rate)
    )
