"""Dataset-wide evaluation: the rows, resumption after a crash, the summary, and the CLI."""

import csv
import dataclasses

import jax
import numpy as np
import pytest
import scipy.stats

from iba_jax import evaluation
from iba_jax.attribute import IBAConfig
from iba_jax.bundle import ModelBundle, save_bundle
from iba_jax.data import brixia, phantoms
from iba_jax.data.preprocess import to_uint8, unit_range
from iba_jax.methods import MethodSettings
from iba_jax.metrics import localisation
from iba_jax.models import DenseNet, densenet_tiny
from iba_jax.pretrained import load_pretrained, pretrained_dir
from iba_jax.stats import estimate_feature_stats

# Fewer IBA steps and coarser insertion/deletion than the defaults: the same code, faster.
QUICK = {
    "settings": MethodSettings(iba=IBAConfig(steps=3, samples=2), unroll=False),
    "pixels_per_step": 128 * 128 // 10,
    "sensitivity_samples": 4,
}
CONFIG = evaluation.EvaluationConfig(methods=("iba", "grad_cam", "random"), limit=4, **QUICK)


def example(phantom):
    """A phantom as the TFDS data source returns it."""
    return {
        "image": to_uint8(phantom.image)[..., None],
        "labels": phantom.labels,
        "objects": {
            "label": np.array([f for f, _ in phantom.instances]),
            "mask": [m.astype(np.uint8)[..., None] for _, m in phantom.instances],
        },
    }


@pytest.fixture(scope="module")
def setting():
    bundle = load_pretrained("phantoms_cls")
    test = (phantoms.generate("classification", 128, 0, "test", i) for i in range(50))
    source = [example(p) for p in test if p.labels.any()][:4]  # four images with findings
    train = np.stack(
        [
            example(phantoms.generate("classification", 128, 0, "train", i))["image"]
            for i in range(64)
        ]
    )
    x = bundle.input_spec.normalize(unit_range(train, 1))
    stats = {
        "denseblock3": estimate_feature_stats(bundle.model, bundle.variables, [x], "denseblock3")
    }
    return bundle, source, stats


def rows(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_cases_come_from_the_positive_labels_with_ground_truth(setting):
    _, source, _ = setting
    for index, ex in enumerate(source):
        found = evaluation.cases(ex, index)
        assert [c.target for c in found] == list(np.nonzero(ex["labels"])[0])
        for case in found:
            mine = [
                m[..., 0] > 0
                for m, f in zip(ex["objects"]["mask"], ex["objects"]["label"], strict=True)
                if f == case.target
            ]
            np.testing.assert_array_equal(case.truth, np.any(mine, axis=0))
            np.testing.assert_array_equal(case.instances, mine)  # one by one, in order


def test_rows_summary_and_a_crash_resumed(setting, tmp_path):
    bundle, source, stats = setting
    whole = evaluation.evaluate(bundle, source, tmp_path / "whole.csv", CONFIG, stats)
    expected = rows(whole)
    n_cases = sum(len(evaluation.cases(ex, i)) for i, ex in enumerate(source))
    assert len(expected) == 3 * n_cases > 0

    def crash_after_two(images):
        for i in images:
            if i == 2:
                raise KeyboardInterrupt  # as a kill between images
            yield i

    path = tmp_path / "resumed.csv"
    with pytest.raises(KeyboardInterrupt):
        evaluation.evaluate(bundle, source, path, CONFIG, stats, progress=crash_after_two)
    partial = rows(path)
    assert 0 < len(partial) < len(expected)
    # Neither batching nor chunking changes a value; the resumed run's record still matches.
    chunked = dataclasses.replace(CONFIG.settings, images_per_call=2)
    batched = dataclasses.replace(CONFIG, cases_per_call=3, settings=chunked)
    evaluation.evaluate(bundle, source, path, batched, stats)
    resumed = rows(path)
    assert resumed[: len(partial)] == partial  # finished rows kept, not recomputed
    keys = lambda table: [tuple(r[k] for k in evaluation.KEYS) for r in table]
    assert keys(resumed) == keys(expected)  # nothing lost or twice, in order
    for metric in set(evaluation.METRICS) - {"seconds"}:
        # Float rounding of other batch sizes; Sensitivity-N's correlations over 4 subsets
        # amplify it where they are near 0.
        np.testing.assert_allclose(
            [float(r[metric]) for r in resumed],
            [float(r[metric]) for r in expected],
            atol=1e-3 if metric in evaluation.SENSITIVITY_COLUMNS else 1e-4,
            err_msg=metric,
        )
    assert all(float(r["seconds"]) > 0 for r in resumed)
    other_seed = dataclasses.replace(CONFIG, seed=1)
    with pytest.raises(ValueError, match=r"other seed \(seed=0\)"):
        evaluation.evaluate(bundle, source, path, other_seed, stats)
    other_weights = dataclasses.replace(
        bundle, variables=jax.tree.map(lambda a: a * 2, bundle.variables)
    )
    with pytest.raises(ValueError, match="other model_sha256"):
        evaluation.evaluate(
            bundle=other_weights, source=source, results=path, config=CONFIG, stats=stats
        )
    other_stats = {k: v._replace(mean=v.mean + 0.1) for k, v in stats.items()}
    with pytest.raises(ValueError, match="other stats_sha256/denseblock3"):
        evaluation.evaluate(bundle, source, path, CONFIG, other_stats)
    assert rows(path) == resumed  # refused before touching the file
    older = tmp_path / "older.csv"  # a file of a version without the pcc_lungs column
    older.write_text(",".join(c for c in evaluation.COLUMNS if c != "pcc_lungs") + "\n")
    for call in (
        lambda: evaluation.evaluate(bundle, source, older, CONFIG, stats),
        lambda: evaluation.summary(older),
    ):
        with pytest.raises(
            ValueError, match=r"another version of iba-jax \(missing: \['pcc_lungs'\]"
        ):
            call()
    sensitivity = [float(r[c]) for r in expected for c in evaluation.SENSITIVITY_COLUMNS]
    assert np.isfinite(sensitivity).mean() > 0.9  # NaN only where a map is constant on subsets

    table = {r["method"]: r for r in evaluation.summary(whole)}
    assert table["iba"]["cases"] == n_cases
    ious = [float(r["iou"]) for r in expected if r["method"] == "iba"]
    assert table["iba"]["iou"] == pytest.approx(np.mean(ious), abs=1e-4)
    assert table["iba"]["iou"] > table["random"]["iou"]  # the maps find the lesions
    spread = {(r["method"], r["metric"]): r for r in evaluation.intervals(whole, ("method",))}
    iou = spread[("iba", "iou")]
    half = scipy.stats.t.ppf(0.975, n_cases - 1) * np.std(ious, ddof=1) / np.sqrt(n_cases)
    assert iou["n"] == n_cases and iou["mean"] == pytest.approx(np.mean(ious))
    assert (iou["low"], iou["high"]) == pytest.approx((np.mean(ious) - half, np.mean(ious) + half))
    assert ("iba", "pcc") not in spread  # no severity map: no interval of nothing
    cells = evaluation.interval_markdown(list(spread.values()), ("method",)).splitlines()
    assert cells[0].startswith("| method | cases | iou | pointing_game |")
    assert (
        f"| iba | {n_cases} | {iou['mean']:.3f} [{iou['low']:.3f}, {iou['high']:.3f}] |"
        in (cells[2])
    )
    text = evaluation.markdown(evaluation.summary(whole))
    assert text.splitlines()[0].startswith("| method | cases | iou |")
    by_target = evaluation.summary(whole, ("method", "target_name"))
    assert {r["target_name"] for r in by_target} <= set(phantoms.FINDINGS)
    assert sum(r["cases"] for r in by_target) == 3 * n_cases


def test_pivot_puts_one_group_per_column():
    table = [
        {"method": "iba", "model": "a", "iou": 0.5},
        {"method": "iba", "model": "b", "iou": 0.7},
        {"method": "random", "model": "b", "iou": 0.1},
    ]
    out = evaluation.pivot(table, "method", "model", "iou")
    assert out[0] == {"method": "iba", "a": 0.5, "b": 0.7}
    assert out[1]["b"] == 0.1 and np.isnan(out[1]["a"])


def test_missing_feature_statistics_say_how_to_make_them(tmp_path):
    net = DenseNet(densenet_tiny())
    save_bundle(
        tmp_path / "m", ModelBundle(net.config, net.init(jax.random.key(0), 64), ("a", "b", "c"))
    )
    with pytest.raises(FileNotFoundError, match=r"bundle_dir: .* has no feature statistics of"):
        evaluation.load_stats(tmp_path / "m", ["denseblock3"])
    with pytest.raises(ValueError, match="methods: expected one of"):
        evaluation.EvaluationConfig(methods=("lime",))
    with pytest.raises(ValueError, match="sensitivity_samples"):
        evaluation.EvaluationConfig(sensitivity_samples=-1)
    with pytest.raises(ValueError, match="baseline"):
        evaluation.EvaluationConfig(baseline="noise")


def regression_example(phantom):
    return {
        "image": to_uint8(phantom.image)[..., None],
        "zone_scores": phantom.zone_scores,
        "global_score": int(phantom.zone_scores.sum()),
        "zone_map": phantom.zone_map[..., None],
        "severity_map": phantom.severity_map[..., None],
    }


def test_regression_cases_and_rows(tmp_path):
    bundle = load_pretrained("phantoms_reg")
    test = (phantoms.generate("regression", 128, 0, "test", i) for i in range(20))
    source = [regression_example(p) for p in test if p.zone_scores.sum() > 0][:3]
    found = evaluation.cases(source[0], 0)
    assert len(found) == 1 and found[0].label == source[0]["global_score"]
    affected = np.isin(source[0]["zone_map"][..., 0], 1 + np.nonzero(source[0]["zone_scores"])[0])
    np.testing.assert_array_equal(found[0].truth, affected)
    np.testing.assert_array_equal(found[0].lungs, source[0]["zone_map"][..., 0] > 0)
    nothing = dict(source[0], zone_scores=np.zeros(6, np.int32))
    assert evaluation.cases(nothing, 0) == []
    stats = evaluation.load_stats(pretrained_dir("phantoms_reg"), ["denseblock3"])
    config = evaluation.EvaluationConfig(methods=("regression_iba_mse", "random"), **QUICK)
    path = evaluation.evaluate(bundle, source, tmp_path / "r.csv", config, stats)
    table = {r["method"]: r for r in evaluation.summary(path)}
    assert table["regression_iba_mse"]["cases"] == 3
    assert table["regression_iba_mse"]["pcc"] > table["random"]["pcc"]
    # Within the lungs (metrics.correlation.pearson(within=) is checked in test_metrics): another
    # figure than the whole image's, defined for every case.
    for method in ("regression_iba_mse", "random"):
        assert -1 <= table[method]["pcc_lungs"] <= 1, method
        assert abs(table[method]["pcc_lungs"] - table[method]["pcc"]) > 1e-3, method


def test_detector_cases_are_the_zones_each_detector_is_about():
    test = (phantoms.generate("regression", 128, 0, "test", i) for i in range(40))
    examples = [regression_example(p) for p in test]
    seen = set()
    for index, ex in enumerate(examples):
        found = evaluation.cases(ex, index, brixia.DETECTOR_LABELS)
        fired = np.nonzero(brixia.detector_labels(ex["zone_scores"]))[0]
        assert [c.target for c in found] == list(fired)
        zones = ex["zone_map"][..., 0]
        for case in found:
            wanted = {0: (0, 1), 1: (2,), 2: (3,)}[case.target]
            chosen = [k + 1 for k, s in enumerate(ex["zone_scores"]) if s in wanted]
            np.testing.assert_array_equal(case.truth, np.isin(zones, chosen))
            assert case.truth.any()
            seen.add(case.target)
    assert seen == {0, 1, 2}  # 40 phantoms exercise every detector


def test_instances_marked_counts_instances_covered_by_half():
    instances = np.zeros((3, 8, 8), bool)
    instances[0, :2, :2] = True
    instances[1, 4:6, 4:6] = True
    instances[2, 6:, :4] = True
    predicted = instances[0] | instances[1]
    predicted[4, 4] = False  # instance 1 still covered by 3/4
    assert localisation.instances_marked(predicted, instances) == pytest.approx(2 / 3)
    predicted[4, 5] = False  # now by 1/2
    assert localisation.instances_marked(predicted, instances) == pytest.approx(2 / 3)
    predicted[5, 4] = False  # 1/4
    assert localisation.instances_marked(predicted, instances) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="instances"):
        localisation.instances_marked(predicted, instances[0])
