"""Dataset-wide evaluation: the rows, resumption after a crash, the summary, and the CLI."""

import csv

import jax
import numpy as np
import PIL.Image
import pytest

from iba_jax import evaluation
from iba_jax.attribute import IBAConfig
from iba_jax.bundle import InputSpec, ModelBundle, save_bundle
from iba_jax.cli import main
from iba_jax.data import phantoms
from iba_jax.data.preprocess import to_uint8, unit_range
from iba_jax.models import DenseNet, densenet_tiny
from iba_jax.pretrained import load_pretrained, pretrained_dir
from iba_jax.stats import estimate_feature_stats

# Fewer IBA steps and coarser insertion/deletion than the defaults: the same code, faster.
QUICK = {"iba": IBAConfig(steps=3, samples=2), "pixels_per_step": 128 * 128 // 10}
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
    evaluation.evaluate(bundle, source, path, CONFIG, stats)
    assert rows(path) == expected  # nothing lost, nothing computed twice, same values

    table = {r["method"]: r for r in evaluation.summary(whole)}
    assert table["iba"]["cases"] == n_cases
    ious = [float(r["iou"]) for r in expected if r["method"] == "iba"]
    assert table["iba"]["iou"] == pytest.approx(np.mean(ious), abs=1e-4)
    assert table["iba"]["iou"] > table["random"]["iou"]  # the maps find the lesions
    text = evaluation.markdown(evaluation.summary(whole))
    assert text.splitlines()[0].startswith("| method | cases | iou |")


def test_missing_feature_statistics_say_how_to_make_them(tmp_path):
    net = DenseNet(densenet_tiny())
    save_bundle(
        tmp_path / "m", ModelBundle(net.config, net.init(jax.random.key(0), 64), ("a", "b", "c"))
    )
    with pytest.raises(FileNotFoundError, match="iba-jax estimate --model"):
        evaluation.load_stats(tmp_path / "m", ["denseblock3"])
    with pytest.raises(ValueError, match="methods: expected one of"):
        evaluation.EvaluationConfig(methods=("lime",))


def test_estimate_and_evaluate_commands(tmp_path, capsys):
    net = DenseNet(densenet_tiny(num_classes=4, in_channels=1, head="sigmoid"))
    bundle = ModelBundle(
        net.config, net.init(jax.random.key(0), 64), phantoms.FINDINGS, InputSpec.named("none", 64)
    )
    model = tmp_path / "model"
    save_bundle(model, bundle)
    data = ["cxr_phantoms", "--config", "classification_64_mini", "--data-dir", str(tmp_path)]
    assert main(["estimate", "--model", str(model), *data, "--layers", "denseblock3"]) == 0
    assert "estimated denseblock3 over 32 images" in capsys.readouterr().out
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(model), *data, "--methods", "iba,random", "--limit", "3"]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| iba |" in printed and (out / "summary.md").read_text() in printed
    assert {r["method"] for r in rows(out / "results.csv")} == {"iba", "random"}
    assert [r["method"] for r in rows(out / "summary.csv")] == ["iba", "random"]
    for plot in ("insertion_deletion.png", "iou.png"):
        picture = np.asarray(PIL.Image.open(out / plot).convert("L"))
        assert picture.shape[0] > 200 and picture.std() > 10  # drawn, not blank
    assert not (out / "pcc.png").exists()  # no severity maps here
    wrong = ["--config", "classification_128"]
    assert (
        main(
            ["estimate", "--model", str(model), "cxr_phantoms", *wrong, "--data-dir", str(tmp_path)]
        )
        == 2
    )
    assert "the model takes 64 px images" in capsys.readouterr().err


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
    nothing = dict(source[0], zone_scores=np.zeros(6, np.int32))
    assert evaluation.cases(nothing, 0) == []
    stats = evaluation.load_stats(pretrained_dir("phantoms_reg"), ["denseblock3"])
    config = evaluation.EvaluationConfig(
        methods=("regression_iba_mse", "regression_iba_deviation", "random"), **QUICK
    )
    path = evaluation.evaluate(bundle, source, tmp_path / "r.csv", config, stats)
    table = {r["method"]: r for r in evaluation.summary(path)}
    assert table["regression_iba_mse"]["cases"] == 3
    assert table["regression_iba_mse"]["pcc"] > table["random"]["pcc"]
