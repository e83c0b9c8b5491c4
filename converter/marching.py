"""Vectorized marching cubes over an int16 (or any real) volume.

Two passes over slabs of the volume, each slab vectorized with numpy:

1. **Vertices**: for each axis, the grid edges whose ends lie on opposite
   sides of the level (one comparison and an XOR per slab) each give exactly
   one vertex, linearly interpolated.  A vertex is identified by its edge's
   key (the linear index of the edge's base voxel, per axis), so vertices are
   shared by every cell around the edge: the mesh comes out welded.
2. **Faces**: each active cell's configuration (8 inside bits) indexes the
   triangle table of :mod:`converter._mc_tables`; triangle corners are local
   edges, turned into global edge keys and then into vertex numbers with one
   ``searchsorted`` per axis.

Slabs are independent within a pass and results are concatenated in slab
order, so running them on several threads (numpy releases the GIL in these
operations) gives exactly the same mesh as one thread.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ._mc_tables import EDGE_AXIS, EDGE_BASE, TRI_COUNT, TRI_TABLE

#: voxels per slab (bounds temporaries to a few tens of MB)
SLAB_VOXELS = 4_000_000


def _check(volume, level, step, workers):
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
    return level, int(step), int(workers)


def _sample_index(n, step):
    idx = np.arange(0, n, step)
    if idx[-1] != n - 1:
        idx = np.append(idx, n - 1)
    return idx


def marching_cubes(volume, level, *, step=1, workers=1, progress=None):
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

    Returns
    -------
    verts : (N, 3) float32
        Vertex positions in index coordinates (axis 0, 1, 2).
    faces : (M, 3) int64
        Triangles wound so normals point from inside to outside.
    """
    level, step, workers = _check(volume, level, step, workers)
    scale = None
    if step > 1:
        scale = [_sample_index(n, step) for n in volume.shape]
        volume = volume[np.ix_(*scale)]
    if min(volume.shape) < 2:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    zn = volume.shape[0]
    plane = volume.shape[1] * volume.shape[2]
    per = max(1, SLAB_VOXELS // plane)
    slabs = [(z, min(z + per, zn - 1)) for z in range(0, zn - 1, per)]
    done = [0]

    def one(slab):
        return _slab(volume, level, *slab, last=slab[1] == zn - 1)

    if workers == 1 or len(slabs) == 1:
        parts = []
        for slab in slabs:
            parts.append(one(slab))
            done[0] += 1
            if progress:
                progress(0.9 * done[0] / len(slabs))
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = []
            for part in pool.map(one, slabs):
                parts.append(part)
                done[0] += 1
                if progress:
                    progress(0.9 * done[0] / len(slabs))
    keys = [np.concatenate([p[0][axis] for p in parts]) for axis in range(3)]
    coords = [np.concatenate([p[1][axis] for p in parts]) for axis in range(3)]
    corner_keys = np.concatenate([p[2] for p in parts])
    corner_axis = np.concatenate([p[3] for p in parts])
    on_voxel = np.concatenate([np.concatenate([p[4][axis] for p in parts]) for axis in range(3)])
    del parts
    offsets = np.cumsum([0] + [len(k) for k in keys])
    verts = np.concatenate(coords) if offsets[-1] else np.zeros((0, 3), np.float32)
    del coords
    faces = _lookup(keys, offsets, corner_keys, corner_axis, workers)
    if (on_voxel >= 0).any():
        verts, faces = _collapse_on_voxel(verts, faces, on_voxel)
    if progress:
        progress(1.0)
    if scale is not None and len(verts):
        verts = _rescale_vertices(verts, scale)
    return verts, faces


def _collapse_on_voxel(verts, faces, on_voxel):
    """Merge the vertices that sit on the same exact-level voxel into one and
    drop the triangles that collapse (zero area): an edge collapse, so the
    mesh stays closed and manifold."""
    idx = np.flatnonzero(on_voxel >= 0)
    _, first, inverse = np.unique(on_voxel[idx], return_index=True, return_inverse=True)
    remap = np.arange(len(verts))
    remap[idx] = idx[first][inverse]
    faces = remap[faces]
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    faces = faces[keep]
    used = np.zeros(len(verts), bool)
    used[faces.ravel()] = True
    new = np.cumsum(used) - 1
    return verts[used], new[faces]


def _lookup(keys, offsets, corner_keys, corner_axis, workers):
    """Turn triangle-corner edge keys into vertex numbers."""
    faces = np.empty(corner_keys.shape, np.int64)
    flat_keys, flat_axis, flat_out = corner_keys.ravel(), corner_axis.ravel(), faces.ravel()

    def per_axis(a):
        sel = np.flatnonzero(flat_axis == a)
        flat_out[sel] = offsets[a] + np.searchsorted(keys[a], flat_keys[sel])

    if workers == 1:
        for a in range(3):
            per_axis(a)
    else:
        with ThreadPoolExecutor(max_workers=min(workers, 3)) as pool:
            list(pool.map(per_axis, range(3)))
    return faces


def _rescale_vertices(verts, scale):
    out = np.empty_like(verts)
    for axis, idx in enumerate(scale):
        out[:, axis] = np.interp(verts[:, axis], np.arange(len(idx)), idx)
    return out


def _inside(volume, z0, z1, level):
    return volume[z0:z1] > level


def _unravel(flat, shape):
    """Coordinates of flat indices into an array of ``shape`` (3-D)."""
    rest, x = np.divmod(flat, shape[2])
    z, y = np.divmod(rest, shape[1])
    return z, y, x


def _slab(volume, level, z0, z1, last):
    """Vertices on edges based in planes [z0, z1) (and plane z1 when last),
    and the triangle corners (as edge keys) of cells based in [z0, z1)."""
    zn, yn, xn = volume.shape
    inside = _inside(volume, z0, z1 + 1, level)  # planes z0..z1
    n = z1 - z0
    flat_planes = n + 1 if last else n  # planes whose x/y edges this slab owns
    keys, coords, corners = [], [], []
    for axis in range(3):
        if axis == 0:
            cross = np.not_equal(inside[:n], inside[1:n + 1])
        elif axis == 1:
            cross = np.not_equal(inside[:flat_planes, :-1, :], inside[:flat_planes, 1:, :])
        else:
            cross = np.not_equal(inside[:flat_planes, :, :-1], inside[:flat_planes, :, 1:])
        flat = np.flatnonzero(cross)
        zz, yy, xx = _unravel(flat, cross.shape)
        del cross, flat
        zz += z0
        v0 = volume[zz, yy, xx].astype(np.float64)
        nb = [zz, yy, xx]
        nb[axis] = nb[axis] + 1
        v1 = volume[nb[0], nb[1], nb[2]].astype(np.float64)
        t = (level - v0) / (v1 - v0)
        pos = np.empty((len(zz), 3), np.float32)
        pos[:, 0], pos[:, 1], pos[:, 2] = zz, yy, xx
        pos[:, axis] += t
        key = (zz * yn + yy) * xn + xx
        # a voxel exactly at the level: the vertex sits on it; remember which
        on_voxel = np.full(len(key), -1, np.int64)
        at0, at1 = v0 == level, v1 == level
        if at0.any() or at1.any():
            step = (yn * xn, xn, 1)[axis]
            on_voxel[at0] = key[at0]
            on_voxel[at1] = key[at1] + step
        keys.append(key)
        coords.append(pos)
        corners.append(on_voxel)
    # cell configurations: corner i = (dz, dy, dx) has bit i = 4 dz + 2 dy + dx
    u = inside.view(np.uint8)
    pair = u[:, :, 1:] << 1  # bit 1: dx = 1
    pair |= u[:, :, :-1]  # bit 0: dx = 0
    del inside, u
    sq = pair[:, 1:] << 2  # bits 2, 3: dy = 1
    sq |= pair[:, :-1]
    del pair
    config = sq[1:] << 4  # bits 4..7: dz = 1
    config |= sq[:-1]
    del sq
    active = config - np.uint8(1)  # 1..254 -> 0..253; 0 and 255 -> 255 and 254
    flat = np.flatnonzero(active < 254)
    del active
    cz, cy, cx = _unravel(flat, config.shape)
    cfg = config.ravel()[flat]
    del config, flat
    cz += z0
    counts = TRI_COUNT[cfg]
    cell = np.repeat(np.arange(len(cfg)), counts)
    slot = np.arange(len(cell)) - np.repeat(np.cumsum(counts) - counts, counts)
    local = TRI_TABLE[cfg[cell], slot]  # (T, 3) local edge ids
    cell_key = (cz[cell] * yn + cy[cell]) * xn + cx[cell]
    corner_keys = cell_key[:, None] + EDGE_KEY_OFFSET(yn, xn)[local]
    return keys, coords, corner_keys, EDGE_AXIS[local], corners


def EDGE_KEY_OFFSET(yn, xn):  # noqa: N802 - a small table, named like one
    """Linear-index offset of each local edge's base corner in a (., yn, xn) grid."""
    return (EDGE_BASE[:, 0] * yn + EDGE_BASE[:, 1]) * xn + EDGE_BASE[:, 2]
