"""From files to model inputs: decoding, resizing, boxes and normalisation.

Everything here is a plain function of numpy arrays (decoding and resizing use Pillow and
pydicom), so the same code serves the TFDS builders, the command line and a user's own loader.
``normalize`` uses arithmetic only, so it also runs on jax arrays and on TensorFlow tensors inside
``tf.data``.

Conventions: an image is float32 with pixels in [0, 1], shape ``(H, W)`` (grayscale) or
``(H, W, C)``; a box is ``(ymin, xmin, ymax, xmax)`` in [0, 1] of the image height and width
(TFDS' ``BBoxFeature`` order).
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import PIL
import PIL.Image
from numpy.typing import ArrayLike

from iba_jax import checks

# (mean, std) per channel, applied to pixels in [0, 1]: x = (p - mean) / std.
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    # torchvision ImageNet models (the paper's DenseNet-121s).
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # torchxrayvision: [0, 1] -> [-1024, 1024], i.e. (p - 0.5) * 2048.
    "xrv": ((0.5,), (1.0 / 2048.0,)),
    # Pixels in [0, 1] as they are.
    "none": ((0.0,), (1.0,)),
}

_DICOM_MAGIC_OFFSET = 128  # DICOM Part 10 files: 128-byte preamble, then b"DICM".


class UnreadableImageError(ValueError):
    """An image file that cannot be decoded; the message names the file and the cause."""


def normalize(x01: Any, mean: Sequence[float], std: Sequence[float]) -> Any:
    """``(x01 - mean) / std`` per channel on channels-last images with pixels in [0, 1].

    Works on numpy and jax arrays and TensorFlow tensors of any rank (the last axis is the
    channel axis); one mean/std value is broadcast to every channel.

    >>> import numpy as np
    >>> normalize(np.ones((2, 2, 1), np.float32), *NORMALIZATIONS["xrv"]).max()
    np.float32(1024.0)
    """
    channels = x01.shape[-1]
    if len(mean) != len(std) or len(mean) not in (1, channels):
        raise ValueError(
            f"mean, std: expected 1 or {channels} values each (one per channel of x01, shape "
            f"{tuple(x01.shape)}); got {len(mean)} and {len(std)}."
        )
    along_channels = (1,) * (len(x01.shape) - 1) + (-1,)  # explicit ranks: no implicit promotion
    shift = np.asarray(mean, np.float32).reshape(along_channels)
    scale = np.asarray(std, np.float32).reshape(along_channels)
    return (x01 - shift) / scale


def unit_range(images: ArrayLike, channels: int) -> jax.Array:
    """Stored uint8 images ``(N, H, W, 1 or C)`` -> float32 pixels in [0, 1] with ``channels``
    channels (a grayscale channel is repeated for RGB models); works under ``jax.jit``."""
    x = jnp.asarray(images).astype(jnp.float32) / 255.0
    if x.shape[-1] == channels:
        return x
    if x.shape[-1] != 1:
        raise ValueError(
            f"images: expected 1 or {channels} channels (last axis); got shape {tuple(x.shape)}."
        )
    return jnp.repeat(x, channels, axis=-1)


def _is_dicom(data: bytes) -> bool:
    return data[_DICOM_MAGIC_OFFSET : _DICOM_MAGIC_OFFSET + 4] == b"DICM"


# Limits that keep one bad file from taking a whole run with it: a larger file or image is
# refused on its own (a radiograph is at most a few tens of megapixels and megabytes).
MAX_FILE_BYTES = 512 * 2**20
MAX_IMAGE_PIXELS = 64 * 10**6


def read_file_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a regular file of at most ``MAX_FILE_BYTES``.

    Raises:
      FileNotFoundError: naming the path, when it does not exist.
      UnreadableImageError: for a named pipe, a device, a folder (reading them would block or
        never end), an empty file or one over the limit.
    """
    name = os.fspath(path)
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a pipe, device or socket"
        raise UnreadableImageError(f"{name}: expected an image file; got {kind}.")
    if info.st_size == 0:
        raise UnreadableImageError(f"{name}: the file is empty.")
    if info.st_size > MAX_FILE_BYTES:
        raise UnreadableImageError(
            f"{name}: expected at most {MAX_FILE_BYTES // 2**20} MiB; got "
            f"{info.st_size / 2**20:,.0f} MiB."
        )
    return Path(path).read_bytes()


def read_image(source: str | os.PathLike[str] | bytes, *, name: str | None = None) -> np.ndarray:
    """Decodes a PNG (8 or 16 bit), JPEG or DICOM file to float32 pixels in [0, 1].

    8-bit images are divided by 255. 16-bit grayscale PNGs are scaled by their own minimum and
    maximum, as DICOM radiographs are (``read_dicom``): a 16-bit container says nothing about
    the depth of the data in it (exported radiographs often hold 10-, 12- or 14-bit values), and
    dividing 12-bit data by 65535 would give the model an image 16 times too dark.

    Args:
      source: a path or the file's bytes. DICOM is recognised by its "DICM" marker, whatever
        the file is called.
      name: the file's name for error messages (defaults to the path).

    Returns:
      ``(H, W)`` for grayscale images, ``(H, W, 3)`` for colour ones (an alpha channel is
      dropped).

    Raises:
      FileNotFoundError: naming the path, when it does not exist.
      UnreadableImageError: naming the file, when it cannot be decoded, is empty, is not a
        regular file, or is larger than ``MAX_FILE_BYTES`` or ``MAX_IMAGE_PIXELS``.
    """
    if name is None:
        name = "<bytes>" if isinstance(source, bytes) else os.fspath(source)
    data = source if isinstance(source, bytes) else read_file_bytes(source)
    if not data:
        raise UnreadableImageError(f"{name}: the file is empty.")
    if _is_dicom(data):
        return read_dicom(data, name=name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
            with PIL.Image.open(io.BytesIO(data)) as image:
                _check_pixel_count(name, image.size[0] * image.size[1])
                return _pil_to_unit_range(image)
    except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning) as error:
        raise UnreadableImageError(f"{name}: too many pixels to decode ({error}).") from error
    except PIL.UnidentifiedImageError as error:
        raise UnreadableImageError(
            f"{name}: not a PNG, JPEG or DICOM image (it starts with {data[:8]!r})."
        ) from error
    except (OSError, ValueError, SyntaxError) as error:
        if isinstance(error, UnreadableImageError):
            raise
        raise UnreadableImageError(
            f"{name}: not a readable PNG/JPEG/DICOM image ({error})."
        ) from error


def _check_pixel_count(name: str, pixels: int) -> None:
    if pixels > MAX_IMAGE_PIXELS:
        raise UnreadableImageError(
            f"{name}: expected at most {MAX_IMAGE_PIXELS:,} pixels; got {pixels:,}."
        )


def _pil_to_unit_range(image: PIL.Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale PNGs (Pillow's mode I or I;16): by their own range (see read_image).
        return _min_max(np.asarray(image, dtype=np.float64))
    if image.mode in ("1", "L", "P", "LA"):
        image = image.convert("L")
    elif image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.float32) / 255.0


def read_dicom(source: str | os.PathLike[str] | bytes, *, name: str | None = None) -> np.ndarray:
    """A DICOM radiograph as displayed: float32 ``(H, W)`` in [0, 1], bright = dense.

    The stored values go through the modality LUT (rescale slope/intercept), then the VOI LUT
    or window when the file has one, are inverted for MONOCHROME1 (where 0 is white), and are
    finally scaled to [0, 1] by their minimum and maximum (a constant image becomes 0).

    Args:
      source: a path or the file's bytes.
      name: the file's name for error messages (defaults to the path).
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if name is None:
        name = "<bytes>" if isinstance(source, bytes) else os.fspath(source)
    data = source if isinstance(source, bytes) else read_file_bytes(source)
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as error:  # pydicom raises many kinds for broken files
        raise UnreadableImageError(f"{name}: not a readable DICOM file ({error}).") from error
    check_radiograph(ds, name)
    _check_pixel_count(name, int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0))
    try:
        pixels = ds.pixel_array
    except Exception as error:
        raise UnreadableImageError(f"{name}: not a readable DICOM image ({error}).") from error
    if pixels.ndim != 2:
        raise UnreadableImageError(
            f"{name}: expected a single-frame grayscale DICOM image; got pixel data of shape "
            f"{pixels.shape}."
        )
    values = apply_modality_lut(pixels, ds)
    if "VOILUTSequence" in ds:
        # A LUT is indexed by integers; the modality LUT may have turned them into floats.
        values = apply_voi_lut(np.round(values).astype(np.int64), ds, index=0)
    elif "WindowCenter" in ds:
        values = apply_voi_lut(values, ds, index=0)
    values = np.asarray(values, dtype=np.float64)
    if ds.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        values = -values
    return _min_max(values)


def _min_max(values: np.ndarray) -> np.ndarray:
    """float64 values -> float32 in [0, 1] by their minimum and maximum (a constant image: 0)."""
    low, high = values.min(), values.max()
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return scaled.astype(np.float32)


# DICOM modalities that are projection radiographs (PS3.3 C.7.3.1.1.1): CR computed
# radiography, DX digital radiography, RG radiographic imaging; "DR" is a common vendor
# spelling. OT (other) is what converters and anonymisers often write: read, with a warning.
RADIOGRAPH_MODALITIES = ("CR", "DX", "RG", "DR")
UNSPECIFIED_MODALITIES = ("", "OT")


def check_radiograph(ds: Any, name: str) -> None:
    """Raises unless the DICOM dataset ``ds`` is one grayscale projection radiograph: other
    modalities (CT, MR, SEG, ...), colour or palette images and several frames are refused with
    what they are; an unspecified modality (none, or OT) is read with a warning."""
    if "PixelData" not in ds:
        raise UnreadableImageError(f"{name}: not a readable DICOM image (it holds no pixel data).")
    modality = str(ds.get("Modality", "")).strip().upper()
    if modality not in RADIOGRAPH_MODALITIES + UNSPECIFIED_MODALITIES:
        raise UnreadableImageError(
            f"{name}: expected a radiograph (DICOM Modality {', '.join(RADIOGRAPH_MODALITIES)}); "
            f"got Modality {modality}."
        )
    if modality in UNSPECIFIED_MODALITIES:
        warnings.warn(
            f"{name}: the DICOM file does not say it is a radiograph (Modality "
            f"{modality or 'missing'}); reading it as one.",
            stacklevel=3,
        )
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise UnreadableImageError(
            f"{name}: expected a grayscale radiograph (PhotometricInterpretation MONOCHROME1 or "
            f"MONOCHROME2); got {photometric}: its stored values are not intensities."
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise UnreadableImageError(f"{name}: expected a single-frame image; got {frames} frames.")


def grayscale(pixels: np.ndarray) -> np.ndarray:
    """``(H, W)`` pixels from what :func:`read_image` returns: colour ``(H, W, 3)`` averaged,
    grayscale as it is.

    >>> grayscale(np.ones((2, 3, 3))).shape, grayscale(np.ones((2, 3))).shape
    ((2, 3), (2, 3))
    """
    return pixels.mean(axis=-1) if pixels.ndim == 3 else pixels


def center_crop_box(height: int, width: int) -> tuple[int, int, int, int]:
    """The central square ``(top, left, bottom, right)`` of an image of this size."""
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return top, left, top + side, left + side


def resize(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resizes ``(H, W)`` or ``(H, W, C)`` float pixels to ``size`` x ``size`` (or to
    ``(height, width)``), bilinearly.

    Pillow's bilinear filter widens with the scale when shrinking (it averages all the source
    pixels under each target pixel), as torchvision's ``Resize`` does on PIL images, so a
    1024 px radiograph becomes 224 px without aliasing.
    """
    height, width = (size, size) if isinstance(size, int) else size
    checks.check_positive_int("size", height)
    checks.check_positive_int("size", width)
    if image.ndim == 2:
        out = PIL.Image.fromarray(image.astype(np.float32), mode="F")
        return np.asarray(out.resize((width, height), PIL.Image.Resampling.BILINEAR))
    return np.stack([resize(image[..., c], size) for c in range(image.shape[-1])], axis=-1)


def square(image: np.ndarray, size: int) -> np.ndarray:
    """The central square of ``image`` (as torchxrayvision crops), resized to ``size``."""
    top, left, bottom, right = center_crop_box(*image.shape[:2])
    return resize(image[top:bottom, left:right], size)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] floats to uint8 by rounding (0.5/255 is the largest error)."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def boxes_from_pixels(xywh: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixel boxes ``(x, y, w, h)`` of an image of this size -> normalised (ymin, xmin, ymax, xmax).

    Coordinates are clipped to the image.

    >>> boxes_from_pixels(np.array([[256.0, 512.0, 128.0, 256.0]]), 1024, 1024)
    array([[0.5  , 0.25 , 0.75 , 0.375]], dtype=float32)
    """
    xywh = np.asarray(xywh, np.float64).reshape(-1, 4)
    x, y, w, h = xywh.T
    boxes = np.stack([y / height, x / width, (y + h) / height, (x + w) / width], axis=-1)
    return np.clip(boxes, 0.0, 1.0).astype(np.float32)


def crop_boxes(
    boxes: np.ndarray, height: int, width: int, crop: tuple[int, int, int, int]
) -> np.ndarray:
    """Normalised boxes of a ``height`` x ``width`` image -> normalised boxes of its ``crop``.

    ``crop`` is ``(top, left, bottom, right)`` in pixels; resizing the crop leaves normalised
    boxes unchanged. Parts outside the crop are clipped away.
    """
    top, left, bottom, right = crop
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scale = np.array([height, width, height, width], np.float64)
    offset = np.array([top, left, top, left], np.float64)
    extent = np.array([bottom - top, right - left] * 2, np.float64)
    return np.clip((boxes * scale - offset) / extent, 0.0, 1.0).astype(np.float32)
