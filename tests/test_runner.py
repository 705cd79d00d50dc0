"""What evaluate and explain share: maps in calls of one shape (padding, positions, and the same
maps as one call), the record of what determines the rows, and resumable rows."""

import json
import re

import jax
import numpy as np
import pytest

from iba_jax import distributed
from iba_jax.methods import attribution_maps, target_key
from iba_jax.records import append_row, read_rows
from iba_jax.runner import ResumableRows, check_determining, maps_per_call


@pytest.mark.parametrize("method", ["random", "gradients"])
def test_calls_of_one_shape_give_the_maps_of_one_call(tiny_model, method):
    net, variables = tiny_model
    images = jax.random.normal(jax.random.key(0), (5, 64, 64, 3))
    targets = [0, 2, 1, 1, 0]
    numbers = [7, 3, 3, 0, 12]  # what names each pair's image (its index in a split, say)
    keys = jax.numpy.stack(
        [target_key(jax.random.key(1), n, t) for n, t in zip(numbers, targets, strict=True)]
    )
    whole = attribution_maps(method, net, variables, {}, images, targets, key=keys)
    run = lambda **kw: maps_per_call(
        method, net, variables, {}, images, targets, numbers, seed=1, **{"per_call": 2, **kw}
    )
    calls = list(run())
    assert [list(c.positions) for c in calls] == [[0, 1], [2, 3], [4]]  # the last one padded
    assert [c.maps.shape for c in calls] == [(2, 64, 64), (2, 64, 64), (1, 64, 64)]
    np.testing.assert_allclose(np.concatenate([c.maps for c in calls]), whole, rtol=1e-5)
    assert all(c.seconds > 0 for c in calls)
    with pytest.raises(ValueError, match="per_call: expected a positive integer"):
        next(run(per_call=0))
    with pytest.raises(ValueError, match=r"targets, numbers: expected one of each per image \(5\)"):
        next(
            maps_per_call(
                method, net, variables, {}, images, targets, numbers[:4], seed=1, per_call=2
            )
        )


def _determining(path, values, entry=None):
    check_determining(
        path, values, argument="results", subject="the rows", advice="start anew.", entry=entry
    )


def test_what_determines_the_rows_is_recorded_and_a_resumed_run_must_match_it(tmp_path):
    record = tmp_path / "run.settings.json"
    digest = "ab" * 32
    first = {"model_sha256": digest, "stats_sha256/block1": "s1", "seed": 0, "sizes": (1, 2)}
    _determining(record, first)
    assert json.loads(record.read_text()) == {**first, "sizes": [1, 2]}
    _determining(record, first)  # the same values (a tuple reads back as a list)
    # A resumed run may use more layers, and may leave out layers it does not use.
    _determining(record, {**first, "stats_sha256/block2": "s2"})
    _determining(record, {k: v for k, v in first.items() if k != "stats_sha256/block1"})
    assert json.loads(record.read_text())["stats_sha256/block2"] == "s2"
    refused = (
        ({**first, "seed": 1}, "other seed (seed=0); start anew."),
        ({**first, "model_sha256": "cd" * 32}, "other model_sha256 (model_sha256=abababababab...)"),
        ({**first, "stats_sha256/block2": "x"}, "other stats_sha256/block2 ("),
        ({**first, "extra": 1}, "other extra (extra=None)"),
        ({k: v for k, v in first.items() if k != "seed"}, "other seed (seed=0)"),
    )
    for values, message in refused:
        with pytest.raises(ValueError, match=re.escape(message)) as error:
            _determining(record, values)
        assert str(error.value).startswith("results: the rows were computed with other ")
    assert json.loads(record.read_text())["seed"] == 0  # a refused run records nothing


def test_a_record_without_rows_binds_nothing(tmp_path):
    record = tmp_path / "run.settings.json"
    _determining(record, {"seed": 0, "stats_sha256/a": "x"}, entry="m")
    check_determining(
        record, {"seed": 1}, argument="a", subject="s", advice="b", entry="m", rows_exist=False
    )
    assert json.loads(record.read_text()) == {"m": {"seed": 1}}  # replaced, not merged
    with pytest.raises(ValueError, match=r"other seed \(seed=1\)"):
        _determining(record, {"seed": 0}, entry="m")


def test_records_of_several_entries_are_checked_apart(tmp_path):
    record = tmp_path / "run.settings.json"
    _determining(record, {"seed": 0}, entry="a")
    _determining(record, {"seed": 1}, entry="b")
    assert json.loads(record.read_text()) == {"a": {"seed": 0}, "b": {"seed": 1}}
    with pytest.raises(ValueError, match=r"other seed \(seed=1\)"):
        _determining(record, {"seed": 0}, entry="b")


def test_resumable_rows_see_every_earlier_row_and_merge_left_part_files(tmp_path):
    path = tmp_path / "rows.csv"
    append_row(path, {"id": "0"})
    # A killed job of two processes left its part files.
    append_row(tmp_path / "rows.process-1-of-2.csv", {"id": "3"})
    append_row(tmp_path / "rows.process-0-of-2.csv", {"id": "2"})
    rows = ResumableRows(path)
    assert sorted(r["id"] for r in rows.earlier) == ["0", "2", "3"]
    rows.append({"id": "1"})  # one process: straight into the file
    tidied = []
    rows.finish(
        key=lambda r: r["id"],
        expected=lambda: ["0", "1", "2", "3"],
        order=lambda r: int(r["id"]),
        then=tidied.append,
    )
    assert [r["id"] for r in read_rows(path)] == ["0", "1", "2", "3"]
    assert not distributed.part_files(path) and tidied == [path]
    rows = ResumableRows(path)
    append_row(tmp_path / "rows.process-0-of-2.csv", {"id": "5"})
    with pytest.raises(RuntimeError, match="1 expected rows are in no part file"):
        rows.finish(key=lambda r: r["id"], expected=lambda: ["4", "5"], order=lambda r: r["id"])
