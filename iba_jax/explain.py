"""Explaining images: read them as the model was trained, predict, attribute, and write each
explanation (the map as ``.npy``, an overlay PNG with a colour bar, and a JSON record).

The inputs are image files (``file_inputs``) or the examples of a data set split
(``dataset_inputs``). Files are read as the data set builders store images (PNG, JPEG or DICOM
-> [0, 1] -> central square -> the bundle's size -> uint8) and then normalised as the bundle
says, so a file gives the model the same input as the same image in a built data set. Inputs
are explained in batches; one that cannot be read is reported and the rest are still explained.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from iba_jax import distributed, report_plots
from iba_jax.bundle import ModelBundle, bundle_checksum, stats_checksum
from iba_jax.data.building import DataSource
from iba_jax.data.preprocess import (
    UnreadableImageError,
    grayscale,
    read_file_bytes,
    read_image,
    square,
    to_uint8,
    unit_range,
)
from iba_jax.methods import METHODS, MethodSettings, method_stats
from iba_jax.models import predict
from iba_jax.records import read_rows, writable_folder, write_rows
from iba_jax.runner import ResumableRows, check_determining, maps_per_call
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
        raise ValueError(f"method: expected one of {', '.join(known)}; got {name!r}.")
    if METHODS[full].needs_labels:
        raise ValueError(
            f"method: {full} needs each image's true score, which explain does not take; "
            "use regression (the Deviation loss) or regression_iba_rm."
        )
    return full


def model_image(
    bundle: ModelBundle, source: str | os.PathLike[str] | bytes, *, name: str | None = None
) -> np.ndarray:
    """The file (a path, or its bytes and ``name``) as the model's stored input: uint8
    ``(S, S, C)``, S the bundle's image size, C its channels (colour averaged to gray for
    1-channel models, gray repeated for RGB)."""
    pixels = read_image(source, name=name)
    channels = bundle.config.in_channels
    if channels == 1:
        pixels = grayscale(pixels)
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
    return [(_target_index(bundle, target), "index")]


def _target_index(bundle: ModelBundle, target: str) -> int:
    count = len(bundle.label_names)
    if target.isascii() and target.isdigit() and int(target) < count:
        return int(target)
    raise ValueError(
        f"target: expected {POSITIVES}, an output index below {count} or one of "
        f"{', '.join(bundle.label_names)}; got {target!r}."
    )


def check_target(bundle: ModelBundle, target: str) -> None:
    """Raises unless ``target`` is one that ``choose_targets`` accepts for this model: checked
    before any work."""
    if target.lower() != POSITIVES and target.lower() not in (
        n.lower() for n in bundle.label_names
    ):
        _target_index(bundle, target)


class Input(NamedTuple):
    """One image to explain: the stem of its output files, where it comes from (a file's
    path or a data set example), and how to load it: ``load()`` gives its identity (what its
    maps depend on: a file's path and content hash, a data set example's name; the key under
    which finished maps are found again) and the model's stored input (uint8)."""

    name: str
    origin: str
    load: Callable[[], tuple[str, np.ndarray]]


def load_file(bundle: ModelBundle, path: str | os.PathLike[str]) -> tuple[str, np.ndarray]:
    """A file's identity (its resolved path and the sha256 of its bytes: a changed file is a
    new input) and its pixels, from one read of the file."""
    data = read_file_bytes(path)
    identity = f"{Path(path).resolve()}#sha256={hashlib.sha256(data).hexdigest()}"
    return identity, model_image(bundle, data, name=os.fspath(path))


def identity_number(identity: str) -> int:
    """A number (28 bits of its sha256) that draws an input's noise: its maps depend on what
    the input is, not on where it stands in a run."""
    return int(hashlib.sha256(identity.encode()).hexdigest()[:7], 16)


def file_inputs(bundle: ModelBundle, paths: Sequence[str | os.PathLike[str]]) -> list[Input]:
    """Image files (``model_image``), named by file name; a second file of the same name is
    numbered (``scan``, ``scan-2``)."""
    stems: list[str] = []
    seen: dict[str, int] = {}
    for path in paths:
        stem = Path(path).stem or "image"
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return [
        Input(stem, str(Path(path).resolve()), functools.partial(load_file, bundle, path))
        for stem, path in zip(stems, paths, strict=True)
    ]


def dataset_inputs(source: DataSource, split: str, origin: str) -> list[Input]:
    """The examples of a data set split (their stored ``image``), named ``SPLIT_NNNNNN`` by
    their index; ``origin`` names the data set (e.g. ``cxr_phantoms/classification_128``)."""
    inputs = []
    for i in range(len(source)):
        where = f"{origin}:{split}[{i}]"
        inputs.append(
            Input(f"{split}_{i:06d}", where, functools.partial(_stored, source, i, where))
        )
    return inputs


def _stored(source: DataSource, i: int, where: str) -> tuple[str, np.ndarray]:
    """A data set example's identity (where it is) and its stored image."""
    return where, source[i]["image"]


@dataclasses.dataclass
class ExplainResult:
    """What ``explain`` did in this call: the JSON records written, the inputs that failed
    (origin, reason), and the number of maps already there from an earlier run."""

    written: list[Path] = dataclasses.field(default_factory=list)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    already_done: int = 0


INDEX = "explanations.csv"


def _versions() -> dict[str, str]:
    packages = ("iba-jax", "jax", "jaxlib", "flax", "optax", "numpy")
    found = {}
    for package in packages:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def _index_key(row: dict[str, str]) -> tuple[str, str]:
    return row["identity"], row["target"]


def settings_path(out: Path) -> Path:
    """Where a folder of explanations records what its maps were computed with."""
    return out / "explain.settings.json"


def _names(
    inputs: Sequence[Input], identities: Mapping[int, str], earlier: Sequence[dict]
) -> Callable[[int], str]:
    """Output stems: an input explained before keeps its stem; a new one whose stem another
    input took in an earlier run gets its identity's hash appended."""
    name_of = {row["identity"]: row["name"] for row in earlier if row["name"]}
    taken = set(name_of.values())

    def name(i: int) -> str:
        identity = identities[i]
        if identity in name_of:
            return name_of[identity]
        stem = inputs[i].name
        if stem in taken:
            stem += "-" + hashlib.sha256(identity.encode()).hexdigest()[:8]
        return stem

    return name


def _tidy(index: Path) -> None:
    """Drops each failure that a later row of the same input supersedes (it was retried)."""
    rows = read_rows(index)
    last = {row["input"]: n for n, row in enumerate(rows)}
    kept = [row for n, row in enumerate(rows) if not row["error"] or last[row["input"]] == n]
    if len(kept) < len(rows):
        write_rows(index, kept)


def explain(
    inputs: Sequence[Input],
    bundle: ModelBundle,
    stats: Mapping[str, FeatureStats],
    method: str,
    target: str,
    out: str | os.PathLike[str],
    *,
    settings: MethodSettings | None = None,
    seed: int = 0,
    batch_size: int = 8,
    model_dir: str | None = None,
    progress: Callable[[Iterator], Iterator] = lambda it: it,
    mesh: Mesh | None = None,
) -> ExplainResult:
    """Explains each input's chosen outputs with ``method`` into the folder ``out``.

    Per (input, target): ``NAME.TARGET.METHOD.npy`` (the map at the model's resolution,
    float32), ``.png`` (the map over the image, with a colour bar in the method's unit) and
    ``.json`` (the predictions per class, the target and how it was chosen, the map's sum and
    unit, the total bits through the bottleneck for the IBA family, the method's settings, the
    seed and the versions). ``explanations.csv`` lists every map and every input that failed,
    one row each, on disk as soon as it is done. ``settings``: the method's (default: the
    paper's at the model's standard layers, ``MethodSettings.for_model``); ``stats`` must hold
    the feature statistics of the layers the method needs.

    Resuming is keyed on what determines a map: the input's identity (a file's path and
    content hash, a data set example's name), the target, and the folder's record
    (``explain.settings.json``: the model's and the statistics' checksums, the method, its
    settings and the seed; a run with others is refused once the folder holds a map; a record
    without maps, of a run that failed before its first, is replaced). Run again after a
    kill, or with more inputs, and finished maps are skipped; inputs that failed are tried again
    (their old failure is dropped from the list once they have a row again); a changed file is
    a new input. The noise of an input's target t is drawn under ``methods.target_key(key(seed),
    identity_number(identity), t)``, whatever the batching, the order and the devices (``mesh``:
    split each batch across them).

    In a job of several processes (``jax.distributed``), each process explains its share of
    the inputs (``distributed.process_share``) and process 0 merges the processes' lists
    into ``explanations.csv``, checking that every input is there.
    """
    method = method_name(method)
    settings = MethodSettings.for_model(bundle.model) if settings is None else settings
    check_target(bundle, target)
    out = writable_folder(out)
    index = out / INDEX
    spec = METHODS[method]
    needed = method_stats(method, stats, settings)  # checked before any work
    rows = ResumableRows(index)
    earlier = rows.earlier
    check_determining(
        settings_path(out),
        {
            "model_sha256": bundle_checksum(bundle),
            "stats_sha256": stats_checksum(needed),
            "method": method,
            "settings": settings.determining(),
            "seed": seed,
        },
        argument="out",
        subject=f"the maps in {out}",
        advice="explain into a new folder, or with the same model and settings.",
        rows_exist=any(row["record"] for row in earlier),
    )
    done = {_index_key(row) for row in earlier if not row["error"]}
    mine = list(distributed.process_share(len(inputs)))
    identities: dict[int, str] = {}
    name_of = _names(inputs, identities, earlier)
    model, variables = bundle.model, bundle.variables
    result = ExplainResult()
    versions = _versions()
    fields = dict.fromkeys(
        ("name", "target", "target_name", "chosen_by", "map_sum", "record", "error"), ""
    )

    def add_row(position: int, **values: Any) -> None:
        origin = inputs[position].origin
        entry = {"input": origin, "identity": identities.get(position, ""), "method": method}
        rows.append({**entry, **fields, **values})

    batches = [mine[s : s + batch_size] for s in range(0, len(mine), batch_size)]
    for batch in progress(iter(batches)):
        readable, pixels = [], []
        for i in batch:
            try:
                identities[i], stored = inputs[i].load()
                pixels.append(_checked_pixels(bundle, stored))
                readable.append(i)
            except (OSError, ValueError, UnreadableImageError) as error:
                result.failed.append((inputs[i].origin, str(error)))
                add_row(i, error=str(error) or type(error).__name__)
        if not readable:
            continue
        x = bundle.input_spec.normalize(unit_range(np.stack(pixels), bundle.config.in_channels))
        outputs = np.asarray(predict(model, variables, x))
        pairs = []
        for row, i in enumerate(readable):
            for t, how in choose_targets(bundle, outputs[row], target):
                if (identities[i], str(t)) in done:
                    result.already_done += 1
                else:
                    pairs.append((row, i, t, how))
        if not pairs:
            continue
        calls = maps_per_call(
            method,
            model,
            variables,
            stats,
            x[jnp.asarray([row for row, *_ in pairs])],
            [t for _, _, t, _ in pairs],
            [identity_number(identities[i]) for _, i, _, _ in pairs],
            seed=seed,
            per_call=batch_size,
            settings=settings,
            mesh=mesh,
        )
        for call in calls:
            for pair, m in zip(call.positions, call.maps, strict=True):
                row, i, t, how = pairs[pair]
                record = {
                    "file": inputs[i].origin,
                    "identity": identities[i],
                    "model": model_dir,
                    "predictions": dict(
                        zip(bundle.label_names, outputs[row].tolist(), strict=True)
                    ),
                    "head": bundle.config.head,
                    "target": {"index": t, "name": bundle.label_names[t], "chosen_by": how},
                    "method": method,
                    "unit": spec.unit,
                    "map_sum": float(m.sum()),
                    "total_bits": float(m.sum()) if spec.unit == "bits" else None,
                    "settings": settings.determining(),
                    "seed": seed,
                    "versions": versions,
                }
                name = name_of(i)
                written = _write(
                    out, f"{name}.{bundle.label_names[t]}.{method}", pixels[row], m, record
                )
                result.written.append(written)
                add_row(
                    i,
                    name=name,
                    target=t,
                    target_name=bundle.label_names[t],
                    chosen_by=how,
                    map_sum=record["map_sum"],
                    record=written.name,
                )
    position = {inputs[i].origin: i for i in range(len(inputs))}
    rows.finish(
        key=lambda r: (*_index_key(r), r["error"]),
        expected=lambda: position,
        order=lambda r: position.get(r["input"], -1),
        covers=lambda r: r["input"],
        then=_tidy,
    )
    return result


def _checked_pixels(bundle: ModelBundle, pixels: np.ndarray) -> np.ndarray:
    """A stored image as the model's input: uint8 at the bundle's size, with its channels (a
    grayscale channel is repeated for RGB models, as ``unit_range`` does)."""
    size, channels = bundle.input_spec.image_size, bundle.config.in_channels
    pixels = np.asarray(pixels)
    if pixels.shape[:2] != (size, size) or pixels.shape[2:] not in ((1,), (channels,)):
        raise ValueError(
            f"expected a uint8 image of shape {(size, size, channels)} or {(size, size, 1)} (the "
            f"model's input); got {pixels.dtype} {pixels.shape}: choose the data set config of "
            "the model's size."
        )
    if pixels.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image (as stored); got {pixels.dtype}.")
    return np.repeat(pixels, channels // pixels.shape[2], axis=2)


def _write(out: Path, name: str, pixels: np.ndarray, m: np.ndarray, record: dict) -> Path:
    np.save(out / f"{name}.npy", m.astype(np.float32))
    title = f"{record['target']['name']} ({record['method']})"
    report_plots.overlay(pixels, m, record["unit"], title, out / f"{name}.png")
    path = out / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, allow_nan=False))
    return path
