"""Lung segmentation: the U-Net, the segmenter files, masks at each image's size, the command,
and a short training that learns a synthetic lung shape."""

import json
from pathlib import Path

import jax
import numpy as np
import PIL.Image
import pytest
from conftest import BRIXIA_PUBLIC, needs_brixia_public

from iba_jax.bundle import CorruptBundleError
from iba_jax.cli import main
from iba_jax.data.brixia_public import read_lung_mask
from iba_jax.models.unet import UNet, UNetConfig
from iba_jax.segmentation import (
    Segmenter,
    dice,
    load_segmenter,
    save_segmenter,
    segment_lungs,
    segmentation_loss,
)
from train.lungs import augment, train

TINY = UNet(UNetConfig(features=(4, 8)))


def two_lungs(size: int, shift: int = 0) -> np.ndarray:
    """A synthetic radiograph's lungs: two dark ellipses on a bright body."""
    rows, cols = np.mgrid[:size, :size] / size
    left = ((rows - 0.5) / 0.3) ** 2 + ((cols - 0.3 - shift / size) / 0.12) ** 2 < 1
    right = ((rows - 0.5) / 0.3) ** 2 + ((cols - 0.7 - shift / size) / 0.12) ** 2 < 1
    return left | right


@pytest.fixture(scope="module")
def trained():
    """A tiny U-Net trained for a few steps on shifted synthetic lungs (dark on bright)."""
    masks = np.stack([two_lungs(32, s) for s in (-3, -1, 0, 1, 3, 2, -2, 0)])
    rng = np.random.default_rng(0)
    images = np.clip(0.8 - 0.5 * masks + rng.normal(0, 0.03, masks.shape), 0, 1)
    variables = train(
        images.astype(np.float32),
        masks,
        TINY,
        epochs=30,
        batch_size=8,
        learning_rate=3e-2,
        seed=0,
    )
    return Segmenter(TINY, variables, 32, {"trained": "in a test"})


def test_the_unet_gives_one_logit_per_pixel_and_refuses_other_sizes():
    variables = TINY.init(jax.random.key(0), 32)
    assert TINY.apply(variables, np.zeros((3, 32, 48, 1))).shape == (3, 32, 48)
    with pytest.raises(ValueError, match=r"x: expected image sides that are multiples of 2"):
        TINY.apply(variables, np.zeros((1, 31, 32, 1)))
    with pytest.raises(ValueError, match=r"x: expected images \(N, H, W, 1\); got shape"):
        TINY.apply(variables, np.zeros((1, 32, 32, 3)))
    with pytest.raises(ValueError, match="features: expected two or more"):
        UNetConfig(features=(4,))


def test_training_learns_the_lungs_and_masks_come_back_at_each_image_size(trained):
    truth = two_lungs(96)
    image = np.clip(0.8 - 0.5 * truth, 0, 1)
    wide = np.clip(0.8 - 0.5 * two_lungs(64), 0, 1)[:, :, None].repeat(3, axis=2)[:40]
    masks = segment_lungs([image, wide], trained)
    assert [m.shape for m in masks] == [(96, 96), (40, 64)]
    assert dice(masks[0], truth) > 0.85  # learnt, and resized back to 96 px
    untrained = Segmenter(TINY, TINY.init(jax.random.key(1), 32), 32)
    assert dice(segment_lungs([image], untrained)[0], truth) < dice(masks[0], truth)


def test_bad_images_are_refused_naming_which():
    segmenter = Segmenter(TINY, TINY.init(jax.random.key(0), 32), 32)
    with pytest.raises(ValueError, match=r"images\[1\]: expected finite pixels in \[0, 1\]"):
        segment_lungs([np.zeros((8, 8)), np.full((8, 8), 2.0)], segmenter)
    with pytest.raises(ValueError, match=r"images\[0\]: expected \(H, W\) or \(H, W, 3\)"):
        segment_lungs([np.zeros((8, 8, 2))], segmenter)
    with pytest.raises(ValueError, match=r"threshold: expected a number in \(0, 1\)"):
        segment_lungs([np.zeros((8, 8))], segmenter, threshold=1.0)
    assert segment_lungs([], segmenter) == []


def test_a_saved_segmenter_loads_the_same_and_a_damaged_one_is_refused(tmp_path, trained):
    checksum = save_segmenter(tmp_path / "seg", trained)
    loaded = load_segmenter(tmp_path / "seg")
    assert loaded.checksum == checksum and loaded.notes == {"trained": "in a test"}
    image = np.random.default_rng(1).random((50, 70))
    np.testing.assert_array_equal(
        segment_lungs([image], loaded)[0], segment_lungs([image], trained)[0]
    )
    meta = tmp_path / "seg" / "segmenter.json"
    stored = json.loads(meta.read_text())
    stored["image_size"] = 64
    meta.write_text(json.dumps(stored))
    with pytest.raises(CorruptBundleError, match=r"segmenter .* is corrupt"):
        load_segmenter(tmp_path / "seg")
    with pytest.raises(
        FileNotFoundError, match=r"segmenter: expected a folder with segmenter\.json"
    ):
        load_segmenter(tmp_path)


def test_dice_and_the_loss():
    truth = two_lungs(16)[None]
    assert dice(truth[0], truth[0]) == 1.0 and dice(truth[0], ~truth[0]) == 0.0
    assert dice(np.zeros(4, bool), np.zeros(4, bool)) == 1.0
    right = segmentation_loss(np.where(truth, 10.0, -10.0).astype(np.float32), truth)
    wrong = segmentation_loss(np.where(truth, -10.0, 10.0).astype(np.float32), truth)
    assert right[0] < 0.01 < 1.9 < wrong[0]


def test_augmentation_moves_the_mask_with_the_image():
    mask = two_lungs(32)
    image = np.where(mask, 0.2, 0.8).astype(np.float32)
    for k in range(4):
        warped, moved = augment(jax.random.key(k), image, mask)
        assert moved.shape == mask.shape and 0.6 < moved.mean() / mask.mean() < 1.5
        # The dark pixels are where the mask went (intensity changes keep their order).
        inside, outside = (
            np.asarray(warped)[np.asarray(moved)],
            np.asarray(warped)[~np.asarray(moved)],
        )
        assert np.median(inside) < np.median(outside)


def test_the_command_writes_a_mask_per_image_at_its_size(tmp_path, trained, capsys):
    save_segmenter(tmp_path / "seg", trained)
    truth = two_lungs(96)
    PIL.Image.fromarray((np.clip(0.8 - 0.5 * truth, 0, 1) * 255).astype(np.uint8)).save(
        tmp_path / "scan one.png"
    )
    PIL.Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(tmp_path / "b.jpg")
    (tmp_path / "broken.png").write_bytes(b"nothing")
    files = [str(tmp_path / n) for n in ("scan one.png", "broken.png", "b.jpg")]
    out = tmp_path / "masks"
    code = main(["segment-lungs", *files, "--out", str(out), "--segmenter", str(tmp_path / "seg")])
    assert code == 1  # one file could not be read; the others were segmented
    assert "broken.png: not a PNG, JPEG or DICOM image" in capsys.readouterr().err
    mask = np.asarray(PIL.Image.open(out / "scan one.png"))
    assert mask.shape == (96, 96) and set(np.unique(mask)) <= {0, 255}
    assert dice(mask > 0, truth) > 0.85
    assert np.asarray(PIL.Image.open(out / "b.png")).shape == (40, 60)
    twice = [str(tmp_path / "b.jpg"), str(tmp_path / "sub" / "b.png")]
    assert main(["segment-lungs", *twice, "--out", str(out)]) == 2
    assert "expected files with distinct names" in capsys.readouterr().err


@needs_brixia_public
def test_the_shipped_segmenter_on_real_radiographs(tmp_path):
    """A regression check of the shipped weights on three real images with masks (RGB, RGBA
    or gray; these were among its training images: the held-out figure is the cross-validated
    Dice in its notes)."""
    names = ["covid-19-caso-70-1-PA.jpg", "immagine.png", "covid-19-pneumonia-mild.JPG"]
    names = [n for n in names if (BRIXIA_PUBLIC / "lung_masks" / n).is_file()]
    assert names
    files = [str(BRIXIA_PUBLIC / "images" / n) for n in names]
    assert main(["segment-lungs", *files, "--out", str(tmp_path)]) == 0
    for name in names:
        predicted = np.asarray(PIL.Image.open(tmp_path / (Path(name).stem + ".png"))) > 0
        truth = read_lung_mask(BRIXIA_PUBLIC / "lung_masks" / name, predicted.shape)
        assert dice(predicted, truth) > 0.85, name
    assert 0.93 < load_segmenter().notes["cv_dice_mean"] < 0.96
