"""Feature statistics: the reference estimator, exact merging, batching, storage."""

import json
import shutil

import jax
import numpy as np
import PIL.Image
import pytest
from conftest import channels_last, counted_traces
from hypothesis import given, settings
from hypothesis import strategies as st

from iba_jax.bundle import (
    CorruptBundleError,
    ModelBundle,
    StatsOfAnotherModelError,
    content_checksum,
    load_feature_stats,
    save_bundle,
    save_feature_stats,
    stats_layers,
)
from iba_jax.cli import main
from iba_jax.stats import Moments, batch_moments, estimate_feature_stats, finalize, merge_moments


@pytest.fixture(scope="module")
def est_inputs(iba_reference):
    return channels_last(iba_reference["est_inputs"])


def test_estimator_matches_the_reference(tiny_model, iba_reference, est_inputs):
    net, variables = tiny_model
    batches = [est_inputs[i : i + 10] for i in range(0, 50, 10)]
    stats = estimate_feature_stats(net, variables, batches, "denseblock3")
    assert int(stats.count) == int(iba_reference["estimator/n_samples"]) == 50
    np.testing.assert_allclose(
        stats.mean, channels_last(iba_reference["estimator/mean"]), atol=1e-5
    )
    np.testing.assert_allclose(stats.std, channels_last(iba_reference["estimator/std"]), atol=1e-5)
    np.testing.assert_array_equal(stats.active, channels_last(iba_reference["estimator/active"]))


@settings(max_examples=20, deadline=None)
@given(cuts=st.lists(st.integers(1, 49), max_size=6, unique=True))
def test_merging_is_exact_whatever_the_batching(iba_reference, cuts):
    features = channels_last(iba_reference["estimator/features"])
    moments = None
    for chunk in np.split(features, sorted(cuts)):
        mean, m2, nonzero = jax.device_get(batch_moments(chunk))
        moments = merge_moments(
            moments, Moments(len(chunk), mean.astype(np.float64), m2.astype(np.float64), nonzero)
        )
    stats = finalize(moments)
    exact = features.astype(np.float64)
    np.testing.assert_allclose(stats.mean, exact.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(stats.std, exact.std(0, ddof=1), rtol=1e-5)


def test_batch_size_does_not_matter_and_layers_share_a_pass(tiny_model, est_inputs):
    net, variables = tiny_model
    layers = ("relu0", "denseblock2", "denseblock3")
    together = estimate_feature_stats(net, variables, [est_inputs], layers)
    in_sevens = estimate_feature_stats(
        net, variables, (est_inputs[i : i + 7] for i in range(0, 50, 7)), "denseblock3"
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        tuple(together["denseblock3"]),
        tuple(in_sevens),
    )
    relu = np.asarray(net.encode(variables, est_inputs, "relu0"))
    np.testing.assert_array_equal(together["relu0"].active, (relu != 0).mean(0) > 0.01)
    half = estimate_feature_stats(net, variables, [est_inputs], "relu0", active_threshold=0.5)
    np.testing.assert_array_equal(half.active, (relu != 0).mean(0) > 0.5)
    assert 0 < int(half.active.sum()) < half.active.size


def test_batch_formats_and_sample_cap(tiny_model, est_inputs):
    net, variables = tiny_model
    as_dicts = [{"image": est_inputs[:30], "label": 0}, {"image": est_inputs[30:]}]
    as_tuples = [(est_inputs[:30], None), (est_inputs[30:], None)]
    a = estimate_feature_stats(net, variables, as_dicts, "denseblock3", max_samples=40)
    b = estimate_feature_stats(net, variables, as_tuples, "denseblock3", max_samples=40)
    c = estimate_feature_stats(net, variables, [est_inputs[:40]], "denseblock3")
    assert int(a.count) == int(b.count) == 40
    np.testing.assert_allclose(a.std, c.std, rtol=1e-5)
    np.testing.assert_array_equal(a.mean, b.mean)


def test_bad_input(tiny_model, est_inputs):
    net, variables = tiny_model
    with pytest.raises(ValueError, match="layers: expected one of"):
        estimate_feature_stats(net, variables, [est_inputs], "block3")
    with pytest.raises(ValueError, match="at least 2 samples"):
        estimate_feature_stats(net, variables, [est_inputs[:1]], "denseblock3")
    with pytest.raises(ValueError, match="at least one non-empty batch"):
        estimate_feature_stats(net, variables, [], "denseblock3")
    with pytest.raises(ValueError, match="'image' entry"):
        estimate_feature_stats(net, variables, [{"x": est_inputs}], "denseblock3")


def test_stats_are_stored_in_the_bundle(tmp_path, tiny_model, est_inputs):
    net, variables = tiny_model
    save_bundle(tmp_path / "m", ModelBundle(net.config, variables, ("a", "b", "c")))
    stats = estimate_feature_stats(net, variables, [est_inputs], "denseblock3")
    save_feature_stats(tmp_path / "m", "denseblock3", stats, description="est_inputs")
    assert stats_layers(tmp_path / "m") == ("denseblock3",)
    loaded = load_feature_stats(tmp_path / "m", "denseblock3")
    jax.tree.map(np.testing.assert_array_equal, tuple(loaded), tuple(stats))
    with pytest.raises(
        FileNotFoundError, match=r"no feature statistics for 'denseblock2' .*stored: denseblock3"
    ):
        load_feature_stats(tmp_path / "m", "denseblock2")
    arrays = (tmp_path / "m" / "stats" / "denseblock3" / "arrays").rglob("*")
    data = max((p for p in arrays if p.is_file()), key=lambda p: p.stat().st_size)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    data.write_bytes(bytes(raw))
    with pytest.raises(CorruptBundleError, match="statistics"):
        load_feature_stats(tmp_path / "m", "denseblock3")


def test_stats_of_other_weights_are_refused(tmp_path, tiny_model, est_inputs, capsys):
    """Statistics copied beside other weights (or kept after retraining them in place) would
    draw the bottleneck's noise from the wrong features, silently."""
    net, variables = tiny_model
    stats = estimate_feature_stats(net, variables, [est_inputs], "denseblock3")
    save_bundle(tmp_path / "a", ModelBundle(net.config, variables, ("a", "b", "c")))
    save_feature_stats(tmp_path / "a", "denseblock3", stats)
    other = jax.tree.map(lambda v: v * 1.01, variables)
    save_bundle(tmp_path / "b", ModelBundle(net.config, other, ("a", "b", "c")))
    shutil.copytree(tmp_path / "a" / "stats", tmp_path / "b" / "stats")
    with pytest.raises(
        StatsOfAnotherModelError,
        match=r"stats: the 'denseblock3' statistics in .*b' were estimated for other weights",
    ):
        load_feature_stats(tmp_path / "b", "denseblock3")
    shared = load_feature_stats(tmp_path / "b", "denseblock3", allow_other_model=True)
    np.testing.assert_array_equal(shared.mean, stats.mean)
    image = tmp_path / "x.png"
    PIL.Image.new("L", (80, 80)).save(image)
    explain = ["explain", str(image), "--model", str(tmp_path / "b"), "--out", str(tmp_path / "o")]
    assert main(explain) == 2
    assert "were estimated for other weights" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before anything was written
    # Statistics of an older iba-jax record no model: read, with a warning.
    record = tmp_path / "a" / "stats" / "denseblock3" / "stats.json"
    legacy = json.loads(record.read_text())
    del legacy["model_sha256"]
    save_feature_stats(tmp_path / "a", "denseblock3", stats)  # fresh arrays, then the old record
    _resign(record, legacy)
    with pytest.warns(UserWarning, match="record no model checksum"):
        load_feature_stats(tmp_path / "a", "denseblock3")


def _resign(record, metadata):
    """Writes ``metadata`` as the record with a checksum that matches its arrays."""
    arrays = load_feature_stats(record.parents[2], record.parent.name, allow_other_model=True)
    metadata = {k: v for k, v in metadata.items() if k != "sha256"}
    digest = content_checksum(metadata, arrays._asdict())
    record.write_text(json.dumps({**metadata, "sha256": digest}))


def test_a_second_estimate_of_the_same_shapes_does_not_recompile(tiny_model, est_inputs):
    net, variables = tiny_model
    first = estimate_feature_stats(net, variables, [est_inputs[:8]], "denseblock2")
    with counted_traces() as traces:
        again = estimate_feature_stats(net, variables, [est_inputs[8:16]], "denseblock2")
        assert traces("_reduce_batch") == 0
        estimate_feature_stats(net, variables, [est_inputs[:4]], "denseblock2")  # new shape
        assert traces("_reduce_batch") == 1
    assert not np.array_equal(first.mean, again.mean)
