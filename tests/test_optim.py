"""Adam against the reference's recorded trajectory and against optax's Adam."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from iba_jax.optim import adam


@pytest.mark.parametrize("run", ["", "inverse/", "beta0.01/bce/"])
def test_replaying_the_reference_gradients_gives_its_alphas(iba_reference, run):
    grads = iba_reference[run + "alpha_grads"]
    alphas = iba_reference[run + "alpha_per_step"]
    optimiser = adam(1.0)
    alpha = jnp.asarray(alphas[0])
    state = optimiser.init(alpha)
    for step in range(10):
        np.testing.assert_allclose(alpha, alphas[step], atol=2e-6)
        updates, state = optimiser.update(jnp.asarray(grads[step]), state)
        alpha = optax.apply_updates(alpha, updates)
    np.testing.assert_allclose(alpha, iba_reference[run + "alpha_final"], atol=2e-6)


def test_agrees_with_optax_adam_up_to_its_float32_bias_correction():
    grads = jax.random.normal(jax.random.key(0), (20, 50))
    ours, theirs = adam(0.1), optax.adam(0.1)
    p_ours = p_theirs = jnp.zeros(50)
    s_ours, s_theirs = ours.init(p_ours), theirs.init(p_theirs)
    for g in grads:
        u, s_ours = ours.update(g, s_ours)
        v, s_theirs = theirs.update(g, s_theirs)
        p_ours, p_theirs = p_ours + u, p_theirs + v
    np.testing.assert_allclose(p_ours, p_theirs, rtol=1e-4, atol=1e-5)
