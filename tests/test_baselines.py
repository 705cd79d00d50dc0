"""Gradients, Integrated Gradients and Grad-CAM: against the PAIR saliency package and axioms."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import saliency.core as saliency

from iba_jax import baselines
from iba_jax.models import DenseNet, densenet_tiny

NET = DenseNet(densenet_tiny())


@pytest.fixture(scope="module")
def variables():
    return NET.init(jax.random.key(0), 64)


@pytest.fixture(scope="module")
def images():
    return jax.random.normal(jax.random.key(1), (2, 64, 64, 3))


def _target_logit(logits, target):
    return logits[:, target].sum()


@jax.jit
def _input_gradients(variables, x, target):
    return jax.grad(lambda x: _target_logit(NET.apply(variables, x), target))(x)


@functools.partial(jax.jit, static_argnames="layer")
def _layer_values_and_gradients(variables, x, target, layer):
    h = NET.encode(variables, x, layer)
    return h, jax.grad(lambda h: _target_logit(NET.decode(variables, h, layer), target))(h)


def call_model(variables, target, layer="norm5"):
    """saliency's interface to our model: numpy in, numpy gradients out (compiled: saliency
    calls it once per step)."""

    def call(x, call_model_args=None, expected_keys=None):
        x = jnp.asarray(x, jnp.float32)
        if saliency.base.INPUT_OUTPUT_GRADIENTS in expected_keys:
            grads = _input_gradients(variables, x, target)
            return {saliency.base.INPUT_OUTPUT_GRADIENTS: np.asarray(grads)}
        h, grads = _layer_values_and_gradients(variables, x, target, layer)
        return {
            saliency.base.CONVOLUTION_LAYER_VALUES: np.asarray(h),
            saliency.base.CONVOLUTION_OUTPUT_GRADIENTS: np.asarray(grads),
        }

    return call


def test_gradients_equal_saliency_and_finite_differences(variables, images):
    ours = baselines.gradients(NET, variables, images, [1, 2])
    for i, target in enumerate((1, 2)):
        theirs = saliency.GradientSaliency().GetMask(
            np.asarray(images[i]), call_model(variables, target)
        )
        np.testing.assert_allclose(ours[i], theirs, rtol=1e-5, atol=1e-7)
    # Forward mode agrees (finite differences would straddle the ReLU and max-pool kinks).
    direction = jax.random.normal(jax.random.key(2), images.shape)
    logits = lambda x: NET.apply(variables, x)[jnp.arange(2), jnp.array([1, 2])]
    _, forward = jax.jit(lambda x, d: jax.jvp(logits, (x,), (d,)))(images, direction)
    np.testing.assert_allclose((ours * direction).sum(axis=(1, 2, 3)), forward, rtol=1e-4)


@pytest.mark.parametrize("baseline", ["zero", "blur"])
def test_integrated_gradients_equal_saliency_with_the_same_quadrature(variables, images, baseline):
    ours = baselines.integrated_gradients(
        NET, variables, images, [0, 1], steps=10, baseline=baseline
    )
    for i, target in enumerate((0, 1)):
        reference = (
            np.zeros((64, 64, 3), np.float32)
            if baseline == "zero"
            else np.asarray(baselines.blurred(images[i : i + 1], 10.0)[0])
        )
        theirs = saliency.IntegratedGradients().GetMask(
            np.asarray(images[i]),
            call_model(variables, target),
            x_baseline=reference,
            x_steps=10,
            batch_size=10,
        )
        np.testing.assert_allclose(ours[i], theirs, rtol=1e-4, atol=1e-6)


def test_integrated_gradients_complete_the_logit_difference(variables, images):
    attribution = baselines.integrated_gradients(NET, variables, images, 0, steps=300)
    gap = NET.apply(variables, images)[:, 0] - NET.apply(variables, jnp.zeros_like(images))[:, 0]
    np.testing.assert_allclose(attribution.sum(axis=(1, 2, 3)), gap, rtol=0.02)


@pytest.mark.parametrize("layer", ["norm5", "denseblock3"])
def test_grad_cam_equals_saliency(variables, images, layer):
    ours = baselines.grad_cam(NET, variables, images, [2, 0], layer=layer, resize=False)
    for i, target in enumerate((2, 0)):
        theirs = saliency.GradCam().GetMask(
            np.asarray(images[i]),
            call_model(variables, target, layer),
            should_resize=False,
            three_dims=False,
        )
        np.testing.assert_allclose(ours[i], theirs, rtol=1e-4, atol=1e-6)
    full = baselines.grad_cam(NET, variables, images, [2, 0], layer=layer)
    assert full.shape == (2, 64, 64) and float(full.min()) >= 0


def test_pixel_maps():
    a = jnp.array([[[[1.0, -2.0]]]])
    assert [float(baselines.pixel_map(a, r)[0, 0, 0]) for r in ("abs_sum", "sum", "abs_max")] == [
        3.0,
        -1.0,
        2.0,
    ]


def test_bad_input_is_refused_by_name(variables, images):
    with pytest.raises(ValueError, match="steps: expected a positive integer"):
        baselines.integrated_gradients(NET, variables, images, 0, steps=0)
    with pytest.raises(ValueError, match="baseline: expected the images' shape"):
        baselines.integrated_gradients(NET, variables, images, 0, baseline=np.zeros((1, 64, 64, 3)))
    with pytest.raises(ValueError, match="baseline: expected one of 'zero', 'blur'"):
        baselines.integrated_gradients(NET, variables, images, 0, baseline="black")
    with pytest.raises(ValueError, match="layer: expected one of"):
        baselines.grad_cam(NET, variables, images, 0, layer="conv9")
    with pytest.raises(ValueError, match="targets"):
        baselines.gradients(NET, variables, images, 7)
    with pytest.raises(ValueError, match="reduce: expected one of"):
        baselines.pixel_map(images, "mean")
