"""Marching cubes over an int16 (or any real) volume, with the compiled kernel.

The mesh is welded (one vertex per crossed grid edge) and wound outward, from
the tables of :mod:`converter._marching_tables`: the asymptotic decider on
ambiguous faces, an extra vertex in the few loops that need one.  The loops
are in the Cython extension :mod:`converter._marching`, built at install
time; this module checks the arguments, cuts the volume into slabs, runs them
(on threads when asked: the extension releases the GIL) and joins the results.

The volume is visited plane by plane, with an optional virtual pad layer
around it (``pad``: surfaces touching the volume's faces close without a
padded copy).  Each plane gets an inside mask and, per row, the first and
last inside column; every later step looks only between those columns, so
empty space and solid interiors cost one comparison a voxel.

Vertices are numbered in a fixed order that does not depend on how the
planes are split into slabs: plane by plane, first the crossed x and y edges
of the plane (row by row), then the crossed edges from the plane to the next
one; the cells' extra (centre) vertices come after all edge vertices, layer
by layer.  A slab numbers its own planes; for the first plane of the next
slab it only counts crossings in the same order and writes *boundary codes*
(``-1 - i``) that ``_marching.resolve`` turns into the next slab's numbers;
codes are int32 until then, so the slabs' buffers stay small.  So any number
of slabs and threads gives exactly the same arrays.
"""

from __future__ import annotations

import queue
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from . import _marching
from ._marching_tables import AMBIGUOUS, CENTRE_LOOP, EDGE_BASE, FACE_CORNERS, TRI_COUNT, TRI_TABLE

#: voxels per slab: the unit of work handed to a thread
SLAB_VOXELS = 4_000_000
#: boxes up to this many voxels number their vertices in int32 (3 edges a voxel)
INT32_VOXELS = (2**31 - 1) // 3
#: the dtypes the kernel is compiled for; others are converted first
KERNEL_DTYPES = (np.int16, np.int32, np.float32, np.float64)

_TABLES = _marching.Tables(TRI_TABLE, TRI_COUNT, CENTRE_LOOP, AMBIGUOUS, FACE_CORNERS, EDGE_BASE)


class SlabGeometry(NamedTuple):
    """What every slab of one extraction shares, as :func:`converter._marching.slab` reads it."""

    box: tuple  # (offset z, y, x, size z, y, x): the part of the array to mesh
    pad: int  # virtual layers of ``pad_value`` around the box: 0 or 1
    pad_value: float
    threshold: float  # the inside test: value > threshold
    level: float  # the isovalue the vertices are interpolated at

    @property
    def planes(self) -> tuple[int, int, int]:
        """(nz, ny, nx): the size of the virtual (padded) grid."""
        return tuple(n + 2 * self.pad for n in self.box[3:])


def _check(volume, level, step, workers, pad):
    if not isinstance(volume, np.ndarray):
        raise TypeError(f"volume must be a numpy array, got {type(volume).__name__}")
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3-D, got {volume.ndim}-D")
    if volume.dtype.kind not in "iuf":
        raise TypeError(f"volume must hold integers or floats, got {volume.dtype}")
    try:
        level = float(level)
    except (TypeError, ValueError):
        raise TypeError(f"level must be a number, got {level!r}") from None
    if not np.isfinite(level):
        raise ValueError(f"level must be finite, got {level}")
    if int(step) != step or step < 1:
        raise ValueError(f"step must be an integer >= 1, got {step}")
    if int(workers) != workers or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers}")
    if pad is not None:
        try:
            pad = float(pad)
        except (TypeError, ValueError):
            raise TypeError(f"pad must be a number or None, got {pad!r}") from None
        if not np.isfinite(pad) or pad > level:
            raise ValueError(f"pad must be a finite value at or below the level, got {pad}")
    return level, int(step), int(workers), pad


def marching_cubes(volume, level, *, step=1, workers=1, progress=None, pad=None):
    """Extract the isosurface ``volume == level`` as a welded triangle mesh.

    Parameters
    ----------
    volume : (Z, Y, X) ndarray
        Integers or floats; never copied to float as a whole.
    level : float
        The isovalue; the inside is ``volume > level``.
    step : int, optional
        Sample every ``step`` voxels along each axis (the last plane is
        always kept); vertices stay in full-resolution index units.
    workers : int, optional
        Threads for slab-parallel extraction; the mesh is identical for any
        number.
    progress : callable(fraction), optional
        Called as slabs finish.
    pad : float, optional
        When given, the volume is treated as surrounded by one layer of
        voxels of this value (at or below ``level``), so surfaces touching
        its faces are closed; vertices stay in the volume's own index units
        (the pad layer sits at -1 and at n).  No padded copy is made.

    Returns
    -------
    verts : (N, 3) float32
        Vertex positions in index coordinates (axis 0, 1, 2).
    faces : (M, 3) int32 or int64
        Triangles wound so normals point from inside to outside; int32, or
        int64 for boxes of more than ~700 M voxels (and for an empty mesh).
    """
    level, step, workers, pad = _check(volume, level, step, workers, pad)
    scale = None
    if step > 1:
        scale = [_sample_index(n, step) for n in volume.shape]
        volume = volume[np.ix_(*scale)]
    if min(n + (2 if pad is not None else 0) for n in volume.shape) < 2:
        return _empty()
    verts, faces = _extract(*_kernel_input(volume, level, pad), workers, progress)
    if scale is not None and len(verts):
        verts = _rescale_vertices(verts, scale, pad is not None)
    return verts, faces


def _sample_index(n, step):
    idx = np.arange(0, n, step)
    if idx[-1] != n - 1:
        idx = np.append(idx, n - 1)
    return idx


def _empty():
    return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)


def _rescale_vertices(verts, scale, padded):
    out = np.empty_like(verts)
    for axis, idx in enumerate(scale):
        grid = np.arange(len(idx), dtype=np.float64)
        full = idx.astype(np.float64)
        if padded:  # the pad layer sits one voxel beyond each end
            grid = np.concatenate([[-1.0], grid, [len(idx)]])
            full = np.concatenate([[full[0] - 1.0], full, [full[-1] + 1.0]])
        out[:, axis] = np.interp(verts[:, axis], grid, full)
    return out


def _base_and_box(volume):
    """A C-contiguous array holding ``volume`` and where ``volume`` sits in it.

    A crop (``data[z0:z1, y0:y1, x0:x1]``) is meshed in place, without a copy;
    anything else that is not C-contiguous is copied.
    """
    shape = tuple(int(n) for n in volume.shape)
    if volume.flags.c_contiguous:
        return volume, (0, 0, 0, *shape)
    base = volume.base
    while base is not None and not (isinstance(base, np.ndarray) and base.flags.c_contiguous
                                    and base.ndim == 3):
        base = getattr(base, "base", None)
    if (base is not None and base.dtype == volume.dtype and volume.strides == base.strides
            and volume.size):
        offset = volume.__array_interface__["data"][0] - base.__array_interface__["data"][0]
        start = []
        for stride in base.strides:
            k, offset = divmod(offset, stride)
            start.append(int(k))
        if offset == 0 and all(s + n <= m for s, n, m in zip(start, shape, base.shape,
                                                             strict=True)):
            return base, (*start, *shape)
    return np.ascontiguousarray(volume), (0, 0, 0, *shape)


def _kernel_input(volume, level, pad):
    """The array the kernel reads (a compiled dtype, C-contiguous, native byte
    order) and the :class:`SlabGeometry` of ``volume`` in it."""
    if volume.dtype.type not in KERNEL_DTYPES:
        kind, size = volume.dtype.kind, volume.dtype.itemsize
        if kind == "f":
            target = np.float32 if size <= 4 else np.float64
        elif size == 1:
            target = np.int16
        elif size == 2 or (kind == "i" and size == 4):
            target = np.int32
        else:
            target = np.float64
        volume = volume.astype(target)
    threshold = inside_threshold(volume.dtype, level)
    base, box = _base_and_box(volume)
    if not base.dtype.isnative:
        base = base.astype(base.dtype.newbyteorder("="))
    geometry = SlabGeometry(box, 0 if pad is None else 1,
                            float(level) if pad is None else float(pad), threshold, float(level))
    return base, geometry


def inside_threshold(dtype, level) -> float:
    """The inside test's bound: a voxel is inside the surface when its value
    is above it (``inside_mask``).  Floats compare in the volume's own
    precision (the kernel rounds the threshold to float32 for float32
    volumes), as numpy does with a Python float; integers compare with
    floor(level), since v > level <=> v > floor(level)."""
    return float(level) if np.dtype(dtype).kind == "f" else float(np.floor(level))


def inside_mask(values: np.ndarray, level: float) -> np.ndarray:
    """Which voxels of ``values`` the surface at ``level`` encloses: exactly
    the kernel's inside test (the workspace draws it over the slices)."""
    return values > inside_threshold(values.dtype, level)


def _extract(volume, geometry, workers, progress):
    """Every slab of the grid through the kernel: ``(verts, faces)``."""
    nz, ny, nx = geometry.planes
    per = max(1, SLAB_VOXELS // (ny * nx))
    # vertex numbers are int32 (at most 3 per voxel) unless the box is huge: then
    # each slab numbers its own and the faces come out int64
    huge = nz * ny * nx > INT32_VOXELS
    if huge:
        per = max(1, min(per, INT32_VOXELS // (ny * nx) - 1))
    slabs = [(z, min(z + per, nz - 1)) for z in range(0, nz - 1, per)]
    if not huge and (workers == 1 or len(slabs) == 1):
        verts, faces = _one_thread(volume, geometry, slabs, progress)
    else:
        verts, faces = _threads(volume, geometry, slabs, workers, progress,
                                np.int64 if huge else np.int32)
    if progress:
        progress(1.0)
    return verts, faces


def _one_thread(volume, geometry, slabs, progress):
    """Slab after slab into one set of growing buffers: no per-slab copies, and
    the buffers' untouched tails cost nothing.  Codes are resolved in place."""
    work = _marching.Workspace(*geometry.planes[1:])
    out = _marching.Growing(1 << 16, 1 << 17, 64)
    ends = []  # per slab: (faces so far, vertices so far)
    for k, (z0, z1) in enumerate(slabs):
        if k == 1:  # guess the totals from the first slab: at most one early regrowth
            scale = 1.25 * len(slabs)
            out.reserve(int(out.nv * scale), int(out.nf * scale))
        _marching.slab(volume, geometry, z0, z1, work, out, _TABLES)
        ends.append((out.nf, out.nv))
        if progress:
            progress(0.9 * (k + 1) / len(slabs))
    nv = out.nv
    out.append_centres()
    verts, faces, _ = out.take()
    start = 0
    for end, edges_so_far in ends:  # boundary codes point past this slab's own vertices
        _marching.resolve(faces[start:end], faces[start:end], 0, edges_so_far, nv)
        start = end
    return verts, faces


def _threads(volume, geometry, slabs, workers, progress, index):
    """Slabs on threads, each into its own buffers, then one concatenation."""
    spare = queue.SimpleQueue()  # one workspace per thread, reused across its slabs
    for _ in range(min(workers, len(slabs))):
        spare.put([_marching.Workspace(*geometry.planes[1:]), (0, 0)])

    def one(slab):
        held = spare.get()
        work, (nv, nf) = held
        try:
            out = _marching.Growing(max(nv + nv // 4, 1 << 10), max(nf + nf // 4, 1 << 11), 16)
            _marching.slab(volume, geometry, slab[0], slab[1], work, out, _TABLES)
            held[1] = (out.nv, out.nf)  # the next slab's first guess
            return out.take()
        finally:
            spare.put(held)

    parts = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for part in pool.map(one, slabs):
            parts.append(part)
            if progress:
                progress(0.9 * len(parts) / len(slabs))
    edge_offset = np.concatenate([[0], np.cumsum([len(part[0]) for part in parts])])
    face_offset = np.concatenate([[0], np.cumsum([len(part[1]) for part in parts])])
    centre_offset = edge_offset[-1] + np.concatenate([[0], np.cumsum([len(part[2])
                                                                      for part in parts])])
    verts = np.empty((int(centre_offset[-1]), 3), np.float32)
    faces = np.empty((int(face_offset[-1]), 3), index)
    for k in range(len(parts)):
        v, f, c = parts[k]
        parts[k] = None  # each slab's buffers go as soon as they are copied
        verts[edge_offset[k]:edge_offset[k + 1]] = v
        verts[centre_offset[k]:centre_offset[k + 1]] = c
        _marching.resolve(f, faces[face_offset[k]:face_offset[k + 1]], int(edge_offset[k]),
                          int(edge_offset[k + 1]), int(centre_offset[k]))
        del v, f, c
    return verts, faces
