"""The attribution baselines of the paper: Gradients, Integrated Gradients and Grad-CAM.

Each explains the logit of one target class per image (the output before the head, as the
paper's code does), batched over images and jit-compiled; nothing here depends on the
bottleneck. Every function returns the raw attribution; ``pixel_map`` turns an input-space
attribution into one value per pixel. LRP, the fourth baseline, is ``iba_jax.lrp``.

References:
  Simonyan, Vedaldi, Zisserman. Deep Inside Convolutional Networks. ICLR workshop 2014.
  Sundararajan, Taly, Yan. Axiomatic Attribution for Deep Networks. ICML 2017.
  Selvaraju et al. Grad-CAM: Visual Explanations from Deep Networks. ICCV 2017.
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
from numpy.typing import ArrayLike

from iba_jax import checks
from iba_jax.bottleneck import smooth
from iba_jax.inputs import check_images, prepare_targets
from iba_jax.models.protocol import Model, Variables
from iba_jax.objectives import target_bce

Baseline = Literal["zero", "blur"]


def class_targets(model: Model, images: ArrayLike, targets: ArrayLike) -> jax.Array:
    """The images checked, and one output index per image (checked against the outputs)."""
    check_images(model, images)
    return prepare_targets(model, images, targets, target_bce)


def summed_target_logits(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Sum over the batch of each image's target logit (images do not interact in inference
    mode, so its gradient holds every image's own gradient)."""
    return jnp.take_along_axis(logits, targets[:, None], axis=1).sum()


@functools.partial(jax.jit, static_argnames="model")
def _input_gradients(
    model: Model, variables: Variables, x: jax.Array, targets: jax.Array
) -> jax.Array:
    return jax.grad(lambda x: summed_target_logits(model.apply(variables, x), targets))(x)


def gradients(
    model: Model, variables: Variables, images: ArrayLike, targets: ArrayLike
) -> jax.Array:
    """∂ logit[target] / ∂ image, ``(N, H, W, C)`` (Simonyan et al., 2014).

    Example:
      >>> import jax
      >>> from iba_jax.models import DenseNet, densenet_tiny
      >>> net = DenseNet(densenet_tiny())
      >>> variables = net.init(jax.random.key(0), 64)
      >>> x = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
      >>> gradients(net, variables, x, [0, 2]).shape
      (2, 64, 64, 3)
    """
    targets = class_targets(model, images, targets)
    return _input_gradients(model, variables, jnp.asarray(images, jnp.float32), targets)


def blurred(images: jax.Array, sigma: float) -> jax.Array:
    """Images blurred by a Gaussian of ``sigma`` pixels (reflected borders): the blurred
    baseline of Integrated Gradients and of insertion/deletion (the paper uses σ = 10)."""
    return _blurred(jnp.asarray(images, jnp.float32), float(sigma))


@functools.partial(jax.jit, static_argnums=1)
def _blurred(images: jax.Array, sigma: float) -> jax.Array:
    # One program: run eagerly, each of the 2 x 41 shifted slices of sigma = 10 would compile.
    return smooth(images, sigma, name="images")


@functools.partial(jax.jit, static_argnames=("model", "steps"))
def _integrated(
    model: Model,
    variables: Variables,
    x: jax.Array,
    baseline: jax.Array,
    targets: jax.Array,
    steps: int,
) -> jax.Array:
    alphas = jnp.linspace(0.0, 1.0, steps)
    # All steps of all images in one batch through the model: (steps * N, H, W, C).
    path = baseline[None] + alphas[:, None, None, None, None] * (x - baseline)[None]
    flat = path.reshape(-1, *x.shape[1:])
    repeated = jnp.tile(targets, steps)
    grads = _input_gradients(model, variables, flat, repeated).reshape(path.shape)
    return grads.mean(axis=0) * (x - baseline)


def integrated_gradients(
    model: Model,
    variables: Variables,
    images: ArrayLike,
    targets: ArrayLike,
    *,
    steps: int = 50,
    baseline: Baseline | ArrayLike = "zero",
    blur_sigma: float = 10.0,
) -> jax.Array:
    """Integrated Gradients (Sundararajan et al., 2017), ``(N, H, W, C)``.

    The path integral is the mean of the gradients at ``steps`` points
    ``baseline + α·(image − baseline)``, α = linspace(0, 1, steps) (both ends included, the
    quadrature of the PAIR ``saliency`` package), times ``image − baseline``. All points of all
    images go through the model as one batch (mind the memory: steps × N images).

    Args:
      baseline: ``"zero"``, ``"blur"`` (the image blurred with ``blur_sigma`` pixels) or an
        array shaped like ``images``.

    Example:
      >>> import jax
      >>> from iba_jax.models import DenseNet, densenet_tiny
      >>> net = DenseNet(densenet_tiny())
      >>> variables = net.init(jax.random.key(0), 64)
      >>> x = jax.random.normal(jax.random.key(1), (1, 64, 64, 3))
      >>> integrated_gradients(net, variables, x, 1, steps=8).shape
      (1, 64, 64, 3)
    """
    checks.check_positive_int("steps", steps)
    targets = class_targets(model, images, targets)
    x = jnp.asarray(images, jnp.float32)
    if isinstance(baseline, str):
        checks.check_choice("baseline", baseline, ("zero", "blur"))
        reference = jnp.zeros_like(x) if baseline == "zero" else blurred(x, blur_sigma)
    else:
        reference = jnp.asarray(baseline, jnp.float32)
        if reference.shape != x.shape:
            raise ValueError(
                f"baseline: expected the images' shape {tuple(x.shape)}; got "
                f"{tuple(reference.shape)}."
            )
    return _integrated(model, variables, x, reference, targets, steps)


@functools.partial(jax.jit, static_argnames=("model", "layer"))
def _grad_cam(
    model: Model, variables: Variables, x: jax.Array, targets: jax.Array, layer: str
) -> jax.Array:
    h = model.encode(variables, x, layer)
    grads = jax.grad(lambda h: summed_target_logits(model.decode(variables, h, layer), targets))(h)
    weights = grads.mean(axis=(1, 2), keepdims=True)  # one weight per channel
    return jax.nn.relu((weights * h).sum(axis=-1))


def grad_cam(
    model: Model,
    variables: Variables,
    images: ArrayLike,
    targets: ArrayLike,
    *,
    layer: str = "norm5",
    resize: bool = True,
) -> jax.Array:
    """Grad-CAM (Selvaraju et al., 2017) at ``layer`` (norm5, as in the paper's code).

    ReLU(Σ_c w_c·A_c) with w_c the spatial mean of ∂ logit[target] / ∂ A_c. Returns
    ``(N, h, w)`` at the layer's resolution, or, with ``resize``, ``(N, H, W)`` bilinearly
    upsampled to the images (half-pixel centres, ``jax.image.resize``).
    """
    targets = class_targets(model, images, targets)
    checks.check_choice("layer", layer, model.layer_names)
    x = jnp.asarray(images, jnp.float32)
    maps = _grad_cam(model, variables, x, targets, layer)
    if not resize:
        return maps
    return jax.image.resize(maps, (maps.shape[0], *x.shape[1:3]), method="bilinear")


def pixel_map(
    attribution: jax.Array, reduce: Literal["abs_sum", "sum", "abs_max"] = "abs_sum"
) -> jax.Array:
    """One value per pixel from an input-space attribution ``(N, H, W, C)`` -> ``(N, H, W)``:
    the sum of absolute values over channels (default), the plain sum, or the largest
    absolute value."""
    checks.check_choice("reduce", reduce, ("abs_sum", "sum", "abs_max"))
    if reduce == "sum":
        return attribution.sum(axis=-1)
    if reduce == "abs_max":
        return jnp.abs(attribution).max(axis=-1)
    return jnp.abs(attribution).sum(axis=-1)
