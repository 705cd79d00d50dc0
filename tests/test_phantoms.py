"""cxr_phantoms: determinism, consistent ground truth, visible evidence, and the TFDS build."""

import hashlib

import numpy as np
import pytest

from iba_jax.data import building, phantoms
from iba_jax.data.preprocess import to_uint8


@pytest.fixture(scope="module")
def classification():
    return [phantoms.generate("classification", 64, 0, "train", i) for i in range(300)]


@pytest.fixture(scope="module")
def regression():
    return [phantoms.generate("regression", 64, 0, "train", i) for i in range(200)]


def test_same_arguments_same_phantom_and_others_differ():
    a = phantoms.generate("classification", 64, 3, "test", 7)
    b = phantoms.generate("classification", 64, 3, "test", 7)
    np.testing.assert_array_equal(a.image, b.image)
    assert [f for f, _ in a.instances] == [f for f, _ in b.instances]
    for other in (("classification", 64, 4, "test", 7), ("classification", 64, 3, "train", 7)):
        assert not np.array_equal(phantoms.generate(*other).image, a.image)
    assert a.image.dtype == np.float32 and a.image.min() >= 0 and a.image.max() <= 1


def test_labels_are_exactly_the_findings_with_instances(classification):
    for p in classification:
        present = np.zeros(len(phantoms.FINDINGS), bool)
        present[[f for f, _ in p.instances]] = True
        np.testing.assert_array_equal(p.labels, present)
        for _, mask in p.instances:
            assert mask.any()
            ymin, xmin, ymax, xmax = (np.array(phantoms.box_of(mask)) * 64).round().astype(int)
            inside = np.zeros_like(mask)
            inside[ymin:ymax, xmin:xmax] = True
            assert not (mask & ~inside).any()  # the box holds the whole mask...
            assert mask[ymin, :].any() and mask[ymax - 1, :].any()  # ...and is tight
    share = np.mean([p.labels for p in classification], axis=0)
    assert np.all(np.abs(share - phantoms.FINDING_PROBABILITY) < 0.1), share


def test_the_documented_share_of_images_has_several_instances(classification):
    for index, finding in enumerate(phantoms.FINDINGS):
        counts = [sum(f == index for f, _ in p.instances) for p in classification]
        counts = np.array([c for c in counts if c])
        counts_allowed, probabilities = phantoms.INSTANCE_COUNTS[finding]
        assert set(counts) <= set(counts_allowed)
        expected = 1 - probabilities[0]
        assert abs(np.mean(counts > 1) - expected) < 0.15, finding


def test_lesions_are_brighter_than_their_surroundings(classification):
    contrasts = []
    for p in classification:
        for finding, mask in p.instances:
            if phantoms.FINDINGS[finding] in ("Mass", "Nodule"):
                ring = dilate(mask, 3) & ~dilate(mask, 1)
                contrasts.append(p.image[mask].mean() - p.image[ring].mean())
    assert len(contrasts) > 50
    assert np.median(contrasts) > 0.08 and np.mean(np.array(contrasts) > 0) > 0.95


def dilate(mask, steps):
    out = mask.copy()
    for _ in range(steps):
        out = (
            out
            | np.roll(out, 1, 0)
            | np.roll(out, -1, 0)
            | np.roll(out, 1, 1)
            | np.roll(out, -1, 1)
        )
    return out


def test_zones_scores_and_severity_map_agree(regression):
    for p in regression:
        assert sorted(np.unique(p.zone_map).tolist()) == list(range(7))
        for k in range(6):
            zone = p.zone_map == k + 1
            assert (p.severity_map[zone] == p.zone_scores[k]).all()
        assert (p.severity_map[p.zone_map == 0] == 0).all()
        rows, cols = np.nonzero(p.zone_map)
        zone_of = p.zone_map[rows, cols]
        centre_row = [rows[zone_of == k].mean() for k in range(1, 7)]
        centre_col = [cols[zone_of == k].mean() for k in range(1, 7)]
        assert centre_row[0] < centre_row[1] < centre_row[2]  # A, B, C: upper to lower
        assert centre_row[3] < centre_row[4] < centre_row[5]
        assert max(centre_col[:3]) < 32 < min(centre_col[3:])  # A-C image left, D-F right
    totals = [int(p.zone_scores.sum()) for p in regression]
    assert min(totals) <= 2 and max(totals) >= 16  # the whole 0-18 range is used


def test_opacity_grows_with_the_score(regression):
    lung_brightness = [p.image[p.zone_map > 0].mean() for p in regression]
    totals = [p.zone_scores.sum() for p in regression]
    assert np.corrcoef(lung_brightness, totals)[0, 1] > 0.7


@pytest.mark.parametrize("task", phantoms.TASKS)
def test_built_data_set_holds_the_generated_phantoms_bit_for_bit(tmp_path, task):
    config = f"{task}_64_mini"
    builder = building.build("cxr_phantoms", config=config, data_dir=tmp_path / "a")
    assert {s: len(builder.as_data_source(split=s)) for s in phantoms.SPLITS} == {
        "train": 32,
        "validation": 8,
        "test": 8,
    }
    again = building.data_source("cxr_phantoms", "test", config=config, data_dir=tmp_path / "a")
    for index in range(8):
        example, truth = again[index], phantoms.generate(task, 64, 0, "test", index)
        assert int(example["index"]) == index
        np.testing.assert_array_equal(example["image"][..., 0], to_uint8(truth.image))
        if task == "classification":
            np.testing.assert_array_equal(example["labels"], truth.labels)
            masks = example["objects"]["mask"]
            assert len(masks) == len(truth.instances) == example["num_instances"].sum()
            for mask, box, (_, expected) in zip(
                masks, example["objects"]["bbox"], truth.instances, strict=True
            ):
                np.testing.assert_array_equal(mask[..., 0], expected)
                np.testing.assert_allclose(box, phantoms.box_of(expected), atol=1e-6)
        else:
            np.testing.assert_array_equal(example["zone_map"][..., 0], truth.zone_map)
            np.testing.assert_array_equal(example["severity_map"][..., 0], truth.severity_map)
            assert int(example["global_score"]) == truth.zone_scores.sum()


def test_unknown_task_or_split_is_refused():
    with pytest.raises(ValueError, match="task: expected one of"):
        phantoms.generate("segmentation", 64, 0, "train", 0)
    with pytest.raises(ValueError, match="split: expected one of"):
        phantoms.generate("regression", 64, 0, "holdout", 0)


def test_data_source_of_an_unbuilt_set_says_how_to_build_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data_dir: cxr_phantoms/\S+ is not built under"):
        building.data_source("cxr_phantoms", "test", config="regression_64", data_dir=tmp_path)


def test_two_builds_write_the_same_bytes(tmp_path):
    def digests(data_dir):
        building.build("cxr_phantoms", config="regression_64_mini", data_dir=data_dir)
        files = sorted(data_dir.rglob("*.array_record-*"))
        return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}

    first = digests(tmp_path / "a")
    assert len(first) == 3
    assert digests(tmp_path / "b") == first
