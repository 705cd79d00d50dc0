"""Readout and binarisation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from conftest import channels_last
from hypothesis import given, settings
from hypothesis import strategies as st

from iba_jax.maps import binarize, otsu_threshold, resize_bilinear_mirror, to_bits_map


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), out_h=st.integers(1, 40), out_w=st.integers(1, 40))
def test_resize_equals_scipy_mirror_zoom(h, w, out_h, out_w):
    image = np.random.default_rng(h * 100 + w).random((h, w))
    expected = scipy.ndimage.zoom(
        image, (out_h / h, out_w / w), order=1, mode="mirror", grid_mode=True
    )
    assert expected.shape == (out_h, out_w)
    np.testing.assert_allclose(
        resize_bilinear_mirror(jnp.asarray(image), (out_h, out_w)), expected, atol=1e-6
    )


def test_resize_differs_from_clamping_jax_image_resize_only_at_borders():
    image = jnp.asarray(np.random.default_rng(0).random((4, 4)), jnp.float32)
    ours = resize_bilinear_mirror(image, (64, 64))
    clamped = jax.image.resize(image, (64, 64), "linear")
    np.testing.assert_allclose(ours[8:-8, 8:-8], clamped[8:-8, 8:-8], atol=1e-6)
    assert np.abs(ours - clamped).max() > 1e-3


def test_bits_map_reproduces_the_reference_readout(iba_reference):
    for prefix in ("", "beta0.01/bce/", "inverse/"):
        cap = channels_last(iba_reference[prefix + "capacity_last_mean"])
        expected = iba_reference[prefix + "saliency"]
        got = to_bits_map(cap, (64, 64))
        span = expected.max() - expected.min()
        assert np.abs(got - expected).max() <= 1e-5 * span, prefix
        unresized = jnp.sum(cap, -1) / math.log(2)
        np.testing.assert_allclose(
            unresized, iba_reference[prefix + "saliency_unresized"], rtol=1e-5
        )


def test_binarize_rules():
    uniform = jnp.full((1, 10, 10), 3.0)
    assert bool(binarize(uniform, "l2").all())  # 1/10 >= 0.9/10
    ramp = jnp.arange(100.0).reshape(1, 10, 10)
    assert int(binarize(ramp, "percentile", 75.0).sum()) == 25
    two_levels = jnp.where(jnp.arange(100).reshape(10, 10) < 30, 5.0, 1.0)
    np.testing.assert_array_equal(binarize(two_levels, "otsu"), two_levels == 5.0)
    assert 1.0 <= float(otsu_threshold(two_levels)) < 5.0
    with pytest.raises(ValueError, match="rule: expected one of"):
        binarize(ramp, "mean")
    with pytest.raises(ValueError, match=r"threshold: expected a percentile in \[0, 100\]"):
        binarize(ramp, "percentile", 120.0)
