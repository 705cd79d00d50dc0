"""Models shipped with iba-jax: classifiers, a severity regressor and detectors of the phantoms,
and a severity regressor and detectors trained on real radiographs.

``phantoms_cls`` (BCE) and ``phantoms_cls_weighted`` (weighted BCE) classify the four findings,
``phantoms_cls_noisy`` too, trained on labels a fifth of which are flipped: a less confident
classifier (a finding that is there gets p ≈ 0.83, not 0.999), as real ones are, and
``phantoms_cls_noisy_224`` the same at 224 px (where denseblock3 is local);
``phantoms_reg`` regresses the BrixIA-like global score; ``phantoms_detectors`` are BrixIA's
three detectors (some zone scored 0-1 / 2 / 3). All are small DenseNets (growth 12, blocks
2-4-8-6, 24 initial features; 1-channel 128 px input (224 px for the last), pixels in
[0, 1]) trained by ``train/``
on ``cxr_phantoms``; the README in this folder gives the exact commands and their test-split
metrics. They are what the demo, the notebooks
and the phantom benchmark explain.

``brixia_public_reg`` (global score 0-18) and ``brixia_public_detectors`` are the same network
trained on the 183 real radiographs of BrixIA's public annotations (senior reader's scores),
starting from ``phantoms_reg`` and ``phantoms_detectors``; their patient-grouped 5-fold
cross-validated figures are in the README in this folder (out of fold: MAE 2.96, Pearson 0.637;
detector AUCs 0.825 / 0.673 / 0.598).

>>> from iba_jax.pretrained import load_pretrained
>>> bundle = load_pretrained("phantoms_cls")
>>> bundle.label_names, bundle.input_spec.image_size
(('Mass', 'Nodule', 'Effusion', 'Cardiomegaly'), 128)
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

from iba_jax import checks
from iba_jax.bundle import ModelBundle, load_bundle

PRETRAINED = (
    "phantoms_cls",
    "phantoms_cls_weighted",
    "phantoms_reg",
    "phantoms_detectors",
    "phantoms_cls_noisy",
    "phantoms_cls_noisy_224",
    "brixia_public_reg",
    "brixia_public_detectors",
)


SEGMENTER = "lung_segmenter"  # the shipped lung segmenter (iba_jax.segmentation)


def segmenter_dir() -> Path:
    """The folder of the shipped lung segmenter (``iba_jax.segmentation.load_segmenter``)."""
    return Path(str(importlib.resources.files(__name__) / SEGMENTER))


def pretrained_dir(name: str) -> Path:
    """The folder of a shipped model bundle (for commands that take ``--model DIR``)."""
    checks.check_choice("name", name, PRETRAINED)
    return Path(str(importlib.resources.files(__name__) / name))


def model_dir(model: str | os.PathLike[str]) -> Path:
    """A model bundle's folder from what a user names: a folder, or a shipped model's name
    (``PRETRAINED``) when no folder of that name exists here.

    Raises:
      FileNotFoundError: naming the shipped models, when ``model`` is neither.
    """
    path = Path(model)
    if path.exists():
        return path
    if os.fspath(model) in PRETRAINED:
        return pretrained_dir(os.fspath(model))
    raise FileNotFoundError(
        f"model: {os.fspath(model)!r} is neither a model bundle folder nor a shipped model "
        f"({', '.join(PRETRAINED)})."
    )


def load_pretrained(name: str) -> ModelBundle:
    """One of the shipped model bundles (``PRETRAINED``)."""
    return load_bundle(pretrained_dir(name))
