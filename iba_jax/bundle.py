"""The model bundle: one directory holding everything needed to run and explain a model.

Layout::

    DIR/
      bundle.json     format, DenseNet config, label names, input spec, sha256 of the content
      variables/      Orbax checkpoint of {"params", "batch_stats"}

``iba-jax convert`` writes it, training writes it, and every command that takes ``--model DIR``
reads it with :func:`load_bundle`. Orbax restores flipped bytes in its data files silently, so
the JSON carries a sha256 over the metadata and every variable (path, dtype, shape, bytes), and
loading refuses a bundle whose content does not hash to it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from iba_jax import checks
from iba_jax.models.densenet import DenseNet, DenseNetConfig, Variables

FORMAT = "iba-jax-bundle"
FORMAT_VERSION = 1

NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    # torchvision ImageNet models, on pixels scaled to [0, 1].
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # torchxrayvision: [0, 1] -> [-1024, 1024], i.e. (p - 0.5) * 2048.
    "xrv": ((0.5,), (1.0 / 2048.0,)),
    "none": ((0.0,), (1.0,)),
}


class CorruptBundleError(ValueError):
    """A bundle whose files do not match its recorded checksum, or cannot be read."""


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """How raw images become model inputs: ``(x - mean) / std`` on pixels scaled to [0, 1].

    Attributes:
      image_size: height and width the model was trained at.
      mean: per-channel mean (one value is broadcast to every channel).
      std: per-channel standard deviation (one value is broadcast likewise).
    """

    image_size: int = 224
    mean: tuple[float, ...] = NORMALIZATIONS["imagenet"][0]
    std: tuple[float, ...] = NORMALIZATIONS["imagenet"][1]

    def __post_init__(self) -> None:
        checks.check_positive_int("image_size", self.image_size)
        if len(self.mean) != len(self.std):
            raise ValueError(
                f"mean, std: expected the same length; got {len(self.mean)} and {len(self.std)}."
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std: expected positive values; got {self.std}.")

    @classmethod
    def named(cls, normalization: str, image_size: int = 224) -> InputSpec:
        """The spec of a known normalisation: ``imagenet``, ``xrv`` or ``none``."""
        checks.check_choice("normalization", normalization, NORMALIZATIONS)
        mean, std = NORMALIZATIONS[normalization]
        return cls(image_size=image_size, mean=mean, std=std)

    def normalize(self, x01: jax.Array) -> jax.Array:
        """Normalises channels-last images with pixels in [0, 1]."""
        if len(self.mean) not in (1, x01.shape[-1]):
            raise ValueError(
                f"x01: expected 1 or {len(self.mean)} channels (last axis) for this input spec; "
                f"got shape {tuple(x01.shape)}."
            )
        x01 = jnp.asarray(x01)
        channel_axis = (1,) * (x01.ndim - 1) + (-1,)
        mean = jnp.asarray(self.mean, x01.dtype).reshape(channel_axis)
        std = jnp.asarray(self.std, x01.dtype).reshape(channel_axis)
        return (x01 - mean) / std


@dataclasses.dataclass(frozen=True)
class ModelBundle:
    """A DenseNet's config and variables, with its label names and input spec."""

    config: DenseNetConfig
    variables: Variables
    label_names: tuple[str, ...]
    input_spec: InputSpec = InputSpec()

    def __post_init__(self) -> None:
        if len(self.label_names) != self.config.num_classes:
            raise ValueError(
                f"label_names: expected {self.config.num_classes} names (one per output); "
                f"got {len(self.label_names)}."
            )
        if len(self.input_spec.mean) not in (1, self.config.in_channels):
            raise ValueError(
                f"input_spec: expected 1 or {self.config.in_channels} mean/std values for a "
                f"{self.config.in_channels}-channel model; got {len(self.input_spec.mean)}."
            )

    @property
    def model(self) -> DenseNet:
        return DenseNet(self.config)


def _metadata(bundle: ModelBundle) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": bundle.config.to_dict(),
        "label_names": list(bundle.label_names),
        "input_spec": {
            "image_size": bundle.input_spec.image_size,
            "mean": list(bundle.input_spec.mean),
            "std": list(bundle.input_spec.std),
        },
    }


def content_checksum(metadata: dict[str, Any], variables: Variables) -> str:
    """sha256 over the metadata (canonical JSON) and every variable's path, dtype, shape, bytes."""
    digest = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode())
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def save_bundle(directory: str | Path, bundle: ModelBundle, *, overwrite: bool = False) -> str:
    """Writes ``bundle`` to ``directory`` atomically and returns its content checksum.

    The bundle is written into a temporary sibling directory and renamed into place, so a killed
    write never leaves a half-written bundle under ``directory``.
    """
    directory = Path(directory).absolute()
    if directory.exists() and not overwrite:
        raise FileExistsError(
            f"directory: {str(directory)!r} exists; pass overwrite=True (--overwrite) "
            "to replace it."
        )
    directory.parent.mkdir(parents=True, exist_ok=True)
    metadata = _metadata(bundle)
    variables = jax.tree.map(np.asarray, bundle.variables)
    checksum = content_checksum(metadata, variables)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(staging / "variables", variables)
            checkpointer.wait_until_finished()
        text = json.dumps({**metadata, "sha256": checksum}, indent=2, sort_keys=True)
        (staging / "bundle.json").write_text(text + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return checksum


def load_bundle(directory: str | Path) -> ModelBundle:
    """Reads a bundle written by :func:`save_bundle`, verifying its checksum.

    Raises:
      FileNotFoundError: if ``directory`` holds no ``bundle.json``.
      CorruptBundleError: if the files cannot be read or do not match the recorded checksum.
    """
    directory = Path(directory).absolute()
    meta_path = directory / "bundle.json"
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"model: expected a model bundle directory with bundle.json (written by "
            f"`iba-jax convert` or the trainer); {str(directory)!r} has none."
        )
    try:
        stored = json.loads(meta_path.read_text())
        recorded = stored.pop("sha256")
        if stored.get("format") != FORMAT:
            raise ValueError(f"format is {stored.get('format')!r}, not {FORMAT!r}")
        config = DenseNetConfig.from_dict(stored["config"])
        spec = stored["input_spec"]
        input_spec = InputSpec(spec["image_size"], tuple(spec["mean"]), tuple(spec["std"]))
        abstract = DenseNet(config).abstract_variables()
        with ocp.StandardCheckpointer() as checkpointer:
            variables = checkpointer.restore(directory / "variables", abstract)
    except Exception as err:
        raise CorruptBundleError(
            f"model: cannot read the bundle in {str(directory)!r}: {err}"
        ) from err
    actual = content_checksum(stored, variables)
    if actual != recorded:
        raise CorruptBundleError(
            f"model: the bundle in {str(directory)!r} is corrupt: its content hashes to "
            f"{actual[:16]}..., but bundle.json records {recorded[:16]}.... Re-create it with "
            "`iba-jax convert` (or re-export it from training)."
        )
    return ModelBundle(config, variables, tuple(stored["label_names"]), input_spec)
