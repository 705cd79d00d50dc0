"""LRP: conservation, positivity, the rules' formulas on a single layer, and errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import counted_traces
from flax import traverse_util

from iba_jax import baselines, lrp
from iba_jax.models import DenseNet, densenet_tiny

NET = DenseNet(densenet_tiny())
LOGITS = jax.jit(NET.apply)  # eagerly, each of the network's operations would compile


def randomised(variables, *, biases: bool, negative_scales: bool, seed: int = 0):
    """Variables with random BatchNorm scales, variances and (optionally) biases and means;
    without biases every bias and BatchNorm mean is 0, so the network has no affine offsets."""
    flat = traverse_util.flatten_dict(variables)
    key = jax.random.key(seed)
    for path, value in sorted(flat.items()):
        key, sub = jax.random.split(key)
        name = path[-1]
        if name == "scale":
            scale = jax.random.uniform(sub, value.shape, minval=0.5, maxval=1.5)
            if negative_scales:
                scale = scale * jnp.where(jax.random.bernoulli(sub, 0.3, value.shape), -1, 1)
            flat[path] = scale
        elif name == "var":
            flat[path] = jax.random.uniform(sub, value.shape, minval=0.5, maxval=2.0)
        elif name in ("bias", "mean"):
            flat[path] = 0.2 * jax.random.normal(sub, value.shape) if biases else 0 * value
    return traverse_util.unflatten_dict(flat)


@pytest.fixture(scope="module")
def variables():
    return NET.init(jax.random.key(0), 32)


@pytest.fixture(scope="module")
def images():
    return jax.random.normal(jax.random.key(1), (2, 32, 32, 3))


def target_logits(variables, images, targets):
    return LOGITS(variables, images)[jnp.arange(len(targets)), jnp.asarray(targets)]


@pytest.mark.parametrize(("rule", "negative_scales"), [("epsilon", True), ("alpha1beta0", False)])
def test_relevance_sums_to_the_logit_without_biases(variables, images, rule, negative_scales):
    v = randomised(variables, biases=False, negative_scales=negative_scales)
    relevance = lrp.lrp(NET, v, images, [1, 2], rule=rule, epsilon=1e-9)
    np.testing.assert_allclose(
        relevance.sum(axis=(1, 2, 3)), target_logits(v, images, [1, 2]), rtol=1e-4
    )


def test_biases_absorb_relevance(variables, images):
    v = randomised(variables, biases=True, negative_scales=True)
    relevance = lrp.lrp(NET, v, images, [1, 2], rule="epsilon", epsilon=1e-9)
    logits = target_logits(v, images, [1, 2])
    assert np.all(np.abs(relevance.sum(axis=(1, 2, 3)) - logits) > 1e-3 * np.abs(logits))


def test_epsilon_rule_at_zero_is_gradient_times_input(variables, images):
    """LRP-0 equals gradient x input for ReLU networks, biases included."""
    v = randomised(variables, biases=True, negative_scales=True)
    relevance = lrp.lrp(NET, v, images, [0, 1], rule="epsilon", epsilon=0.0)
    expected = images * baselines.gradients(NET, v, images, [0, 1])
    np.testing.assert_allclose(relevance, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def test_alpha1beta0_is_non_negative_for_a_positive_logit(variables, images):
    v = randomised(variables, biases=True, negative_scales=True)
    logits = LOGITS(v, images)
    targets = jnp.argmax(logits, axis=1)
    assert np.all(logits.max(axis=1) > 0)
    relevance = lrp.lrp(NET, v, images, targets)
    assert relevance.min() >= 0
    assert relevance.max() > 0
    # Relevance is only lost (at outputs with no positive contribution), never created.
    assert np.all(relevance.sum(axis=(1, 2, 3)) <= logits.max(axis=1) * (1 + 1e-5))


def test_larger_epsilon_absorbs_more_relevance(variables, images):
    v = randomised(variables, biases=False, negative_scales=False)
    totals = [
        np.abs(lrp.lrp(NET, v, images, [1, 1], rule="epsilon", epsilon=e).sum(axis=(1, 2, 3)))
        for e in (1e-9, 1e-2, 1.0)
    ]
    assert np.all(totals[0] > totals[1]) and np.all(totals[1] > totals[2])


@pytest.mark.parametrize("rule", lrp.RULES)
def test_rules_on_one_dense_layer_match_their_formulas(rule):
    """The rules written out with explicit sums over inputs, on a single Dense layer."""
    x = np.array([[1.0, -2.0, 0.5, 3.0]], np.float32)
    w = np.array([[1.0, -1.0], [0.5, 2.0], [-3.0, 1.0], [0.2, -0.4]], np.float32)
    b = np.array([0.3, -0.1], np.float32)
    layer = nn.Dense(2)
    params = {"params": {"kernel": jnp.asarray(w), "bias": jnp.asarray(b)}}
    epsilon = 0.1

    def output_sum(x):
        with nn.intercept_methods(lrp._interceptor(rule, epsilon)):
            return layer.apply(params, x).sum()  # relevance of each output = its value

    ours = x * np.asarray(jax.grad(output_sum)(jnp.asarray(x)))
    y = x @ w + b
    contributions = x[0][:, None] * w  # (inputs, outputs)
    if rule == "epsilon":
        z = y[0] + epsilon * np.sign(y[0])
        expected = (contributions / z * y[0]).sum(axis=1)
    else:
        positive = np.maximum(contributions, 0)
        z = positive.sum(axis=0) + epsilon
        expected = (positive / z * y[0]).sum(axis=1)
    np.testing.assert_allclose(ours[0], expected, rtol=1e-5)


def test_jitted_once_per_shape_and_rule(variables, images):
    lrp.lrp(NET, variables, images, [0, 1])
    with counted_traces() as traces:
        lrp.lrp(NET, variables, images + 1, [2, 0])
        assert traces("_relevance") == 0
        lrp.lrp(NET, variables, images[:1], [2])  # a new shape: traced once
        assert traces("_relevance") == 1


def test_bad_arguments_are_named(variables, images):
    with pytest.raises(ValueError, match="rule"):
        lrp.lrp(NET, variables, images, [0, 1], rule="gamma")
    with pytest.raises(ValueError, match="epsilon"):
        lrp.lrp(NET, variables, images, [0, 1], epsilon=-1.0)
    with pytest.raises(ValueError, match="targets"):
        lrp.lrp(NET, variables, images, [0, 7])
