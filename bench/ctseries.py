"""Write a CT-like 512×512×N series for the benchmark (no patient data).

    python bench/ctseries.py FOLDER N [--npy VOLUME.npy]

An elliptic body (soft tissue, 40 HU with noise), a spine, two long bones
with cortical shells and a trabecular texture crossing 300 HU, and ribs every
25 mm.  Files are named ``IMnnnn.dcm`` (dicom2stl only reads ``*.dcm``).
With ``--npy`` it also saves the HU volume as it is loaded, for the
extraction-only runs.
"""

import sys
from pathlib import Path

import numpy as np


def slice_hu(k, size=512, px=0.7, dz=1.0, rng=None):
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


def main():
    folder, n = Path(sys.argv[1]), int(sys.argv[2])
    rng = np.random.default_rng(0)
    if "--npy" in sys.argv:
        out = sys.argv[sys.argv.index("--npy") + 1]
        vol = np.empty((n, 512, 512), np.int16)
        for k in range(n):
            vol[k] = slice_hu(k, rng=np.random.default_rng(k))
        np.save(out, vol)
        return
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    for k in range(n):
        hu = slice_hu(k, rng=np.random.default_rng(k))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientName, ds.PatientID, ds.Modality, ds.SeriesNumber = "BENCH", "BENCH", "CT", 1
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [-179.2, -179.2, float(k)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.SliceThickness = 1.0
        ds.Rows = ds.Columns = 512
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = (hu.astype(np.int32) + 1024).astype(np.int16).tobytes()
        pydicom.dcmwrite(folder / f"IM{k:04d}.dcm", ds, enforce_file_format=True)
    del rng


if __name__ == "__main__":
    main()
