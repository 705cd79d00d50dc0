"""Whether an optimised bottleneck says anything: a flat λ warns instead of returning a map that
only looks like one.

IBA's map is the capacity of the final λ. When the information term drives the optimisation
alone (β·information orders of magnitude above the model term, or a model so confident that
a little of every feature keeps its prediction), Adam moves every α alike and λ ends the same
everywhere; the capacity then traces the feature statistics, not what the model uses for the
target, and the map still looks like a map. Measured on the shipped phantom models (8
validation images, `benchmarks/beta_sweep.py`): at denseblock3 with β = 10, IBA and Inverse
IBA leave the middle 99.8 % of λ within 0.009-0.028 in 7 of 8 images; every regression loss,
and IBA at denseblock2 or at β = 1, keep it at 0.056 or more.

The start ratio of the two terms alone does not decide: the Deviation loss starts near 0 by
construction (λ ≈ 1 reproduces the clean prediction) and still gives spread maps at β = 10
(ratio 4e4), while Inverse IBA at β = 10 starts at a ratio of 87 and ends flat. So the warning
is on the outcome, and reports the start terms beside it.
"""

from __future__ import annotations

import functools
import sys
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from iba_jax.loop import AttributionAux

# Below this range of the middle 99.8 % of an image's λ, the map is flat (see the module note).
FLAT_LAMBDA = 0.04
_RANGE = (0.1, 99.9)  # the percentiles of λ whose difference is its range


class FlatLambdaWarning(UserWarning):
    """λ ended (nearly) the same everywhere: the map shows the feature statistics, not the
    model's evidence."""


def lambda_range(lam: jax.Array) -> np.ndarray:
    """How far each image's λ ``(B, h, w, c)`` is from constant: the 99.9th minus the 0.1th
    percentile ``(B,)``, robust to a few stray elements and small enough regions (0.1 % of
    DenseNet-121's denseblock3 at 224 px is 200 of its 200,704 elements) still count.

    Example:
      >>> import numpy as np
      >>> lam = np.full((2, 4, 4, 8), 0.02)
      >>> lam[1, :2] = 0.9  # image 1 keeps a region
      >>> np.round(lambda_range(lam), 3)
      array([0.  , 0.88])
    """
    flat = np.asarray(lam, np.float64).reshape(len(lam), -1)
    low, high = np.percentile(flat, _RANGE, axis=1)
    return high - low


def warn_if_flat(layer: str, aux: AttributionAux, beta: float) -> None:
    """Warns (:class:`FlatLambdaWarning`) when some image's λ is flat, with the start terms.

    Traced (under a caller's ``jit``, or in the sharded path of ``attribution_maps``), the range
    is computed in the program and a host callback warns when the program runs.
    """
    starts = (aux.model_loss[:, 0], aux.information_loss[:, 0])
    if isinstance(aux.lam, jax.core.Tracer):
        flat = aux.lam.reshape(aux.lam.shape[0], -1)
        low, high = jnp.percentile(flat, jnp.array(_RANGE), axis=1)  # on device: traced
        jax.debug.callback(functools.partial(_warn, layer, beta), high - low, *starts)
    else:
        _warn(layer, beta, lambda_range(aux.lam), *starts)


def _warn(
    layer: str, beta: float, spans: ArrayLike, model: ArrayLike, information: ArrayLike
) -> None:
    spans = np.asarray(spans)
    flat = np.flatnonzero(spans < FLAT_LAMBDA)
    if not flat.size:
        return
    first = int(flat[0])
    warnings.warn(
        f"flat λ at {layer!r} in {flat.size} of {len(spans)} images (image {first}: its middle "
        f"99.8 % spans {spans[first]:.3f} < {FLAT_LAMBDA}): the optimisation moved every α "
        "alike, so the map shows the feature statistics, not what the model uses. At the first "
        f"step β·information was {beta * float(np.asarray(information)[first]):.3g} nats "
        f"against a model term of {float(np.asarray(model)[first]):.3g}. Choose the layer and "
        "β on held-out images (ij.layer_locality, ij.beta_sweep; iba-jax layer-locality, "
        "iba-jax beta-sweep).",
        FlatLambdaWarning,
        stacklevel=_outside_the_package(),
    )


def _outside_the_package() -> int:
    """The ``stacklevel`` of the first caller outside iba_jax: the warning names the user's
    line, however deep in the package it was raised (``skip_file_prefixes`` needs 3.12)."""
    frame: types.FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("iba_jax"):
        frame, level = frame.f_back, level + 1
    return level
