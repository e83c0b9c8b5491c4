# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Compiled mesh measures, topology, STL records and the index → patient map.

Built at install time (``setup.py``); every loop runs without the GIL, so
the report's measures can run beside the STL write on another thread.
Arguments are checked and converted by the callers (:mod:`converter.mesh`,
:mod:`converter.stl`, :class:`converter.volume.Volume`); shapes and indices
are checked here again so that a wrong call raises instead of reading past an
array.
"""

from libc.math cimport INFINITY, floor, sqrt, sqrtf
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport calloc, free, malloc, qsort
from libc.string cimport memcpy

import numpy as np

ctypedef fused idx_t:
    int32_t
    int64_t

ctypedef fused real_t:
    float
    double


cdef int _check_faces(const idx_t[:, ::1] faces, Py_ssize_t n_verts) except -1:
    """Raise unless ``faces`` is (m, 3) with every index in [0, n_verts)."""
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


def measures(const double[:, ::1] verts, const idx_t[:, ::1] faces):
    """(area, 6 × volume, centroid sums (3,), origin (3,)) in float64."""
    cdef Py_ssize_t n = verts.shape[0], i, k
    cdef double origin[3]
    cdef double moment[3]
    cdef double area2 = 0.0, vol6 = 0.0, v6
    cdef double a0, a1, a2, b0, b1, b2, c0, c1, c2, u0, u1, u2, w0, w1, w2, x0, x1, x2
    cdef idx_t fa, fb, fc
    if verts.shape[1] != 3:
        raise ValueError("verts must be (n, 3)")
    _check_faces(faces, n)
    origin[0] = origin[1] = origin[2] = 0.0
    moment[0] = moment[1] = moment[2] = 0.0
    with nogil:
        for i in range(n):
            for k in range(3):
                origin[k] += verts[i, k]
        if n:
            for k in range(3):
                origin[k] /= n
        for i in range(faces.shape[0]):
            fa = faces[i, 0]
            fb = faces[i, 1]
            fc = faces[i, 2]
            a0 = verts[fa, 0] - origin[0]
            a1 = verts[fa, 1] - origin[1]
            a2 = verts[fa, 2] - origin[2]
            b0 = verts[fb, 0] - origin[0]
            b1 = verts[fb, 1] - origin[1]
            b2 = verts[fb, 2] - origin[2]
            c0 = verts[fc, 0] - origin[0]
            c1 = verts[fc, 1] - origin[1]
            c2 = verts[fc, 2] - origin[2]
            u0 = b0 - a0
            u1 = b1 - a1
            u2 = b2 - a2
            w0 = c0 - a0
            w1 = c1 - a1
            w2 = c2 - a2
            x0 = u1 * w2 - u2 * w1
            x1 = u2 * w0 - u0 * w2
            x2 = u0 * w1 - u1 * w0
            area2 += sqrt(x0 * x0 + x1 * x1 + x2 * x2)
            v6 = a0 * x0 + a1 * x1 + a2 * x2
            vol6 += v6
            moment[0] += v6 * (a0 + b0 + c0)
            moment[1] += v6 * (a1 + b1 + c1)
            moment[2] += v6 * (a2 + b2 + c2)
    return (area2 / 2.0, vol6, np.array([moment[0], moment[1], moment[2]]),
            np.array([origin[0], origin[1], origin[2]]))


cdef int _cmp32(const void *a, const void *b) noexcept nogil:
    cdef int32_t x = (<const int32_t *>a)[0], y = (<const int32_t *>b)[0]
    return (x > y) - (x < y)


cdef int _cmp64(const void *a, const void *b) noexcept nogil:
    cdef int64_t x = (<const int64_t *>a)[0], y = (<const int64_t *>b)[0]
    return (x > y) - (x < y)


def edge_counts(const idx_t[:, ::1] faces, Py_ssize_t n_verts, idx_t[::1] start, idx_t[::1] keys):
    """(boundary edges, edges on more than two faces, consistently oriented).

    Every half-edge a→b goes into the bucket of its lower vertex as the key
    2·(higher vertex) + (1 when it runs downwards); a bucket sorted holds each
    undirected edge as one run, whose length is the number of faces on it and
    whose low bits tell whether a direction repeats.  ``start`` (n_verts + 1,
    zeros) and ``keys`` (3 × faces) are work arrays of the faces' type.
    """
    cdef Py_ssize_t m = faces.shape[0], i, j, v, k, lo, hi, jj
    cdef idx_t a, b, key, edge
    cdef idx_t *fill
    cdef Py_ssize_t boundary = 0, nonmanifold = 0, count, down
    cdef bint oriented = True
    _check_faces(faces, n_verts)
    if start.shape[0] != n_verts + 1 or keys.shape[0] != 3 * m:
        raise ValueError("work arrays of the wrong size")
    fill = <idx_t *>malloc((n_verts + 1) * sizeof(idx_t))
    if fill == NULL:
        raise MemoryError
    with nogil:
        for i in range(m):
            for j in range(3):
                a = faces[i, j]
                b = faces[i, (j + 1) % 3]
                start[(a if a < b else b) + 1] += 1
        for v in range(n_verts):
            start[v + 1] += start[v]
        for v in range(n_verts):
            fill[v] = start[v]
        for i in range(m):
            for j in range(3):
                a = faces[i, j]
                b = faces[i, (j + 1) % 3]
                if a <= b:
                    keys[fill[a]] = 2 * b
                    fill[a] += 1
                else:
                    keys[fill[b]] = 2 * a + 1
                    fill[b] += 1
        for v in range(n_verts):
            lo = start[v]
            hi = start[v + 1]
            if hi - lo > 32:
                qsort(&keys[lo], hi - lo, sizeof(idx_t), _cmp32 if idx_t is int32_t else _cmp64)
            else:  # the usual bucket holds about six keys
                for k in range(lo + 1, hi):
                    key = keys[k]
                    jj = k - 1
                    while jj >= lo and keys[jj] > key:
                        keys[jj + 1] = keys[jj]
                        jj -= 1
                    keys[jj + 1] = key
            k = lo
            while k < hi:
                edge = keys[k] >> 1
                count = 0
                down = 0
                while k < hi and keys[k] >> 1 == edge:
                    count += 1
                    down += keys[k] & 1
                    k += 1
                if down > 1 or count - down > 1:
                    oriented = False  # a directed edge repeats
                if count == 1:
                    boundary += 1
                elif count > 2:
                    nonmanifold += 1
    free(fill)
    return boundary, nonmanifold, oriented


cdef inline int64_t _find(int64_t *parent, int64_t v) noexcept nogil:
    cdef int64_t root = v, nxt
    while parent[root] != root:
        root = parent[root]
    while parent[v] != root:  # path compression
        nxt = parent[v]
        parent[v] = root
        v = nxt
    return root


cdef int64_t *_union(const idx_t[:, ::1] faces, Py_ssize_t n_verts) noexcept nogil:
    """Union-find over the faces' vertices; each set's root is its smallest
    vertex.  NULL when out of memory; the caller frees."""
    cdef int64_t *parent = <int64_t *>malloc((n_verts if n_verts else 1) * sizeof(int64_t))
    cdef Py_ssize_t i, j
    cdef int64_t r0, r
    if parent == NULL:
        return NULL
    for i in range(n_verts):
        parent[i] = i
    for i in range(faces.shape[0]):
        r0 = _find(parent, faces[i, 0])
        for j in range(1, 3):
            r = _find(parent, faces[i, j])
            if r != r0:
                if r < r0:
                    parent[r0] = r
                    r0 = r
                else:
                    parent[r] = r0
    return parent


def count_components(const idx_t[:, ::1] faces, Py_ssize_t n_verts):
    """The number of connected components through shared vertices."""
    cdef int64_t *parent
    cdef uint8_t *used
    cdef Py_ssize_t i, count = 0
    cdef int64_t root
    _check_faces(faces, n_verts)
    used = <uint8_t *>calloc(n_verts if n_verts else 1, 1)
    if used == NULL:
        raise MemoryError
    with nogil:
        parent = _union(faces, n_verts)
        if parent != NULL:
            for i in range(faces.shape[0]):
                root = _find(parent, faces[i, 0])
                if not used[root]:
                    used[root] = 1
                    count += 1
    free(used)
    if parent == NULL:
        raise MemoryError
    free(parent)
    return count


def components(const idx_t[:, ::1] faces, Py_ssize_t n_verts):
    """(count, face labels int64): components numbered in the order of their
    smallest vertex, as scipy does."""
    cdef int64_t *parent
    cdef Py_ssize_t i, v, count = 0
    labels_array = np.empty(faces.shape[0], np.int64)
    label_array = np.full(n_verts, -1, np.int64)
    cdef int64_t[::1] labels = labels_array
    cdef int64_t[::1] label_of_root = label_array
    _check_faces(faces, n_verts)
    with nogil:
        parent = _union(faces, n_verts)
        if parent != NULL:
            for i in range(faces.shape[0]):
                label_of_root[_find(parent, faces[i, 0])] = 0  # used
            for v in range(n_verts):
                if label_of_root[v] == 0:
                    label_of_root[v] = count
                    count += 1
            for i in range(faces.shape[0]):
                labels[i] = label_of_root[_find(parent, faces[i, 0])]
    if parent == NULL:
        raise MemoryError
    free(parent)
    return count, labels_array


def bounds(const real_t[:, ::1] verts):
    """(min, max) of the vertices per axis, float64 (inf and -inf when empty)."""
    cdef double lo[3]
    cdef double hi[3]
    cdef double v
    cdef Py_ssize_t i, k
    if verts.shape[1] != 3:
        raise ValueError("verts must be (n, 3)")
    for k in range(3):
        lo[k] = INFINITY
        hi[k] = -INFINITY
    with nogil:
        for i in range(verts.shape[0]):
            for k in range(3):
                v = verts[i, k]
                if v < lo[k]:
                    lo[k] = v
                if v > hi[k]:
                    hi[k] = v
    return np.array([lo[0], lo[1], lo[2]]), np.array([hi[0], hi[1], hi[2]])


def stl_records(const float[:, ::1] verts, const idx_t[:, ::1] faces, uint8_t[:, ::1] out):
    """Fill ``out`` (m, 50) bytes with the binary STL records of ``faces``: each
    triangle's unit normal and corners as float32 in the machine's byte order
    (little-endian, as :mod:`converter.stl` asserts), then a zero attribute word."""
    cdef Py_ssize_t i, k
    cdef idx_t a, b, c
    cdef float rec[12]
    cdef float u0, u1, u2, w0, w1, w2, n0, n1, n2, length
    if verts.shape[1] != 3 or out.shape[1] != 50 or out.shape[0] != faces.shape[0]:
        raise ValueError("verts must be (n, 3) and out (m, 50) for (m, 3) faces")
    _check_faces(faces, verts.shape[0])
    with nogil:
        for i in range(faces.shape[0]):
            a = faces[i, 0]
            b = faces[i, 1]
            c = faces[i, 2]
            for k in range(3):
                rec[3 + k] = verts[a, k]
                rec[6 + k] = verts[b, k]
                rec[9 + k] = verts[c, k]
            u0 = rec[6] - rec[3]
            u1 = rec[7] - rec[4]
            u2 = rec[8] - rec[5]
            w0 = rec[9] - rec[3]
            w1 = rec[10] - rec[4]
            w2 = rec[11] - rec[5]
            n0 = u1 * w2 - u2 * w1
            n1 = u2 * w0 - u0 * w2
            n2 = u0 * w1 - u1 * w0
            length = sqrtf(n0 * n0 + n1 * n1 + n2 * n2)
            if length > 0:
                n0 = n0 / length
                n1 = n1 / length
                n2 = n2 / length
            rec[0] = n0
            rec[1] = n1
            rec[2] = n2
            memcpy(&out[i, 0], rec, 48)  # records are 50 bytes: floats unaligned
            out[i, 48] = 0
            out[i, 49] = 0


def index_to_patient(const real_t[:, ::1] ijk, const double[::1] offset,
                     const double[:, ::1] positions, const double[:, ::1] in_plane,
                     double[:, ::1] out):
    """Indices (+ offset) → patient mm, linear between slices; at least two slices."""
    cdef Py_ssize_t i, j, s
    cdef double k, r, c, k0, t, p0, last
    if (ijk.shape[1] != 3 or offset.shape[0] != 3 or positions.shape[0] < 2
            or positions.shape[1] != 3 or in_plane.shape[0] != 2 or in_plane.shape[1] != 3
            or out.shape[0] != ijk.shape[0] or out.shape[1] != 3):
        raise ValueError("index_to_patient: arrays of unexpected shapes")
    last = positions.shape[0] - 2
    with nogil:
        for i in range(ijk.shape[0]):
            k = ijk[i, 0] + offset[0]
            r = ijk[i, 1] + offset[1]
            c = ijk[i, 2] + offset[2]
            k0 = floor(k)
            if not k0 >= 0.0:  # NaN too: never an index outside the slices
                k0 = 0.0
            if k0 > last:
                k0 = last
            t = k - k0
            s = <Py_ssize_t>k0
            for j in range(3):
                p0 = positions[s, j]
                out[i, j] = p0 + (positions[s + 1, j] - p0) * t + (r * in_plane[0, j]
                                                                   + c * in_plane[1, j])
