"""The public loop pieces on an analytic loss: ``optimise_alpha`` and ``read_out``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from iba_jax.bottleneck import capacity, damping
from iba_jax.loop import IBAConfig, optimise_alpha, read_out


def half_squared_distance_to_two(alpha, draw):
    del draw
    total = 0.5 * jnp.sum((alpha - 2.0) ** 2)
    return total, (total, jnp.zeros(()), alpha)  # "capacity": α as the loss saw it


@pytest.mark.parametrize("unroll", [True, False])
def test_gradient_descent_halves_the_distance_each_step(unroll):
    # α ← α − ½(α − 2): from 5 the distance 3 halves each step.
    alpha0 = jnp.full((4, 4, 1), 5.0)
    steps = jax.random.split(jax.random.key(0), 3)
    trajectory = optimise_alpha(
        half_squared_distance_to_two, alpha0, steps, optimizer=optax.sgd(0.5), unroll=unroll
    )
    np.testing.assert_allclose(trajectory.alpha, 2 + 3 / 8)
    np.testing.assert_allclose(trajectory.capacity, 2 + 3 / 4)  # α of the last evaluation
    np.testing.assert_allclose(trajectory.loss, [0.5 * 16 * d**2 for d in (3, 1.5, 0.75)])

    r, active = jnp.full((4, 4, 1), 0.5), jnp.ones((4, 4, 1))
    last, aux = read_out(trajectory, r, active, config=IBAConfig(sigma=0.0))
    np.testing.assert_allclose(last, 2 + 3 / 4)
    np.testing.assert_allclose(aux.lam, jax.nn.sigmoid(2 + 3 / 8))
    final, _ = read_out(trajectory, r, active, config=IBAConfig(sigma=0.0, readout="final"))
    np.testing.assert_allclose(final, capacity(r, damping(trajectory.alpha, 0.0)))


def test_a_non_finite_loss_reads_out_nan():
    def broken(alpha, draw):
        total, aux = half_squared_distance_to_two(alpha, draw)
        return total / 0.0, aux

    steps = jax.random.split(jax.random.key(0), 2)
    trajectory = optimise_alpha(broken, jnp.ones((2, 2, 1)), steps, optimizer=optax.sgd(0.1))
    ones = jnp.ones((2, 2, 1))
    cap, _ = read_out(trajectory, ones, ones, config=IBAConfig(sigma=0.0))
    assert np.all(np.isnan(cap))
