"""Bottleneck parts against the reference fixtures and analytic cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import channels_last
from jax.test_util import check_grads

from iba_jax.bottleneck import (
    capacity,
    damping,
    gaussian_kernel_1d,
    iba_bottleneck,
    inverse_bottleneck,
    noise_from_standard_normal,
    normalized_features,
    smooth,
    standard_normal,
)


def test_kernel_is_the_reference_kernel(iba_reference):
    taps = gaussian_kernel_1d(1.0)
    assert int(iba_reference["smooth/kernel_size"]) == len(taps) == 5
    np.testing.assert_allclose(np.outer(taps, taps), iba_reference["smooth/kernel"], atol=1e-7)


@pytest.mark.parametrize("name", ["", "_2x3x11x9"])
def test_smoothing_matches_the_reference(iba_reference, name):
    lam = channels_last(iba_reference[f"smooth/lambda{name}"])
    expected = channels_last(iba_reference[f"smooth/smoothed{name}"])
    np.testing.assert_allclose(smooth(lam, 1.0), expected, atol=1e-5)


def test_smoothing_too_small_map_and_no_smoothing():
    lam = jnp.linspace(0, 1, 2 * 2 * 3).reshape(2, 2, 3)
    with pytest.raises(ValueError, match=r"lam: a 2x2 map is too small .* sigma=0"):
        smooth(lam, 1.0)
    np.testing.assert_array_equal(smooth(lam, 0.0), lam)


def test_capacity_matches_the_reference(iba_reference):
    r = normalized_features(
        channels_last(iba_reference["capacity/features"]),
        channels_last(iba_reference["capacity/mean"]),
        channels_last(iba_reference["capacity/std"]),
    )
    kl = capacity(r, channels_last(iba_reference["capacity/lambda"]))
    np.testing.assert_allclose(kl, channels_last(iba_reference["capacity/kl"]), atol=1e-5)


def test_capacity_is_finite_and_nonnegative_for_every_alpha():
    alpha = jnp.concatenate([jnp.array([-1e4, -100.0, 0.0, 16.0, 17.0, 40.0, 1e4])])
    r = jnp.array([-50.0, -1.0, 0.0, 1.0, 50.0])
    lam = jax.nn.sigmoid(alpha)[:, None]
    kl = capacity(r[None, :], lam)
    grads = jax.grad(lambda a: capacity(r[None, :], jax.nn.sigmoid(a)[:, None]).sum())(alpha)
    assert np.all(np.isfinite(kl)) and np.all(kl >= 0)
    assert np.all(np.isfinite(grads))
    np.testing.assert_array_equal(capacity(r, jnp.zeros(5)), 0.0)


def test_capacity_agrees_with_the_textbook_formula_in_float64():
    rng = np.random.default_rng(0)
    r = rng.normal(size=1000) * 3
    lam = rng.uniform(1e-4, 0.999, size=1000)
    exact = -0.5 * (1 + np.log((1 - lam) ** 2) - (lam * r) ** 2 - (1 - lam) ** 2)
    got = np.asarray(capacity(jnp.float32(r), jnp.float32(lam)), np.float64)
    np.testing.assert_allclose(got, exact, rtol=2e-4, atol=1e-7)


def test_capacity_gradients():
    r = jnp.array([0.3, -1.2, 2.0])
    lam = jnp.array([0.2, 0.5, 0.8])
    check_grads(capacity, (r, lam), order=2, modes=("rev", "fwd"), eps=1e-3, atol=2e-2, rtol=2e-2)


def test_reparameterisations_reproduce_the_reference_z(iba_reference):
    for prefix, bottleneck in (("", iba_bottleneck), ("inverse/", inverse_bottleneck)):
        lam = damping(channels_last(iba_reference[prefix + "alpha_per_step"][9]), 1.0)[None]
        eps = noise_from_standard_normal(
            channels_last(iba_reference[prefix + "noise"][9]),
            channels_last(iba_reference[prefix + "mean_used"])[None],
            channels_last(iba_reference[prefix + "std_clamped"])[None],
        )
        features = channels_last(iba_reference[prefix + "bottleneck_input_last"])
        active = channels_last(iba_reference[prefix + "active_used"])[None]
        z = bottleneck(features, lam, eps) * active
        np.testing.assert_allclose(z, channels_last(iba_reference[prefix + "z"][9]), atol=1e-5)


def test_bottleneck_limits():
    features, eps = jnp.full((3,), 2.0), jnp.full((3,), -1.0)
    ones, zeros = jnp.ones(3), jnp.zeros(3)
    np.testing.assert_array_equal(iba_bottleneck(features, ones, eps), features)
    np.testing.assert_array_equal(iba_bottleneck(features, zeros, eps), eps)
    np.testing.assert_array_equal(inverse_bottleneck(features, ones, eps), eps)
    np.testing.assert_array_equal(inverse_bottleneck(features, zeros, eps), features)


@pytest.mark.parametrize("partitionable", [True, False])
def test_standard_normal_depends_only_on_key_and_shape(partitionable):
    key = jax.random.key(3)
    expected = standard_normal(key, (50, 40, 30))
    with jax.threefry_partitionable(partitionable):
        again = jax.jit(standard_normal, static_argnums=1)(key, (50, 40, 30))
    np.testing.assert_array_equal(again, expected)
    assert expected.dtype == jnp.float32
    # 60 000 draws: the sample mean and standard deviation are within 5 standard errors.
    assert abs(float(expected.mean())) < 5 / np.sqrt(expected.size)
    assert abs(float(expected.std()) - 1) < 5 / np.sqrt(2 * expected.size)
    assert not np.array_equal(standard_normal(jax.random.key(4), (50, 40, 30)), expected)
