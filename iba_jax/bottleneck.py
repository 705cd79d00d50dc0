"""The per-sample information bottleneck: reparameterisations, λ smoothing and capacity.

All functions act on channels-last feature maps ``(..., h, w, c)`` of one layer, with statistics
of the same trailing shape ``(h, w, c)``.

The bottleneck (Schulz et al., 2020, eq. 2) replaces a layer's features R by

  IBA:          Z = λ·R + (1 − λ)·ε
  Inverse IBA:  Z = λ·ε + (1 − λ)·R        (Khakzar et al., 2021: λ = 1 blocks the signal)

with ε = μ_R + σ_R·n, n ~ N(0, 1), λ = smooth(sigmoid(α)), and the capacity

  KL[P(Z|R) ‖ N(μ_R, σ_R²)] = −½ (1 + log((1 − λ)²) − (λ r)² − (1 − λ)²),   r = (R − μ_R)/σ_R

per element, in nats. Inverse IBA uses the *same* capacity with the same λ (as the reference
implementation does): there λ measures how much of the signal is removed, and the map shows the
information in the removed part.

References:
  Schulz, Sixt, Tombari, Landgraf. Restricting the Flow: Information Bottlenecks for Attribution.
  ICLR 2020.
  Khakzar, Zhang, Mansour, et al. Explaining COVID-19 and Thoracic Pathology Model Predictions by
  Identifying Informative Input Features. MICCAI 2021.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

Bottleneck = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
"""A bottleneck form: (features R, damping λ, noise ε) -> Z, broadcasting over a leading samples
axis. :func:`iba_bottleneck` and :func:`inverse_bottleneck` are the paper's; any function of
the three can take their place (``attribute(..., bottleneck=...)``)."""

# Largest float32 below 1: keeps log((1 - λ)²) finite when sigmoid(α) rounds to 1 (α ≳ 17).
_LAMBDA_MAX = float(np.nextafter(np.float32(1), np.float32(0)))


def gaussian_kernel_1d(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps of size ``2·round(2σ) + 1`` (5 for σ = 1), float32.

    The reference's 2-D kernel ``exp(−(i² + j²)/2σ²)/Σ`` is the outer product of these taps.

    Example:
      >>> taps = gaussian_kernel_1d(1.0)
      >>> taps.shape, round(float(taps.sum()), 6)
      ((5,), 1.0)
    """
    if sigma <= 0:
        raise ValueError(f"sigma: expected a positive smoothing width; got {sigma}.")
    half = round(2 * sigma)
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    taps = np.exp(-(offsets**2) / (2 * sigma**2))
    return (taps / taps.sum()).astype(np.float32)


def smooth(lam: jax.Array, sigma: float, *, name: str = "lam") -> jax.Array:
    """Gaussian smoothing of ``lam`` ``(..., h, w, c)`` over h and w, per channel.

    Reflection padding (the edge is not repeated, as torch's ``ReflectionPad2d``); the kernel is
    separable, so this is two 1-D passes. ``sigma = 0`` returns ``lam`` unchanged. It blurs
    images too (``name`` is the argument named in errors).

    Example:
      >>> lam = jnp.full((6, 6, 2), 0.3)
      >>> bool(jnp.allclose(smooth(lam, 1.0), 0.3))
      True
    """
    if sigma == 0:
        return lam
    taps = gaussian_kernel_1d(sigma)
    half = len(taps) // 2
    h, w = lam.shape[-3], lam.shape[-2]
    if min(h, w) <= half:
        raise ValueError(
            f"{name}: a {h}x{w} map is too small for reflection padding by {half} "
            f"(smoothing sigma {sigma}); use a larger input image or sigma=0."
        )
    for axis in (-3, -2):
        pad = [(0, 0)] * lam.ndim
        pad[lam.ndim + axis] = (half, half)
        padded = jnp.pad(lam, pad, mode="reflect")
        size = lam.shape[axis]
        terms = [
            float(t) * jax.lax.slice_in_dim(padded, k, k + size, axis=lam.ndim + axis)
            for k, t in enumerate(taps)
        ]
        lam = functools.reduce(operator.add, terms)
    return lam


def damping(alpha: jax.Array, sigma: float) -> jax.Array:
    """λ = smooth(sigmoid(α)): how much of the signal passes (IBA) or is blocked (Inverse IBA)."""
    return smooth(jax.nn.sigmoid(alpha), sigma)


def standard_normal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """float32 draws from N(0, 1) for one image's bottleneck, with JAX's classic threefry scheme.

    JAX's default ("partitionable") scheme runs one threefry block per 32-bit word so that one
    draw can be split across devices; the classic scheme runs one block per two words, which
    makes IBA's noise (20 M floats per image at the paper's defaults) about 40 % cheaper on
    CPU. Each image draws from its own key, so a sharded batch never splits a draw and loses
    nothing by it. The draws depend only on ``key`` and ``shape``, not on the global setting.
    """
    with jax.threefry_partitionable(False):
        return jax.random.normal(key, shape, jnp.float32)


def noise_from_standard_normal(n: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """ε = μ + σ·n: standard-normal draws ``n`` scaled to the feature statistics."""
    return mean + std * n


def iba_bottleneck(features: jax.Array, lam: jax.Array, eps: jax.Array) -> jax.Array:
    """IBA: Z = λ·R + (1 − λ)·ε (λ = 1 lets the signal through)."""
    return lam * features + (1.0 - lam) * eps


def inverse_bottleneck(features: jax.Array, lam: jax.Array, eps: jax.Array) -> jax.Array:
    """Inverse IBA: Z = λ·ε + (1 − λ)·R (λ = 1 replaces the signal by noise)."""
    return lam * eps + (1.0 - lam) * features


def normalized_features(features: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """r = (R − μ)/σ, the features in the units of their data-set statistics."""
    return (features - mean) / std


def mean_capacity(cap: jax.Array) -> jax.Array:
    """IBA's information term: the mean over the layer of the per-element capacity (nats; the
    inactive elements, whose capacity is 0, count in the mean, as in the reference). Any
    function of the capacity ``(h, w, c) -> ()`` can take its place (``attribute(...,
    information=...)``)."""
    return jnp.mean(cap)


def capacity(r: jax.Array, lam: jax.Array) -> jax.Array:
    """KL divergence per element, in nats, of the bottleneck from the feature prior.

    Args:
      r: normalised features ``(R − μ)/σ``.
      lam: the damping λ in [0, 1], broadcastable against ``r``.

    Returns:
      ``−½ (1 + log((1 − λ)²) − (λ r)² − (1 − λ)²)``, finite for every λ in [0, 1]: λ is capped
      at the largest float32 below 1, where the log term is −33.3 (the formula itself is
      +∞ at λ = 1). At λ = 0 the capacity is exactly 0.

    Example:
      >>> float(capacity(jnp.array(0.0), jnp.array(0.0)))
      0.0
      >>> bool(jnp.isfinite(capacity(jnp.array(2.0), jnp.array(1.0))))
      True
    """
    lam = jnp.minimum(lam, _LAMBDA_MAX)
    # The same expression regrouped as −(λ + log(1 − λ)) + λ²(1 + r²)/2: every term is ≥ 0, so
    # the O(1) terms no longer cancel in float32 when λ is small (the map's usual regime).
    return -(lam + jnp.log1p(-lam)) + 0.5 * lam**2 * (1.0 + r**2)
