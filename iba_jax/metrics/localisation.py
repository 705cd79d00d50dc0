"""Localisation: does a map point at the ground truth (boxes, masks, lung zones)?

Binarising rules for IoU: ``"area"`` keeps as many top pixels as the ground truth has (the
default of the tables: it needs no threshold and does not favour large or small maps), or the
rules of ``iba_jax.maps.binarize``: ``"l2"`` (a fixed threshold on the L2-normalised map, as
the paper's code), ``"percentile"`` and ``"otsu"``.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from iba_jax import checks
from iba_jax.maps import binarize
from iba_jax.metrics.ordering import top_pixels

Rule = Literal["area", "l2", "percentile", "otsu"]
RULES = ("area", "l2", "percentile", "otsu")


def box_mask(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boolean ``(H, W)`` union of normalised boxes ``(K, 4)`` (ymin, xmin, ymax, xmax): the
    pixels whose centres lie inside a box."""
    rows = (np.arange(height) + 0.5) / height
    cols = (np.arange(width) + 0.5) / width
    mask = np.zeros((height, width), bool)
    for ymin, xmin, ymax, xmax in np.asarray(boxes, np.float64).reshape(-1, 4):
        inside_rows = (rows >= ymin) & (rows < ymax)
        inside_cols = (cols >= xmin) & (cols < xmax)
        mask |= inside_rows[:, None] & inside_cols[None, :]
    return mask


def binarize_for(
    maps: jax.Array, truth: jax.Array, rule: Rule = "area", threshold: float | None = None
) -> jax.Array:
    """Boolean masks of the maps ``(N, H, W)``; ``truth`` (the ground-truth masks) sets the
    pixel count of the ``"area"`` rule."""
    checks.check_choice("rule", rule, RULES)
    if rule == "area":
        return top_pixels(maps, jnp.asarray(truth).sum(axis=(1, 2)))
    return binarize(maps, rule, threshold)


def iou(predicted: jax.Array, truth: jax.Array) -> jax.Array:
    """Intersection over union of boolean masks ``(N, H, W)`` -> ``(N,)`` (0 when both empty)."""
    intersection = (predicted & truth).sum(axis=(1, 2))
    union = (predicted | truth).sum(axis=(1, 2))
    return jnp.where(union > 0, intersection / jnp.maximum(union, 1), 0.0)


def pointing_game(maps: jax.Array, truth: jax.Array) -> jax.Array:
    """Whether each map's largest value (first in raster order on ties) lies in ``truth``."""
    n, h, w = maps.shape
    best = jnp.argmax(maps.reshape(n, h * w), axis=1)
    return truth.reshape(n, h * w)[jnp.arange(n), best]


def mass_inside(maps: jax.Array, truth: jax.Array) -> jax.Array:
    """Share of each map's (non-negative) mass inside ``truth`` (NaN for an all-zero map)."""
    maps = jnp.maximum(maps, 0.0)
    total = maps.sum(axis=(1, 2))
    return jnp.where(total > 0, (maps * truth).sum(axis=(1, 2)) / total, jnp.nan)


def instances_marked(predicted: ArrayLike, instances: np.ndarray, share: float = 0.5) -> float:
    """Fraction of the ``instances`` ``(K, H, W)`` (bool, one mask each) of which a binarised
    map ``predicted`` ``(H, W)`` covers at least ``share`` of the pixels: whether a method marks
    every instance of a finding or only the most telling one."""
    instances = np.asarray(instances, bool)
    checks.check_rank("instances", instances, 3, "(instances, H, W) boolean masks")
    covered = (instances & np.asarray(predicted, bool)[None]).sum(axis=(1, 2))
    return float(np.mean(covered >= share * instances.sum(axis=(1, 2))))


def lung_zones(lung_mask: np.ndarray) -> np.ndarray:
    """Six zones from a binary lung mask ``(H, W)``, as BrixIA defines them: the image is cut
    at the lungs' middle column into the two lungs, each lung by height into thirds of its
    extent (upper, middle, lower). Returns uint8 ``(H, W)``: 0 outside, 1–3 the image-left
    lung's zones (A–C), 4–6 the right one's (D–F)."""
    lung_mask = np.asarray(lung_mask, bool)
    zones = np.zeros(lung_mask.shape, np.uint8)
    cols = np.nonzero(lung_mask.any(axis=0))[0]
    if not len(cols):
        return zones
    middle = (cols[0] + cols[-1] + 1) / 2
    column = np.arange(lung_mask.shape[1])[None, :] + 0.5
    for side, part in enumerate((column < middle, column >= middle)):
        lung = lung_mask & part
        rows = np.nonzero(lung.any(axis=1))[0]
        if not len(rows):
            continue
        top, height = rows[0], rows[-1] + 1 - rows[0]
        third = np.clip(((np.arange(lung.shape[0]) - top) * 3) // height, 0, 2)[:, None]
        zones[lung] = (3 * side + third + 1).repeat(lung.shape[1], axis=1)[lung]
    return zones


def zone_iou(
    maps: jax.Array,
    zone_maps: np.ndarray,
    zone_scores: np.ndarray,
    rule: Rule = "area",
    threshold: float | None = None,
) -> jax.Array:
    """IoU of each binarised map with the union of its image's affected zones (score > 0).

    Args:
      zone_maps: uint8 ``(N, H, W)`` zone label maps (0 outside, k = zone k, 1–6).
      zone_scores: ``(N, 6)`` scores of the zones.
    """
    zone_maps, zone_scores = np.asarray(zone_maps), np.asarray(zone_scores)
    affected = np.concatenate([np.zeros((len(zone_scores), 1)), zone_scores], axis=1) > 0
    truth = jnp.asarray(np.take_along_axis(affected, zone_maps.reshape(len(zone_maps), -1), 1))
    truth = truth.reshape(zone_maps.shape)
    return iou(binarize_for(maps, truth, rule, threshold), truth)
