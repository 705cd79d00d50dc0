"""The public BrixIA annotations of the COVID-19 image collection, as a TFDS builder.

The part of BrixIA that anyone can download (github.com/BrixIA/Brixia-score-COVID-19, folder
``data/``): 192 chest radiographs of the ieee8023 COVID-19 image collection
(``public-cohen-subset/``, JPEG and PNG in RGB, RGBA and grayscale, 298 to 4,280 px) with six
lung-zone scores 0-3 each from a senior and a junior radiologist
(``public-annotations.csv``). Lung masks are optional: one PNG or JPEG per image with the
image's file name and size, lung = 255 (V7 Labs' masks, shipped in torchxrayvision's wheel as
``semantic_masks_v7labs_lungs.zip``), in a ``lung_masks/`` folder beside the annotations or in
any folder (``masks_dir``); an image without one gets the shipped segmenter's
(:func:`~iba_jax.segmentation.segment_lungs`).

Per example: the image (its central square, resized, grayscale), both radiologists' zone scores
and global scores, the paper's three detector labels (from the senior's scores), the patient
key and the cross-validation fold, the lung mask, the six-zone map
(:func:`~iba_jax.metrics.localisation.lung_zones`) and the severity map (each zone painted
with the senior's score); ``mask_source`` says whether the mask was annotated or predicted.
Images listed but absent are skipped with the reason under ``on_bad_image="skip"`` (the
release's own copy lacks 9 of 192) and named in the built set's metadata.

Splits: ``fold0`` ... ``fold4``, patient-wise (:func:`patient_key`): train on four folds
(``split="fold1+fold2+fold3+fold4"``), predict the fifth, so that every image gets an
out-of-fold prediction and no patient is on both sides.
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
import tensorflow_datasets as tfds

from iba_jax.data import preprocess
from iba_jax.data.brixia import (
    DETECTOR_LABELS,
    ZONES,
    PredictsLungMasks,
    detector_labels,
    severity_map,
)
from iba_jax.data.building import BadImages, ChoosesBadImagePolicy, png
from iba_jax.data.splits import split_patients

ANNOTATIONS_FILE = "public-annotations.csv"
IMAGE_FOLDERS = ("public-cohen-subset", "images")  # the repository's name; a flat copy's
MASK_FOLDER = "lung_masks"
FOLDS = tuple(f"fold{k}" for k in range(5))
MASK_SOURCES = ("annotated", "predicted")

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Clone https://github.com/BrixIA/Brixia-score-COVID-19 and use its data/ folder as the
manual_dir: public-annotations.csv and public-cohen-subset/ (the images). Optional lung masks:
a lung_masks/ folder in the same place (one mask per image, named like it; e.g. V7 Labs' masks:
`pip download --no-deps torchxrayvision==1.5.7`, unzip the wheel, then
torchxrayvision/data/semantic_masks_v7labs_lungs.zip).
"""


@dataclasses.dataclass(frozen=True)
class Annotation:
    """One row of public-annotations.csv: zone scores in zone order A-F."""

    filename: str
    senior: tuple[int, ...]
    junior: tuple[int, ...]


def read_annotations(path: str | os.PathLike[str]) -> list[Annotation]:
    """Parses public-annotations.csv (comma-separated, UTF-8 with a byte-order mark).

    Raises:
      ValueError: naming the file and line of a row whose scores are not 0-3, or whose global
        score is not the sum of its zone scores.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8-sig") as f:
        records = []
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                records.append(
                    Annotation(
                        filename=row["filename"],
                        senior=_zone_scores(row, "S"),
                        junior=_zone_scores(row, "J"),
                    )
                )
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"{path}:{line}: unreadable row ({error}).") from error
    return records


def _zone_scores(row: dict[str, str], reader: str) -> tuple[int, ...]:
    scores = tuple(int(row[f"{reader}-{zone}"]) for zone in ZONES)
    if not all(0 <= s <= 3 for s in scores):
        raise ValueError(f"{reader}-A..{reader}-F: zone scores are 0 to 3; got {scores}")
    if sum(scores) != int(row[f"{reader}-Global"]):
        raise ValueError(f"{reader}-Global {row[f'{reader}-Global']} is not the sum of {scores}")
    return scores


# Images whose names cannot show their patient (hex names, one case's panels under two case
# numbers), keyed by the patient ids of the collection's metadata.csv (ieee8023/covid-chestxray-
# dataset). 16724_1_1 and 16673_2_1 share patient id 197 there although they are two eurorad
# cases: kept together, as the metadata says.
_SAME_PATIENT = {
    "sirm-caso-8": ("8FDE8DBA-CFBD-4B4C-B1A4-6F36A93B7E87", "9C34AF49-E589-44D5-92D3-168B3B04E4A6"),
    "sirm-caso-12": (
        "F2DE909F-E19C-4900-92F5-8F435B031AC6",
        "31BA3780-2323-493F-8AED-62081B9C383B",
    ),
    "sirm-caso-34": (
        "F4341CE7-73C9-45C6-99C8-8567A5484B63",
        "E63574A7-4188-4C8D-8D17-9D67A18A1AFA",
    ),
    "sirm-caso-47": (
        "171CB377-62FF-4B76-906C-F3787A01CB2E",
        "5931B64A-7B97-485D-BE60-3F1EA76BC4F0",
        "C6EA0BE5-B01E-4113-B194-18D956675E25",
    ),
    "radiopaedia-covid-19-pneumonia-21": (
        "58cb9263f16e94305c730685358e4e_jumbo",
        "9fdd3c3032296fd04d2cad5d9070d4_jumbo",
    ),
    "eurorad-16724": ("16724_1_1", "16673_2_1"),
}
_KNOWN = {stem.lower(): key for key, stems in _SAME_PATIENT.items() for stem in stems}

# Name families of one patient each: the radiologyassistant.nl patient filed as AR-n,
# extubation-n and 4-x-dayn (the same films under several names), and two series that the
# metadata does not list (0.jpg with 1-n-k.jpg; immagine*.png), kept together to be safe.
_FAMILIES = (
    (re.compile(r"(ar|extubation)-\d+|4-x-day\d+"), "radiologyassistant-73m"),
    (re.compile(r"0|1-\d+-\d+"), "series-2866x2350"),
    (re.compile(r"immagine( \d+)?"), "immagine"),
)
# Suffixes that name the view, the time or the figure panel, not the patient: (pattern,
# replacement), applied in order.
_NOT_THE_PATIENT = (
    (r"-(pa|ap|aps|l|right|left)$", ""),  # view or side
    (r"-((pa-)?on-admission|admission|prior|later|\d+-(hours|days))$", ""),  # time
    (r"-day-?\d+(-\d+)?$", ""),  # day6, day-10, day6-2
    (r"-(pa|ap|aps|l)$", ""),  # a view written before the day
    (r"(?<=\d)-\d+$", ""),  # the k-th image of case n: case-35-1
    (r"_f\d+[a-z]?$", ""),  # a journal's figure f1..f5
    (r"g0(\d)[a-z]-fig\d+[a-z]?$", r"g0\1"),  # a SARS review's figure g04a-Fig4a: g04
    (r"(?<=\d)[a-d]\d?$|[-_][a-d]\d?$", ""),  # a panel: 2a, fig4b, _lrg-a, -a1
)


def patient_key(filename: str) -> str:
    """The patient of an image of this collection, from its file name.

    Images of one patient share a stem, e.g. ``covid-19-pneumonia-24-day6.jpg`` and
    ``covid-19-pneumonia-24-day12.jpg``, ``lancet-case2a.jpg`` and ``lancet-case2b.jpg``: the
    key is the lower-case stem without the suffixes that name the view (``-PA``, ``-AP``,
    ``-L``), the time (``-day6``, ``-admission``, ``-prior``), the k-th image of a case
    (``-35-1``) or the figure panel (``-a``, ``2a``, ``_f3``). Two kinds of names carry their
    case number first (eurorad ``16654_2_1``: case 16654; rad2share ``<32 hex>-<4 hex>-0``: the
    32 hex digits). Names that cannot show the patient are keyed by the collection's metadata.
    Checked against the patient ids of the collection's metadata.csv for 180 of the 192 names
    (tests/data/brixia_public_patients.csv): no patient gets two keys.

    >>> patient_key("covid-19-pneumonia-24-day6.jpg"), patient_key("lancet-case2b.jpg")
    ('covid-19-pneumonia-24', 'lancet-case2')
    >>> patient_key("16654_4_1.jpg"), patient_key("pneumocystis-pneumonia-2-PA.png")
    ('eurorad-16654', 'pneumocystis-pneumonia-2')
    """
    stem = os.path.splitext(filename)[0].lower().replace(".annot.original", "")
    if stem in _KNOWN:
        return _KNOWN[stem]
    for pattern, key in _FAMILIES:
        if pattern.fullmatch(stem):
            return key
    if match := re.fullmatch(r"(\d{5})_\d+_\d+", stem):
        return f"eurorad-{match[1]}"
    if match := re.fullmatch(r"([0-9a-f]{32})-[0-9a-f]{4}-\d+", stem):
        return match[1]
    stem = stem.replace(" ", "-")
    for suffix, replacement in _NOT_THE_PATIENT:
        stem = re.sub(suffix, replacement, stem)
    return stem


def assign_folds(filenames: Sequence[str], seed: int) -> dict[str, str]:
    """Each image's fold (``fold0``..``fold4``), by patient: every patient's images in one."""
    keys = {name: patient_key(name) for name in filenames}
    share = 1.0 / len(FOLDS)
    fold_of = split_patients(keys.values(), dict.fromkeys(FOLDS, share), seed=seed)
    return {name: fold_of[key] for name, key in keys.items()}


def image_folder(root: Path) -> Path:
    """Where a release's images are: ``public-cohen-subset/`` (the repository's name) or
    ``images/`` (a flat copy).

    Raises:
      FileNotFoundError: naming both, when neither exists.
    """
    for name in IMAGE_FOLDERS:
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(
        f"BrixIA public: expected the images in {root / IMAGE_FOLDERS[0]} (or "
        f"{root / IMAGE_FOLDERS[1]}); neither exists."
    )


def read_lung_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A lung mask file as bool ``(H, W)``: lung where the value exceeds 127 (some masks hold
    values other than 0 and 255).

    Raises:
      preprocess.UnreadableImageError: when it cannot be read or its size is not ``shape``.
    """
    mask = preprocess.grayscale(preprocess.read_image(path))
    if mask.shape != shape:
        raise preprocess.UnreadableImageError(
            f"{path.name}: expected a lung mask of the image's size {shape[1]}x{shape[0]}; got "
            f"{mask.shape[1]}x{mask.shape[0]}."
        )
    return mask > 127 / 255


@dataclasses.dataclass
class BrixiaPublicConfig(tfds.core.BuilderConfig):
    """Image size and fold seed of one build."""

    image_size: int = 224
    seed: int = 0


class BrixiaPublic(PredictsLungMasks, ChoosesBadImagePolicy, tfds.core.GeneratorBasedBuilder):
    """BrixIA's public annotations: 192 COVID-19 radiographs, two radiologists' zone scores."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS: ClassVar[list[BrixiaPublicConfig]] = [
        BrixiaPublicConfig(name=str(size), image_size=size, description=f"{size} px")
        for size in (128, 224, 512)
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.image_size
        plane = lambda: tfds.features.Image(shape=(size, size, 1), dtype=np.uint8)
        scores = lambda: tfds.features.Tensor(shape=(len(ZONES),), dtype=np.int32)
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.splitlines()[0],
            features=tfds.features.FeaturesDict(
                {
                    "image": plane(),
                    "filename": tfds.features.Text(),
                    "patient": tfds.features.Text(),
                    "fold": tfds.features.Scalar(dtype=np.int32),
                    "original_size": tfds.features.Tensor(shape=(2,), dtype=np.int32),
                    "zone_scores": scores(),  # the senior radiologist's
                    "global_score": tfds.features.Scalar(dtype=np.int32),
                    "junior_zone_scores": scores(),
                    "junior_global_score": tfds.features.Scalar(dtype=np.int32),
                    "detector_labels": tfds.features.Tensor(shape=(3,), dtype=np.bool_),
                    "mask_source": tfds.features.ClassLabel(names=MASK_SOURCES),
                    "lung_mask": plane(),  # 255 = lung
                    "zone_map": plane(),  # 0 outside, 1-6 = zones A-F
                    "severity_map": plane(),  # each zone's senior score
                }
            ),
            homepage="https://github.com/BrixIA/Brixia-score-COVID-19",
            citation="Signoroni et al., BS-Net: learning COVID-19 pneumonia severity on a large "
            "chest X-ray dataset. Medical Image Analysis 71, 2021. Cohen et al., COVID-19 image "
            "data collection, arXiv:2006.11988, 2020.",
            metadata=tfds.core.MetadataDict(
                zones=list(ZONES), detector_labels=list(DETECTOR_LABELS)
            ),
        )

    def __init__(self, *, masks_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        """``masks_dir``: where the lung masks are (default: ``lung_masks/`` beside the
        annotations); chosen per build, like ``on_bad_image``."""
        self.masks_dir = None if masks_dir is None else Path(masks_dir)
        if self.masks_dir is not None and not self.masks_dir.is_dir():
            raise FileNotFoundError(
                f"masks_dir: expected a folder of lung masks; {masks_dir} is not one."
            )
        super().__init__(**kwargs)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        root = Path(dl_manager.manual_dir)
        masks = root / MASK_FOLDER if self.masks_dir is None else self.masks_dir
        annotations = root / ANNOTATIONS_FILE
        if not annotations.is_file():
            raise FileNotFoundError(
                f"BrixIA public: expected {annotations}; not found. See the README section "
                "'Using the real data sets'."
            )
        records = read_annotations(annotations)
        images = image_folder(root)
        # Folds over every listed image, so that adding a missing file later moves no other.
        fold_of = assign_folds([r.filename for r in records], self.builder_config.seed)
        bad = BadImages(self.on_bad_image, self.info.metadata)
        # Read first, then split: a fold whose only image is unreadable is left out instead of
        # failing the build (TFDS refuses an empty split). 192 images fit in memory.
        in_fold: dict[str, dict[str, dict[str, Any]]] = {fold: {} for fold in FOLDS}
        for r in records:
            try:
                example = self._example(r, images, masks)
            except (FileNotFoundError, preprocess.UnreadableImageError) as error:
                bad.handle(r.filename, error)
                continue
            fold = fold_of[r.filename]
            in_fold[fold][r.filename] = example | {"fold": FOLDS.index(fold)}
        return {
            fold: self._generate_examples(list(examples.items()))
            for fold, examples in in_fold.items()
            if examples
        }

    def _generate_examples(
        self, examples: list[tuple[str, dict[str, Any]]]
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        yield from examples

    def _example(self, r: Annotation, images: Path, masks: Path) -> dict[str, Any]:
        size = self.builder_config.image_size
        path = images / r.filename
        if not path.is_file():
            raise FileNotFoundError(f"{r.filename}: expected in {images}; not found.")
        gray = preprocess.grayscale(preprocess.read_image(path))
        mask_path = masks / r.filename
        annotated = mask_path.is_file()
        mask = read_lung_mask(mask_path, gray.shape) if annotated else None
        lungs, zones = self.lung_planes(gray, size, mask)
        source = "annotated" if annotated else "predicted"
        return {
            "image": png(preprocess.to_uint8(preprocess.square(gray, size))),
            "filename": r.filename,
            "patient": patient_key(r.filename),
            "original_size": np.array(gray.shape, np.int32),
            "zone_scores": np.array(r.senior, np.int32),
            "global_score": sum(r.senior),
            "junior_zone_scores": np.array(r.junior, np.int32),
            "junior_global_score": sum(r.junior),
            "detector_labels": np.array(detector_labels(r.senior)),
            "mask_source": source,
            "lung_mask": png(lungs * 255),
            "zone_map": png(zones),
            "severity_map": png(severity_map(zones, r.senior)),
        }


BUILDER = BrixiaPublic
