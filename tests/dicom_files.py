"""Synthetic DICOM radiographs written with pydicom, for the tests and the bad-input battery
(benchmarks/bad_inputs.py); no pytest here, so a script can import it."""

from __future__ import annotations

import numpy as np


def write_dicom(
    path,
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    window: tuple[float, float] | None = None,
    voi_lut: np.ndarray | None = None,
    rescale: tuple[float, float] | None = None,
    modality: str | None = "CR",
) -> None:
    """Writes a 16-bit-allocated grayscale radiograph DICOM with pydicom: ``stored`` is
    ``(rows, columns)``, or ``(frames, rows, columns)`` for a multi-frame file.

    ``window`` is (centre, width); ``voi_lut`` a LUT over stored values 0..len-1 (16-bit
    entries); ``rescale`` is (slope, intercept); ``modality`` None leaves it out.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    if modality is not None:
        ds.Modality = modality
    ds.Rows, ds.Columns = stored.shape[-2:]
    if stored.ndim == 3:
        ds.NumberOfFrames = stored.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut is not None:
        item = pydicom.Dataset()
        item.LUTDescriptor = [len(voi_lut), 0, 16]
        item.LUTData = np.asarray(voi_lut, np.uint16).tobytes()
        ds.VOILUTSequence = Sequence([item])
    ds.PixelData = np.asarray(stored, np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
