"""The index → patient map of :meth:`converter.volume.Volume.index_to_patient`
in numpy: the reference its compiled kernel is held to."""

from __future__ import annotations

import numpy as np


def index_to_patient(volume, ijk, offset=(0.0, 0.0, 0.0)):
    """Piecewise linear between slices, ``P[k0] + t (P[k0 + 1] - P[k0])``, with
    ``k0`` clipped to the slices (so the ends extrapolate), plus the in-plane step."""
    ijk = np.asarray(ijk, np.float64) + np.asarray(offset, np.float64)
    positions = volume.positions
    k0 = np.clip(np.floor(ijk[:, 0]), 0, len(positions) - 2)
    t = ijk[:, 0] - k0
    idx = k0.astype(np.intp)
    p0 = positions[idx]
    sr, sc = volume.pixel_spacing
    in_plane = np.stack([volume.col_dir * sr, volume.row_dir * sc])
    return p0 + (positions[idx + 1] - p0) * t[:, None] + ijk[:, 1:] @ in_plane
