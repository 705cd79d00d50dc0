"""NIH ChestX-ray14 (Wang et al., CVPR 2017) as a TFDS builder over a manually downloaded folder.

The release's metadata files are parsed exactly as published (the 2017 and 2020 headers; boxes
whose header row carries empty extra cells and whose label reads "Infiltrate"); the images are
found in ``images/`` or in the release's ``images_001/images`` ... ``images_012/images``.

Splits: ``train`` and ``validation`` cut patient-wise from ``train_val_list.txt`` (seeded,
deterministic; the validation share is a config field), ``test`` from ``test_list.txt``, and
``boxes``: the 880 images with boxes (all of them in the official test list).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

from iba_jax.data import preprocess
from iba_jax.data.building import BadImages, ChoosesBadImagePolicy
from iba_jax.data.splits import split_patients
from iba_jax.labels import NIH14

# Box coordinates are pixels of the released 1024 x 1024 PNGs, whatever size the files have now.
BOX_FRAME = 1024
DATA_ENTRY_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
BOX_FILE = "BBox_List_2017.csv"
TRAIN_VAL_FILE = "train_val_list.txt"
TEST_FILE = "test_list.txt"
# The eight classes that have boxes: the first eight of NIH14, in its order.
BOX_LABELS = NIH14[:8]
_BOX_SPELLINGS = {"Infiltrate": "Infiltration"}
_NO_FINDING = "No Finding"
SEXES = ("M", "F")
VIEWS = ("PA", "AP")

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download NIH ChestX-ray14 from https://nihcc.app.box.com/v/ChestXray-NIHCC (about 45 GB) and
put, in one folder (the manual_dir):
  Data_Entry_2017_v2020.csv (or Data_Entry_2017.csv), BBox_List_2017.csv,
  train_val_list.txt, test_list.txt,
  images/*.png  or  images_001/images/*.png ... images_012/images/*.png (the unpacked archives).
"""


@dataclasses.dataclass(frozen=True)
class Record:
    """One row of Data_Entry_2017: an image and what is known about it."""

    image: str
    findings: tuple[str, ...]
    follow_up: int
    patient_id: int
    age: int
    sex: str
    view: str


@dataclasses.dataclass(frozen=True)
class Box:
    """One row of BBox_List_2017: a labelled box in pixels of the 1024 px image."""

    label: str
    x: float
    y: float
    w: float
    h: float


def _row_error(path: Path, line: int, message: str) -> ValueError:
    return ValueError(f"{path}:{line}: {message}")


def _column(header: Sequence[str], names: Sequence[str], path: Path) -> int:
    for name in names:
        if name in header:
            return list(header).index(name)
    raise ValueError(f"{path}: expected a column named {' or '.join(names)}; got {list(header)}.")


def read_data_entry(path: str | os.PathLike[str]) -> list[Record]:
    """Parses Data_Entry_2017.csv (2017 or 2020 header: "Patient Gender" or "Patient Sex").

    Raises:
      ValueError: naming the file and line of a row that does not parse.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = csv.reader(f)
        header = next(rows)
        cols = {
            "image": _column(header, ["Image Index"], path),
            "labels": _column(header, ["Finding Labels"], path),
            "follow_up": _column(header, ["Follow-up #"], path),
            "patient": _column(header, ["Patient ID"], path),
            "age": _column(header, ["Patient Age"], path),
            "sex": _column(header, ["Patient Sex", "Patient Gender"], path),
            "view": _column(header, ["View Position"], path),
        }
        records = []
        for line, row in enumerate(rows, start=2):
            try:
                records.append(_record(row, cols))
            except (ValueError, IndexError) as error:
                raise _row_error(path, line, f"unreadable row {row!r} ({error}).") from error
    return records


def _record(row: Sequence[str], cols: dict[str, int]) -> Record:
    findings = tuple(f for f in row[cols["labels"]].split("|") if f and f != _NO_FINDING)
    unknown = set(findings) - set(NIH14)
    if unknown:
        raise ValueError(f"unknown finding(s) {sorted(unknown)}")
    age = re.fullmatch(r"0*(\d+)Y?", row[cols["age"]].strip())  # 2017 files: "058Y" or 58
    if age is None:
        raise ValueError(f"age {row[cols['age']]!r} is not a number of years")
    sex, view = row[cols["sex"]].strip(), row[cols["view"]].strip()
    if sex not in SEXES or view not in VIEWS:
        raise ValueError(f"sex {sex!r} or view {view!r} not in {SEXES} / {VIEWS}")
    return Record(
        image=row[cols["image"]].strip(),
        findings=findings,
        follow_up=int(row[cols["follow_up"]]),
        patient_id=int(row[cols["patient"]]),
        age=int(age.group(1)),
        sex=sex,
        view=view,
    )


def read_boxes(path: str | os.PathLike[str]) -> dict[str, list[Box]]:
    """Parses BBox_List_2017.csv: image name -> its boxes ("Infiltrate" becomes "Infiltration").

    Raises:
      ValueError: naming the file and line of a row that does not parse.
    """
    path = Path(path)
    boxes: dict[str, list[Box]] = {}
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = csv.reader(f)
        next(rows)  # "Image Index,Finding Label,Bbox [x,y,w,h],,," : the header is not usable
        for line, row in enumerate(rows, start=2):
            try:
                label = _BOX_SPELLINGS.get(row[1].strip(), row[1].strip())
                if label not in BOX_LABELS:
                    raise ValueError(f"label {row[1]!r} is not one of {BOX_LABELS}")
                x, y, w, h = (float(v) for v in row[2:6])
                if w <= 0 or h <= 0:
                    raise ValueError("empty box")
            except (ValueError, IndexError) as error:
                raise _row_error(path, line, f"unreadable box {row!r} ({error}).") from error
            boxes.setdefault(row[0].strip(), []).append(Box(label, x, y, w, h))
    return boxes


def read_image_list(path: str | os.PathLike[str]) -> list[str]:
    """The image names of train_val_list.txt or test_list.txt, in file order."""
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def find_images(root: str | os.PathLike[str]) -> dict[str, Path]:
    """Image name -> path, from ``root/images`` and ``root/images_NNN/images``."""
    root = Path(root)
    folders = [root / "images", *sorted(root.glob("images_[0-9][0-9][0-9]/images"))]
    found: dict[str, Path] = {}
    for folder in folders:
        if folder.is_dir():
            found.update((p.name, p) for p in folder.iterdir() if p.suffix.lower() == ".png")
    return found


def _required(root: Path, names: Sequence[str]) -> Path:
    for name in names:
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(
        f"NIH ChestX-ray14: expected {' or '.join(str(root / n) for n in names)}; not found. "
        "See the README section 'Using the real data sets'."
    )


@dataclasses.dataclass
class NihConfig(tfds.core.BuilderConfig):
    """Image size, label set and split settings of one build.

    Attributes:
      image_size: the stored images' side in pixels.
      labels: the findings of the multi-hot ``labels`` feature, in this order.
      validation_fraction: the share of train_val_list's patients that form ``validation``.
      seed: the seed of that patient-wise cut.
    """

    image_size: int = 224
    labels: tuple[str, ...] = NIH14
    validation_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.labels) - set(NIH14)
        if unknown:
            raise ValueError(f"labels: expected names among {NIH14}; got {sorted(unknown)}.")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(
                f"validation_fraction: expected a share in [0, 1); got {self.validation_fraction}."
            )


class NihChestXray14(ChoosesBadImagePolicy, tfds.core.GeneratorBasedBuilder):
    """NIH ChestX-ray14: 112,120 frontal chest radiographs, 14 findings, 984 boxes."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS: ClassVar[list[NihConfig]] = [
        NihConfig(name="224", description="224 px, the 14 findings"),
        NihConfig(name="512", image_size=512, description="512 px, the 14 findings"),
        NihConfig(name="1024", image_size=1024, description="1024 px (as released)"),
        NihConfig(name="224_box8", labels=BOX_LABELS, description="224 px, the 8 box classes"),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.image_size
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.splitlines()[0],
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(size, size, 1), dtype=np.uint8),
                    "image_name": tfds.features.Text(),
                    "labels": tfds.features.Tensor(
                        shape=(len(self.builder_config.labels),), dtype=np.bool_
                    ),
                    "patient_id": tfds.features.Scalar(dtype=np.int32),
                    "follow_up": tfds.features.Scalar(dtype=np.int32),
                    "age": tfds.features.Scalar(dtype=np.int32),
                    "sex": tfds.features.ClassLabel(names=SEXES),
                    "view_position": tfds.features.ClassLabel(names=VIEWS),
                    "objects": tfds.features.Sequence(
                        {
                            "bbox": tfds.features.BBoxFeature(),
                            "label": tfds.features.ClassLabel(names=BOX_LABELS),
                        }
                    ),
                }
            ),
            homepage="https://nihcc.app.box.com/v/ChestXray-NIHCC",
            citation="Wang et al., ChestX-ray8: Hospital-scale Chest X-ray Database and "
            "Benchmarks. CVPR 2017.",
            metadata=tfds.core.MetadataDict(label_names=list(self.builder_config.labels)),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        root = Path(dl_manager.manual_dir)
        records = {r.image: r for r in read_data_entry(_required(root, DATA_ENTRY_FILES))}
        boxes = read_boxes(_required(root, [BOX_FILE]))
        train_val = read_image_list(_required(root, [TRAIN_VAL_FILE]))
        test = read_image_list(_required(root, [TEST_FILE]))
        listed = set(train_val) | set(test) | set(boxes)
        missing = sorted(listed - set(records))
        if missing:
            raise ValueError(
                f"NIH ChestX-ray14: {len(missing)} image(s) of the split lists or boxes have no "
                f"row in the Data_Entry file, e.g. {missing[:3]}."
            )
        cfg = self.builder_config
        fractions = {"train": 1.0 - cfg.validation_fraction, "validation": cfg.validation_fraction}
        side = split_patients(
            (str(records[n].patient_id) for n in train_val), fractions, seed=cfg.seed
        )
        images = find_images(root)
        bad = BadImages(self.on_bad_image, self.info.metadata)

        def examples(names: Sequence[str]) -> Iterator[tuple[str, dict[str, Any]]]:
            return self._generate_examples([records[n] for n in names], boxes, images, root, bad)

        side_of = {n: side[str(records[n].patient_id)] for n in train_val}
        splits = {
            "train": [n for n in train_val if side_of[n] == "train"],
            "validation": [n for n in train_val if side_of[n] == "validation"],
            "test": test,
            "boxes": sorted(boxes),
        }
        # A split with no rows (a partial download, say) is left out.
        return {name: examples(names) for name, names in splits.items() if names}

    def _generate_examples(
        self,
        records: Sequence[Record],
        boxes: dict[str, list[Box]],
        images: dict[str, Path],
        root: Path,
        bad: BadImages,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        cfg = self.builder_config
        for record in records:
            try:
                if record.image not in images:
                    raise FileNotFoundError(
                        f"{record.image}: expected in {root / 'images'} or "
                        f"{root / 'images_NNN' / 'images'}; not found."
                    )
                pixels = preprocess.read_image(images[record.image])
            except (FileNotFoundError, preprocess.UnreadableImageError) as error:
                bad.handle(record.image, error)
                continue
            yield record.image, _example(record, pixels, boxes.get(record.image, []), cfg)


def _example(record: Record, pixels: np.ndarray, boxes: list[Box], cfg: NihConfig) -> dict:
    gray = preprocess.grayscale(pixels)  # a few PNGs are RGB(A)
    height, width = gray.shape
    image = preprocess.to_uint8(preprocess.square(gray, cfg.image_size))
    crop = preprocess.center_crop_box(height, width)
    xywh = np.array([[b.x, b.y, b.w, b.h] for b in boxes], np.float64).reshape(-1, 4)
    normalised = preprocess.crop_boxes(
        preprocess.boxes_from_pixels(xywh, BOX_FRAME, BOX_FRAME), height, width, crop
    )
    return {
        "image": PIL.Image.fromarray(image),  # Pillow encodes the PNG: no TensorFlow needed
        "image_name": record.image,
        "labels": np.array([label in record.findings for label in cfg.labels]),
        "patient_id": record.patient_id,
        "follow_up": record.follow_up,
        "age": record.age,
        "sex": record.sex,
        "view_position": record.view,
        "objects": [
            {"bbox": tfds.features.BBox(*box), "label": b.label}
            for box, b in zip(normalised, boxes, strict=True)
        ],
    }


BUILDER = NihChestXray14
