"""Write the benchmark's CT-like 512×512×N series (no patient data).

    python bench/ctseries.py FOLDER N [--npy VOLUME.npy]

The series is ``ephemesh sample FOLDER --slices N --size 512``
(``converter.sample``): an elliptic body, a spine, two long bones with
cortical shells and a trabecular texture crossing 300 HU, and ribs every
25 mm, in files named ``IMnnnn.dcm`` (dicom2stl only reads ``*.dcm``).  With
``--npy`` it saves the HU volume as it is loaded instead, for the
extraction-only runs.
"""

import sys
from pathlib import Path

import numpy as np

from converter.sample import sample_volume, write_sample_series


def main():
    folder, n = Path(sys.argv[1]), int(sys.argv[2])
    if "--npy" in sys.argv:
        np.save(sys.argv[sys.argv.index("--npy") + 1], sample_volume(n, 512))
        return
    write_sample_series(folder, slices=n, size=512)


if __name__ == "__main__":
    main()
