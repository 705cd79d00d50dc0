"""cxr_phantoms: synthetic chest radiographs whose evidence is known pixel by pixel.

No attribution can be checked without knowing where the evidence truly is; real data sets only
give boxes drawn by readers. These phantoms are drawn from a small generative model, so every
finding comes with its exact pixel mask. They build in seconds, need no download, and are the
data of the demo, the tests and the phantom benchmark.

The generative model (coordinates in units of the image side, y pointing down; one
``numpy.random.Generator`` per image, seeded by (seed, task, split, index), so an image does not
depend on any other and the same seed gives the same bytes):

* Anatomy, varied per image: a body of soft tissue (brightness 0.45) on air (0.04); inside it
  the thorax with two lungs (superellipses, visible outside the mediastinum and heart;
  brightness 0.16 rising to 0.24 towards the base,
  half-width 0.12–0.15, apex at y 0.12–0.17, dome of the diaphragm at y 0.72–0.80, the image-left
  one a little higher), the mediastinum (a central column, 0.62), the heart (an ellipse low and to
  the image right, 0.62, its width 0.38–0.48 of the thorax: the cardiothoracic ratio), the abdomen
  below the diaphragm (0.58), nine pairs of ribs (arcs, +0.07) and two clavicles (+0.08). The
  picture is blurred by a Gaussian of 0.006 of the side, raised to a gamma of 0.85–1.15, and
  gets white noise of standard deviation 0.01–0.025.
* ``classification`` task: four findings, each present with probability 0.3, independently:
  - Mass: a large lobulated blob in a lung (radius 0.055–0.08), +0.22–0.30;
  - Nodule: a small round blob in a lung (radius 0.028–0.04), +0.30–0.40;
  - Effusion: fluid (0.55) filling a lung's base below a meniscus that climbs laterally
    (height 0.08–0.16), blending in over 0.03;
  - Cardiomegaly: the heart enlarged to a cardiothoracic ratio of 0.56–0.66.
  A present mass comes twice with probability 0.3, a nodule twice with 0.25 and three times
  with 0.15, an effusion on both sides with 0.3: each instance alone is a full example of the
  finding (the case that separates Inverse IBA from IBA). Every instance has a box and a mask.
* ``regression`` task (BrixIA-like): each lung is cut by height into three zones (A–C on the
  image left, D–F on the right, upper to lower, as BrixIA orders them); a patient severity
  s ~ U(0, 1) gives each zone a score ~ Binomial(3, s); a zone of score k is covered by a diffuse
  opacity of strength 0.09·k modulated by smooth texture (60–100 %). The global score is the sum
  (0–18); the zone label map and the per-pixel score map come with each image.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from iba_jax.data.brixia import DETECTOR_LABELS, ZONES, detector_labels
from iba_jax.data.building import png
from iba_jax.data.preprocess import to_uint8

FINDINGS = ("Mass", "Nodule", "Effusion", "Cardiomegaly")
TASKS = ("classification", "regression")
SPLITS = ("train", "validation", "test")

FINDING_PROBABILITY = 0.3
# Number of instances of a present finding: values and their probabilities.
INSTANCE_COUNTS = {
    "Mass": ((1, 2), (0.7, 0.3)),
    "Nodule": ((1, 2, 3), (0.6, 0.25, 0.15)),
    "Effusion": ((1, 2), (0.7, 0.3)),
    "Cardiomegaly": ((1,), (1.0,)),
}
ZONE_OPACITY = 0.09  # brightness added per severity point
EFFUSION = 0.55  # brightness of pleural fluid (soft tissue)


@dataclasses.dataclass(frozen=True)
class Anatomy:
    """The per-image shape parameters (units of the image side)."""

    center: float
    lung_half_width: tuple[float, float]
    lung_offset: tuple[float, float]
    apex: tuple[float, float]
    dome: tuple[float, float]
    heart_ratio: float
    rib_phase: float
    rib_spacing: float


@dataclasses.dataclass(frozen=True)
class Phantom:
    """One generated image and its ground truth.

    Attributes:
      image: float32 ``(S, S)`` in [0, 1].
      labels: the findings present (classification), in FINDINGS order.
      instances: (finding index, bool mask ``(S, S)``) per instance (classification).
      zone_scores: six zone scores 0–3 (regression; zeros for classification).
      zone_map: uint8 ``(S, S)``: 0 outside the lungs, k = 1..6 in zone ZONES[k - 1].
    """

    image: np.ndarray
    labels: np.ndarray
    instances: tuple[tuple[int, np.ndarray], ...]
    zone_scores: np.ndarray
    zone_map: np.ndarray

    @property
    def severity_map(self) -> np.ndarray:
        """uint8 ``(S, S)``: each lung pixel's zone score, 0 outside the lungs."""
        return np.concatenate([[0], self.zone_scores]).astype(np.uint8)[self.zone_map]


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size
    return y, x


def gaussian_blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Separable Gaussian blur with reflected borders (sigma in pixels; 0 returns a copy)."""
    if sigma_px <= 0:
        return image.copy()
    radius = max(1, int(np.ceil(3 * sigma_px)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_px) ** 2)
    taps /= taps.sum()
    out = image
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        windows = np.lib.stride_tricks.sliding_window_view(
            np.pad(out, pad, mode="reflect"), 2 * radius + 1, axis=axis
        )
        out = windows @ taps
    return out


def _smooth_field(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Smooth random texture in [0, 1] with features about ``scale`` of the side wide."""
    field = gaussian_blur(rng.standard_normal((size, size)), scale * size)
    low, high = field.min(), field.max()
    return (field - low) / (high - low) if high > low else np.zeros_like(field)


def sample_anatomy(rng: np.random.Generator, cardiomegaly: bool = False) -> Anatomy:
    """Draws one patient's shape parameters."""
    dome = rng.uniform(0.72, 0.80)
    return Anatomy(
        center=0.5 + rng.normal(0.0, 0.012),
        lung_half_width=(rng.uniform(0.12, 0.15), rng.uniform(0.12, 0.15)),
        lung_offset=(rng.uniform(0.17, 0.20), rng.uniform(0.17, 0.20)),
        apex=(rng.uniform(0.12, 0.17), rng.uniform(0.12, 0.17)),
        dome=(dome - rng.uniform(0.0, 0.03), dome),
        heart_ratio=rng.uniform(0.56, 0.66) if cardiomegaly else rng.uniform(0.38, 0.48),
        rib_phase=rng.uniform(0.0, 1.0),
        rib_spacing=rng.uniform(0.066, 0.076),
    )


def _mediastinum(anatomy: Anatomy, size: int) -> np.ndarray:
    y, x = _grid(size)
    return (np.abs(x - anatomy.center) < 0.065) & (y > min(anatomy.apex) - 0.05)


def lung_masks(anatomy: Anatomy, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the visible image-left and image-right lung fields (outside the
    mediastinum and the heart, which are drawn over the lungs)."""
    y, x = _grid(size)
    hidden = _mediastinum(anatomy, size) | _heart(anatomy, size)
    masks = []
    for side, i in ((-1, 0), (1, 1)):
        cx = anatomy.center + side * anatomy.lung_offset[i]
        top, bottom = anatomy.apex[i], anatomy.dome[i]
        cy, half_h = (top + bottom) / 2, (bottom - top) / 2
        shape = (
            np.abs((x - cx) / anatomy.lung_half_width[i]) ** 2.4 + np.abs((y - cy) / half_h) ** 2.4
        )
        masks.append((shape <= 1.0) & ~hidden)
    return masks[0], masks[1]


def _heart(anatomy: Anatomy, size: int) -> np.ndarray:
    y, x = _grid(size)
    thorax = anatomy.lung_offset[0] + anatomy.lung_offset[1] + sum(anatomy.lung_half_width)
    half_w = anatomy.heart_ratio * thorax / 2
    cx, cy = anatomy.center + 0.03, anatomy.dome[1] - 0.12
    return ((x - cx) / half_w) ** 2 + ((y - cy) / 0.13) ** 2 <= 1.0


def render_anatomy(anatomy: Anatomy, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The noiseless, unblurred picture and its two lung masks (before any finding)."""
    y, x = _grid(size)
    left, right = lung_masks(anatomy, size)
    c = anatomy.center
    image = np.full((size, size), 0.04)
    body = ((x - c) / 0.46) ** 2 + ((y - 0.62) / 0.62) ** 2 <= 1.0
    image[body] = 0.45
    lungs = left | right
    image[lungs] = 0.16 + 0.08 * np.clip((y[lungs] - 0.15) / 0.6, 0, 1)
    thorax = body & (y > min(anatomy.apex) - 0.04)
    ribs = np.zeros_like(image)
    for side in (-1, 1):
        # Posterior ribs: arcs that rise from the spine outwards and fall laterally.
        lateral = np.clip(side * (x - c), 0, None)
        for k in range(9):
            level = min(anatomy.apex) + anatomy.rib_spacing * (k + anatomy.rib_phase * 0.5)
            arc = level + 0.9 * (lateral - 0.2) ** 2 - 0.03
            ribs += (np.abs(y - arc) < 0.011) & (side * (x - c) > 0.03)
        clavicle = np.abs(y - (min(anatomy.apex) - 0.01 + 0.15 * side * (x - c) - 0.02)) < 0.012
        ribs += clavicle & (side * (x - c) > 0.02) & (side * (x - c) < 0.3)
    image += 0.075 * np.clip(ribs, 0, 1) * thorax
    image[_mediastinum(anatomy, size) & body] = 0.62
    below = y > np.where(x < c, anatomy.dome[0], anatomy.dome[1]) + 0.02
    image[body & below & ~lungs] = 0.58
    image[_heart(anatomy, size)] = 0.62
    return image, left, right


def _blob(
    rng: np.random.Generator, size: int, cy: float, cx: float, radius: float, lobes: float
) -> tuple[np.ndarray, np.ndarray]:
    """A blob's smooth profile in [0, 1] and its mask; ``lobes`` sets how lobulated it is."""
    y, x = _grid(size)
    angle = np.arctan2(y - cy, x - cx)
    wobble = 1.0 + lobes * sum(
        rng.uniform(-1, 1) * np.cos(k * angle + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)
    )
    distance = np.hypot(y - cy, x - cx) / (radius * wobble)
    mask = distance < 1.0
    return np.where(mask, np.sqrt(np.clip(1 - distance**2, 0, 1)), 0.0), mask


def _place(
    rng: np.random.Generator,
    lung: np.ndarray,
    radius: float,
    taken: list[tuple[float, float, float]],
) -> tuple[float, float] | None:
    """A centre whose disc lies in ``lung`` and clear of ``taken`` discs (None after 200 tries)."""
    size = lung.shape[0]
    ys, xs = np.nonzero(lung)
    for _ in range(200):
        i = rng.integers(len(ys))
        cy, cx = (ys[i] + 0.5) / size, (xs[i] + 0.5) / size
        probes = [
            (cy + radius * dy, cx + radius * dx) for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))
        ]
        inside = all(
            0 <= py < 1 and 0 <= px < 1 and lung[int(py * size), int(px * size)]
            for py, px in probes
        )
        clear = all(np.hypot(cy - ty, cx - tx) > radius + tr + 0.02 for ty, tx, tr in taken)
        if inside and clear:
            return cy, cx
    return None


def _effusion(
    rng: np.random.Generator, anatomy: Anatomy, lung: np.ndarray, side: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fluid in a lung's base, up to a meniscus that climbs laterally."""
    size = lung.shape[0]
    y, x = _grid(size)
    i = 0 if side < 0 else 1
    height = rng.uniform(0.08, 0.16)
    outward = np.clip(side * (x - anatomy.center) - anatomy.lung_offset[i], 0, None)
    level = anatomy.dome[i] - height - 0.5 * outward
    mask = lung & (y > level)
    profile = np.clip((y - level) / 0.03, 0, 1) * mask
    return profile, mask


def _finish(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    size = image.shape[0]
    image = gaussian_blur(image, 0.006 * size)
    image = np.clip(image, 0, 1) ** rng.uniform(0.85, 1.15)
    image = image + rng.normal(0.0, rng.uniform(0.01, 0.025), image.shape)
    return np.clip(image, 0, 1).astype(np.float32)


def _instance_count(rng: np.random.Generator, finding: str) -> int:
    counts, probabilities = INSTANCE_COUNTS[finding]
    return int(rng.choice(counts, p=probabilities))


def generate_classification(rng: np.random.Generator, size: int) -> Phantom:
    """One classification phantom (see the module doc)."""
    present = rng.uniform(size=len(FINDINGS)) < FINDING_PROBABILITY
    counts = [_instance_count(rng, f) if p else 0 for f, p in zip(FINDINGS, present, strict=True)]
    anatomy = sample_anatomy(rng, cardiomegaly=bool(present[3]))
    image, left, right = render_anatomy(anatomy, size)
    instances: list[tuple[int, np.ndarray]] = []
    taken: list[tuple[float, float, float]] = []
    lungs = (left, right)
    for finding, radii, gain, lobes in (
        (0, (0.055, 0.08), (0.22, 0.30), 0.12),
        (1, (0.028, 0.04), (0.30, 0.40), 0.03),
    ):
        for _ in range(counts[finding]):
            radius = rng.uniform(*radii)
            centre = _place(rng, lungs[rng.integers(2)], radius, taken)
            if centre is None:
                centre = _place(rng, left | right, radius, taken)
            if centre is None:
                raise RuntimeError("no room for another lesion in this phantom")  # never seen
            taken.append((*centre, radius))
            profile, mask = _blob(rng, size, *centre, radius, lobes)
            image = image + rng.uniform(*gain) * profile
            instances.append((finding, mask))
    if counts[2]:
        sides = rng.permutation([-1, 1])[: counts[2]]
        for side in sides:
            profile, mask = _effusion(rng, anatomy, lungs[0 if side < 0 else 1], int(side))
            image = np.where(mask, image * (1 - profile) + EFFUSION * profile, image)
            instances.append((2, mask))
    if counts[3]:
        instances.append((3, _heart(anatomy, size)))
    empty = np.zeros((size, size), np.uint8)
    return Phantom(
        image=_finish(rng, image),
        labels=present,
        instances=tuple(instances),
        zone_scores=np.zeros(len(ZONES), np.int32),
        zone_map=empty,
    )


def zone_map(anatomy: Anatomy, size: int) -> np.ndarray:
    """uint8 ``(S, S)`` map of the six zones: each lung cut by height into thirds."""
    y, _ = _grid(size)
    zones = np.zeros((size, size), np.uint8)
    for i, lung in enumerate(lung_masks(anatomy, size)):
        top, bottom = anatomy.apex[i], anatomy.dome[i]
        third = np.clip(((y - top) / (bottom - top) * 3).astype(int), 0, 2)
        zones[lung] = (3 * i + third + 1)[lung]
    return zones


def generate_regression(rng: np.random.Generator, size: int) -> Phantom:
    """One BrixIA-like severity phantom (see the module doc)."""
    anatomy = sample_anatomy(rng)
    image, _, _ = render_anatomy(anatomy, size)
    zones = zone_map(anatomy, size)
    scores = rng.binomial(3, rng.uniform(), size=len(ZONES)).astype(np.int32)
    texture = 0.6 + 0.4 * _smooth_field(rng, size, 0.03)
    per_pixel = np.concatenate([[0], scores])[zones]
    image = image + ZONE_OPACITY * per_pixel * texture
    return Phantom(
        image=_finish(rng, image),
        labels=np.zeros(len(FINDINGS), bool),
        instances=(),
        zone_scores=scores,
        zone_map=zones,
    )


def generate(task: str, size: int, seed: int, split: str, index: int) -> Phantom:
    """The phantom number ``index`` of a split: a pure function of its arguments."""
    if task not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}; got {task!r}.")
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}; got {split!r}.")
    sequence = np.random.SeedSequence([seed, TASKS.index(task), SPLITS.index(split), index])
    rng = np.random.default_rng(sequence)
    make = generate_classification if task == "classification" else generate_regression
    return make(rng, size)


def box_of(mask: np.ndarray) -> tuple[float, float, float, float]:
    """The tight normalised box ``(ymin, xmin, ymax, xmax)`` around a mask's pixels."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    h, w = mask.shape
    return rows[0] / h, cols[0] / w, (rows[-1] + 1) / h, (cols[-1] + 1) / w


@dataclasses.dataclass
class PhantomConfig(tfds.core.BuilderConfig):
    """Task, image size and split sizes of one build (all deterministic given ``seed``)."""

    task: str = "classification"
    image_size: int = 64
    num_train: int = 2000
    num_validation: int = 300
    num_test: int = 300
    seed: int = 0


def _configs() -> list[PhantomConfig]:
    configs = []
    for task in TASKS:
        for size in (64, 128, 224):
            configs.append(
                PhantomConfig(
                    name=f"{task}_{size}",
                    task=task,
                    image_size=size,
                    description=f"{task}, {size} px",
                )
            )
        for size in (64, 128):  # 128 px: the shipped models' size
            configs.append(
                PhantomConfig(
                    name=f"{task}_{size}_mini",
                    task=task,
                    image_size=size,
                    num_train=32,
                    num_validation=8,
                    num_test=8,
                    description=f"{task}, {size} px, 48 images (tests and notebooks)",
                )
            )
    return configs


class CxrPhantoms(tfds.core.GeneratorBasedBuilder):
    """Synthetic chest radiographs with pixel-exact ground truth (generated, no download)."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Initial release.",
        "1.1.0": "Regression configs: detector_labels (BrixIA's three detector targets).",
    }
    BUILDER_CONFIGS = _configs()

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        shape = (cfg.image_size, cfg.image_size, 1)
        features: dict[str, Any] = {
            "image": tfds.features.Image(shape=shape, dtype=np.uint8),
            "index": tfds.features.Scalar(dtype=np.int32),  # generate(..., split, index)
        }
        if cfg.task == "classification":
            features.update(
                labels=tfds.features.Tensor(shape=(len(FINDINGS),), dtype=np.bool_),
                num_instances=tfds.features.Tensor(shape=(len(FINDINGS),), dtype=np.int32),
                objects=tfds.features.Sequence(
                    {
                        "bbox": tfds.features.BBoxFeature(),
                        "label": tfds.features.ClassLabel(names=FINDINGS),
                        "mask": tfds.features.Image(shape=shape, dtype=np.uint8),
                    }
                ),
            )
            metadata = tfds.core.MetadataDict(label_names=list(FINDINGS))
        else:
            features.update(
                zone_scores=tfds.features.Tensor(shape=(len(ZONES),), dtype=np.int32),
                global_score=tfds.features.Scalar(dtype=np.int32),
                detector_labels=tfds.features.Tensor(shape=(len(DETECTOR_LABELS),), dtype=np.bool_),
                zone_map=tfds.features.Image(shape=shape, dtype=np.uint8),
                severity_map=tfds.features.Image(shape=shape, dtype=np.uint8),
            )
            metadata = tfds.core.MetadataDict(
                zones=list(ZONES), detector_labels=list(DETECTOR_LABELS)
            )
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.splitlines()[0],
            features=tfds.features.FeaturesDict(features),
            metadata=metadata,
            disable_shuffling=True,  # example i of a split is phantom i
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        cfg = self.builder_config
        counts = {"train": cfg.num_train, "validation": cfg.num_validation, "test": cfg.num_test}
        return {split: self._generate_examples(split, n) for split, n in counts.items()}

    def _generate_examples(self, split: str, count: int) -> Iterator[tuple[int, dict[str, Any]]]:
        cfg = self.builder_config
        for index in range(count):
            phantom = generate(cfg.task, cfg.image_size, cfg.seed, split, index)
            yield index, {"index": index, **_example(phantom, cfg.task)}


def _example(phantom: Phantom, task: str) -> dict[str, Any]:
    example: dict[str, Any] = {"image": png(to_uint8(phantom.image))}
    if task == "classification":
        example["labels"] = phantom.labels
        example["num_instances"] = np.bincount(
            [f for f, _ in phantom.instances], minlength=len(FINDINGS)
        ).astype(np.int32)
        example["objects"] = [
            {"bbox": tfds.features.BBox(*box_of(mask)), "label": finding, "mask": png(mask)}
            for finding, mask in phantom.instances
        ]
    else:
        example["zone_scores"] = phantom.zone_scores
        example["global_score"] = int(phantom.zone_scores.sum())
        example["detector_labels"] = np.array(detector_labels(phantom.zone_scores))
        example["zone_map"] = png(phantom.zone_map)
        example["severity_map"] = png(phantom.severity_map)
    return example


BUILDER = CxrPhantoms
