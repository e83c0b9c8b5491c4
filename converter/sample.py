"""A synthetic CT series to try ephemesh on: no patient, generated on the spot.

``write_sample_series(folder, slices=80, size=128)`` writes an axial CT of a
body-like phantom, one file per slice: an elliptic body (soft tissue, 40 HU
with noise), a spine of vertebral bodies with discs every 30 mm, two long
bones with cortical shells and a trabecular texture that crosses the bone
preset's 300 HU, and ribs every 25 mm.  The field of view is 358 mm whatever
the matrix (``size``), so ``--size 512 --slices 300`` is a realistic scan (the
benchmark's series, ``bench/ctseries.py``, is exactly that).

``new_dataset`` is the one place that starts a Part-10 dataset (file meta,
SOP class and instance); the benchmark and the tests' series writers use it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: the phantom's field of view (mm) and slice spacing (mm)
FIELD_MM = 358.4
SLICE_MM = 1.0
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"


def slice_hu(k, size=512, px=None, dz=SLICE_MM, rng=None):
    """Slice ``k`` of the phantom in HU (int16, ``size`` × ``size``, ``px`` mm pixels)."""
    px = FIELD_MM / size if px is None else px
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    x = (x - size / 2) * px
    y = (y - size / 2) * px
    z = k * dz
    hu = np.full((size, size), -1000.0, np.float32)
    body = (x / 165) ** 2 + (y / 120) ** 2 < 1
    hu[body] = 40 + (rng.normal(0, 15, body.sum()) if rng is not None else 0)
    trab = 250 + 160 * np.sin(x / 2.3) * np.sin(y / 2.1) * np.sin(z / 2.7)
    # spine: vertebral bodies with discs every 30 mm
    if (z % 30) < 24:
        r = np.hypot(x, y + 70)
        hu = np.where(r < 20, trab, hu)
        hu = np.where((r >= 20) & (r < 23), 1100, hu)
    # two long bones, drifting slightly with z
    for cx in (-75 - 0.05 * z, 75 + 0.05 * z):
        r = np.hypot(x - cx, y - 10)
        hu = np.where(r < 14, trab, hu)
        hu = np.where((r >= 14) & (r < 19), 1300, hu)
    # ribs: rings every 25 mm, 5 mm thick
    zr = (z % 25) - 12.5
    if abs(zr) < 5:
        ring = np.hypot(x / 150, y / 105)
        thick = np.sqrt(max(0.0, 25 - zr**2)) / 150
        hu = np.where(np.abs(ring - 0.9) < thick, 900, hu)
    return np.rint(hu).astype(np.int16)


def sample_volume(slices=80, size=128):
    """The phantom as one (slices, size, size) int16 HU volume (what the
    converter loads from the written series)."""
    vol = np.empty((slices, size, size), np.int16)
    for k in range(slices):
        vol[k] = slice_hu(k, size, rng=np.random.default_rng(k))
    return vol


def new_dataset(sop_class, *, transfer_syntax=EXPLICIT_VR_LITTLE_ENDIAN, instance_uid=None):
    """A Part-10 dataset with its file meta: the SOP class, a new instance UID
    (or ``instance_uid``) and the transfer syntax; the caller fills the rest."""
    from pydicom.dataset import FileDataset, FileMetaDataset  # pydicom: only when writing
    from pydicom.uid import generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = instance_uid or generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    return ds


def write_sample_series(folder, *, slices=80, size=128) -> int:
    """Write the phantom as ``slices`` CT files of ``size`` × ``size`` pixels
    (``IMnnnn.dcm``) into ``folder``; return the number of files."""
    from pydicom.uid import generate_uid

    if not 2 <= int(slices) <= 2000 or not 16 <= int(size) <= 1024:
        raise ValueError("a sample has 2 to 2000 slices of 16 to 1024 pixels a side")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    px = FIELD_MM / size
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for k in range(slices):
        hu = slice_hu(k, size, rng=np.random.default_rng(k))
        ds = new_dataset(CT_IMAGE_STORAGE)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID = "SAMPLE^PHANTOM", "SAMPLE"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, k + 1
        ds.SeriesDescription = "ephemesh sample phantom"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [-size / 2 * px, -size / 2 * px, float(k * SLICE_MM)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [f"{px:g}", f"{px:g}"]
        ds.SliceThickness = f"{SLICE_MM:g}"
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
        ds.PixelData = (hu.astype(np.int32) + 1024).astype(np.int16).tobytes()
        ds.save_as(folder / f"IM{k + 1:04d}.dcm", enforce_file_format=True)
    return slices
