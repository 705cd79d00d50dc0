"""Input checks shared by the whole package.

Every check raises ``ValueError`` (or a subclass) whose message names the argument, what was
expected, what came, and where it helps, the fix. They run at trace time on static facts
(shapes, names, dtypes), so they cost nothing inside a compiled function.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike


def check_choice(name: str, value: object, choices: Iterable[object]) -> None:
    """Raises unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}: expected one of {listed}; got {value!r}.")


def check_positive_int(name: str, value: object) -> None:
    """Raises unless ``value`` is an ``int`` greater than zero."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ValueError(f"{name}: expected a positive integer; got {value!r}.")


def check_image_batch(
    name: str,
    x: ArrayLike,
    *,
    channels: int,
    min_size: int,
) -> None:
    """Raises unless ``x`` is a channels-last batch ``(N, H, W, channels)`` of floating-point
    pixels, H, W >= min_size.

    Integer images are refused rather than converted: stored uint8 pixels (0..255) fed as they
    are would reach the model 255 times too bright and give maps of the wrong scale, and no
    single conversion rule fits every model's normalisation.
    """
    dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"{name}: expected floating-point pixels, normalised as the model was trained; got "
            f"{dtype}. Convert stored images with "
            "iba_jax.data.preprocess.unit_range, then bundle.input_spec.normalize."
        )
    shape = tuple(np.shape(x))
    if len(shape) != 4:
        raise ValueError(
            f"{name}: expected a batch of images of shape (N, H, W, {channels}) (channels last); "
            f"got shape {shape}. Add a batch axis with x[None] for a single image."
        )
    if shape[-1] != channels:
        hint = ""
        if shape[1] == channels:
            hint = " It looks channels-first: transpose with x.transpose(0, 2, 3, 1)."
        raise ValueError(
            f"{name}: expected {channels} channel(s) in the last axis; got shape {shape}.{hint}"
        )
    if min(shape[1:3]) < min_size:
        raise ValueError(
            f"{name}: expected height and width >= {min_size} for this network; got {shape[1:3]}."
        )


def check_rank(name: str, x: ArrayLike, rank: int, layout: str) -> None:
    """Raises unless ``x`` has ``rank`` axes, laid out as described by ``layout``."""
    shape = tuple(np.shape(x))
    if len(shape) != rank:
        raise ValueError(f"{name}: expected {rank} axes {layout}; got shape {shape}.")


def check_names(name: str, values: Sequence[str], choices: Sequence[str]) -> None:
    """Raises unless every entry of ``values`` is in ``choices`` (and there is at least one)."""
    if not values:
        raise ValueError(f"{name}: expected at least one of {', '.join(choices)}; got none.")
    for value in values:
        check_choice(name, value, choices)
