"""Building the data sets with TFDS and reading them back without TensorFlow.

The builders write ArrayRecord files, which ``tfds.data_source`` reads with random access into
numpy; TensorFlow is needed by neither step (it is not a dependency). With TensorFlow installed,
``tfds.load`` reads the same files into ``tf.data``.

>>> import tempfile
>>> from iba_jax.data import building
>>> folder = tempfile.TemporaryDirectory()
>>> data_dir = folder.name
>>> _ = building.build("cxr_phantoms", config="classification_64_mini", data_dir=data_dir)
>>> source = building.data_source(
...     "cxr_phantoms", "test", config="classification_64_mini", data_dir=data_dir
... )
>>> batch = next(building.numpy_batches(source, 4))
>>> batch["image"].shape, batch["labels"].shape
((4, 64, 64, 1), (4, 4))
>>> folder.cleanup()
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

from iba_jax import checks

# TFDS name -> the module that defines (and so registers) its builder.
BUILDER_MODULES = {
    "nih_chest_xray14": "iba_jax.data.nih",
    "brixia": "iba_jax.data.brixia",
    "brixia_public": "iba_jax.data.brixia_public",
    "cxr_phantoms": "iba_jax.data.phantoms",
}
BAD_IMAGE_POLICIES = ("fail", "skip")
_LOG = logging.getLogger(__name__)

DataSource = Sequence[dict[str, Any]]  # a split's examples by index, as numpy values


class _WithoutOpenCvAdvice(logging.Filter):
    """Drops TFDS' advice to install OpenCV, logged on every first read of an image: PIL
    decodes the stored PNGs exactly, and decoding is not what takes the time here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "OpenCV is not installed" not in record.getMessage()


logging.getLogger("absl").addFilter(_WithoutOpenCvAdvice())
FILE_FORMAT = "array_record"


class BadImages:
    """What a builder does with an image it cannot read: fail at once, or skip and report.

    Skipped images are logged one by one with their reason and listed, with the reason, in the
    built data set's metadata (``builder.info.metadata["skipped_images"]``): never dropped in
    silence.
    """

    def __init__(self, policy: str, metadata: tfds.core.MetadataDict) -> None:
        checks.check_choice("on_bad_image", policy, BAD_IMAGE_POLICIES)
        self.policy = policy
        self.metadata = metadata
        self.metadata.setdefault("skipped_images", {})

    def handle(self, name: str, error: Exception) -> None:
        """Raises ``error`` under the "fail" policy; records and logs it under "skip"."""
        if self.policy == "fail":
            raise error
        self.metadata["skipped_images"][name] = str(error)
        _LOG.warning("Skipping image %s: %s", name, error)


class ChoosesBadImagePolicy:
    """A builder of a downloaded release: what to do with an image it cannot read is chosen
    per build (``on_bad_image``), not by the builder config, so that a build that skips bad
    images keeps the config's name (TFDS refuses a custom config named like a registered one).
    What was skipped is in the built data set's metadata."""

    MANUAL_DOWNLOAD_INSTRUCTIONS: ClassVar[str]  # as every TFDS builder of a manual download

    def __init__(self, *, on_bad_image: str = "fail", **kwargs: Any) -> None:
        checks.check_choice("on_bad_image", on_bad_image, BAD_IMAGE_POLICIES)
        self.on_bad_image = on_bad_image
        super().__init__(**kwargs)


def png(values: np.ndarray) -> PIL.Image.Image:
    """An image feature's value from uint8 ``(H, W)`` pixels: Pillow encodes the PNG, so that
    building needs no TensorFlow."""
    return PIL.Image.fromarray(np.asarray(values).astype(np.uint8))


def builder_class(name: str) -> type[tfds.core.DatasetBuilder]:
    """The builder class of one of our data sets (imported on first use)."""
    if name not in BUILDER_MODULES:
        raise ValueError(f"name: expected one of {', '.join(BUILDER_MODULES)}; got {name!r}.")
    module = importlib.import_module(BUILDER_MODULES[name])
    return module.BUILDER


def build(
    name: str,
    *,
    data_dir: str | os.PathLike[str],
    config: str | tfds.core.BuilderConfig | None = None,
    manual_dir: str | os.PathLike[str] | None = None,
    on_bad_image: str = "fail",
    masks_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> tfds.core.DatasetBuilder:
    """Builds (or finds already built) one of the data sets under ``data_dir``.

    Args:
      name: ``nih_chest_xray14``, ``brixia``, ``brixia_public`` or ``cxr_phantoms``.
      data_dir: where TFDS keeps built data sets.
      config: a builder config or its name (the builder's first by default).
      manual_dir: the folder holding the downloaded release (NIH, BrixIA); the phantoms need
        none.
      on_bad_image: for a release (NIH, BrixIA), "fail" at a missing or unreadable image or
        "skip" it (listed in ``info.metadata["skipped_images"]``).
      masks_dir: brixia_public only: the folder of its lung masks, when they are not in
        ``lung_masks/`` beside the annotations.
      progress: show TFDS' progress bars (the command line does); by default the build is
        silent, except for the warnings about skipped images.

    Returns:
      The prepared builder; its ``info`` lists splits, features and skipped images.
    """
    cls = builder_class(name)
    data_dir = Path(data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise ValueError(
            f"data_dir: expected a folder for the built data sets; {data_dir} is a file."
        )
    options: dict[str, Any] = {}
    if issubclass(cls, ChoosesBadImagePolicy):
        options["on_bad_image"] = on_bad_image
    elif on_bad_image != "fail":
        raise ValueError(
            f"on_bad_image: {name} generates its images and reads none; got {on_bad_image!r}."
        )
    if masks_dir is not None:
        if name != "brixia_public":
            raise ValueError(f"masks_dir: only brixia_public reads lung masks; got {name}.")
        options["masks_dir"] = masks_dir
    with _quiet_tfds(progress):
        builder = cls(
            config=config, data_dir=os.fspath(data_dir), file_format=FILE_FORMAT, **options
        )
        if not builder.is_prepared() and issubclass(cls, ChoosesBadImagePolicy):
            _check_manual_dir(name, manual_dir, cls.MANUAL_DOWNLOAD_INSTRUCTIONS)
        download_config = tfds.download.DownloadConfig(
            manual_dir=None if manual_dir is None else os.fspath(manual_dir)
        )
        builder.download_and_prepare(download_config=download_config)
    return builder


@contextlib.contextmanager
def _quiet_tfds(progress: bool) -> Iterator[None]:
    """TFDS' chatter off: what it prints ("Downloading and preparing dataset Unknown size",
    wrong for an offline build) and logs below errors (e.g. that a folder not built yet has no
    dataset_info.json); its progress bars (stderr) only with ``progress``. Skipped images are
    still reported (``BadImages`` logs through Python's logging, not absl's)."""
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            if progress:
                yield
            else:
                with contextlib.redirect_stderr(io.StringIO()):
                    yield
    finally:
        absl_logger.setLevel(level)


def _check_manual_dir(
    name: str, manual_dir: str | os.PathLike[str] | None, instructions: str
) -> None:
    """A release's folder must exist and hold something; else one line of what to do."""
    how = " ".join(instructions.split())
    if manual_dir is None:
        raise ValueError(
            f"manual_dir: {name} is built from its downloaded release; got none. {how}"
        )
    folder = Path(manual_dir)
    if not folder.is_dir():
        raise ValueError(f"manual_dir: {folder} is not a folder. {how}")
    if not any(folder.iterdir()):
        raise ValueError(f"manual_dir: {folder} is empty. {how}")


def data_source(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike[str],
    config: str | tfds.core.BuilderConfig | None = None,
) -> DataSource:
    """Random access to a built split: ``source[i]`` is one example as numpy values."""
    builder = builder_class(name)(config=config, data_dir=os.fspath(data_dir))
    if not builder.is_prepared():
        raise NotBuiltError(name, builder.builder_config.name, os.fspath(data_dir))
    return builder.as_data_source(split=split)


class NotBuiltError(FileNotFoundError):
    """A data set read before it was built (its name, config and folder are attributes)."""

    def __init__(self, name: str, config: str, data_dir: str) -> None:
        self.name, self.config, self.data_dir = name, config, data_dir
        super().__init__(
            f"data_dir: {name}/{config} is not built under {data_dir}; build it first "
            f"(iba_jax.data.building.build({name!r}, config={config!r}, data_dir=...))."
        )


def numpy_batches(
    source: DataSource,
    batch_size: int,
    *,
    seed: int | None = None,
    drop_remainder: bool = False,
    keys: Sequence[str] | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Stacks examples of a data source into batches of numpy arrays.

    Args:
      source: a data source (or any sequence of example dicts).
      batch_size: examples per batch.
      seed: shuffle the order with this seed (in order when None).
      drop_remainder: drop a last, smaller batch.
      keys: the features to keep (all by default). Variable-length features (boxes, objects)
        cannot be stacked: leave them out, or read them from ``source[i]``.
    """
    order = np.arange(len(source))
    if seed is not None:
        order = np.random.default_rng(seed).permutation(order)
    stop = len(order) - len(order) % batch_size if drop_remainder else len(order)
    for start in range(0, stop, batch_size):
        examples = [source[int(i)] for i in order[start : start + batch_size]]
        names = keys if keys is not None else _stackable(examples[0])
        yield {k: np.stack([np.asarray(e[k]) for e in examples]) for k in names}


def _stackable(example: dict[str, Any]) -> list[str]:
    return [k for k, v in example.items() if not isinstance(v, list | dict)]
