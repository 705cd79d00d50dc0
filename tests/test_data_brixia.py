"""BrixIA: the real metadata file, the splits, and the builder on synthetic DICOMs."""

import gzip

import numpy as np
import pytest
from conftest import DATA
from dicom_files import write_dicom

from iba_jax.cli import main
from iba_jax.data import brixia, building
from iba_jax.metrics.localisation import lung_zones
from iba_jax.segmentation import load_segmenter


@pytest.fixture(scope="module")
def metadata_text():
    return gzip.decompress((DATA / "brixia" / "metadata_global_v2.csv.gz").read_bytes()).decode(
        "utf-8"
    )


@pytest.fixture(scope="module")
def records(tmp_path_factory, metadata_text):
    path = tmp_path_factory.mktemp("brixia") / brixia.METADATA_FILE
    path.write_text(metadata_text, newline="")
    return brixia.read_metadata(path)


def test_all_4695_real_rows_parse(records):
    assert len(records) == 4695
    assert sum(r.consensus for r in records) == 150
    assert {r.photometric_interpretation for r in records} == {"MONOCHROME1", "MONOCHROME2"}
    assert all(len(r.zone_scores) == 6 and 0 <= r.global_score <= 18 for r in records)
    first = records[0]
    assert (first.filename, first.zone_scores, first.subject) == (
        "15626316918619298757.dcm",
        (0, 0, 0, 0, 0, 1),
        "P2255",
    )


def test_leading_zeros_dropped_by_a_spreadsheet_are_restored(tmp_path, metadata_text, records):
    lines = metadata_text.splitlines(keepends=True)
    score = lines[0].lstrip("\ufeff").split(";").index("BrixiaScore")
    mangled = [lines[0]]
    for line in lines[1:]:
        fields = line.split(";")
        fields[score] = fields[score].lstrip("0") or "0"
        mangled.append(";".join(fields))
    path = tmp_path / brixia.METADATA_FILE
    path.write_text("".join(mangled), newline="")
    assert brixia.read_metadata(path) == records


def test_a_score_that_does_not_add_up_is_reported_with_its_line(tmp_path, metadata_text):
    lines = metadata_text.splitlines(keepends=True)
    lines[3] = lines[3].replace(";000010;1;", ";000010;3;", 1)
    assert ";000010;3;" in lines[3]
    path = tmp_path / brixia.METADATA_FILE
    path.write_text("".join(lines), newline="")
    with pytest.raises(ValueError, match=r"metadata_global_v2.csv:4: .*not the sum"):
        brixia.read_metadata(path)


def test_scores_and_detector_labels():
    assert brixia.parse_brixia_score("0") == (0,) * 6
    assert brixia.detector_labels((0, 0, 2, 3, 3, 2)) == (True, True, True)
    assert brixia.detector_labels((2, 2, 2, 2, 2, 2)) == (False, True, False)
    for bad in ("1234567", "000004", "12a"):
        with pytest.raises(ValueError, match="BrixiaScore"):
            brixia.parse_brixia_score(bad)


def test_splits_are_patient_wise_and_keep_consensus_patients_out_of_training(records):
    splits = brixia.assign_splits(records, {"train": 0.7, "validation": 0.1, "test": 0.2}, 0)
    assert sum(len(s) for s in splits.values()) == len(records)
    assert len(splits["consensus"]) == 150 and all(r.consensus for r in splits["consensus"])
    subjects = {name: {r.subject for r in split} for name, split in splits.items()}
    assert not subjects["train"] & subjects["validation"]
    assert not subjects["train"] & subjects["test"]
    assert not subjects["validation"] & subjects["test"]
    assert not subjects["consensus"] & (subjects["train"] | subjects["validation"])
    share = len(subjects["train"]) / len({r.subject for r in records})
    assert 0.6 < share < 0.7  # 70 % of the patients without a consensus image
    again = brixia.assign_splits(records, {"train": 0.7, "validation": 0.1, "test": 0.2}, 0)
    assert again == splits


def write_brixia_release(root, *, size=64):
    """14 real metadata rows (2 of the consensus set) with synthetic DICOMs under their names,
    in the release's layout (dicom_clean/); returns ``root``."""
    text = gzip.decompress((DATA / "brixia" / "metadata_global_v2.csv.gz").read_bytes()).decode()
    header, *rows = text.splitlines(keepends=True)
    consensus = [r for r in rows if r.split(";")[9] == "1"]
    subjects = {r.split(";")[10] for r in consensus}
    others = [r for r in rows if r.split(";")[10] not in subjects]
    chosen = others[:12] + consensus[:2]
    (root / "dicom_clean").mkdir(parents=True)
    (root / brixia.METADATA_FILE).write_text(header + "".join(chosen), newline="")
    ramp = np.add.outer(np.arange(size * 3 // 4), np.arange(size)) * (2200 / (7 * size / 4))
    for row in chosen:
        name, photometric = row.split(";")[0], row.split(";")[6]
        stored = ramp.max() - ramp if photometric == "MONOCHROME1" else ramp
        write_dicom(root / "dicom_clean" / name, np.round(stored), photometric=photometric)
    return root


def test_builder_on_synthetic_dicoms(tmp_path):
    root = write_brixia_release(tmp_path / "manual")
    config = brixia.BrixiaConfig(name="t", image_size=16, train_fraction=0.5)
    builder = building.build("brixia", config=config, data_dir=tmp_path / "tfds", manual_dir=root)
    sizes = {s: len(builder.as_data_source(split=s)) for s in builder.info.splits}
    assert sizes["consensus"] == 2 and sum(sizes.values()) == 14
    for split in builder.info.splits:
        for example in builder.as_data_source(split=split):
            image = example["image"][..., 0].astype(float)
            # Both photometric interpretations show the same picture: dark left, bright right.
            assert image[:, -1].mean() > image[:, 0].mean() + 100
            scores = example["zone_scores"]
            assert int(example["global_score"]) == scores.sum()
            np.testing.assert_array_equal(
                example["detector_labels"], brixia.detector_labels(scores.tolist())
            )
            assert bool(example["consensus"]) == (split == "consensus")
            # The lungs come from the shipped segmenter; the maps follow from them.
            lungs = example["lung_mask"][..., 0]
            assert set(np.unique(lungs)) <= {0, 255}
            zones = example["zone_map"][..., 0]
            np.testing.assert_array_equal(zones, lung_zones(lungs > 0))
            painted = np.concatenate([[0], scores])[zones]
            np.testing.assert_array_equal(example["severity_map"][..., 0], painted)
    assert builder.info.metadata["segmenter_sha256"] == load_segmenter().checksum


def test_bad_dicoms_are_skipped_and_listed_under_the_registered_config(tmp_path, capsys):
    root = write_brixia_release(tmp_path / "manual")
    broken = sorted((root / "dicom_clean").glob("*.dcm"))
    broken[0].write_bytes(b"not a DICOM file")
    broken[1].unlink()
    build = ["build-data", "brixia", "--config", "224", "--manual-dir", str(root)]
    assert main([*build, "--data-dir", str(tmp_path / "a")]) == 2  # fail, the default
    assert broken[0].name in capsys.readouterr().err
    assert main([*build, "--data-dir", str(tmp_path / "b"), "--on-bad-image", "skip"]) == 0
    assert "2 image(s) skipped" in capsys.readouterr().out
    builder = brixia.Brixia(config="224", data_dir=str(tmp_path / "b"))
    assert set(builder.info.metadata["skipped_images"]) == {broken[0].name, broken[1].name}
    assert sum(len(builder.as_data_source(split=s)) for s in builder.info.splits) == 12
    assert (
        main(["build-data", "cxr_phantoms", "--data-dir", str(tmp_path), "--on-bad-image", "skip"])
        == 2
    )
    assert (
        "on_bad_image: cxr_phantoms generates its images and reads none" in capsys.readouterr().err
    )


def test_missing_metadata_and_dicoms_are_named(tmp_path, metadata_text):
    root = tmp_path / "manual"
    root.mkdir()
    config = brixia.BrixiaConfig(name="m", image_size=16)
    with pytest.raises(ValueError, match=r"manual_dir: .*manual is empty\. Request BrixIA from"):
        building.build("brixia", config=config, data_dir=tmp_path / "a", manual_dir=root)
    (root / "notes.txt").write_text("the download is still running")
    with pytest.raises(FileNotFoundError, match=r"manual/metadata_global_v2.csv"):
        building.build("brixia", config=config, data_dir=tmp_path / "a", manual_dir=root)
    header, *rows = metadata_text.splitlines(keepends=True)
    (root / brixia.METADATA_FILE).write_text(header + rows[0], newline="")
    with pytest.raises(FileNotFoundError, match=r"15626316918619298757\.dcm"):
        building.build("brixia", config=config, data_dir=tmp_path / "b", manual_dir=root)
