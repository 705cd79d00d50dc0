"""Explaining image files: read them as the model was trained, predict, attribute, and write
each explanation (the map as ``.npy``, an overlay PNG with a colour bar, and a JSON record).

Images are read as the data set builders store them (PNG, JPEG or DICOM -> [0, 1] -> central
square -> the bundle's size -> uint8) and then normalised as the bundle says, so a file gives
the model the same input as the same image in a built data set. Files are explained in batches;
one that cannot be read is reported and the rest are still explained.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from iba_jax import report_plots
from iba_jax.bundle import ModelBundle
from iba_jax.data.preprocess import UnreadableImageError, read_image, square, to_uint8, unit_range
from iba_jax.methods import METHODS, MethodSettings, attribution_maps
from iba_jax.stats import FeatureStats

# Short names of the command line -> the methods' names.
ALIASES = {
    "inverse": "inverse_iba",
    "multilayer": "multilayer_iba",
    "regression": "regression_iba_deviation",
    "gradcam": "grad_cam",
    "ig": "integrated_gradients",
}
POSITIVES = "positives"


def method_name(name: str) -> str:
    """A method's name from its short name or its full name (``methods.METHODS``)."""
    full = ALIASES.get(name, name)
    if full not in METHODS:
        known = sorted({*ALIASES, *METHODS} - {"random"})
        raise ValueError(f"--method: expected one of {', '.join(known)}; got {name!r}.")
    if METHODS[full].needs_labels:
        raise ValueError(
            f"--method: {full} needs each image's true score, which explain does not take; "
            "use regression (the Deviation loss) or regression_iba_rm."
        )
    return full


def model_image(bundle: ModelBundle, path: str | os.PathLike[str]) -> np.ndarray:
    """The file as the model's stored input: uint8 ``(S, S, C)``, S the bundle's image size,
    C its channels (colour averaged to gray for 1-channel models, gray repeated for RGB)."""
    pixels = read_image(path)
    channels = bundle.config.in_channels
    if pixels.ndim == 3 and channels == 1:
        pixels = pixels.mean(axis=-1)
    pixels = to_uint8(square(pixels, bundle.input_spec.image_size))
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], channels, axis=-1)
    return pixels


def choose_targets(bundle: ModelBundle, outputs: np.ndarray, target: str) -> list[tuple[int, str]]:
    """The outputs to explain for one image, each with how it was chosen.

    ``target``: an output's index, its label name (any case), or ``"positives"``: every output
    a sigmoid head puts at 0.5 or above (the most probable one when none is), the largest logit
    of a linear head, output 0 of a regression (ReLU) head.
    """
    names = [n.lower() for n in bundle.label_names]
    if target.lower() == POSITIVES:
        if bundle.config.head == "sigmoid":
            chosen = [int(i) for i in np.nonzero(outputs >= 0.5)[0]]
            if chosen:
                return [(i, "positive") for i in chosen]
        return [(int(np.argmax(outputs)), "highest")]
    if target.lower() in names:
        return [(names.index(target.lower()), "name")]
    if target.isdigit() and int(target) < len(names):
        return [(int(target), "index")]
    raise ValueError(
        f"--target: expected {POSITIVES}, an output index below {len(names)} or one of "
        f"{', '.join(bundle.label_names)}; got {target!r}."
    )


@dataclasses.dataclass
class ExplainResult:
    """What ``explain_files`` did: the JSON records written and the files that failed."""

    written: list[Path] = dataclasses.field(default_factory=list)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def _versions() -> dict[str, str]:
    packages = ("iba-jax", "jax", "jaxlib", "flax", "optax", "numpy")
    found = {}
    for package in packages:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def _stems(paths: Sequence[str]) -> list[str]:
    """Output names per file: the file name without its extension, numbered when two files
    share one."""
    stems, seen = [], {}
    for path in paths:
        stem = Path(path).stem or "image"
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems


def explain_files(
    paths: Sequence[str],
    bundle: ModelBundle,
    stats: Mapping[str, FeatureStats],
    method: str,
    target: str,
    out: str | os.PathLike[str],
    *,
    settings: MethodSettings = MethodSettings(),
    seed: int = 0,
    batch_size: int = 8,
    model_dir: str | None = None,
    progress: Callable[[Iterator], Iterator] = lambda it: it,
) -> ExplainResult:
    """Explains each file's chosen outputs with ``method`` into the folder ``out``.

    Per (file, target): ``STEM.TARGET.METHOD.npy`` (the map at the model's resolution, float32),
    ``.png`` (the map over the image, with a colour bar in the method's unit) and ``.json`` (the
    predictions per class, the target and how it was chosen, the map's sum and unit, the
    total bits through the bottleneck for the IBA family, the method's settings, the seed and
    the versions). The noise of image i's
    target t is drawn under ``fold_in(fold_in(key(seed), i), t)``, whatever the batching.
    """
    method = method_name(method)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, variables = bundle.model, bundle.variables
    forward = jax.jit(lambda v, x: model.head_outputs(model.apply(v, x)))
    base_key = jax.random.key(seed)
    result = ExplainResult()
    stems = _stems(paths)
    versions = _versions()
    batches = [range(s, min(s + batch_size, len(paths))) for s in range(0, len(paths), batch_size)]
    for batch in progress(iter(batches)):
        readable, pixels = [], []
        for i in batch:
            try:
                pixels.append(model_image(bundle, paths[i]))
                readable.append(i)
            except (OSError, UnreadableImageError) as error:
                result.failed.append((str(paths[i]), str(error)))
        if not readable:
            continue
        x = bundle.input_spec.normalize(unit_range(np.stack(pixels), bundle.config.in_channels))
        outputs = np.asarray(forward(variables, x))
        pairs = [
            (row, i, t, how)
            for row, i in enumerate(readable)
            for t, how in choose_targets(bundle, outputs[row], target)
        ]
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            rows = jnp.asarray([row for row, *_ in chunk])
            keys = jnp.stack(
                [jax.random.fold_in(jax.random.fold_in(base_key, i), t) for _, i, t, _ in chunk]
            )
            maps = attribution_maps(
                method,
                model,
                variables,
                stats,
                x[rows],
                jnp.asarray([t for _, _, t, _ in chunk]),
                key=keys,
                settings=settings,
            )
            for (row, i, t, how), m in zip(chunk, np.asarray(maps), strict=True):
                record = {
                    "file": str(Path(paths[i]).resolve()),
                    "model": model_dir,
                    "predictions": dict(
                        zip(bundle.label_names, outputs[row].tolist(), strict=True)
                    ),
                    "head": bundle.config.head,
                    "target": {"index": t, "name": bundle.label_names[t], "chosen_by": how},
                    "method": method,
                    "unit": METHODS[method].unit,
                    "map_sum": float(m.sum()),
                    "total_bits": float(m.sum()) if METHODS[method].unit == "bits" else None,
                    "settings": dataclasses.asdict(settings),
                    "seed": seed,
                    "versions": versions,
                }
                name = f"{stems[i]}.{bundle.label_names[t]}.{method}"
                result.written.append(_write(out, name, pixels[row], m, record))
    return result


def _write(out: Path, name: str, pixels: np.ndarray, m: np.ndarray, record: dict) -> Path:
    np.save(out / f"{name}.npy", m.astype(np.float32))
    title = f"{record['target']['name']} ({record['method']})"
    report_plots.overlay(pixels, m, record["unit"], title, out / f"{name}.png")
    path = out / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, allow_nan=False))
    return path
