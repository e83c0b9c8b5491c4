"""Marching cubes in numpy alone: the reference the compiled kernel
(:mod:`converter.marching`) is held to, mesh for mesh.

Two passes over slabs of the volume, each slab vectorized with numpy:

1. **Vertices**: for each axis, the grid edges whose ends lie on opposite
   sides of the level (one comparison and an XOR per slab) each give exactly
   one vertex, linearly interpolated.  A vertex is identified by its edge's
   key (the linear index of the edge's base voxel, per axis), so vertices are
   shared by every cell around the edge: the mesh comes out welded.
2. **Faces**: each active cell's configuration (8 inside bits) indexes the
   triangle table of :mod:`converter._marching_tables`; triangle corners are local
   edges, turned into global edge keys and then into vertex numbers with one
   ``searchsorted`` per axis.

Slabs are independent within a pass and results are concatenated in slab
order, so running them on several threads (numpy releases the GIL in these
operations) gives exactly the same mesh as one thread.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from converter._marching_tables import (
    AMBIGUOUS,
    CENTRE_LOOP,
    EDGE_AXIS,
    EDGE_BASE,
    FACE_CORNERS,
    TRI_COUNT,
    TRI_TABLE,
)

#: how far (in voxels) a vertex stays from a voxel whose value is the level
_T_EPS = 5e-5
#: voxels per slab (the kernel's ``SLAB_VOXELS``)
SLAB_VOXELS = 4_000_000


def marching_cubes(volume, level, *, workers=1, progress=None, pad=None):
    """:func:`converter.marching.marching_cubes` (without ``step``), in numpy:
    ``pad`` pads a copy of the volume.  Faces come out int64."""
    level = float(level)
    if pad is not None:
        value = pad if volume.dtype.kind == "f" else int(np.floor(pad))  # integers: still outside
        if volume.dtype.kind in "iu" and not np.can_cast(np.min_scalar_type(value), volume.dtype):
            volume = volume.astype(np.promote_types(volume.dtype, np.min_scalar_type(value)))
        volume = np.pad(volume, 1, mode="constant", constant_values=value)
    if min(volume.shape) < 2:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    verts, faces = extract(volume, level, workers=workers, progress=progress)
    if pad is not None:
        verts -= np.float32(1.0)
    return verts, faces


def extract(volume, level, *, workers=1, progress=None):
    """Marching cubes over the whole of ``volume``: ``(verts, faces)``."""
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
    keys = [np.concatenate([p[0][axis] for p in parts]) for axis in range(4)]
    coords = [np.concatenate([p[1][axis] for p in parts]) for axis in range(3)]
    centre_loops = np.concatenate([p[1][3] for p in parts])
    corner_keys = np.concatenate([p[2] for p in parts])
    corner_axis = np.concatenate([p[3] for p in parts])
    del parts
    offsets = np.cumsum([0] + [len(k) for k in keys])
    coords.append(np.zeros((len(keys[3]), 3), np.float32))
    verts = np.concatenate(coords) if offsets[-1] else np.zeros((0, 3), np.float32)
    del coords
    faces = _lookup(keys, offsets, corner_keys, corner_axis, workers)
    if len(keys[3]):
        verts[offsets[3]:] = _place_centres(volume, level, keys, offsets, verts, centre_loops)
    if progress:
        progress(1.0)
    return verts, faces


def _lookup(keys, offsets, corner_keys, corner_axis, workers):
    """Turn triangle-corner edge keys into vertex numbers."""
    faces = np.empty(corner_keys.shape, np.int64)
    flat_keys, flat_axis, flat_out = corner_keys.ravel(), corner_axis.ravel(), faces.ravel()

    def per_axis(a):
        sel = np.flatnonzero(flat_axis == a)
        flat_out[sel] = offsets[a] + np.searchsorted(keys[a], flat_keys[sel])

    if workers == 1:
        for a in range(4):
            per_axis(a)
    else:
        with ThreadPoolExecutor(max_workers=min(workers, 4)) as pool:
            list(pool.map(per_axis, range(4)))
    return faces


def _place_centres(volume, level, keys, offsets, verts, loops):
    """Put each cell's extra vertex on the isosurface: start at the mean of
    its loop's vertices, then Newton steps on the cell's trilinear field."""
    zn, yn, xn = volume.shape
    cell = keys[3]
    cz, rest = np.divmod(cell, yn * xn)
    cy, cx = np.divmod(rest, xn)
    total = np.zeros((len(cell), 3))
    count = np.zeros(len(cell))
    offset = EDGE_KEY_OFFSET(yn, xn)
    for k in range(12):
        sel = np.flatnonzero((loops >> k) & 1)
        if not len(sel):
            continue
        a = EDGE_AXIS[k]
        ids = offsets[a] + np.searchsorted(keys[a], cell[sel] + offset[k])
        total[sel] += verts[ids]
        count[sel] += 1
    p = total / count[:, None] - np.stack([cz, cy, cx], axis=1)  # local, in [0, 1]^3
    c = np.empty((len(cell), 8))
    for i in range(8):
        c[:, i] = volume[cz + (i >> 2 & 1), cy + (i >> 1 & 1), cx + (i & 1)]
    c = c.reshape(-1, 2, 2, 2)
    for _ in range(8):
        u, v, w = p[:, 0], p[:, 1], p[:, 2]
        along_w = c[..., 0] * (1 - w)[:, None, None] + c[..., 1] * w[:, None, None]
        along_v = along_w[..., 0] * (1 - v)[:, None] + along_w[..., 1] * v[:, None]
        f = along_v[:, 0] * (1 - u) + along_v[:, 1] * u - level
        gu = along_v[:, 1] - along_v[:, 0]
        gv = (along_w[:, 0, 1] - along_w[:, 0, 0]) * (1 - u) + (along_w[:, 1, 1] - along_w[:, 1, 0]) * u
        dw = c[..., 1] - c[..., 0]
        gw = ((dw[:, 0, 0] * (1 - v) + dw[:, 0, 1] * v) * (1 - u)
              + (dw[:, 1, 0] * (1 - v) + dw[:, 1, 1] * v) * u)
        g = np.stack([gu, gv, gw], axis=1)
        norm2 = (g * g).sum(axis=1)
        step = np.where(norm2 > 1e-30, f / np.maximum(norm2, 1e-30), 0.0)
        p = np.clip(p - step[:, None] * g, 0.0, 1.0)
    return (p + np.stack([cz, cy, cx], axis=1)).astype(np.float32)


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
    keys, coords = [], []
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
        # a voxel exactly at the level keeps its vertex a hair off the voxel,
        # so triangles never collapse (and stay distinct in float32)
        t = np.clip((level - v0) / (v1 - v0), _T_EPS, 1 - _T_EPS)
        pos = np.empty((len(zz), 3), np.float32)
        pos[:, 0], pos[:, 1], pos[:, 2] = zz, yy, xx
        pos[:, axis] += t
        keys.append((zz * yn + yy) * xn + xx)
        coords.append(pos)
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
    joined = _face_decisions(volume, level, cz, cy, cx, cfg)
    counts = TRI_COUNT[cfg, joined]
    cell = np.repeat(np.arange(len(cfg)), counts)
    slot = np.arange(len(cell)) - np.repeat(np.cumsum(counts) - counts, counts)
    local = TRI_TABLE[cfg[cell], joined[cell], slot]  # (T, 3) local edge ids
    cell_key = (cz[cell] * yn + cy[cell]) * xn + cx[cell]
    corner_keys = cell_key[:, None] + EDGE_KEY_OFFSET(yn, xn)[local]
    loops = CENTRE_LOOP[cfg, joined]
    centred = np.flatnonzero(loops)
    keys.append((cz[centred] * yn + cy[centred]) * xn + cx[centred])  # "axis 3": cell centres
    coords.append(loops[centred])  # placed later, among these edges' vertices
    return keys, coords, corner_keys, EDGE_AXIS[local]


def _face_decisions(volume, level, cz, cy, cx, cfg):
    """Asymptotic decider: for cells with ambiguous faces, bit f set when the
    bilinear saddle of face f lies inside (its inside corners are joined)."""
    joined = np.zeros(len(cfg), np.int64)
    amb = AMBIGUOUS[cfg]
    sel = np.flatnonzero(amb)
    if not len(sel):
        return joined
    corners = np.empty((len(sel), 8), np.float64)
    for i in range(8):
        corners[:, i] = volume[cz[sel] + (i >> 2 & 1), cy[sel] + (i >> 1 & 1), cx[sel] + (i & 1)]
    bits = np.zeros(len(sel), np.int64)
    for f in range(6):
        a, b, c, d = (corners[:, k] for k in FACE_CORNERS[f])
        denom = a + c - b - d
        with np.errstate(divide="ignore", invalid="ignore"):
            saddle = (a * c - b * d) / denom
        bits |= (((amb[sel] >> f) & 1).astype(bool) & (saddle > level)).astype(np.int64) << f
    joined[sel] = bits
    return joined


def EDGE_KEY_OFFSET(yn, xn):
    """Linear-index offset of each local edge's base corner in a (., yn, xn) grid."""
    return (EDGE_BASE[:, 0] * yn + EDGE_BASE[:, 1]) * xn + EDGE_BASE[:, 2]
