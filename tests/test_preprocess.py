"""Decoding PNG/JPEG/DICOM, resizing, boxes and normalisation."""

import io
import os

import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest
from dicom_files import write_dicom

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


def test_16_bit_pngs_are_scaled_by_their_range(tmp_path):
    """A radiograph of 12-bit data in a 16-bit PNG (how exports often store it) reads as the
    same picture as its 8-bit and full 16-bit versions, not 16 times darker."""
    values = gradient() / gradient().max()
    PIL.Image.fromarray(np.round(values * 255).astype(np.uint8)).save(tmp_path / "8.png")
    PIL.Image.fromarray(np.round(values * 4095).astype(np.uint16)).save(tmp_path / "12.png")
    PIL.Image.fromarray(np.round(values * 65535).astype(np.uint16)).save(tmp_path / "16.png")
    assert PIL.Image.open(tmp_path / "12.png").mode.startswith("I")  # stored as 16-bit
    eight, twelve, sixteen = (preprocess.read_image(tmp_path / f"{b}.png") for b in (8, 12, 16))
    np.testing.assert_allclose(eight, values, atol=0.5 / 255)
    np.testing.assert_allclose(twelve, values, atol=0.5 / 4095)
    np.testing.assert_allclose(sixteen, values, atol=0.5 / 65535)
    offset = np.round(1000 + values * 3000).astype(np.uint16)  # not starting at 0: min-max too
    PIL.Image.fromarray(offset).save(tmp_path / "offset.png")
    np.testing.assert_allclose(preprocess.read_image(tmp_path / "offset.png"), values, atol=2e-4)


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


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        (
            {"modality": "CT"},
            r"ct\.dcm: expected a radiograph \(DICOM Modality CR, DX, RG, DR\); got Modality CT",
        ),
        ({"modality": "SEG"}, r"got Modality SEG"),
        ({"photometric": "PALETTE COLOR"}, r"expected a grayscale radiograph .*got PALETTE COLOR"),
        ({"frames": 3}, r"expected a single-frame image; got 3 frames"),
    ],
)
def test_dicoms_that_are_not_one_grayscale_radiograph_are_refused(tmp_path, kind, match):
    stored = gradient().astype(np.uint16)
    frames = kind.pop("frames", None)
    if frames:
        stored = np.stack([stored] * frames)
    path = tmp_path / ("ct.dcm" if kind.get("modality") == "CT" else "x.dcm")
    write_dicom(path, stored, **kind)
    with pytest.raises(preprocess.UnreadableImageError, match=match):
        preprocess.read_image(path)


@pytest.mark.parametrize("modality", [None, "OT"])
def test_dicoms_of_no_stated_modality_are_read_with_a_warning(tmp_path, modality):
    write_dicom(tmp_path / "x.dcm", gradient().astype(np.uint16), modality=modality)
    with pytest.warns(UserWarning, match=r"x\.dcm: the DICOM file does not say it is a radiograph"):
        pixels = preprocess.read_image(tmp_path / "x.dcm")
    assert pixels.shape == (40, 60)


def test_files_that_could_take_a_run_with_them_are_refused_one_by_one(tmp_path, monkeypatch):
    os.mkfifo(tmp_path / "pipe.png")  # reading it would block forever
    with pytest.raises(
        preprocess.UnreadableImageError, match=r"pipe\.png: expected an image file; got a pipe"
    ):
        preprocess.read_image(tmp_path / "pipe.png")
    with pytest.raises(preprocess.UnreadableImageError, match=r"/dev/zero: expected an image file"):
        preprocess.read_image("/dev/zero")  # would never end
    with pytest.raises(
        preprocess.UnreadableImageError, match=r"folder\.png: expected an image file; got a folder"
    ):
        (tmp_path / "folder.png").mkdir()
        preprocess.read_image(tmp_path / "folder.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(preprocess.UnreadableImageError, match=r"empty\.png: the file is empty"):
        preprocess.read_image(tmp_path / "empty.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(
        preprocess.UnreadableImageError,
        match=r"text\.png: not a PNG, JPEG or DICOM image \(it starts with b'hello'\)",
    ):
        preprocess.read_image(tmp_path / "text.png")
    PIL.Image.new("L", (300, 200)).save(tmp_path / "wide.png")
    monkeypatch.setattr(preprocess, "MAX_IMAGE_PIXELS", 50_000)
    with pytest.raises(
        preprocess.UnreadableImageError,
        match=r"wide\.png: expected at most 50,000 pixels; got 60,000",
    ):
        preprocess.read_image(tmp_path / "wide.png")
    monkeypatch.setattr(preprocess, "MAX_FILE_BYTES", 2**20)
    (tmp_path / "big.png").write_bytes(b"\0" * (3 * 2**20))
    with pytest.raises(
        preprocess.UnreadableImageError, match=r"big\.png: expected at most 1 MiB; got 3 MiB"
    ):
        preprocess.read_image(tmp_path / "big.png")


def test_a_decompression_bomb_is_refused():
    """A 14,000 x 14,000 PNG of zeros is 200 kB on disk and 196 Mpixels decoded."""
    image = PIL.Image.new("1", (14_000, 14_000))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    with pytest.raises(
        preprocess.UnreadableImageError,
        match=r"<bytes>: (too many pixels|expected at most 64,000,000 pixels)",
    ):
        preprocess.read_image(buffer.getvalue())
