"""Decoding PNG/JPEG/DICOM, resizing, boxes and normalisation."""

import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest
from conftest import write_dicom

from iba_jax.data import preprocess


def gradient(height=40, width=60):
    return np.add.outer(np.arange(height), np.arange(width)).astype(np.float64)


def test_png_8_and_16_bit_and_rgba(tmp_path):
    values = gradient() / gradient().max()
    PIL.Image.fromarray(np.round(values * 255).astype(np.uint8)).save(tmp_path / "a.png")
    PIL.Image.fromarray(np.round(values * 65535).astype(np.uint16)).save(tmp_path / "b.png")
    rgba = np.stack(
        [np.round(values * 255).astype(np.uint8)] * 3 + [np.full((40, 60), 9, np.uint8)], -1
    )
    PIL.Image.fromarray(rgba, "RGBA").save(tmp_path / "c.png")
    eight = preprocess.read_image(tmp_path / "a.png")
    sixteen = preprocess.read_image(tmp_path / "b.png")
    colour = preprocess.read_image((tmp_path / "c.png").read_bytes())
    assert eight.shape == sixteen.shape == (40, 60) and colour.shape == (40, 60, 3)
    assert eight.dtype == sixteen.dtype == np.float32
    np.testing.assert_allclose(eight, values, atol=0.5 / 255)
    np.testing.assert_allclose(sixteen, values, atol=0.5 / 65535)
    np.testing.assert_allclose(colour[..., 1], eight)


def test_jpeg(tmp_path):
    values = np.full((32, 32), 0.5)
    PIL.Image.fromarray(np.uint8(values * 255)).save(tmp_path / "a.jpg", quality=95)
    np.testing.assert_allclose(preprocess.read_image(tmp_path / "a.jpg"), values, atol=2 / 255)


def test_unreadable_and_missing_files_are_named(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(preprocess.UnreadableImageError, match=r"broken\.png"):
        preprocess.read_image(tmp_path / "broken.png")
    with pytest.raises(FileNotFoundError, match=r"nothing\.png"):
        preprocess.read_image(tmp_path / "nothing.png")


@pytest.mark.parametrize("bits", [12, 16])
def test_dicom_monochrome2_is_min_max_scaled(tmp_path, bits):
    stored = np.round(gradient() / gradient().max() * (2**bits - 1))
    write_dicom(tmp_path / "x.dcm", stored, bits_stored=bits)
    pixels = preprocess.read_image(tmp_path / "x.dcm")
    np.testing.assert_allclose(pixels, stored / stored.max(), atol=1e-6)


def test_dicom_monochrome1_is_inverted(tmp_path):
    stored = np.round(gradient() * 10)
    write_dicom(tmp_path / "m1", stored, photometric="MONOCHROME1")  # no suffix: sniffed
    pixels = preprocess.read_image(tmp_path / "m1")
    np.testing.assert_allclose(pixels, 1 - stored / stored.max(), atol=1e-6)


def test_dicom_window_is_applied(tmp_path):
    stored = np.round(gradient() * 30)  # 0 .. 2940
    write_dicom(tmp_path / "w.dcm", stored, window=(1500, 1000))
    pixels = preprocess.read_image(tmp_path / "w.dcm")
    # Linear between 1000 and 2000, clamped outside (DICOM's window, up to half a step).
    expected = np.clip((stored - 1000) / 1000, 0, 1)
    np.testing.assert_allclose(pixels, expected, atol=2e-3)
    assert (pixels[stored <= 999] == 0).all() and (pixels[stored >= 2001] == 1).all()


def test_dicom_voi_lut_and_rescale_are_applied(tmp_path):
    stored = np.round(gradient() / gradient().max() * 4095)
    lut = np.round(np.sqrt(np.arange(4096) / 4095) * 65535)  # a gamma-like VOI LUT
    write_dicom(tmp_path / "v.dcm", stored, voi_lut=lut, rescale=(1.0, 0.0))
    pixels = preprocess.read_image(tmp_path / "v.dcm")
    np.testing.assert_allclose(pixels, np.sqrt(stored / 4095), atol=1e-4)


def test_resize_square_and_uint8():
    image = gradient(100, 100) / 198
    small = preprocess.resize(image, 25)
    assert small.shape == (25, 25)
    np.testing.assert_allclose(small.mean(), image.mean(), atol=1e-3)
    np.testing.assert_allclose(preprocess.resize(np.full((30, 50), 0.3), 7), 0.3, atol=1e-6)
    wide = np.zeros((40, 60))
    wide[:, 10:50] = 1.0  # the central square is all ones
    np.testing.assert_allclose(preprocess.square(wide, 20), 1.0, atol=1e-6)
    rgb = preprocess.resize(np.stack([image] * 3, -1), 10)
    assert rgb.shape == (10, 10, 3)
    assert preprocess.to_uint8(np.array([-1, 0.5, 2])).tolist() == [0, 128, 255]


def test_boxes_follow_the_crop():
    boxes = preprocess.boxes_from_pixels(np.array([[10, 20, 30, 10]]), 40, 60)
    np.testing.assert_allclose(boxes, [[0.5, 10 / 60, 0.75, 40 / 60]], rtol=1e-6)
    crop = preprocess.center_crop_box(40, 60)
    assert crop == (0, 10, 40, 50)
    cropped = preprocess.crop_boxes(boxes, 40, 60, crop)
    np.testing.assert_allclose(cropped, [[0.5, 0.0, 0.75, 30 / 40]], atol=1e-6)


def test_normalize_on_numpy_and_jax():
    x = np.full((2, 3, 3, 3), 0.5, np.float32)
    imagenet = preprocess.normalize(x, *preprocess.NORMALIZATIONS["imagenet"])
    expected = (0.5 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(imagenet[0, 0, 0], expected, rtol=1e-6)
    assert isinstance(preprocess.normalize(jnp.asarray(x), (0.5,), (0.25,)), jnp.ndarray)
    with pytest.raises(ValueError, match="mean, std: expected 1 or 3"):
        preprocess.normalize(x, (0.1, 0.2), (1.0, 1.0))
