"""How big a model the options would make, from a coarse pass, before converting.

Marching cubes on every ``step``-th voxel (the converter's own level choice
and surface extraction, on the decoded volume) finds about ``step²`` times
fewer triangles than the full pass, since the triangles tile the same area;
the count is scaled back and the mesh options that set a budget
(``decimate``, ``max_triangles``) are applied to it.  The bytes are a binary
STL's.  It is an estimate: smoothing, ``largest`` and ``min_island_mm3``
are not run.
"""

from __future__ import annotations

import dataclasses
import time

from .options import ConvertOptions
from .stl import STL_DTYPE

#: voxels skipped between samples of the coarse pass
STEP = 4


def estimate(vol, options: ConvertOptions, *, step: int = STEP) -> dict:
    """``{"triangles", "bytes", "format", "seconds", "step", "level"}`` for
    ``options`` on ``vol`` (a ``Volume``; not changed).  Raises the
    converter's errors for options it would refuse (``no_surface`` …)."""
    from .pipeline import _choose_level, _extract_surface

    started = time.perf_counter()
    opts = dataclasses.replace(options).validate()
    vol = dataclasses.replace(vol, warnings=[])  # the level choice may add a warning
    level = _choose_level(opts, vol)
    coarse = dataclasses.replace(opts, step=step)
    _verts, faces, _offset = _extract_surface(vol, level, coarse, lambda fraction: None)
    triangles = int(len(faces)) * step * step
    if opts.decimate is not None:
        triangles = int(triangles * opts.decimate)
    if opts.max_triangles is not None:
        triangles = min(triangles, opts.max_triangles)
    return {"triangles": triangles, "bytes": 84 + STL_DTYPE.itemsize * triangles,
            "format": "stl", "level": level.value, "step": step,
            "seconds": round(time.perf_counter() - started, 4)}
