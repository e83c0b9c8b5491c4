"""Compiled marching cubes (numba): the mesh of ``marching_numpy``, one pass over planes.

The volume is visited plane by plane (with an optional virtual pad layer
around it, never copied).  Each plane gets an inside mask and, per row, the
first and last inside column; every later step looks only between those
columns, so empty space and solid interiors cost one comparison a voxel.

Vertices are numbered in a fixed order that does not depend on how the
planes are split into slabs: plane by plane, first the crossed x and y edges
of the plane (row by row), then the crossed edges from the plane to the next
one; the cells' extra (centre) vertices come after all edge vertices, layer
by layer.  A slab numbers its own planes; for the first plane of the next
slab it only counts crossings in the same order and writes *boundary codes*
(``-1 - i``) that :func:`_resolve` turns into the next slab's numbers; codes
are int32 until then, so the slabs' buffers stay small.  So
any number of slabs and threads gives exactly the same arrays.
"""

from __future__ import annotations

import queue
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ._jit import njit
from ._mc_tables import (
    AMBIGUOUS,
    CENTRE_LOOP,
    EDGE_AXIS,
    EDGE_BASE,
    FACE_CORNERS,
    TRI_COUNT,
    TRI_TABLE,
)

#: how far (in voxels) a vertex stays from a voxel whose value is the level
T_EPS = 5e-5
#: slab-local vertex codes (int32): own vertices 0, 1, …; the next slab's first
#: plane -1 - i (i < 2**30); the slab's k-th centre vertex CENTRE_CODE - k
CENTRE_CODE = -(1 << 30) - 1
#: boxes up to this many voxels number their vertices in int32 (3 edges a voxel)
INT32_VOXELS = (2**31 - 1) // 3
#: the dtypes the kernel is compiled for; others are converted first
KERNEL_DTYPES = (np.int16, np.int32, np.float32, np.float64)

_TABLES = (
    TRI_TABLE.astype(np.int8),
    TRI_COUNT.astype(np.int8),
    CENTRE_LOOP.astype(np.int16),
    AMBIGUOUS.astype(np.int8),
    FACE_CORNERS.astype(np.int8),
    EDGE_BASE.astype(np.int8),
    EDGE_AXIS.astype(np.int8),
)


@njit
def _value(volume, box, p, padval, z, y, x):
    """The value at virtual (padded) voxel (z, y, x) as float64."""
    zi, yi, xi = z - p, y - p, x - p
    if zi < 0 or yi < 0 or xi < 0 or zi >= box[3] or yi >= box[4] or xi >= box[5]:
        return padval
    return float(volume[box[0] + zi, box[1] + yi, box[2] + xi])


@njit
def _load_plane(volume, box, p, thr, z, mask, first, last):
    """Inside mask of virtual plane ``z`` and each row's first/last inside column.

    ``mask`` rows are longer than the plane (a multiple of 8 bytes, read as
    words); the bytes past the plane stay 0 (outside).
    """
    ny = mask.shape[0]
    nx = box[5] + 2 * p
    zi = z - p
    for y in range(ny):
        yi = y - p
        row = mask[y]
        if zi < 0 or zi >= box[3] or yi < 0 or yi >= box[4]:
            row[:] = 0
            first[y] = nx
            last[y] = -1
            continue
        src = volume[box[0] + zi, box[1] + yi, box[2]:box[2] + box[5]]
        if p:
            row[0] = 0
        for x in range(box[5]):
            row[x + p] = src[x] > thr
        row[box[5] + p:] = 0
        f = nx
        for x in range(nx):
            if row[x]:
                f = x
                break
        first[y] = f
        if f == nx:
            last[y] = -1
        else:
            for x in range(nx - 1, f - 1, -1):
                if row[x]:
                    last[y] = x
                    break


@njit
def _edge_point(volume, box, p, padval, level, z, y, x, axis):
    """Where the level crosses the edge from virtual voxel (z, y, x) along ``axis``."""
    v0 = _value(volume, box, p, padval, z, y, x)
    if axis == 0:
        v1 = _value(volume, box, p, padval, z + 1, y, x)
    elif axis == 1:
        v1 = _value(volume, box, p, padval, z, y + 1, x)
    else:
        v1 = _value(volume, box, p, padval, z, y, x + 1)
    t = (level - v0) / (v1 - v0)
    if t < T_EPS:
        t = T_EPS
    elif t > 1.0 - T_EPS:
        t = 1.0 - T_EPS
    return t


@njit
def _reserve(a, n):
    """``a`` with room for at least ``n`` rows (doubling, so growth is amortized)."""
    if n <= a.shape[0]:
        return a
    b = np.empty((max(n, 2 * a.shape[0]), a.shape[1]), a.dtype)
    b[: a.shape[0]] = a
    return b


@njit
def _put_vertex(verts, n, volume, box, p, padval, level, z, y, x, axis):
    t = _edge_point(volume, box, p, padval, level, z, y, x, axis)
    verts[n, 0] = np.float32(z - p + t) if axis == 0 else np.float32(z - p)
    verts[n, 1] = np.float32(y - p + t) if axis == 1 else np.float32(y - p)
    verts[n, 2] = np.float32(x - p + t) if axis == 2 else np.float32(x - p)


@njit
def _next_word(row, i):
    return row[i + 1] if i + 1 < row.shape[0] else np.uint64(0)


@njit
def _shifted(row, i):
    """Word ``i`` of a row of mask bytes moved down one byte: byte j holds byte j + 1."""
    return (row[i] >> np.uint64(8)) | (_next_word(row, i) << np.uint64(56))


@njit
def _number_plane(volume, box, p, padval, level, z, words, first, last, ids_x, ids_y,
                  own, verts, nv):
    """Number the crossed x and y edges of virtual plane ``z``, row by row.

    ``words``: the plane's mask rows as 64-bit words (8 columns each), so runs
    of equal bytes are skipped 8 at a time.  ``own``: store vertices and give
    them numbers from ``nv`` on; otherwise write boundary codes ``-1 - i``
    (the next slab's numbers).
    """
    ny = words.shape[0]
    nx = box[5] + 2 * p
    nb = 0
    for y in range(ny):
        if own:
            verts = _reserve(verts, nv + 2 * nx)
        if last[y] >= 0:  # x edges of row y: byte x differs from byte x + 1
            row = words[y]
            for i in range(max(first[y] - 1, 0) >> 3, (min(last[y], nx - 2) >> 3) + 1):
                d = row[i] ^ _shifted(row, i)
                if d == 0:
                    continue
                for j in range(8):
                    x = 8 * i + j
                    if (d >> np.uint64(8 * j)) & np.uint64(0xFF) and x <= nx - 2:
                        if own:
                            _put_vertex(verts, nv, volume, box, p, padval, level, z, y, x, 2)
                            ids_x[y, x] = nv
                            nv += 1
                        else:
                            ids_x[y, x] = -1 - nb
                            nb += 1
        if y + 1 < ny:  # y edges from row y to row y + 1
            lo = min(first[y], first[y + 1])
            hi = max(last[y], last[y + 1])
            if hi < 0:
                continue
            r0, r1 = words[y], words[y + 1]
            for i in range(lo >> 3, (hi >> 3) + 1):
                d = r0[i] ^ r1[i]
                if d == 0:
                    continue
                for j in range(8):
                    if (d >> np.uint64(8 * j)) & np.uint64(0xFF):
                        x = 8 * i + j
                        if own:
                            _put_vertex(verts, nv, volume, box, p, padval, level, z, y, x, 1)
                            ids_y[y, x] = nv
                            nv += 1
                        else:
                            ids_y[y, x] = -1 - nb
                            nb += 1
    return verts, nv


@njit
def _number_between(volume, box, p, padval, level, z, words_a, first_a, last_a, words_b,
                    first_b, last_b, ids_z, verts, nv):
    """Number the crossed edges from virtual plane ``z`` to plane ``z + 1``."""
    ny = words_a.shape[0]
    for y in range(ny):
        lo = min(first_a[y], first_b[y])
        hi = max(last_a[y], last_b[y])
        if hi < 0:
            continue
        verts = _reserve(verts, nv + hi - lo + 8)
        ra, rb = words_a[y], words_b[y]
        for i in range(lo >> 3, (hi >> 3) + 1):
            d = ra[i] ^ rb[i]
            if d == 0:
                continue
            for j in range(8):
                if (d >> np.uint64(8 * j)) & np.uint64(0xFF):
                    x = 8 * i + j
                    _put_vertex(verts, nv, volume, box, p, padval, level, z, y, x, 0)
                    ids_z[y, x] = nv
                    nv += 1
    return verts, nv


@njit
def _centre(volume, box, p, padval, level, z, y, x, corner, loop, edge_base, edge_axis):
    """The extra vertex of a cell: the mean of its loop's vertices, then
    Newton steps on the cell's trilinear field (as ``marching_numpy``)."""
    total0 = 0.0
    total1 = 0.0
    total2 = 0.0
    count = 0
    for k in range(12):
        if not (loop >> k) & 1:
            continue
        dz, dy, dx, axis = edge_base[k, 0], edge_base[k, 1], edge_base[k, 2], edge_axis[k]
        t = _edge_point(volume, box, p, padval, level, z + dz, y + dy, x + dx, axis)
        total0 += np.float32(z + dz - p + t) if axis == 0 else np.float32(z + dz - p)
        total1 += np.float32(y + dy - p + t) if axis == 1 else np.float32(y + dy - p)
        total2 += np.float32(x + dx - p + t) if axis == 2 else np.float32(x + dx - p)
        count += 1
    u = total0 / count - (z - p)
    v = total1 / count - (y - p)
    w = total2 / count - (x - p)
    c = corner  # c[4 dz + 2 dy + dx]
    for _ in range(8):
        aw00 = c[0] * (1 - w) + c[1] * w
        aw01 = c[2] * (1 - w) + c[3] * w
        aw10 = c[4] * (1 - w) + c[5] * w
        aw11 = c[6] * (1 - w) + c[7] * w
        av0 = aw00 * (1 - v) + aw01 * v
        av1 = aw10 * (1 - v) + aw11 * v
        f = av0 * (1 - u) + av1 * u - level
        gu = av1 - av0
        gv = (aw01 - aw00) * (1 - u) + (aw11 - aw10) * u
        gw = (((c[1] - c[0]) * (1 - v) + (c[3] - c[2]) * v) * (1 - u)
              + ((c[5] - c[4]) * (1 - v) + (c[7] - c[6]) * v) * u)
        norm2 = gu * gu + gv * gv + gw * gw
        step = f / norm2 if norm2 > 1e-30 else 0.0
        u = min(max(u - step * gu, 0.0), 1.0)
        v = min(max(v - step * gv, 0.0), 1.0)
        w = min(max(w - step * gw, 0.0), 1.0)
    return (np.float32(u + (z - p)), np.float32(v + (y - p)), np.float32(w + (x - p)))


@njit
def _cells(volume, box, p, padval, level, z, mask_a, words_a, first_a, last_a, mask_b, words_b,
           first_b, last_b, ids_x_a, ids_y_a, ids_x_b, ids_y_b, ids_z, faces, nf, centres, nc,
           tri_table, tri_count, centre_loop, ambiguous, face_corners, edge_base, edge_axis):
    """Triangles of the cells between virtual planes ``z`` and ``z + 1``."""
    ny = mask_a.shape[0]
    nx = box[5] + 2 * p
    corner = np.empty(8, np.float64)
    for y in range(ny - 1):
        lo = min(min(first_a[y], first_a[y + 1]), min(first_b[y], first_b[y + 1]))
        hi = max(max(last_a[y], last_a[y + 1]), max(last_b[y], last_b[y + 1]))
        if hi < 0:
            continue
        lo = max(lo - 1, 0)
        hi = min(hi, nx - 2)
        faces = _reserve(faces, nf + tri_table.shape[2] * (hi - lo + 1))
        centres = _reserve(centres, nc + hi - lo + 1)
        a0, a1, b0, b1 = words_a[y], words_a[y + 1], words_b[y], words_b[y + 1]
        for i in range(lo >> 3, (hi >> 3) + 1):
            # a cell is active unless its 8 corners agree: the 4 rows agree at x
            # and at x + 1, and the first row does not change from x to x + 1
            differ = (a0[i] ^ a1[i]) | (a0[i] ^ b0[i]) | (a0[i] ^ b1[i])
            nxt = (_next_word(a0, i) ^ _next_word(a1, i)) | (_next_word(a0, i) ^ _next_word(b0, i)) \
                | (_next_word(a0, i) ^ _next_word(b1, i))
            active = (differ | (differ >> np.uint64(8)) | (nxt << np.uint64(56))
                      | (a0[i] ^ _shifted(a0, i)))
            if active == 0:
                continue
            for j in range(8):
                x = 8 * i + j
                if not (active >> np.uint64(8 * j)) & np.uint64(0xFF) or x > hi:
                    continue
                cfg = (mask_a[y, x] | (mask_a[y, x + 1] << 1) | (mask_a[y + 1, x] << 2)
                       | (mask_a[y + 1, x + 1] << 3) | (mask_b[y, x] << 4)
                       | (mask_b[y, x + 1] << 5) | (mask_b[y + 1, x] << 6)
                       | (mask_b[y + 1, x + 1] << 7))
                amb = ambiguous[cfg]
                loaded = False
                joined = 0
                if amb:
                    for k in range(8):
                        corner[k] = _value(volume, box, p, padval, z + (k >> 2), y + ((k >> 1) & 1),
                                           x + (k & 1))
                    loaded = True
                    for f in range(6):
                        if (amb >> f) & 1:
                            a = corner[face_corners[f, 0]]
                            b = corner[face_corners[f, 1]]
                            c = corner[face_corners[f, 2]]
                            d = corner[face_corners[f, 3]]
                            if (a * c - b * d) / (a + c - b - d) > level:
                                joined |= 1 << f
                centre_id = 0
                loop = centre_loop[cfg, joined]
                if loop:
                    if not loaded:
                        for k in range(8):
                            corner[k] = _value(volume, box, p, padval, z + (k >> 2),
                                               y + ((k >> 1) & 1), x + (k & 1))
                    cu, cv, cw = _centre(volume, box, p, padval, level, z, y, x, corner, loop,
                                         edge_base, edge_axis)
                    centres[nc, 0] = cu
                    centres[nc, 1] = cv
                    centres[nc, 2] = cw
                    centre_id = CENTRE_CODE - nc
                    nc += 1
                n = tri_count[cfg, joined]
                for s in range(n):
                    for m in range(3):
                        e = tri_table[cfg, joined, s, m]
                        if e == 12:
                            vid = centre_id
                        elif e < 4:  # edges along axis 0
                            vid = ids_z[y + (e >> 1), x + (e & 1)]
                        elif e < 8:  # along axis 1
                            dx = edge_base[e, 2]
                            vid = ids_y_a[y, x + dx] if edge_base[e, 0] == 0 else ids_y_b[y, x + dx]
                        else:  # along axis 2
                            dy = edge_base[e, 1]
                            vid = ids_x_a[y + dy, x] if edge_base[e, 0] == 0 else ids_x_b[y + dy, x]
                        faces[nf, m] = vid
                    nf += 1
    return faces, nf, centres, nc


@njit
def _slab(volume, box, p, padval, thr, level, z0, z1, last_slab, work, verts, nv, faces, nf,
          centres, nc, tri_table, tri_count, centre_loop, ambiguous, face_corners, edge_base,
          edge_axis):
    """Vertices and triangles of the cells between virtual planes z0 and z1.

    ``box`` = (offset z, y, x, size z, y, x): the part of ``volume`` to mesh.
    ``work``: the plane buffers of :func:`_workspace`, reused slab after slab
    (fresh memory is slow to touch on some machines).  Vertices, faces and
    centre vertices are appended to the given buffers after their first
    ``nv``, ``nf``, ``nc`` rows (own vertices are numbered from ``nv`` on);
    the buffers grow when full.

    Returns (edge vertices, count, faces, count, centre vertices, count).
    """
    masks, words, firsts, lasts, ids_x, ids_y, ids_z = work
    a = 0
    _load_plane(volume, box, p, thr, z0, masks[a], firsts[a], lasts[a])
    verts, nv = _number_plane(volume, box, p, padval, level, z0, words[a], firsts[a], lasts[a],
                              ids_x[a], ids_y[a], True, verts, nv)
    for z in range(z0, z1):
        b = 1 - a
        _load_plane(volume, box, p, thr, z + 1, masks[b], firsts[b], lasts[b])
        verts, nv = _number_between(volume, box, p, padval, level, z, words[a], firsts[a], lasts[a],
                                    words[b], firsts[b], lasts[b], ids_z, verts, nv)
        own = z + 1 < z1 or last_slab
        verts, nv = _number_plane(volume, box, p, padval, level, z + 1, words[b], firsts[b],
                                  lasts[b], ids_x[b], ids_y[b], own, verts, nv)
        faces, nf, centres, nc = _cells(
            volume, box, p, padval, level, z, masks[a], words[a], firsts[a], lasts[a], masks[b],
            words[b], firsts[b], lasts[b], ids_x[a], ids_y[a], ids_x[b], ids_y[b], ids_z, faces,
            nf, centres, nc, tri_table, tri_count, centre_loop, ambiguous, face_corners,
            edge_base, edge_axis)
        a = b
    return verts, nv, faces, nf, centres, nc


@njit
def _resolve(codes, out, own_offset, next_offset, centre_offset):
    """Slab vertex codes → global vertex numbers (``out`` may be ``codes``)."""
    for i in range(codes.shape[0]):
        for j in range(3):
            c = codes[i, j]
            if c >= 0:
                out[i, j] = own_offset + c
            elif c > CENTRE_CODE:
                out[i, j] = next_offset + (-1 - c)
            else:
                out[i, j] = centre_offset + (CENTRE_CODE - c)


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


def _workspace(ny, nx):
    """Plane buffers for :func:`_slab`: masks (rows padded to whole 64-bit
    words, the spare bytes 0) and their word view, row bounds, edge numbers."""
    row_words = nx // 8 + 1  # at least one spare byte past the plane, read as 0
    masks = np.zeros((2, ny, 8 * row_words), np.uint8)
    words = masks.view(np.uint64)
    return (masks, words, np.empty((2, ny), np.int64), np.empty((2, ny), np.int64),
            np.empty((2, ny, nx), np.int32), np.empty((2, ny, nx), np.int32),
            np.empty((ny, nx), np.int32))


def _kernel_input(volume, level, pad):
    """The volume in a compiled dtype, its box, the inside test's threshold, the pad value."""
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
    if volume.dtype.kind == "f":
        # compare in the volume's own precision, as numpy does with a Python float
        thr = volume.dtype.type(level)
    else:
        thr = np.int64(np.floor(level))  # integers: v > level  <=>  v > floor(level)
    base, box = _base_and_box(volume)
    if not base.dtype.isnative:
        base, box = base.astype(base.dtype.newbyteorder("=")), box
    padval = float(pad) if pad is not None else float(level)
    return base, box, thr, padval


def extract(volume, level, *, pad=None, workers=1, progress=None, slab_voxels=4_000_000):
    """Marching cubes with the compiled kernel (arguments checked by the caller).

    Returns ``(verts, faces)`` as :func:`converter.marching.marching_cubes`.
    """
    volume, box, thr, padval = _kernel_input(volume, level, pad)
    p = 1 if pad is not None else 0
    nz, ny, nx = (n + 2 * p for n in box[3:])
    per = max(1, slab_voxels // (ny * nx))
    # vertex numbers are int32 (at most 3 per voxel) unless the box is huge: then
    # each slab numbers its own and the faces come out int64
    huge = nz * ny * nx > INT32_VOXELS
    if huge:
        per = max(1, min(per, INT32_VOXELS // (ny * nx) - 1))
    slabs = [(z, min(z + per, nz - 1)) for z in range(0, nz - 1, per)]

    if not huge and (workers == 1 or len(slabs) == 1):
        verts, faces = _one_thread(volume, box, p, padval, thr, level, slabs, nz, ny, nx, progress)
    else:
        verts, faces = _threads(volume, box, p, padval, thr, level, slabs, nz, ny, nx, workers,
                                progress, np.int64 if huge else np.int32)
    if progress:
        progress(1.0)
    return verts, faces


def _one_thread(volume, box, p, padval, thr, level, slabs, nz, ny, nx, progress):
    """Slab after slab into one set of growing buffers: no per-slab copies, and
    the buffers' untouched tails cost nothing.  Codes are resolved in place."""
    work = _workspace(ny, nx)
    verts = np.empty((1 << 16, 3), np.float32)
    faces = np.empty((1 << 17, 3), np.int32)
    centres = np.empty((64, 3), np.float32)
    nv = nf = nc = 0
    ends = []  # per slab: (faces so far, vertices so far)
    for k, (z0, z1) in enumerate(slabs):
        if k == 1:  # guess the totals from the first slab: at most one early regrowth
            scale = 1.25 * len(slabs)
            verts = _reserve(verts, int(nv * scale))
            faces = _reserve(faces, int(nf * scale))
        verts, nv, faces, nf, centres, nc = _slab(
            volume, box, p, padval, thr, level, z0, z1, z1 == nz - 1, work, verts, nv, faces, nf,
            centres, nc, *_TABLES)
        ends.append((nf, nv))
        if progress:
            progress(0.9 * (k + 1) / len(slabs))
    verts = _reserve(verts, nv + nc)
    verts[nv:nv + nc] = centres[:nc]
    start = 0
    for end, edges_so_far in ends:  # boundary codes point past this slab's own vertices
        _resolve(faces[start:end], faces[start:end], 0, edges_so_far, nv)
        start = end
    return verts[:nv + nc], faces[:nf]


def _threads(volume, box, p, padval, thr, level, slabs, nz, ny, nx, workers, progress, index):
    """Slabs on threads, each into its own buffers, then one concatenation."""
    spare = queue.SimpleQueue()  # one workspace per thread, reused across its slabs
    for _ in range(min(workers, len(slabs))):
        spare.put([_workspace(ny, nx), (0, 0)])

    def one(slab):
        held = spare.get()
        work, (nv, nf) = held
        try:
            part = _slab(volume, box, p, padval, thr, level, slab[0], slab[1], slab[1] == nz - 1,
                         work, np.empty((max(nv + nv // 4, 1 << 10), 3), np.float32), 0,
                         np.empty((max(nf + nf // 4, 1 << 11), 3), np.int32), 0,
                         np.empty((16, 3), np.float32), 0, *_TABLES)
            held[1] = (part[1], part[3])  # the next slab's first guess
            return part
        finally:
            spare.put(held)

    parts = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for part in pool.map(one, slabs):
            parts.append(part)
            if progress:
                progress(0.9 * len(parts) / len(slabs))
    edge_offset = np.concatenate([[0], np.cumsum([part[1] for part in parts])])
    face_offset = np.concatenate([[0], np.cumsum([part[3] for part in parts])])
    centre_offset = edge_offset[-1] + np.concatenate([[0], np.cumsum([part[5] for part in parts])])
    verts = np.empty((int(centre_offset[-1]), 3), np.float32)
    faces = np.empty((int(face_offset[-1]), 3), index)
    for k in range(len(parts)):
        v, nv, f, nf, c, nc = parts[k]
        parts[k] = None  # each slab's buffers go as soon as they are copied
        verts[edge_offset[k]:edge_offset[k + 1]] = v[:nv]
        verts[centre_offset[k]:centre_offset[k + 1]] = c[:nc]
        _resolve(f[:nf], faces[face_offset[k]:face_offset[k + 1]], edge_offset[k],
                 edge_offset[k + 1], centre_offset[k])
        del v, f, c
    return verts, faces


def warm_up():
    """Compile (or load from the cache) the kernel for int16 volumes."""
    vol = np.zeros((3, 3, 3), np.int16)
    vol[1, 1, 1] = 2
    extract(vol, 1.0, pad=0.0)
