"""Training losses (means over the batch and outputs) and the class weights of weighted BCE."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def bce(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Sigmoid binary cross-entropy on logits, averaged over examples and classes."""
    return jnp.mean(
        -targets * jax.nn.log_sigmoid(logits) - (1 - targets) * jax.nn.log_sigmoid(-logits)
    )


def weighted_bce(logits: jax.Array, targets: jax.Array, pos_weight: jax.Array) -> jax.Array:
    """BCE with the positive term of class c weighted by ``pos_weight[c]`` (as torch's
    ``BCEWithLogitsLoss(pos_weight=...)``): −[w·y·log σ(x) + (1 − y)·log(1 − σ(x))]."""
    positive = pos_weight[None] * targets * jax.nn.log_sigmoid(logits)
    negative = (1 - targets) * jax.nn.log_sigmoid(-logits)
    return jnp.mean(-(positive + negative))


def mse(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean squared error."""
    return jnp.mean((predictions - targets) ** 2)


def positive_weights(labels: np.ndarray, label_names: tuple[str, ...]) -> np.ndarray:
    """Per class, #negatives / #positives over the training labels ``(N, C)``.

    Raises:
      ValueError: naming the classes without a positive example (no weight exists for them).
    """
    labels = np.asarray(labels, np.float64)
    positives = labels.sum(axis=0)
    missing = [name for name, p in zip(label_names, positives, strict=True) if p == 0]
    if missing:
        raise ValueError(
            f"weighted_bce: the training split has no positive example of {missing}; "
            "use loss='bce' or more data."
        )
    return ((len(labels) - positives) / positives).astype(np.float32)
