"""Time and disk of building the data sets.

Run: ``.venv/bin/python benchmarks/data_build.py [--configs classification_64 ...]``.

* cxr_phantoms: builds the given configs into a temporary folder; prints seconds, images per
  second and megabytes on disk.
* NIH ChestX-ray14 and BrixIA cannot be built here (no images). Instead it times the per-image
  work of their builders (decode, crop, resize, 8-bit PNG) on synthetic files of the real size
  (a 1024 px 8-bit PNG; a 2800 x 2800 12-bit DICOM) and multiplies by the number of images. The
  smooth synthetic content compresses unlike a radiograph, so the disk figure is an upper bound:
  a 224 px 8-bit PNG never exceeds 224 x 224 bytes plus headers.

The last line is a JSON object of all figures.
"""

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import write_dicom

from iba_jax.data import building, preprocess

NIH_IMAGES = 112_120
BRIXIA_IMAGES = 4_695


def folder_megabytes(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def radiograph_like(size: int, rng: np.random.Generator) -> np.ndarray:
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size
    body = np.exp(-((((x - 0.5) / 0.4) ** 2 + ((y - 0.55) / 0.5) ** 2) ** 2))
    return np.clip(0.1 + 0.7 * body + rng.normal(0, 0.02, (size, size)), 0, 1)


def per_image_seconds(read, path: Path, size: int, repeats: int) -> tuple[float, int]:
    best, encoded = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        image = preprocess.to_uint8(preprocess.square(read(path), size))
        buffer = io.BytesIO()
        PIL.Image.fromarray(image).save(buffer, format="png")
        best = min(best, time.perf_counter() - start)
        encoded = buffer.tell()
    return best, encoded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs", nargs="+", default=["classification_64", "regression_64", "classification_224"]
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    figures: dict[str, float | int | str] = {"cpu_count": os.cpu_count() or 0}
    work = Path(tempfile.mkdtemp())
    try:
        for config in args.configs:
            start = time.perf_counter()
            builder = building.build("cxr_phantoms", config=config, data_dir=work / config)
            seconds = time.perf_counter() - start
            images = sum(split.num_examples for split in builder.info.splits.values())
            megabytes = folder_megabytes(work / config)
            figures[f"phantoms_{config}_s"] = round(seconds, 1)
            figures[f"phantoms_{config}_mb"] = round(megabytes, 1)
            print(
                f"cxr_phantoms/{config}: {images} images in {seconds:.1f} s "
                f"({images / seconds:.0f} images/s), {megabytes:.1f} MB"
            )
        rng = np.random.default_rng(0)
        png = work / "nih.png"
        PIL.Image.fromarray(preprocess.to_uint8(radiograph_like(1024, rng))).save(png)
        dcm = work / "brixia.dcm"
        write_dicom(dcm, np.round(radiograph_like(2800, rng) * 4095), photometric="MONOCHROME1")
        for name, read, path, count in (
            ("nih", preprocess.read_image, png, NIH_IMAGES),
            ("brixia", preprocess.read_dicom, dcm, BRIXIA_IMAGES),
        ):
            for size in (224, 512):
                seconds, encoded = per_image_seconds(read, path, size, args.repeats)
                figures[f"{name}_{size}_ms_per_image"] = round(seconds * 1e3, 1)
                figures[f"{name}_{size}_total_min"] = round(seconds * count / 60, 1)
                print(
                    f"{name} at {size} px: {seconds * 1e3:.1f} ms per image -> "
                    f"{seconds * count / 60:.0f} min for {count} images on one core "
                    f"(PNG of this synthetic image: {encoded / 1e3:.0f} kB)"
                )
    finally:
        shutil.rmtree(work)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
