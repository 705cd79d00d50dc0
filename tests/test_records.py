"""Append-only CSV records: rows on disk at once, and a file of other columns refused."""

import pytest

from iba_jax.records import append_row, read_rows


def test_rows_append_and_read_back(tmp_path):
    path = tmp_path / "r.csv"
    assert read_rows(path) == []
    append_row(path, {"a": 1, "b": "x"})
    append_row(path, {"a": 2, "b": "y"})
    assert read_rows(path) == [{"a": "1", "b": "x"}, {"a": "2", "b": "y"}]


def test_a_file_with_other_columns_is_refused_and_kept(tmp_path):
    path = tmp_path / "r.csv"
    append_row(path, {"a": 1, "b": "x"})
    with pytest.raises(ValueError, match=r"r.csv: its columns \['a', 'b'\] differ"):
        append_row(path, {"a": 1, "c": "x"})
    assert read_rows(path) == [{"a": "1", "b": "x"}]
