"""Six real cases side by side (docs/results_real.md): each method's map, as `iba-jax explain`
wrote it, over the radiograph, with both radiologists' zone scores drawn on.

    .venv/bin/python benchmarks/brixia_public_cases.py choose --data-dir D
    .venv/bin/python benchmarks/brixia_public_cases.py draw --data-dir D \\
        --explained runs/real_cases --out docs/results/real_cases.png

``choose`` prints the six images (those with an annotated lung mask whose senior global score
is nearest to 1, 4, 7, 11, 14 and 17: mild to severe), one file name per line. ``draw`` reads
``EXPLAINED/METHOD/STEM.global_score.METHOD.npy`` (one ``iba-jax explain --out
EXPLAINED/METHOD`` run per method) for each of those images, and the built ``brixia_public``
128 (the same central square at 128 px as explain's input) for the image and its lung zones.
Each row: the image with the six zones outlined and each zone's scores (senior / junior),
then one column per method (colours from the map's minimum to its 99.5th percentile).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from iba_jax.data import building
from iba_jax.data.brixia import ZONES
from iba_jax.data.brixia_public import FOLDS, MASK_SOURCES

TARGET_SCORES = (1, 4, 7, 11, 14, 17)


def annotated_examples(data_dir: str) -> list[dict]:
    """Every example with an annotated lung mask, in file-name order."""
    found = []
    for fold in FOLDS:
        source = building.data_source("brixia_public", fold, config="128", data_dir=data_dir)
        examples = (source[i] for i in range(len(source)))
        found += [e for e in examples if MASK_SOURCES[e["mask_source"]] == "annotated"]
    return sorted(found, key=lambda e: e["filename"].decode())


def choose(examples: list[dict]) -> list[dict]:
    """The example whose senior global score is nearest each of ``TARGET_SCORES`` (the first
    by file name among equals; each image once)."""
    chosen: list[dict] = []
    for score in TARGET_SCORES:
        left = [e for e in examples if all(e is not c for c in chosen)]
        chosen.append(min(left, key=lambda e: abs(int(e["global_score"]) - score)))
    return chosen


def draw_zones(axes, example: dict) -> None:
    """The six zones' outlines and, at each zone's centre, senior / junior score."""
    zones = np.asarray(example["zone_map"])[..., 0]
    for k in range(1, len(ZONES) + 1):
        inside = zones == k
        if not inside.any():
            continue
        axes.contour(inside.astype(np.float32), levels=[0.5], colors="lime", linewidths=0.6)
        rows, cols = np.nonzero(inside)
        senior, junior = example["zone_scores"][k - 1], example["junior_zone_scores"][k - 1]
        axes.text(
            cols.mean(),
            rows.mean(),
            f"{senior}/{junior}",
            color="yellow",
            fontsize=7,
            ha="center",
            va="center",
            fontweight="bold",
        )


def draw(examples: list[dict], explained: Path, out: Path) -> None:
    methods = sorted(p.name for p in explained.iterdir() if p.is_dir())
    figure, axes = plt.subplots(
        len(examples), len(methods) + 1, figsize=(1.9 * (len(methods) + 1), 2.1 * len(examples))
    )
    for row, example in zip(axes, examples, strict=True):
        stem = Path(example["filename"].decode()).stem
        gray = np.asarray(example["image"], np.float32)[..., 0] / 255.0
        predicted = None
        for ax in row:
            ax.imshow(gray, cmap="gray", vmin=0, vmax=1)
            ax.set_axis_off()
        draw_zones(row[0], example)
        for ax, method in zip(row[1:], methods, strict=True):
            m = np.load(explained / method / f"{stem}.global_score.{method}.npy")
            record = json.loads(
                (explained / method / f"{stem}.global_score.{method}.json").read_text()
            )
            predicted = record["predictions"]["global_score"]
            low, high = float(m.min()), float(np.percentile(m, 99.5))
            alpha = np.clip((m - low) / (high - low), 0, 1) if high > low else 0 * m
            ax.imshow(m, cmap="inferno", alpha=0.25 + 0.6 * alpha, vmin=low, vmax=high)
            ax.contour(
                (np.asarray(example["zone_map"])[..., 0] > 0).astype(np.float32),
                levels=[0.5],
                colors="lime",
                linewidths=0.4,
            )
        row[0].set_title(
            f"{stem[:22]}\nsenior {example['global_score']}, junior "
            f"{example['junior_global_score']}, model {predicted:.1f}",
            fontsize=6,
        )
    for ax, method in zip(axes[0][1:], methods, strict=True):
        ax.set_title(method, fontsize=7)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=80)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("choose", "draw"))
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--explained", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    chosen = choose(annotated_examples(args.data_dir))
    if args.action == "choose":
        print("\n".join(e["filename"].decode() for e in chosen))
        return
    if args.explained is None or args.out is None:
        parser.error("draw: expected --explained and --out")
    draw(chosen, args.explained, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
