"""BrixIA COVID-19 severity (Signoroni et al., MedIA 2021) as a TFDS builder over a local folder.

Each radiograph carries a BrixiaScore: six lung-zone scores 0–3 in zone order A–F (A/D upper,
B/E middle, C/F lower; A–C one lung, D–F the other), their sum 0–18, and the paper's three
detector labels: some zone scored 0 or 1, some zone scored 2, some zone scored 3. The DICOMs are
read with pydicom (modality LUT, VOI LUT or window, MONOCHROME1 inverted, see
``preprocess.read_dicom``), cropped to their central square and resized. The release has no
lung masks: each image's lungs come from the shipped segmenter
(:func:`~iba_jax.segmentation.segment_lungs`), with the six-zone map and the severity map
(each zone painted with its score) that the evaluation needs.

Splits: ``consensus``, the 150 images with ConsensusTestset = 1; ``train``, ``validation`` and
``test`` cut patient-wise (by Subject, seeded) from all other images, with every patient who has
a consensus image sent to ``test``, so that no image of a consensus patient is trained on.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from iba_jax.data import preprocess
from iba_jax.data.building import BadImages, ChoosesBadImagePolicy, png
from iba_jax.data.splits import split_patients
from iba_jax.metrics.localisation import lung_zones
from iba_jax.segmentation import load_segmenter, segment_lungs

METADATA_FILE = "metadata_global_v2.csv"
ZONES = ("A", "B", "C", "D", "E", "F")
DETECTOR_LABELS = ("score_0_or_1", "score_2", "score_3")
SEXES = ("M", "F")

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Request BrixIA from https://brixia.github.io/ and put, in one folder (the manual_dir):
  metadata_global_v2.csv  and the DICOM files (*.dcm, in that folder or any folder below it,
  e.g. dicom_clean/ as released).
"""


@dataclasses.dataclass(frozen=True)
class Record:
    """One row of metadata_global_v2.csv."""

    filename: str
    modality: str
    manufacturer: str
    photometric_interpretation: str
    zone_scores: tuple[int, ...]
    consensus: bool
    subject: str
    study_id: str
    sex: str
    age_band: int

    @property
    def global_score(self) -> int:
        return sum(self.zone_scores)


def severity_map(zone_map: np.ndarray, zone_scores: Sequence[int]) -> np.ndarray:
    """Each zone of a zone map (0 outside, 1-6 zones A-F) painted with its score."""
    return np.concatenate([[0], np.asarray(zone_scores)]).astype(np.uint8)[zone_map]


class PredictsLungMasks:
    """A builder that segments the lungs of images that come without a mask, with the shipped
    segmenter (loaded at the first such image; its checksum goes into the built set's metadata
    as ``segmenter_sha256``)."""

    info: tfds.core.DatasetInfo  # as every TFDS builder

    def lung_planes(
        self, pixels: np.ndarray, size: int, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The lungs (bool) and their six-zone map (uint8) over the central square of
        ``pixels`` at ``size``, from ``mask`` (at the image's size) or the segmenter's."""
        if mask is None:
            if getattr(self, "_segmenter", None) is None:
                self._segmenter = load_segmenter()
                self.info.metadata["segmenter_sha256"] = self._segmenter.checksum
            (mask,) = segment_lungs([pixels], self._segmenter)
        lungs = preprocess.square(mask.astype(np.float32), size) > 0.5
        return lungs, lung_zones(lungs)


def parse_brixia_score(text: str) -> tuple[int, ...]:
    """Six zone scores from a BrixiaScore, restoring the leading zeros spreadsheets drop.

    >>> parse_brixia_score("1"), parse_brixia_score("231000")
    ((0, 0, 0, 0, 0, 1), (2, 3, 1, 0, 0, 0))
    """
    text = text.strip()
    if not text.isdigit() or len(text) > len(ZONES):
        raise ValueError(f"BrixiaScore {text!r}: expected up to 6 digits")
    scores = tuple(int(c) for c in text.zfill(len(ZONES)))
    if max(scores) > 3:
        raise ValueError(f"BrixiaScore {text!r}: zone scores are 0 to 3")
    return scores


def detector_zones(zone_scores: Sequence[int] | np.ndarray) -> np.ndarray:
    """Which zones each of the paper's three detectors is about, ``(3, 6)`` bool: zones scored
    0 or 1, zones scored 2, zones scored 3 (the ground truth of a detector's explanation)."""
    scores = np.asarray(zone_scores)
    return np.stack([scores <= 1, scores == 2, scores == 3])


def detector_labels(zone_scores: Sequence[int] | np.ndarray) -> tuple[bool, bool, bool]:
    """The paper's three detector targets: a zone scored 0 or 1, a zone scored 2, one scored 3."""
    present = np.asarray(detector_zones(zone_scores).any(axis=1))
    return (bool(present[0]), bool(present[1]), bool(present[2]))


def read_metadata(path: str | os.PathLike[str]) -> list[Record]:
    """Parses metadata_global_v2.csv (``;``-separated, UTF-8 with a byte-order mark).

    Raises:
      ValueError: naming the file and line of a row that does not parse, or whose
        BrixiaScoreGlobal is not the sum of its zone scores.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = csv.DictReader(f, delimiter=";")
        records = []
        for line, row in enumerate(rows, start=2):
            try:
                record = _record(row)
                if record.global_score != int(row["BrixiaScoreGlobal"]):
                    raise ValueError(
                        f"BrixiaScoreGlobal {row['BrixiaScoreGlobal']} is not the sum of "
                        f"BrixiaScore {row['BrixiaScore']}"
                    )
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"{path}:{line}: unreadable row ({error}).") from error
            records.append(record)
    return records


def _record(row: dict[str, str]) -> Record:
    sex = row["Sex"].strip()
    if sex not in SEXES:
        raise ValueError(f"Sex {sex!r} not in {SEXES}")
    consensus = row["ConsensusTestset"].strip()
    if consensus not in ("0", "1"):
        raise ValueError(f"ConsensusTestset {consensus!r} is not 0 or 1")
    return Record(
        filename=row["Filename"].strip(),
        modality=row["Modality"].strip(),
        manufacturer=row["Manufacturer"].strip(),
        photometric_interpretation=row["PhotometricInterpretation"].strip(),
        zone_scores=parse_brixia_score(row["BrixiaScore"]),
        consensus=consensus == "1",
        subject=row["Subject"].strip(),
        study_id=row["StudyId"].strip(),
        sex=sex,
        age_band=int(row["AgeAtStudyDateFiveYear"]),
    )


def assign_splits(
    records: Sequence[Record], fractions: dict[str, float], seed: int
) -> dict[str, list[Record]]:
    """``consensus`` plus patient-wise ``train``/``validation``/``test`` (see the module doc)."""
    consensus_subjects = {r.subject: "test" for r in records if r.consensus}
    side = split_patients(
        (r.subject for r in records), fractions, seed=seed, forced=consensus_subjects
    )
    splits: dict[str, list[Record]] = {name: [] for name in (*fractions, "consensus")}
    for r in records:
        splits["consensus" if r.consensus else side[r.subject]].append(r)
    return splits


@dataclasses.dataclass
class BrixiaConfig(tfds.core.BuilderConfig):
    """Image size and split settings of one build.

    Attributes:
      image_size: the stored images' side in pixels (central square, resized).
      train_fraction, validation_fraction: shares of the non-consensus patients; the rest
        (plus every consensus patient's other images) is ``test``.
      seed: the seed of the patient-wise cut.
    """

    image_size: int = 224
    train_fraction: float = 0.7
    validation_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.train_fraction, self.validation_fraction) < 0 or (
            self.train_fraction + self.validation_fraction > 1
        ):
            raise ValueError(
                "train_fraction, validation_fraction: expected non-negative shares summing to "
                f"at most 1; got {self.train_fraction} and {self.validation_fraction}."
            )

    @property
    def fractions(self) -> dict[str, float]:
        test = 1.0 - self.train_fraction - self.validation_fraction
        return {"train": self.train_fraction, "validation": self.validation_fraction, "test": test}


class Brixia(PredictsLungMasks, ChoosesBadImagePolicy, tfds.core.GeneratorBasedBuilder):
    """BrixIA: 4,695 COVID-19 chest radiographs with six lung-zone severity scores."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.1.0": "lung_mask, zone_map and severity_map from the shipped lung segmenter",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    BUILDER_CONFIGS: ClassVar[list[BrixiaConfig]] = [
        BrixiaConfig(name="224", description="224 px"),
        BrixiaConfig(name="512", image_size=512, description="512 px"),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.image_size
        plane = lambda: tfds.features.Image(shape=(size, size, 1), dtype=np.uint8)
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.splitlines()[0],
            features=tfds.features.FeaturesDict(
                {
                    "image": plane(),
                    "filename": tfds.features.Text(),
                    "lung_mask": plane(),  # 255 = lung (predicted: the release has no masks)
                    "zone_map": plane(),  # 0 outside, 1-6 = zones A-F
                    "severity_map": plane(),  # each zone's score
                    "zone_scores": tfds.features.Tensor(shape=(len(ZONES),), dtype=np.int32),
                    "global_score": tfds.features.Scalar(dtype=np.int32),
                    "detector_labels": tfds.features.Tensor(shape=(3,), dtype=np.bool_),
                    "consensus": tfds.features.Scalar(dtype=np.bool_),
                    "subject": tfds.features.Text(),
                    "study_id": tfds.features.Text(),
                    "sex": tfds.features.ClassLabel(names=SEXES),
                    "age_band": tfds.features.Scalar(dtype=np.int32),
                    "modality": tfds.features.Text(),
                    "manufacturer": tfds.features.Text(),
                    "photometric_interpretation": tfds.features.Text(),
                }
            ),
            homepage="https://brixia.github.io/",
            citation="Signoroni et al., BS-Net: learning COVID-19 pneumonia severity on a large "
            "chest X-ray dataset. Medical Image Analysis 71, 2021.",
            metadata=tfds.core.MetadataDict(
                zones=list(ZONES), detector_labels=list(DETECTOR_LABELS)
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        root = Path(dl_manager.manual_dir)
        metadata = root / METADATA_FILE
        if not metadata.is_file():
            raise FileNotFoundError(
                f"BrixIA: expected {metadata}; not found. See the README section "
                "'Using the real data sets'."
            )
        records = read_metadata(metadata)
        files = {p.name: p for p in root.rglob("*.dcm")}
        bad = BadImages(self.on_bad_image, self.info.metadata)
        splits = assign_splits(records, self.builder_config.fractions, self.builder_config.seed)
        return {  # a split with no rows (a partial download, say) is left out
            name: self._generate_examples(split, files, root, bad)
            for name, split in splits.items()
            if split
        }

    def _generate_examples(
        self, records: Sequence[Record], files: dict[str, Path], root: Path, bad: BadImages
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        size = self.builder_config.image_size
        for r in records:
            try:
                if r.filename not in files:
                    raise FileNotFoundError(
                        f"{r.filename}: expected in {root} or a folder below it; not found."
                    )
                pixels = preprocess.read_dicom(files[r.filename])
            except (FileNotFoundError, preprocess.UnreadableImageError) as error:
                bad.handle(r.filename, error)
                continue
            lungs, zones = self.lung_planes(pixels, size)
            yield (
                r.filename,
                {
                    "image": png(preprocess.to_uint8(preprocess.square(pixels, size))),
                    "filename": r.filename,
                    "lung_mask": png(lungs * 255),
                    "zone_map": png(zones),
                    "severity_map": png(severity_map(zones, r.zone_scores)),
                    "zone_scores": np.array(r.zone_scores, np.int32),
                    "global_score": r.global_score,
                    "detector_labels": np.array(detector_labels(r.zone_scores)),
                    "consensus": r.consensus,
                    "subject": r.subject,
                    "study_id": r.study_id,
                    "sex": r.sex,
                    "age_band": r.age_band,
                    "modality": r.modality,
                    "manufacturer": r.manufacturer,
                    "photometric_interpretation": r.photometric_interpretation,
                },
            )


BUILDER = Brixia
