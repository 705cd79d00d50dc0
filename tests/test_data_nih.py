"""NIH ChestX-ray14: the real metadata, and the builder on a fixture tree in the real layout."""

import csv
import gzip
import shutil

import numpy as np
import PIL.Image
import pytest
from conftest import DATA

from iba_jax.cli import main
from iba_jax.data import building, nih
from iba_jax.labels import NIH14

FIXTURES = DATA / "nih"


@pytest.fixture(scope="module")
def real_boxes(tmp_path_factory):
    path = tmp_path_factory.mktemp("boxes") / nih.BOX_FILE
    path.write_bytes(gzip.decompress((FIXTURES / "BBox_List_2017.csv.gz").read_bytes()))
    return path


def test_all_984_real_boxes_parse(real_boxes):
    boxes = nih.read_boxes(real_boxes)
    labels = [b.label for bs in boxes.values() for b in bs]
    assert len(boxes) == 880 and len(labels) == 984
    assert set(labels) == set(nih.BOX_LABELS)
    assert labels.count("Infiltration") == 123  # spelled "Infiltrate" in the file
    assert all(0 <= b.x < 1024 and 0 <= b.y < 1024 for bs in boxes.values() for b in bs)


def test_data_entry_rows_parse_under_both_headers(tmp_path):
    records = nih.read_data_entry(FIXTURES / "Data_Entry_2017_v2020.csv")
    assert len(records) == 26
    first = records[0]
    assert (first.image, first.findings, first.patient_id, first.age, first.sex, first.view) == (
        "00000001_000.png",
        ("Cardiomegaly",),
        1,
        57,
        "M",
        "PA",
    )
    assert any(r.findings == () for r in records)  # "No Finding"
    text = (FIXTURES / "Data_Entry_2017_v2020.csv").read_text()
    renamed = tmp_path / "Data_Entry_2017.csv"
    renamed.write_text(text.replace("Patient Gender", "Patient Sex", 1))
    assert nih.read_data_entry(renamed) == records


def test_a_bad_row_is_reported_with_its_line(tmp_path):
    lines = (FIXTURES / "Data_Entry_2017_v2020.csv").read_text().splitlines()
    fields = lines[4].split(",")
    fields[4] = "old"
    lines[4] = ",".join(fields)
    path = tmp_path / "Data_Entry_2017.csv"
    path.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"Data_Entry_2017.csv:5: .*age 'old'"):
        nih.read_data_entry(path)


def write_release(root, real_boxes, *, size=96):
    """The fixture rows, in the release's layout, with synthetic PNGs under the real names."""
    for name in ("Data_Entry_2017_v2020.csv", "train_val_list.txt", "test_list.txt"):
        shutil.copy(FIXTURES / name, root / name)
    names = [r.image for r in nih.read_data_entry(root / "Data_Entry_2017_v2020.csv")]
    with real_boxes.open() as src, (root / nih.BOX_FILE).open("w", newline="") as dst:
        rows = list(csv.reader(src))
        csv.writer(dst).writerows([rows[0]] + [r for r in rows[1:] if r[0] in names])
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        folder = root / f"images_{1 + i % 2:03d}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(rng.integers(0, 256, (size, size), np.uint8)).save(folder / name)
    return names


def test_builder_on_the_release_layout(tmp_path, real_boxes):
    root = tmp_path / "manual"
    root.mkdir()
    names = write_release(root, real_boxes)
    config = nih.NihConfig(name="test", image_size=32, validation_fraction=0.25)
    builder = building.build(
        "nih_chest_xray14", config=config, data_dir=tmp_path / "tfds", manual_dir=root
    )
    splits = {s: builder.as_data_source(split=s) for s in ("train", "validation", "test", "boxes")}
    assert len(splits["train"]) + len(splits["validation"]) == 16  # train_val_list's rows
    assert (len(splits["test"]), len(splits["boxes"])) == (10, 5)
    records = {r.image: r for r in nih.read_data_entry(root / "Data_Entry_2017_v2020.csv")}
    patients = {
        s: {int(e["patient_id"]) for e in splits[s]} for s in ("train", "validation", "test")
    }
    assert not patients["train"] & patients["validation"]
    assert (len(patients["train"]), len(patients["validation"])) == (9, 3)  # 25 % of 12
    seen = [e["image_name"].decode() for s in ("train", "validation", "test") for e in splits[s]]
    assert sorted(seen) == sorted(names)
    for example in splits["train"]:
        record = records[example["image_name"].decode()]
        assert example["image"].shape == (32, 32, 1)
        expected = [label in record.findings for label in NIH14]
        np.testing.assert_array_equal(example["labels"], expected)
        assert (int(example["age"]), int(example["patient_id"])) == (record.age, record.patient_id)
    boxes = nih.read_boxes(root / nih.BOX_FILE)
    for example in splits["boxes"]:
        truth = boxes[example["image_name"].decode()]
        got = example["objects"]["bbox"]
        assert len(got) == len(truth)
        for box, b in zip(got, truth, strict=True):
            expected = np.array([b.y, b.x, b.y + b.h, b.x + b.w]) / 1024
            np.testing.assert_allclose(box, np.clip(expected, 0, 1), atol=1e-6)
    assert builder.info.metadata["label_names"] == list(NIH14)


def test_split_is_deterministic_and_seeded(tmp_path, real_boxes):
    root = tmp_path / "manual"
    root.mkdir()
    write_release(root, real_boxes, size=40)

    def validation(seed, data_dir):
        config = nih.NihConfig(name="s", image_size=16, validation_fraction=0.25, seed=seed)
        builder = building.build(
            "nih_chest_xray14", config=config, data_dir=tmp_path / data_dir, manual_dir=root
        )
        return sorted(e["image_name"] for e in builder.as_data_source(split="validation"))

    assert validation(0, "a") == validation(0, "b")
    assert any(validation(seed, f"c{seed}") != validation(0, "a") for seed in (1, 2, 3))


def test_missing_files_are_named(tmp_path, real_boxes):
    root = tmp_path / "manual"
    root.mkdir()
    write_release(root, real_boxes, size=16)
    (root / "test_list.txt").unlink()
    config = nih.NihConfig(name="m", image_size=16)
    with pytest.raises(FileNotFoundError, match=r"manual/test_list.txt"):
        building.build("nih_chest_xray14", config=config, data_dir=tmp_path / "t", manual_dir=root)


def test_bad_images_fail_or_are_skipped_and_listed(tmp_path, real_boxes, capsys):
    root = tmp_path / "manual"
    root.mkdir()
    names = write_release(root, real_boxes, size=16)
    broken = next(root.glob(f"images_*/images/{names[0]}"))
    broken.write_bytes(b"not a png")
    (next(root.glob(f"images_*/images/{names[1]}"))).unlink()
    fail = nih.NihConfig(name="f", image_size=16)
    with pytest.raises(ValueError, match=names[0]):
        building.build("nih_chest_xray14", config=fail, data_dir=tmp_path / "f", manual_dir=root)
    # Skipping keeps the registered config's name (the command line's --on-bad-image).
    build = ["build-data", "nih_chest_xray14", "--config", "224", "--manual-dir", str(root)]
    assert main([*build, "--data-dir", str(tmp_path / "k"), "--on-bad-image", "skip"]) == 0
    assert "2 image(s) skipped" in capsys.readouterr().out
    source = building.data_source("nih_chest_xray14", "test", config="224", data_dir=tmp_path / "k")
    builder = nih.NihChestXray14(config="224", data_dir=str(tmp_path / "k"))
    skipped = builder.info.metadata["skipped_images"]
    assert set(skipped) == {names[0], names[1]}
    assert "not found" in skipped[names[1]]
    total = sum(len(builder.as_data_source(split=s)) for s in ("train", "validation", "test"))
    assert total == len(names) - 2 and source[0]["image"].shape == (224, 224, 1)
