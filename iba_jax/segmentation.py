"""Lung masks for radiographs that have none: a small U-Net, masks at each image's own size.

The paper's BrixIA evaluation (zone IoU, severity maps) needs each image's lungs; NIH, the full
BrixIA release and a user's own files have no masks. :func:`segment_lungs` resizes each whole
image (not a crop: the lungs may reach the border) to the segmenter's square input, predicts
the lung probability per pixel, resizes it back to the image's size and thresholds it. The
shipped segmenter (``iba_jax/pretrained/lung_segmenter``) was trained on the real masks of
BrixIA's public images (``train/lungs.py``; its cross-validated Dice is in its README).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from iba_jax.bundle import CorruptBundleError, load_checked, save_checked
from iba_jax.data import preprocess
from iba_jax.models.unet import UNet, UNetConfig, Variables
from iba_jax.pretrained import segmenter_dir

FORMAT = "iba-jax-lung-segmenter"
_JSON = "segmenter.json"


@dataclasses.dataclass(frozen=True)
class Segmenter:
    """A U-Net with its weights, the side of its square input, and what was measured on it."""

    model: UNet
    variables: Variables
    image_size: int
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)
    checksum: str = ""  # the sha256 of the saved files (set by load_segmenter)


def save_segmenter(directory: str | Path, segmenter: Segmenter) -> str:
    """Writes a segmenter (atomically, with its checksum); returns the checksum."""
    metadata = {
        "format": FORMAT,
        "config": segmenter.model.config.to_dict(),
        "image_size": segmenter.image_size,
        "notes": segmenter.notes,
    }
    return save_checked(
        Path(directory).absolute(), metadata, segmenter.variables, _JSON, "variables"
    )


def load_segmenter(directory: str | Path | None = None) -> Segmenter:
    """Reads a segmenter written by :func:`save_segmenter` (default: the shipped one).

    Raises:
      FileNotFoundError: when ``directory`` holds no segmenter.
      CorruptBundleError: when its files do not match their recorded checksum.
    """
    directory = Path(segmenter_dir() if directory is None else directory).absolute()
    if not (directory / _JSON).is_file():
        raise FileNotFoundError(
            f"segmenter: expected a folder with {_JSON} (written by train/lungs.py); "
            f"{str(directory)!r} has none."
        )

    def abstract(metadata: dict[str, Any]) -> Variables:
        if metadata.get("format") != FORMAT:
            raise CorruptBundleError(f"format is {metadata.get('format')!r}, not {FORMAT!r}")
        model = UNet(UNetConfig.from_dict(metadata["config"]))
        size = metadata["image_size"]
        return jax.eval_shape(lambda: model.init(jax.random.key(0), size))

    stored, variables = load_checked(directory, _JSON, "variables", abstract, "segmenter")
    return Segmenter(
        UNet(UNetConfig.from_dict(stored["config"])),
        variables,
        int(stored["image_size"]),
        stored.get("notes", {}),
        json.loads((directory / _JSON).read_text())["sha256"],
    )


@functools.partial(jax.jit, static_argnums=0)
def lung_probabilities(model: UNet, variables: Variables, images: jax.Array) -> jax.Array:
    """Lung probability per pixel of square images ``(N, S, S)`` in [0, 1]."""
    return jax.nn.sigmoid(model.apply(variables, images[..., None]))


def segment_lungs(
    images: Sequence[np.ndarray],
    segmenter: Segmenter | None = None,
    *,
    threshold: float = 0.5,
) -> list[np.ndarray]:
    """Lung masks (bool, each ``(H, W)`` of its image) of radiographs of any size.

    Args:
      images: float pixels in [0, 1], each ``(H, W)`` or ``(H, W, 3)`` (colour is averaged),
        e.g. from ``iba_jax.data.preprocess.read_image``.
      segmenter: default: the shipped one (:func:`load_segmenter`).
      threshold: the probability above which a pixel is lung.

    Example:

      >>> import numpy as np
      >>> masks = segment_lungs([np.zeros((300, 200)), np.ones((90, 120, 3))])
      >>> [m.shape for m in masks], masks[0].dtype
      ([(300, 200), (90, 120)], dtype('bool'))
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold: expected a number in (0, 1); got {threshold!r}.")
    segmenter = load_segmenter() if segmenter is None else segmenter
    size = segmenter.image_size
    gray = []
    for k, image in enumerate(images):
        image = np.asarray(image, np.float32)
        if image.ndim == 3 and image.shape[-1] == 3:
            image = preprocess.grayscale(image)
        if image.ndim != 2 or min(image.shape) < 1:
            raise ValueError(
                f"images[{k}]: expected (H, W) or (H, W, 3) pixels; got shape {image.shape}."
            )
        if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise ValueError(f"images[{k}]: expected finite pixels in [0, 1].")
        gray.append(image)
    if not gray:
        return []
    square = np.stack([preprocess.resize(g, size) for g in gray])
    probabilities = np.asarray(lung_probabilities(segmenter.model, segmenter.variables, square))
    return [
        preprocess.resize(p, g.shape) > threshold for p, g in zip(probabilities, gray, strict=True)
    ]


def dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient of two boolean masks (1 when both are empty).

    >>> dice(np.array([1, 1, 0], bool), np.array([1, 0, 0], bool))
    0.6666666666666666
    """
    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    total = predicted.sum() + truth.sum()
    return 1.0 if total == 0 else float(2 * (predicted & truth).sum() / total)


def soft_dice_loss(logits: jax.Array, truth: jax.Array) -> jax.Array:
    """1 − the soft Dice of ``sigmoid(logits)`` with binary ``truth``, per image ``(N,)``."""
    p = jax.nn.sigmoid(logits).reshape(len(logits), -1)
    t = truth.reshape(len(truth), -1).astype(p.dtype)
    return 1 - (2 * (p * t).sum(-1) + 1) / (p.sum(-1) + t.sum(-1) + 1)


def segmentation_loss(logits: jax.Array, truth: jax.Array) -> jax.Array:
    """The training loss: mean pixel BCE plus soft Dice loss, per image ``(N,)``."""
    bce = optax.sigmoid_binary_cross_entropy(logits, truth.astype(logits.dtype))
    return jnp.mean(bce, axis=(1, 2)) + soft_dice_loss(logits, truth)
