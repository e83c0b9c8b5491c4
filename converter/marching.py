"""Marching cubes over an int16 (or any real) volume: the public entry point.

Two engines make the same welded, outward-wound mesh from the table of
:mod:`converter._marching_tables` (asymptotic decider on ambiguous faces, an extra
vertex in the few loops that need one):

* ``compiled`` (:mod:`converter.marching_kernel`, a Cython extension built
  at install time): a pass over planes that works only where a row crosses
  the level; slabs of planes run on threads.  The default when it is built.
* ``numpy`` (:mod:`converter.marching_numpy`): whole-slab numpy operations;
  the reference the compiled kernel is tested against.

Both number one vertex per crossed grid edge and give the same mesh for any
number of workers.  ``pad`` closes surfaces that touch the volume's faces
without copying the volume into a padded one.
"""

from __future__ import annotations

import numpy as np

from . import _compiled

#: voxels per slab: the unit of work handed to a thread
SLAB_VOXELS = 4_000_000
ENGINES = ("auto", "compiled", "numpy")


def _check(volume, level, step, workers, pad, engine):
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
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "compiled" and not _compiled.usable():
        raise ValueError("engine 'compiled' needs the compiled kernels, which are not built "
                         "(install the package) or are turned off (EPHEMESH_COMPILED=0)")
    if engine == "auto":
        engine = "compiled" if _compiled.usable() else "numpy"
    return level, int(step), int(workers), pad, engine


def _sample_index(n, step):
    idx = np.arange(0, n, step)
    if idx[-1] != n - 1:
        idx = np.append(idx, n - 1)
    return idx


def marching_cubes(volume, level, *, step=1, workers=1, progress=None, pad=None, engine="auto"):
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
    engine : {"auto", "compiled", "numpy"}, optional
        ``auto`` takes the compiled kernel when it is built.

    Returns
    -------
    verts : (N, 3) float32
        Vertex positions in index coordinates (axis 0, 1, 2).
    faces : (M, 3) int32 or int64
        Triangles wound so normals point from inside to outside; int32 from
        the compiled kernel (int64 for boxes of more than ~700 M voxels),
        int64 from the numpy engine.
    """
    level, step, workers, pad, engine = _check(volume, level, step, workers, pad, engine)
    scale = None
    if step > 1:
        scale = [_sample_index(n, step) for n in volume.shape]
        volume = volume[np.ix_(*scale)]
    if engine == "numpy":
        from .marching_numpy import extract  # noqa: PLC0415

        if pad is not None:
            value = _pad_in(pad, volume.dtype)
            if volume.dtype.kind in "iu" and not np.can_cast(np.min_scalar_type(value), volume.dtype):
                volume = volume.astype(np.promote_types(volume.dtype, np.min_scalar_type(value)))
            volume = np.pad(volume, 1, mode="constant", constant_values=value)
        if min(volume.shape) < 2:
            return _empty()
        verts, faces = extract(volume, level, workers=workers, progress=progress,
                               slab_voxels=SLAB_VOXELS)
        if pad is not None:
            verts -= np.float32(1.0)
    else:
        from . import marching_kernel  # noqa: PLC0415

        padded = [n + (2 if pad is not None else 0) for n in volume.shape]
        if min(padded) < 2:
            return _empty()
        verts, faces = marching_kernel.extract(volume, level, pad=pad, workers=workers,
                                               progress=progress, slab_voxels=SLAB_VOXELS)
    if scale is not None and len(verts):
        verts = _rescale_vertices(verts, scale, pad is not None)
    return verts, faces


def _empty():
    return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)


def _pad_in(pad, dtype):
    """``pad`` in the volume's type (integers round down: still outside)."""
    if np.dtype(dtype).kind == "f":
        return pad
    return int(np.floor(pad))


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
