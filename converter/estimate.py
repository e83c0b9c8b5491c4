"""How big a model the options would make, from a coarse pass, before converting.

Marching cubes on every ``step``-th voxel (the converter's own level choice
on the decoded volume, then its region and surface extraction on a copy of
every ``step``-th voxel, placed where those voxels are) finds about ``step²`` times
fewer triangles than the full pass, since the triangles tile the same area;
the count is scaled back and the mesh options that set a budget
(``decimate``, ``max_triangles``) are applied to it.  The bytes are a binary
STL's.  It is an estimate: smoothing and ``min_island_mm3`` are not run, and
the region's parts are those of the coarse voxels.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from .errors import ConverterError, UsageError
from .options import ConvertOptions
from .stl import STL_DTYPE

#: voxels skipped between samples of the coarse pass
STEP = 4


def coarse_volume(vol, step: int = STEP):
    """Every ``step``-th voxel of ``vol`` as a volume of its own (a small
    copy: the region options change the voxels they drop, and the decoded
    volume is shared), with the geometry of those voxels and the full
    volume's value range."""
    from .volume import Volume

    data = np.ascontiguousarray(vol.data[::step, ::step, ::step])
    lo, hi = vol.value_range()
    sr, sc = vol.pixel_spacing
    return Volume(data, vol.positions[::step], vol.row_dir, vol.col_dir,
                  (sr * step, sc * step), modality=vol.modality, background=vol.background,
                  slice_range=np.array([[lo, hi]]))


def check(vol, options: ConvertOptions):
    """Refuse, before any conversion, what the converter would refuse on this
    volume: a level outside its values (``no_surface``), a crop box holding
    no voxel (``crop_outside``), a seed outside the volume (``seed_outside``)
    or with no voxel above the level within one voxel of it
    (``seed_in_background``).  Returns the level."""
    from .marching import inside_mask
    from .pipeline import _choose_level
    from .region import Region

    opts = dataclasses.replace(options).validate()
    level = _choose_level(opts, dataclasses.replace(vol, warnings=[]))
    region = Region(vol, opts)  # a seed outside the volume is refused here
    region.narrow([(0, n) for n in vol.shape])
    if region.seed is not None and not level.inverted:
        centre = np.round(region.seed_ijk).astype(np.int64)
        near = tuple(slice(max(int(c) - 1, 0), int(c) + 2) for c in centre)
        if not inside_mask(np.asarray(vol.data[near]), level.value).any():
            raise UsageError(
                f"the seed ({', '.join(f'{v:.1f}' for v in region.seed)} mm, LPS) lies in the "
                f"background at {level.value:g}: no voxel above the level is within one voxel "
                "of it (pick a point on or inside the part)", code="seed_in_background")
    return level


def estimate(vol, options: ConvertOptions, *, step: int = STEP) -> dict:
    """``{"triangles", "bytes", "format", "seconds", "step", "level"}`` for
    ``options`` on ``vol`` (a ``Volume``; not changed).  Raises the
    converter's errors for options it would refuse (``no_surface``,
    ``crop_outside``, ``seed_in_background`` …)."""
    from .pipeline import _extract_surface

    started = time.perf_counter()
    opts = dataclasses.replace(options).validate()
    level = check(vol, opts)
    coarse = coarse_volume(vol, step)
    try:
        _verts, faces, _offset = _extract_surface(coarse, level, opts, lambda fraction: None)
    except ConverterError as exc:
        if exc.code != "seed_in_background":
            raise
        # the seed is on the part at full resolution (checked) but between the
        # coarse voxels: estimate the parts the seed would pick from without it
        coarse = coarse_volume(vol, step)
        _verts, faces, _offset = _extract_surface(
            coarse, level, dataclasses.replace(opts, seed=None), lambda fraction: None)
    triangles = int(len(faces)) * step * step
    if opts.decimate is not None:
        triangles = int(triangles * opts.decimate)
    if opts.max_triangles is not None:
        triangles = min(triangles, opts.max_triangles)
    return {"triangles": triangles, "bytes": 84 + STL_DTYPE.itemsize * triangles,
            "format": "stl", "level": level.value, "step": step,
            "seconds": round(time.perf_counter() - started, 4)}
