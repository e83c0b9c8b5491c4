# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Compiled mesh shaping: constrained smoothing and the helpers of its volume step.

Built at install time (``setup.py``); the loops run without the GIL, so a
caller may split the vertices of one smoothing step between threads.
Arguments are checked and converted by :mod:`converter.mesh`; shapes and
indices are checked here again so that a wrong call raises instead of
reading past an array.
"""

from libc.math cimport floor, sqrt
from libc.stdint cimport int32_t, int64_t

import numpy as np

ctypedef fused idx_t:
    int32_t
    int64_t


cdef int _check_faces(const idx_t[:, ::1] faces, Py_ssize_t n_verts) except -1:
    cdef Py_ssize_t i, j
    cdef bint bad = False
    if faces.shape[1] != 3:
        raise ValueError("faces must be (m, 3)")
    with nogil:
        for i in range(faces.shape[0]):
            for j in range(3):
                if faces[i, j] < 0 or faces[i, j] >= n_verts:
                    bad = True
    if bad:
        raise ValueError("face indices must lie in [0, number of vertices)")
    return 0


def ring(const idx_t[:, ::1] faces, Py_ssize_t n_verts):
    """The one-ring of each vertex as CSR arrays ``(start (n+1,), neighbours (3m,))``.

    Each face ``a b c`` gives the half-edges a→b, b→c, c→a and a vertex's
    neighbours are the heads of its outgoing half-edges: on a closed,
    consistently oriented surface that is every neighbour exactly once.
    """
    cdef Py_ssize_t m = faces.shape[0], i, j, v
    _check_faces(faces, n_verts)
    start_a = np.zeros(n_verts + 1, np.int64)
    nbr_a = np.empty(3 * m, np.int32 if n_verts < 2**31 else np.int64)
    cdef int64_t[::1] start = start_a
    fill_a = np.empty(n_verts + 1, np.int64)
    cdef int64_t[::1] fill = fill_a
    if nbr_a.dtype == np.int32:
        _fill_ring32(faces, start, fill, nbr_a)
    else:
        _fill_ring64(faces, start, fill, nbr_a)
    return start_a, nbr_a


cdef void _count(const idx_t[:, ::1] faces, int64_t[::1] start, int64_t[::1] fill) noexcept nogil:
    cdef Py_ssize_t i, j, v, n = start.shape[0] - 1
    for i in range(faces.shape[0]):
        for j in range(3):
            start[faces[i, j] + 1] += 1
    for v in range(n):
        start[v + 1] += start[v]
    for v in range(n + 1):
        fill[v] = start[v]


def _fill_ring32(const idx_t[:, ::1] faces, int64_t[::1] start, int64_t[::1] fill,
                 int32_t[::1] nbr):
    cdef Py_ssize_t i, j
    cdef idx_t a
    with nogil:
        _count(faces, start, fill)
        for i in range(faces.shape[0]):
            for j in range(3):
                a = faces[i, j]
                nbr[fill[a]] = <int32_t>faces[i, (j + 1) % 3]
                fill[a] += 1


def _fill_ring64(const idx_t[:, ::1] faces, int64_t[::1] start, int64_t[::1] fill,
                 int64_t[::1] nbr):
    cdef Py_ssize_t i, j
    cdef idx_t a
    with nogil:
        _count(faces, start, fill)
        for i in range(faces.shape[0]):
            for j in range(3):
                a = faces[i, j]
                nbr[fill[a]] = faces[i, (j + 1) % 3]
                fill[a] += 1


def smooth_step(const float[:, ::1] cur, float[:, ::1] nxt, const float[:, ::1] orig,
                const int64_t[::1] start, const idx_t[::1] nbr, double lam,
                const double[::1] half, Py_ssize_t v0, Py_ssize_t v1):
    """One Laplacian step for vertices ``v0:v1``, each kept in its box.

    ``nxt[v] = cur[v] + lam · (mean of the ring − cur[v])``, then clamped per
    axis to the vertex's box, made from where marching cubes put it
    (``orig``, index coordinates): along an axis where it is fractional, the
    grid interval it lies in (the vertex's grid edge); along an axis where it
    is a whole number, ± ``half`` of that axis.
    """
    cdef Py_ssize_t n = cur.shape[0], v, e, k, cnt
    cdef double s[3]
    cdef double p, o, lo, hi
    if (cur.shape[1] != 3 or nxt.shape[0] != n or nxt.shape[1] != 3 or orig.shape[0] != n
            or orig.shape[1] != 3 or start.shape[0] != n + 1 or half.shape[0] != 3
            or not 0 <= v0 <= v1 <= n or start[n] != nbr.shape[0]):
        raise ValueError("smooth_step: arrays of unexpected shapes")
    with nogil:
        for v in range(v0, v1):
            s[0] = s[1] = s[2] = 0.0
            cnt = start[v + 1] - start[v]
            for e in range(start[v], start[v + 1]):
                for k in range(3):
                    s[k] += cur[nbr[e], k]
            for k in range(3):
                p = cur[v, k]
                if cnt:
                    p = p + lam * (s[k] / cnt - p)
                o = orig[v, k]
                lo = floor(o)
                if lo == o:
                    hi = o + half[k]
                    lo = o - half[k]
                else:
                    hi = lo + 1.0
                if p < lo:
                    p = lo
                elif p > hi:
                    p = hi
                nxt[v, k] = <float>p
    return None


def component_measures(const double[:, ::1] verts, const idx_t[:, ::1] faces,
                       const int64_t[::1] labels, Py_ssize_t count):
    """Per component: (6 × signed volume, area), each (count,) float64, about the
    vertices' mean (so far-off meshes lose no precision)."""
    cdef Py_ssize_t n = verts.shape[0], i, k
    cdef double origin[3]
    cdef double a[3]
    cdef double u[3]
    cdef double w[3]
    cdef double x0, x1, x2
    if verts.shape[1] != 3 or labels.shape[0] != faces.shape[0]:
        raise ValueError("component_measures: arrays of unexpected shapes")
    _check_faces(faces, n)
    vol_a = np.zeros(count, np.float64)
    area_a = np.zeros(count, np.float64)
    cdef double[::1] vol6 = vol_a
    cdef double[::1] area = area_a
    for i in range(labels.shape[0]):
        if labels[i] < 0 or labels[i] >= count:
            raise ValueError("labels must lie in [0, count)")
    with nogil:
        origin[0] = origin[1] = origin[2] = 0.0
        for i in range(n):
            for k in range(3):
                origin[k] += verts[i, k]
        if n:
            for k in range(3):
                origin[k] /= n
        for i in range(faces.shape[0]):
            for k in range(3):
                a[k] = verts[faces[i, 0], k] - origin[k]
                u[k] = verts[faces[i, 1], k] - origin[k] - a[k]
                w[k] = verts[faces[i, 2], k] - origin[k] - a[k]
            x0 = u[1] * w[2] - u[2] * w[1]
            x1 = u[2] * w[0] - u[0] * w[2]
            x2 = u[0] * w[1] - u[1] * w[0]
            area[labels[i]] += 0.5 * sqrt(x0 * x0 + x1 * x1 + x2 * x2)
            vol6[labels[i]] += a[0] * x0 + a[1] * x1 + a[2] * x2
    return vol_a, area_a


def normals_and_areas(const double[:, ::1] verts, const idx_t[:, ::1] faces):
    """Per vertex: the unit normal (the area-weighted mean of its faces'; zero when
    they cancel) and a third of the area of its faces: ``(n, 3)`` and ``(n,)``."""
    cdef Py_ssize_t n = verts.shape[0], i, j, k
    cdef double u[3]
    cdef double w[3]
    cdef double x[3]
    cdef double length
    if verts.shape[1] != 3:
        raise ValueError("normals_and_areas: verts must be (n, 3)")
    _check_faces(faces, n)
    normals_a = np.zeros((n, 3), np.float64)
    areas_a = np.zeros(n, np.float64)
    cdef double[:, ::1] normals = normals_a
    cdef double[::1] areas = areas_a
    with nogil:
        for i in range(faces.shape[0]):
            for k in range(3):
                u[k] = verts[faces[i, 1], k] - verts[faces[i, 0], k]
                w[k] = verts[faces[i, 2], k] - verts[faces[i, 0], k]
            x[0] = u[1] * w[2] - u[2] * w[1]
            x[1] = u[2] * w[0] - u[0] * w[2]
            x[2] = u[0] * w[1] - u[1] * w[0]
            length = sqrt(x[0] * x[0] + x[1] * x[1] + x[2] * x[2]) / 6.0
            for j in range(3):
                areas[faces[i, j]] += length
                for k in range(3):
                    normals[faces[i, j], k] += x[k]
        for i in range(n):
            length = sqrt(normals[i, 0] * normals[i, 0] + normals[i, 1] * normals[i, 1]
                          + normals[i, 2] * normals[i, 2])
            if length > 0:
                for k in range(3):
                    normals[i, k] /= length
    return normals_a, areas_a


def degenerate_count(const double[:, ::1] verts, const idx_t[:, ::1] faces, double ratio):
    """Triangles with a repeated vertex, or whose height is at most ``ratio`` × their
    longest side (twice the area ≤ ratio × longest side²)."""
    cdef Py_ssize_t i, k, count = 0
    cdef double u[3]
    cdef double w[3]
    cdef double d[3]
    cdef double x0, x1, x2, lu, lw, ld, longest
    cdef idx_t a, b, c
    if verts.shape[1] != 3:
        raise ValueError("degenerate_count: verts must be (n, 3)")
    _check_faces(faces, verts.shape[0])
    with nogil:
        for i in range(faces.shape[0]):
            a = faces[i, 0]
            b = faces[i, 1]
            c = faces[i, 2]
            if a == b or b == c or a == c:
                count += 1
                continue
            for k in range(3):
                u[k] = verts[b, k] - verts[a, k]
                w[k] = verts[c, k] - verts[a, k]
                d[k] = verts[c, k] - verts[b, k]
            x0 = u[1] * w[2] - u[2] * w[1]
            x1 = u[2] * w[0] - u[0] * w[2]
            x2 = u[0] * w[1] - u[1] * w[0]
            lu = u[0] * u[0] + u[1] * u[1] + u[2] * u[2]
            lw = w[0] * w[0] + w[1] * w[1] + w[2] * w[2]
            ld = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
            longest = lu if lu > lw else lw
            if ld > longest:
                longest = ld
            if sqrt(x0 * x0 + x1 * x1 + x2 * x2) <= ratio * longest:
                count += 1
    return count
