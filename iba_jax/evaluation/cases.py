"""The cases of an example: which outputs of which image are explained, against what truth.

* classification (NIH ChestX-ray14, cxr_phantoms classification): each positive label with
  instances; truth = the union of that class's instance masks (phantoms) or boxes (NIH);
* severity regression (BrixIA-like examples, with a ``zone_map``; a one-output model): one case,
  truth = the zones scored above 0, with the global score and the severity map;
* BrixIA's three detectors (a model whose outputs are ``brixia.DETECTOR_LABELS``): each detector
  that fires; truth = the zones it is about (scored 0-1, 2 or 3).

An image whose zone map is empty (its lung mask, annotated or predicted, holds no lung) has
no case: nothing to localise or correlate with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from iba_jax.data.brixia import DETECTOR_LABELS, detector_zones
from iba_jax.metrics import localisation


@dataclasses.dataclass(frozen=True)
class Case:
    """One explanation to evaluate: an image, a target output and where its evidence is."""

    index: int
    target: int
    truth: np.ndarray  # bool (H, W)
    label: float = float("nan")  # the regression target (severity score)
    severity: np.ndarray | None = None  # per-pixel severity map (H, W)
    lungs: np.ndarray | None = None  # bool (H, W): the lungs (severity cases), for pcc_lungs
    instances: np.ndarray | None = None  # bool (K, H, W): the target's instances, one by one


def cases(example: dict[str, Any], index: int, label_names: Sequence[str] = ()) -> list[Case]:
    """The cases of one example for a model with outputs ``label_names`` (see the module
    docstring); an image without a finding to localise has none."""
    if "zone_map" not in example:
        if "labels" not in example:
            raise ValueError(
                "source: expected examples with multi-hot `labels` and `objects` (boxes or "
                "masks) or with a `zone_map` of BrixIA's six lung zones; got keys "
                f"{sorted(example)}. A brixia build older than version 1.1.0 has no zone maps: "
                "rebuild it (the builder now segments the lungs)."
            )
        return _classification_cases(example, index)
    zones = np.asarray(example["zone_map"])[..., 0]  # 0 outside the lungs, zone k + 1 inside
    if not zones.any():
        return []  # the mask holds no lung: no zones to score
    scores = np.asarray(example["zone_scores"])
    in_zones = lambda chosen: np.concatenate([[False], chosen])[zones]
    if tuple(label_names) == DETECTOR_LABELS:
        chosen = detector_zones(scores)
        return [Case(index, k, in_zones(chosen[k])) for k in range(len(chosen)) if chosen[k].any()]
    if not scores.any():
        return []  # nothing to localise or correlate with
    severity = np.asarray(example["severity_map"])[..., 0].astype(np.float32)
    label = float(example["global_score"])
    return [Case(index, 0, in_zones(scores > 0), label, severity, lungs=zones > 0)]


def _classification_cases(example: dict[str, Any], index: int) -> list[Case]:
    objects = example.get("objects", {})
    labels = np.atleast_1d(np.asarray(objects.get("label", [])))
    height, width = example["image"].shape[:2]
    found = []
    for target in np.nonzero(np.asarray(example["labels"]))[0]:
        mine = np.nonzero(labels == target)[0]
        if not len(mine):
            continue
        if "mask" in objects:
            instances = np.stack([np.asarray(objects["mask"][k])[..., 0] > 0 for k in mine])
        else:
            boxes = np.asarray(objects["bbox"])[mine]
            instances = np.stack([localisation.box_mask(b[None], height, width) for b in boxes])
        found.append(
            Case(index, int(target), np.asarray(instances.any(axis=0)), instances=instances)
        )
    return found
