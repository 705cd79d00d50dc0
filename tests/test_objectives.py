"""Model losses: values against numpy, composition, hashing for the compiled loop."""

import jax.numpy as jnp
import numpy as np
import pytest

from iba_jax.objectives import (
    CleanPrediction,
    Negated,
    RegressionMaximisation,
    SquaredError,
    objective,
    softmax_cross_entropy,
    target_bce,
    vector_bce,
)

LOGITS = np.array([[0.5, -1.0, 2.0], [-3.0, 0.0, 1.0]], np.float32)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_target_bce():
    expected = -np.log(sigmoid(LOGITS[:, 2]))
    np.testing.assert_allclose(target_bce(LOGITS, 2), expected, rtol=1e-6)


def test_vector_bce_is_the_mean_over_classes():
    y = np.array([0.0, 1.0, 0.0])
    p = sigmoid(LOGITS)
    expected = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(-1)
    np.testing.assert_allclose(vector_bce(LOGITS, y), expected, rtol=1e-6)


def test_softmax_cross_entropy():
    logp = LOGITS - np.log(np.exp(LOGITS).sum(-1, keepdims=True))
    np.testing.assert_allclose(softmax_cross_entropy(LOGITS, 1), -logp[:, 1], rtol=1e-6)


def test_negated_is_bounded():
    loss = Negated(target_bce, bound=2.0)
    logits = np.array([[10.0], [0.0], [-50.0]], np.float32)
    np.testing.assert_allclose(
        loss(logits, 0), [-np.log1p(np.exp(-10.0)), -np.log(2), -2.0], rtol=1e-5
    )


def test_regression_losses():
    relu = lambda x: jnp.maximum(x, 0)
    np.testing.assert_allclose(SquaredError(2)(LOGITS, 1.5), (LOGITS[:, 2] - 1.5) ** 2)
    np.testing.assert_allclose(SquaredError(0, relu)(LOGITS, 1.0), [0.25, 1.0])
    clean = np.array([[1.0, 2.0, 4.0], [0.0, -1.0, -3.0]], np.float32)
    np.testing.assert_array_equal(CleanPrediction(2)(clean), [4.0, -3.0])
    np.testing.assert_array_equal(CleanPrediction(2, relu)(clean), [4.0, 0.0])
    with pytest.raises(ValueError, match="output: expected an index in \\[0, 3\\)"):
        CleanPrediction(3)(clean)
    np.testing.assert_allclose(RegressionMaximisation(2)(LOGITS, None), -(LOGITS[:, 2] ** 2))


def test_equal_settings_hash_equal_so_the_compiled_loop_is_reused():
    assert Negated(target_bce) == Negated(target_bce)
    assert hash(SquaredError(0)) == hash(SquaredError(0))
    assert SquaredError(0) != SquaredError(1)


def test_objective_adds_beta_times_information():
    total, model_term = objective(target_bce, LOGITS, 2, jnp.float32(0.5), jnp.float32(4.0))
    assert np.isclose(model_term, np.mean(-np.log(sigmoid(LOGITS[:, 2]))))
    assert np.isclose(total, model_term + 2.0)
