"""What ``evaluate`` and ``explain`` share: maps for many (image, target) pairs in calls of one
shape, and rows that a run appends one by one and resumes after a kill.

``maps_per_call``: each call takes ``per_call`` pairs; the last is padded with copies of its
last pair, so that every call has the same shapes and the method compiles once. A pair's map
depends only on its image, its target and its noise key, which its image's number and its target
determine under the run's seed (``methods.target_key``), never on the pairs around it.

``check_determining`` and ``ResumableRows``: a run first checks (or records) what determines its
rows beside them, so that a resumed run never mixes rows of other weights or settings into a
file; it then skips the rows already there (``ResumableRows.earlier``), appends each new row as
soon as it is done, and in a job of several processes merges the processes' part files when all
are done (``distributed``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from numpy.typing import ArrayLike

from iba_jax import checks, distributed
from iba_jax.methods import MethodSettings, attribution_maps, target_key
from iba_jax.models.protocol import Model, Variables
from iba_jax.records import append_row
from iba_jax.sharding import pad_images
from iba_jax.stats import FeatureStats


class Call(NamedTuple):
    """One call's pairs (their positions in the given order), their maps ``(n, H, W)`` and
    the call's seconds (compilation included on the first)."""

    positions: range
    maps: np.ndarray
    seconds: float


def maps_per_call(
    method: str,
    model: Model,
    variables: Variables,
    stats: Mapping[str, FeatureStats],
    images: jax.Array,
    targets: Sequence[int],
    numbers: Sequence[int],
    *,
    seed: int,
    per_call: int,
    settings: MethodSettings = MethodSettings(),
    labels: ArrayLike | None = None,
    mesh: Mesh | None = None,
) -> Iterator[Call]:
    """Method ``method``'s maps of the pairs ``(images[i], targets[i])``, ``per_call`` pairs per
    call (padded), call by call.

    Args:
      images: the pairs' model inputs ``(N, H, W, C)`` (an image explained for two targets
        appears twice).
      targets: one output index per pair.
      numbers: one number per pair that names its image (its index in a data set split, or
        ``explain.identity_number`` of a file): pair i's noise key is
        ``methods.target_key(jax.random.key(seed), numbers[i], targets[i])``.
      seed: the run's seed.
      labels: one regression label per pair, for the methods that need them.
      See ``methods.attribution_maps`` for the others.
    """
    checks.check_positive_int("per_call", per_call)
    count = len(images)
    if not len(targets) == len(numbers) == count:
        raise ValueError(
            f"targets, numbers: expected one of each per image ({count}); got {len(targets)} "
            f"and {len(numbers)}."
        )
    base_key = jax.random.key(seed)
    keys = jnp.stack([target_key(base_key, n, t) for n, t in zip(numbers, targets, strict=True)])
    indices = jnp.asarray(targets)
    values = None if labels is None else jnp.asarray(labels, jnp.float32)
    for start in range(0, count, per_call):
        positions = range(start, min(start + per_call, count))
        chunk = slice(positions.start, positions.stop)
        began = time.perf_counter()
        x, t, k, y = pad_images(
            (images[chunk], indices[chunk], keys[chunk], None if values is None else values[chunk]),
            per_call,
        )
        padded_maps = attribution_maps(
            method, model, variables, stats, x, t, key=k, settings=settings, labels=y, mesh=mesh
        )
        maps = np.asarray(padded_maps)[: len(positions)]  # waits for the device
        yield Call(positions, maps, time.perf_counter() - began)


def check_determining(
    record: Path,
    mine: Mapping[str, Any],
    *,
    argument: str,
    subject: str,
    advice: str,
    entry: str | None = None,
    rows_exist: bool = True,
) -> None:
    """Records what determines a run's rows in the JSON file ``record`` (process 0), or, when an
    earlier run recorded other values and wrote rows, refuses to resume.

    Args:
      record: the JSON file (one record, or one per ``entry``).
      mine: what determines this run's rows (JSON values). A name ``NAME/PART`` (e.g.
        ``stats_sha256/denseblock3``) is compared only where both runs have it: a resumed run
        may use more layers, whose values are then added to the record. Other names are
        compared whether or not both runs have them.
      argument, subject, advice: the error's words: ``"{argument}: {subject} were computed
        with other NAMES (NAME=earlier value; ...); {advice}"``.
      entry: the record's key in a file of several (e.g. a model's name in a results file).
      rows_exist: whether the record's rows (of ``entry``) exist. A record without rows (a
        run that failed before its first row) binds nothing: it is replaced.
    """
    mine = json.loads(json.dumps(mine))  # as it reads back (tuples as lists)
    recorded = json.loads(record.read_text()) if record.exists() else {}
    before = recorded.get(entry, {}) if entry is not None else recorded
    if not rows_exist:
        before = {}
    compared = {
        k
        for k in (set(before) | set(mine) if before else ())
        if "/" not in k or (k in before and k in mine)
    }
    changed = sorted(k for k in compared if before.get(k) != mine.get(k))
    if changed:
        shown = lambda v: f"{v[:12]}..." if isinstance(v, str) and len(v) == 64 else repr(v)
        raise ValueError(
            f"{argument}: {subject} were computed with other {', '.join(changed)} "
            f"({'; '.join(f'{k}={shown(before.get(k))}' for k in changed)}); {advice}"
        )
    if jax.process_index() != 0 or (before and set(mine) <= set(before)):
        return
    merged = {**mine, **before}
    if entry is not None:
        merged = {**recorded, entry: merged}
    partial = record.with_name(record.name + ".partial")
    partial.write_text(json.dumps(merged, indent=2, sort_keys=True))
    partial.replace(record)


class ResumableRows:
    """The rows of the CSV file ``path`` that a run adds one by one, in one process or many.

    ``earlier`` holds the rows of earlier runs (those of ``path`` and of any part files a
    killed job of several processes left); ``append`` writes a row to this process's part file
    (``path`` itself in one process) and is on disk when it returns; ``finish`` waits for every
    process and merges the part files into ``path``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.earlier = distributed.all_rows(path)
        self._part = distributed.part_path(path)

    def append(self, row: Mapping[str, Any]) -> None:
        append_row(self._part, dict(row))

    def finish(
        self,
        *,
        key: Callable[[dict[str, str]], Hashable],
        expected: Callable[[], Iterable[Hashable]],
        order: Callable[[dict[str, str]], Any],
        covers: Callable[[dict[str, str]], Hashable] | None = None,
        then: Callable[[Path], None] | None = None,
    ) -> None:
        """After every process has appended its rows, process 0 merges the part files, if
        any, into ``path`` (``distributed.merge_records``: ``key``, ``order``, ``covers``;
        ``expected()`` is called only then), and runs ``then(path)``; the others wait for it."""
        distributed.barrier(f"{self.path}: rows written")
        if jax.process_index() == 0:
            if distributed.part_files(self.path):
                distributed.merge_records(self.path, key, expected(), order, covers)
            if then is not None:
                then(self.path)
        distributed.barrier(f"{self.path}: merged")
