"""The plain peer: pydicom + skimage.measure.marching_cubes + numpy-stl.

    python bench/plain_skimage.py FOLDER OUT.stl LEVEL
"""

import sys
from pathlib import Path

import numpy as np
import pydicom
from skimage.measure import marching_cubes
from stl import mesh


def main():
    folder, out, level = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    slices = [pydicom.dcmread(p) for p in folder.glob("*.dcm")]
    slices.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    vol = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept)
                    for d in slices]).astype(np.int16)
    dz = float(slices[1].ImagePositionPatient[2]) - float(slices[0].ImagePositionPatient[2])
    px = [float(v) for v in slices[0].PixelSpacing]
    verts, faces, _, _ = marching_cubes(vol, level, spacing=(dz, px[0], px[1]))
    m = mesh.Mesh(np.zeros(len(faces), dtype=mesh.Mesh.dtype))
    m.vectors[:] = verts[faces][:, :, ::-1]
    m.save(out)


if __name__ == "__main__":
    main()
