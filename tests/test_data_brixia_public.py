"""BrixIA's public annotations: the patient rule on the real names, the builder on synthetic
stand-ins in the real layout, and on the real folder where it is (skipped otherwise)."""

import collections
import csv
import os
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from conftest import BRIXIA_PUBLIC as REAL
from conftest import DATA
from conftest import needs_brixia_public as needs_the_real_folder

from iba_jax import evaluation
from iba_jax.cli import main
from iba_jax.data import brixia_public, building
from iba_jax.data.brixia_public import patient_key
from iba_jax.data.preprocess import read_image, square
from iba_jax.metrics.localisation import lung_zones
from iba_jax.segmentation import load_segmenter, segment_lungs


def metadata_patients() -> dict[str, str]:
    with (DATA / "brixia_public" / "patients.csv").open() as f:
        return {row["filename"]: row["patientid"] for row in csv.DictReader(f)}


def test_no_patient_of_the_collections_metadata_gets_two_keys():
    patients = metadata_patients()
    assert len(patients) == 180
    keys_of = collections.defaultdict(set)
    ids_of = collections.defaultdict(set)
    for name, patient in patients.items():
        keys_of[patient].add(patient_key(name))
        ids_of[patient_key(name)].add(patient)
    split = {p: k for p, k in keys_of.items() if len(k) > 1}
    assert not split, split
    # One key joins two ids: the radiologyassistant.nl patient the metadata files twice.
    joined = {k: ids for k, ids in ids_of.items() if len(ids) > 1}
    assert joined == {"radiologyassistant-73m": {"192", "196"}}
    # And the rule does not lump: most images are their own patient.
    assert len(ids_of) == len({p for p in patients.values()}) - 1


@pytest.mark.parametrize(
    ("names", "same"),
    [
        (("covid-19-pneumonia-23-day1.jpg", "covid-19-pneumonia-23-day9.jpg"), True),
        (("covid-19-pneumonia-58-prior.jpg", "covid-19-pneumonia-58-day-10.jpg"), True),
        (("cavitating-pneumonia-4-day0-PA.jpg", "cavitating-pneumonia-4-day28-PA.png"), True),
        (("covid-19-caso-70-1-PA.jpg", "covid-19-caso-70-2-APS.jpg"), True),
        (("16654_1_1.jpg", "16654_4_1.jpg"), True),
        (("immagine.png", "immagine 2.png"), True),
        (("legionella-pneumonia-1.png", "legionella-pneumonia-2.png"), False),
        (("pneumocystis-pneumonia-2-PA.png", "pneumocystis-pneumonia-8.png"), False),
        (("kjr-21-e24-g001-l-a.jpg", "kjr-21-e24-g002-l-a.jpg"), False),
        (
            (
                "8FDE8DBA-CFBD-4B4C-B1A4-6F36A93B7E87.jpeg",
                "9C34AF49-E589-44D5-92D3-168B3B04E4A6.jpeg",
            ),
            True,
        ),
    ],
)
def test_the_patient_rule_on_name_families(names, same):
    assert (patient_key(names[0]) == patient_key(names[1])) is same


@needs_the_real_folder
def test_the_rule_on_every_real_name_and_the_real_annotations():
    records = brixia_public.read_annotations(REAL / brixia_public.ANNOTATIONS_FILE)
    assert len(records) == 192 and len({r.filename for r in records}) == 192
    assert all(len(r.senior) == len(r.junior) == 6 for r in records)
    keys = {r.filename: patient_key(r.filename) for r in records}
    assert len(set(keys.values())) == 128  # 37 patients with two images or more
    folds = brixia_public.assign_folds(list(keys), seed=0)
    fold_of_patient = collections.defaultdict(set)
    for name, fold in folds.items():
        fold_of_patient[keys[name]].add(fold)
    assert all(len(f) == 1 for f in fold_of_patient.values())
    sizes = collections.Counter(folds.values())
    assert set(sizes) == set(brixia_public.FOLDS) and min(sizes.values()) >= 25


def write_stand_in(root: Path, rows: list[tuple[str, tuple, tuple]], masks: dict[str, str]):
    """The release's layout with synthetic pixels: public-annotations.csv (BOM, CRLF),
    public-cohen-subset/ and lung_masks/. ``masks``: file name -> "ok" / "grey" (values
    between 0 and 255 as some real masks hold) / "small" (the wrong size)."""
    header = ["filename"] + [f"{r}-{z}" for r in "SJ" for z in (*"ABCDEF", "Global")]
    lines = [",".join(header)]
    for name, senior, junior in rows:
        fields = [name, *map(str, senior), str(sum(senior)), *map(str, junior), str(sum(junior))]
        lines.append(",".join(fields))
    (root / brixia_public.ANNOTATIONS_FILE).write_text(
        "\ufeff" + "\r\n".join(lines) + "\r\n", encoding="utf-8", newline=""
    )
    images, mask_dir = root / "public-cohen-subset", root / brixia_public.MASK_FOLDER
    images.mkdir()
    mask_dir.mkdir()
    rng = np.random.default_rng(0)
    modes = ("RGB", "RGBA", "L")
    for k, (name, _, _) in enumerate(rows):
        if name.startswith("missing"):
            continue
        height, width = 90 + 10 * k, 120 - 5 * k
        pixels = rng.integers(0, 256, (height, width, 3), np.uint8)
        image = PIL.Image.fromarray(pixels).convert(modes[k % 3])
        if name.lower().endswith((".jpg", ".jpeg")):
            image = image.convert("RGB" if image.mode == "RGBA" else image.mode)
        image.save(images / name)
        if name in masks:
            mask = np.zeros((height, width), np.uint8)
            mask[height // 4 : 3 * height // 4, width // 6 : 5 * width // 6] = 255
            if masks[name] == "grey":
                mask[height // 4, width // 6 : 5 * width // 6] = 200
            if masks[name] == "small":
                mask = mask[:-2]
            PIL.Image.fromarray(mask).save(mask_dir / name)


ROWS = [
    ("covid-19-pneumonia-23-day1.jpg", (0, 1, 2, 3, 2, 1), (0, 1, 1, 3, 2, 1)),
    ("covid-19-pneumonia-23-day9.png", (3, 3, 3, 3, 3, 3), (2, 3, 3, 3, 3, 2)),
    ("immagine 2.png", (0, 0, 0, 0, 0, 0), (0, 0, 1, 0, 0, 0)),
    ("lancet-case2a.jpg", (1, 1, 0, 0, 1, 1), (1, 1, 1, 0, 1, 1)),
    ("missing-pneumonia-1.png", (2, 2, 2, 2, 2, 2), (2, 2, 2, 2, 2, 2)),
    ("16654_1_1.jpeg", (0, 0, 1, 0, 0, 1), (0, 0, 1, 0, 0, 0)),
    ("16708_4_1.JPG", (1, 0, 0, 0, 0, 0), (0, 0, 0, 0, 0, 0)),
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("brixia_public_release")
    masks = {ROWS[0][0]: "ok", ROWS[1][0]: "grey", ROWS[2][0]: "ok", ROWS[3][0]: "ok"}
    write_stand_in(root, ROWS, masks)
    data_dir = tmp_path_factory.mktemp("tfds")
    builder = building.build(
        "brixia_public", data_dir=data_dir, config="128", manual_dir=root, on_bad_image="skip"
    )
    examples = {}
    for fold in brixia_public.FOLDS:
        source = building.data_source("brixia_public", fold, config="128", data_dir=data_dir)
        for index in range(len(source)):
            example = source[index]
            examples[example["filename"].decode()] = example
    return builder, examples, root


def test_the_builder_reads_every_kind_of_file_and_skips_the_missing_one_with_its_reason(built):
    builder, examples, _ = built
    assert sorted(examples) == sorted(r[0] for r in ROWS if not r[0].startswith("missing"))
    skipped = dict(builder.info.metadata["skipped_images"])
    assert list(skipped) == ["missing-pneumonia-1.png"]
    assert (
        "expected in" in skipped["missing-pneumonia-1.png"]
        and "not found" in skipped["missing-pneumonia-1.png"]
    )
    for name, senior, junior in ROWS[:4]:
        e = examples[name]
        assert e["image"].shape == (128, 128, 1) and e["image"].dtype == np.uint8
        np.testing.assert_array_equal(e["zone_scores"], senior)
        np.testing.assert_array_equal(e["junior_zone_scores"], junior)
        assert (e["global_score"], e["junior_global_score"]) == (sum(senior), sum(junior))
        expected_detectors = [min(senior) <= 1, 2 in senior, 3 in senior]
        assert list(e["detector_labels"]) == expected_detectors
    # Images of one patient share a fold; the fold is the split the example is in.
    day1, day9 = examples[ROWS[0][0]], examples[ROWS[1][0]]
    assert day1["patient"] == day9["patient"] == b"covid-19-pneumonia-23"
    assert day1["fold"] == day9["fold"]


def test_masks_give_the_zone_and_severity_maps_and_their_absence_is_recorded(built):
    _, examples, root = built
    names = brixia_public.MASK_SOURCES
    for name, senior, _ in ROWS[:2]:
        e = examples[name]
        assert names[e["mask_source"]] == "annotated"
        lungs = e["lung_mask"][..., 0]
        assert set(np.unique(lungs)) == {0, 255}
        np.testing.assert_array_equal(e["zone_map"][..., 0], lung_zones(lungs > 0))
        painted = np.concatenate([[0], senior])[e["zone_map"][..., 0]]
        np.testing.assert_array_equal(e["severity_map"][..., 0], painted)
        assert set(np.unique(e["zone_map"])) == set(range(7))
    # The grey row of the second mask counts as lung (> 127), as 255 does.
    grey = np.asarray(PIL.Image.open(root / "lung_masks" / ROWS[1][0]))
    assert 200 in grey
    (case,) = evaluation.cases(examples[ROWS[0][0]], 0)  # the evaluation reads these examples
    assert case.label == sum(ROWS[0][1]) and case.truth.any() and case.lungs.any()


def test_an_image_without_a_mask_gets_the_shipped_segmenters(built):
    builder, examples, root = built
    segmenter = load_segmenter()
    assert builder.info.metadata["segmenter_sha256"] == segmenter.checksum
    for name in (ROWS[5][0], ROWS[6][0]):
        e = examples[name]
        assert brixia_public.MASK_SOURCES[e["mask_source"]] == "predicted"
        pixels = read_image(root / "public-cohen-subset" / name)
        gray = pixels.mean(axis=-1) if pixels.ndim == 3 else pixels
        (mask,) = segment_lungs([gray], segmenter)
        expected = square(mask.astype(np.float32), 128) > 0.5
        np.testing.assert_array_equal(e["lung_mask"][..., 0] > 0, expected)
        np.testing.assert_array_equal(e["zone_map"][..., 0], lung_zones(expected))
        if not expected.any():  # nothing to score without the lungs
            assert evaluation.cases(e, 0) == []


def test_a_mask_of_another_size_is_refused_naming_the_file(tmp_path):
    write_stand_in(tmp_path, ROWS[:1], {ROWS[0][0]: "small"})
    with pytest.raises(Exception, match=r"covid-19-pneumonia-23-day1.jpg: expected a lung mask"):
        building.build(
            "brixia_public", data_dir=tmp_path / "tfds", config="128", manual_dir=tmp_path
        )


def test_a_score_that_does_not_add_up_is_reported_with_its_line(tmp_path):
    write_stand_in(tmp_path, ROWS[:2], {})
    path = tmp_path / brixia_public.ANNOTATIONS_FILE
    lines = path.read_text(encoding="utf-8").splitlines()
    fields = lines[2].split(",")
    fields[7] = "5"  # S-Global of the second row
    lines[2] = ",".join(fields)
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(ValueError, match=r"public-annotations.csv:3: .*S-Global 5 is not the sum"):
        brixia_public.read_annotations(path)


@needs_the_real_folder
def test_the_builder_on_real_files_of_every_kind(tmp_path):
    """Six real rows (JPEG and PNG; RGB, RGBA and grayscale; a name with a space; with and
    without a mask) and one whose image the release lacks, read from the real folder."""
    chosen = {
        "immagine 2.png",
        "covid-19-pneumonia-mild.JPG",
        "kjr-21-e24-g002-l-a.jpg",
        "covid-19-caso-70-1-PA.jpg",
        "0.jpg",
        "covid-19-pneumonia-24-day6.jpg",  # absent from the release's copy
    }
    release = tmp_path / "release"
    (release / "images").mkdir(parents=True)
    (release / "lung_masks").mkdir()
    lines = (REAL / brixia_public.ANNOTATIONS_FILE).read_text(encoding="utf-8-sig").splitlines()
    kept = [lines[0]] + [line for line in lines[1:] if line.split(",")[0] in chosen]
    assert len(kept) == 1 + len(chosen)
    (release / brixia_public.ANNOTATIONS_FILE).write_text("\n".join(kept) + "\n")
    for name in chosen:
        for folder in ("images", "lung_masks"):
            if (REAL / folder / name).is_file():
                os.symlink(REAL / folder / name, release / folder / name)
    builder = building.build(
        "brixia_public",
        data_dir=tmp_path / "tfds",
        config="128",
        manual_dir=release,
        on_bad_image="skip",
    )
    assert list(builder.info.metadata["skipped_images"]) == ["covid-19-pneumonia-24-day6.jpg"]
    assert sum(s.num_examples for s in builder.info.splits.values()) == len(chosen) - 1
    shutil.rmtree(tmp_path / "tfds")


def test_a_missing_or_unreadable_image_fails_the_build_by_default_and_is_skipped_on_request(
    tmp_path,
):
    write_stand_in(tmp_path, ROWS[:1] + ROWS[4:5], {})  # the second row's image is missing
    with pytest.raises(FileNotFoundError, match=r"missing-pneumonia-1.png: expected in .*found"):
        building.build(
            "brixia_public", data_dir=tmp_path / "tfds", config="128", manual_dir=tmp_path
        )
    (tmp_path / "public-cohen-subset" / ROWS[4][0]).write_bytes(b"not a png")
    builder = building.build(
        "brixia_public",
        data_dir=tmp_path / "tfds2",
        config="128",
        manual_dir=tmp_path,
        on_bad_image="skip",
    )
    skipped = dict(builder.info.metadata["skipped_images"])
    assert list(skipped) == [ROWS[4][0]] and "not a PNG, JPEG or DICOM image" in skipped[ROWS[4][0]]
    assert sum(s.num_examples for s in builder.info.splits.values()) == 1


def test_the_command_builds_it(tmp_path, capsys):
    write_stand_in(tmp_path, ROWS[:4], {ROWS[0][0]: "ok"})
    data = ["--config", "128", "--manual-dir", str(tmp_path), "--data-dir", str(tmp_path / "d")]
    assert main(["build-data", "brixia_public", *data]) == 0
    assert "brixia_public" in capsys.readouterr().out
    built = building.build("brixia_public", data_dir=tmp_path / "d", config="128")  # found
    splits = "+".join(built.info.splits)  # the folds that hold an image
    source = building.data_source("brixia_public", splits, config="128", data_dir=tmp_path / "d")
    assert len(source) == 4


def test_masks_can_live_in_a_folder_of_their_own(tmp_path, capsys):
    release = tmp_path / "release"
    release.mkdir()
    write_stand_in(release, ROWS[:2], {ROWS[0][0]: "ok", ROWS[1][0]: "ok"})
    masks = tmp_path / "v7labs_masks"
    (release / "lung_masks").rename(masks)
    data = ["--config", "128", "--manual-dir", str(release), "--data-dir", str(tmp_path / "d")]
    assert main(["build-data", "brixia_public", *data, "--masks-dir", str(masks)]) == 0
    built = building.build("brixia_public", data_dir=tmp_path / "d", config="128")
    source = building.data_source(
        "brixia_public", "+".join(built.info.splits), config="128", data_dir=tmp_path / "d"
    )
    sources = {brixia_public.MASK_SOURCES[source[i]["mask_source"]] for i in range(len(source))}
    assert sources == {"annotated"}
    assert main(["build-data", "brixia_public", *data, "--masks-dir", str(tmp_path / "no")]) == 2
    assert "masks_dir: expected a folder of lung masks" in capsys.readouterr().err
    with pytest.raises(ValueError, match="masks_dir: only brixia_public reads lung masks"):
        building.build("cxr_phantoms", data_dir=tmp_path / "d", masks_dir=masks)
