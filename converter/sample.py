"""A synthetic CT series for demos: no patient, generated on the spot.

``write_sample_series(folder)`` writes an axial CT of a "phantom" made of a
soft-tissue cylinder (40 HU) holding a bone tube (1000 HU) and a small bone
sphere, with a 1.5 HU-per-voxel partial-volume ramp, one file per slice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def sample_volume(slices=80, size=128, spacing=(0.8, 0.8), slice_gap=1.25):
    """Return ``(hu, positions, spacing)`` of the sample phantom (int16 HU)."""
    sr, sc = spacing
    y, x = np.mgrid[0:size, 0:size]
    x = (x - size / 2) * sc
    y = (y - size / 2) * sr
    hu = np.empty((slices, size, size), np.int16)
    positions = np.zeros((slices, 3))
    for k in range(slices):
        z = k * slice_gap
        positions[k] = (-size / 2 * sc, -size / 2 * sr, z)
        body = 45 - np.hypot(x, y * 1.2)  # elliptic body, 45 mm
        tube_r = np.hypot(x - 12 - 0.1 * z, y + 5)
        bone = np.minimum(9 - tube_r, tube_r - 5)  # a bone tube, drifting with z
        ball = 8 - np.sqrt((x + 18) ** 2 + (y - 10) ** 2 + (z - 60) ** 2)
        bone = np.maximum(bone, ball)
        img = np.where(body > 0, 40.0, -1000.0)
        img = np.where(bone > 0, 1000.0, img)
        ramp = np.clip(0.5 + bone / 1.5, 0, 1)
        img = np.where(np.abs(bone) < 0.75, 40 + 960 * ramp, img)
        hu[k] = np.rint(img)
    return hu, positions, spacing


def write_sample_series(folder) -> int:
    """Write the sample CT series into ``folder``; return the number of files."""
    # pydicom here, not at the top: the dispatcher imports this module for every command
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hu, positions, spacing = sample_volume()
    stored = (hu.astype(np.int32) + 1024).astype(np.uint16)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for k in range(hu.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID = "SAMPLE^PHANTOM", "SAMPLE"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, k + 1
        ds.SeriesDescription = "ephemesh sample phantom"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in positions[k]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [f"{spacing[0]:g}", f"{spacing[1]:g}"]
        ds.SliceThickness = "1.25"
        ds.Rows, ds.Columns = hu.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = "1", "-1024", "HU"
        ds.PixelData = stored[k].tobytes()
        pydicom.dcmwrite(folder / f"IM{k + 1:04d}", ds, enforce_file_format=True)
    return hu.shape[0]
