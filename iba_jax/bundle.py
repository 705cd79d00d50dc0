"""The model bundle: one directory holding everything needed to run and explain a model.

Layout::

    DIR/
      bundle.json     format, model family (ResNet; absent: DenseNet) and config, label names,
                      input spec, sha256 of the content
      variables/      Orbax checkpoint of {"params", "batch_stats"}
      stats/LAYER/    feature statistics of a layer for IBA: stats.json (+ sha256), arrays/

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
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from iba_jax import checks
from iba_jax.data.preprocess import NORMALIZATIONS, normalize
from iba_jax.models.families import Config, config_from_dict, family_of, model_for
from iba_jax.models.staged import StagedNetwork, Variables
from iba_jax.stats import FeatureStats

FORMAT = "iba-jax-bundle"
_BUNDLE_JSON = "bundle.json"
_STATS_JSON = "stats.json"
FORMAT_VERSION = 1


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
        """Normalises channels-last images with pixels in [0, 1] (numpy, jax or tf)."""
        return normalize(x01, self.mean, self.std)


@dataclasses.dataclass(frozen=True)
class ModelBundle:
    """A model's config (DenseNet or ResNet) and variables, with its label names and input
    spec."""

    config: Config
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
    def model(self) -> StagedNetwork:
        return model_for(self.config)


def _metadata(bundle: ModelBundle) -> dict[str, Any]:
    family = family_of(bundle.config)  # recorded for all but DenseNets (older bundles have none)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **({} if family == "densenet" else {"family": family}),
        "config": bundle.config.to_dict(),
        "label_names": list(bundle.label_names),
        "input_spec": {
            "image_size": bundle.input_spec.image_size,
            "mean": list(bundle.input_spec.mean),
            "std": list(bundle.input_spec.std),
        },
    }


def bundle_checksum(bundle: ModelBundle) -> str:
    """The content checksum of a bundle in memory (the one ``save_bundle`` records)."""
    return content_checksum(_metadata(bundle), bundle.variables)


def stats_checksum(stats: Mapping[str, FeatureStats]) -> str:
    """The content checksum of feature statistics per layer (what a map depends on)."""
    return content_checksum(
        {"layers": sorted(stats)}, {layer: stats[layer]._asdict() for layer in sorted(stats)}
    )


def content_checksum(metadata: dict[str, Any], variables: Variables) -> str:
    """sha256 over the metadata (canonical JSON) and every variable's path, dtype, shape, bytes."""
    digest = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode())
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def save_checked(
    directory: Path, metadata: dict[str, Any], tree: Any, meta_name: str, tree_name: str
) -> str:
    """Writes ``tree`` (Orbax) and ``metadata`` plus their sha256 (JSON) into ``directory``,
    atomically: into a temporary sibling first, then renamed into place."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tree = jax.tree.map(np.asarray, tree)
    checksum = content_checksum(metadata, tree)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(staging / tree_name, tree)
            checkpointer.wait_until_finished()
        text = json.dumps({**metadata, "sha256": checksum}, indent=2, sort_keys=True)
        (staging / meta_name).write_text(text + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return checksum


def load_checked(
    directory: Path,
    meta_name: str,
    tree_name: str,
    abstract_tree: Callable[[dict[str, Any]], Any],
    what: str,
) -> tuple[dict[str, Any], Any]:
    """Reads what :func:`save_checked` wrote and verifies the checksum."""
    try:
        stored = json.loads((directory / meta_name).read_text())
        recorded = stored.pop("sha256")
        abstract = abstract_tree(stored)
        with ocp.StandardCheckpointer() as checkpointer:
            tree = checkpointer.restore(directory / tree_name, abstract)
    except Exception as err:
        raise CorruptBundleError(
            f"model: cannot read the {what} in {str(directory)!r}: {err}"
        ) from err
    actual = content_checksum(stored, tree)
    if actual != recorded:
        raise CorruptBundleError(
            f"model: the {what} in {str(directory)!r} is corrupt: its content hashes to "
            f"{actual[:16]}..., but {meta_name} records {recorded[:16]}.... Re-create it."
        )
    return stored, tree


def save_bundle(directory: str | Path, bundle: ModelBundle, *, overwrite: bool = False) -> str:
    """Writes ``bundle`` to ``directory`` atomically and returns its content checksum.

    The bundle is written into a temporary sibling directory and renamed into place, so a killed
    write never leaves a half-written bundle under ``directory``. Overwriting a bundle removes
    its feature statistics: they belong to the old weights.
    """
    directory = Path(directory).absolute()
    if directory.exists() and not overwrite:
        raise FileExistsError(
            f"directory: {str(directory)!r} exists; pass overwrite=True to replace it."
        )
    return save_checked(directory, _metadata(bundle), bundle.variables, _BUNDLE_JSON, "variables")


def _bundle_abstract(metadata: dict[str, Any]) -> Variables:
    if metadata.get("format") != FORMAT:
        raise ValueError(f"format is {metadata.get('format')!r}, not {FORMAT!r}")
    return model_for(_config_of(metadata)).abstract_variables()


def _config_of(metadata: dict[str, Any]) -> Config:
    return config_from_dict(metadata["config"], metadata.get("family", "densenet"))


def _require_bundle(directory: Path) -> None:
    if not (directory / _BUNDLE_JSON).is_file():
        raise FileNotFoundError(
            f"model: expected a model bundle directory with {_BUNDLE_JSON} (written by "
            f"`iba-jax convert` or the trainer); {str(directory)!r} has none."
        )


def load_bundle(directory: str | Path) -> ModelBundle:
    """Reads a bundle written by :func:`save_bundle`, verifying its checksum.

    Raises:
      FileNotFoundError: if ``directory`` holds no ``bundle.json``.
      CorruptBundleError: if the files cannot be read or do not match the recorded checksum.
    """
    directory = Path(directory).absolute()
    _require_bundle(directory)
    stored, variables = load_checked(
        directory, _BUNDLE_JSON, "variables", _bundle_abstract, "bundle"
    )
    spec = stored["input_spec"]
    return ModelBundle(
        _config_of(stored),
        variables,
        tuple(stored["label_names"]),
        InputSpec(spec["image_size"], tuple(spec["mean"]), tuple(spec["std"])),
    )


class StatsOfAnotherModelError(ValueError):
    """Feature statistics recorded for other weights than the bundle's."""


def recorded_checksum(directory: str | Path) -> str:
    """The content checksum that the bundle at ``directory`` records for its weights."""
    directory = Path(directory).absolute()
    _require_bundle(directory)
    try:
        return str(json.loads((directory / _BUNDLE_JSON).read_text())["sha256"])
    except (ValueError, KeyError) as err:
        raise CorruptBundleError(
            f"model: cannot read the checksum in {str(directory / _BUNDLE_JSON)!r}: {err}"
        ) from err


def save_feature_stats(
    directory: str | Path, layer: str, stats: FeatureStats, *, description: str = ""
) -> str:
    """Stores the feature statistics of ``layer`` in the bundle at ``directory``.

    They go to ``DIR/stats/LAYER/`` (replacing earlier ones), with their checksum and the
    bundle's (the weights they were estimated for: ``load_feature_stats`` refuses them beside
    other weights), so that a user estimates them once per model and layer. ``description``
    records where they came from (data set, split, preprocessing). Returns the checksum.
    """
    directory = Path(directory).absolute()
    metadata = {
        "layer": layer,
        "feature_shape": list(np.shape(stats.mean)),
        "count": int(stats.count),
        "description": description,
        "model_sha256": recorded_checksum(directory),
    }
    return save_checked(
        directory / "stats" / layer, metadata, stats._asdict(), _STATS_JSON, "arrays"
    )


def _stats_abstract(metadata: dict[str, Any]) -> dict[str, jax.ShapeDtypeStruct]:
    shape = tuple(metadata["feature_shape"])
    return {
        "mean": jax.ShapeDtypeStruct(shape, jnp.float32),
        "std": jax.ShapeDtypeStruct(shape, jnp.float32),
        "active": jax.ShapeDtypeStruct(shape, jnp.bool_),
        "count": jax.ShapeDtypeStruct((), jnp.int32),
    }


def stats_layers(directory: str | os.PathLike[str]) -> tuple[str, ...]:
    """The layers whose feature statistics are stored in the bundle at ``directory``."""
    root = Path(directory) / "stats"
    if not root.is_dir():
        return ()
    return tuple(sorted(p.name for p in root.iterdir() if (p / _STATS_JSON).is_file()))


def load_feature_stats(
    directory: str | os.PathLike[str], layer: str, *, allow_other_model: bool = False
) -> FeatureStats:
    """The feature statistics of ``layer`` stored in the bundle at ``directory``.

    Statistics describe the features of particular weights: the prior noise of a bottleneck
    drawn from another model's statistics gives maps of the wrong information. So they are
    read only beside the weights they were recorded for, unless ``allow_other_model`` (for
    statistics shared on purpose, e.g. between fine-tuned copies that keep the layers below the
    bottleneck frozen).

    Raises:
      FileNotFoundError: naming the layers that are stored, when ``layer`` is not.
      CorruptBundleError: if the stored statistics do not match their checksum.
      StatsOfAnotherModelError: if they were recorded for other weights than the bundle's.
    """
    directory = Path(directory).absolute()
    _require_bundle(directory)
    if layer not in stats_layers(directory):
        stored = ", ".join(stats_layers(directory)) or "none"
        raise FileNotFoundError(
            f"layer: no feature statistics for {layer!r} in {str(directory)!r} (stored: "
            f"{stored}); estimate them with estimate_feature_stats and save_feature_stats."
        )
    record, tree = load_checked(
        directory / "stats" / layer, _STATS_JSON, "arrays", _stats_abstract, "statistics"
    )
    model = recorded_checksum(directory)
    recorded = record.get("model_sha256")
    if recorded is None:
        warnings.warn(
            f"{directory}: the {layer!r} statistics record no model checksum (written by an "
            "older iba-jax), so nothing shows they belong to these weights; re-estimate them "
            "to record it.",
            stacklevel=2,
        )
    elif recorded != model and not allow_other_model:
        raise StatsOfAnotherModelError(
            f"stats: the {layer!r} statistics in {str(directory)!r} were estimated for other "
            f"weights (model sha256 {recorded[:12]}...) than the bundle's ({model[:12]}...); "
            "re-estimate them, or allow statistics shared on purpose (allow_other_model=True)."
        )
    return FeatureStats(**tree)
