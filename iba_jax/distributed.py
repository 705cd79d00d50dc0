"""Many processes (hosts) on one job with ``jax.distributed``: who does which images, and how
their records become one file.

Each process explains its own share of the images with its own devices (``process_share``:
image i goes to process i mod P) and appends its rows to its own part file next to the result
(``part_path``), so processes never write the same file. When every process is done
(``barrier``), process 0 merges the parts into the result (``merge_records``), checking that
every expected row is there exactly once, and removes them. The result folder must be one that
all processes see (a shared file system). Resuming counts the rows of the result and of every
part file, whatever the number of processes that wrote them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any

import jax
from jax.experimental import multihost_utils

from iba_jax.records import read_rows, write_rows


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Joins the job: ``jax.distributed.initialize`` with these settings; left as None, JAX
    detects them where it can (Cloud TPU, SLURM, Open MPI, Kubernetes). A process that has
    joined already stays in its job."""
    if jax.distributed.is_initialized():
        return
    if coordinator is not None and ":" not in coordinator:
        raise ValueError(f"coordinator: expected HOST:PORT of process 0; got {coordinator!r}.")
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"num_processes: expected a count >= 1; got {num_processes}.")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(
            f"process_id: expected an index in [0, {num_processes}); got {process_id}."
        )
    jax.distributed.initialize(coordinator, num_processes, process_id)


def process_share(count: int) -> range:
    """The indices among ``range(count)`` that this process works on (every P-th, from its
    index): the shares are disjoint and together cover the range."""
    return range(jax.process_index(), count, jax.process_count())


def barrier(name: str) -> None:
    """Waits until every process has reached the barrier ``name`` (no-op in one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def part_path(path: Path) -> Path:
    """This process's part file of the records ``path`` (``path`` itself in one process)."""
    if jax.process_count() == 1:
        return path
    name = f"{path.stem}.process-{jax.process_index()}-of-{jax.process_count()}{path.suffix}"
    return path.with_name(name)


def part_files(path: Path) -> list[Path]:
    """Every part file of ``path``, whichever number of processes wrote it."""
    return sorted(path.parent.glob(f"{path.stem}.process-*-of-*{path.suffix}"))


def all_rows(path: Path) -> list[dict[str, str]]:
    """The rows of ``path`` and of its part files."""
    return [row for p in (path, *part_files(path)) for row in read_rows(p)]


def merge_records(
    path: Path,
    key: Callable[[dict[str, str]], Hashable],
    expected: Iterable[Hashable],
    order: Callable[[dict[str, str]], Any],
    covers: Callable[[dict[str, str]], Hashable] | None = None,
) -> None:
    """Merges the part files of ``path`` into it (process 0's job, after a barrier).

    Rows already in ``path`` stay first, in their order; the parts' rows follow, sorted by
    ``order`` (stable: each process wrote its rows in order). A ``key`` twice keeps its first
    row (a part merged before a kill that removed it). Raises if an ``expected`` item is
    covered by no row (``covers(row)``, by default the key): a gap means a process did not
    finish. ``path`` is replaced in one step; the parts are removed after.
    """
    covers = covers or key
    parts = part_files(path)
    seen: set[Hashable] = set()
    merged = []
    for row in read_rows(path) + sorted((r for p in parts for r in read_rows(p)), key=order):
        if key(row) not in seen:
            seen.add(key(row))
            merged.append(row)
    covered = {covers(row) for row in merged}
    missing = [k for k in expected if k not in covered]
    if missing:
        raise RuntimeError(
            f"{path}: {len(missing)} expected rows are in no part file, e.g. {missing[:3]}: a "
            "process stopped early; run the same command again to finish them."
        )
    if merged:
        write_rows(path, merged)
    for part in parts:
        part.unlink()
