"""Append-only CSV records that survive a kill: each row is on disk when the call returns."""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Any


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Appends ``row`` to the CSV file ``path`` (writing the header first for a new file) and
    flushes it to disk, so a kill after the call never loses it. An existing file must have
    the row's columns, in order."""
    new = not path.exists()
    if not new:
        header = header_of(path)
        if header != list(row):
            raise ValueError(
                f"{path}: its columns {header} differ from the rows being added {list(row)} (a "
                "file written by another version or for another task); write to a new file."
            )
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
        f.flush()
        os.fsync(f.fileno())


def header_of(path: Path) -> list[str]:
    """The column names of the CSV file ``path`` (its first line)."""
    with path.open(newline="") as f:
        return next(csv.reader(f), [])


def read_rows(path: Path) -> list[dict[str, str]]:
    """Every row of the CSV file ``path`` (none when it does not exist)."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replaces the CSV file ``path`` with ``rows`` in one step: a kill leaves either the old
    file or the new one, never half of it. Every row must have the first row's columns."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        for row in rows:
            if list(row) != writer.fieldnames:
                raise ValueError(
                    f"{path}: a row's columns {list(row)} differ from the first row's "
                    f"{writer.fieldnames}."
                )
            writer.writerow(row)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def writable_folder(path: str | os.PathLike[str], name: str = "out") -> Path:
    """The folder ``path``, created if needed, once a file could be written into it: checked
    before any work, so that a read-only or misplaced output folder fails in a second, not
    after the computation. ``name`` is the argument named in the error."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name}: expected a folder; {path} is a file.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ValueError(f"{name}: cannot write into {path} ({err.strerror or err}).") from err
    return path
