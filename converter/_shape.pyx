# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Compiled mesh shaping: constrained smoothing, its volume step and its untangling, decimation.

Built at install time (``setup.py``); the loops run without the GIL, so a
caller may split the vertices of one smoothing step between threads.
Arguments are checked and converted by :mod:`converter.mesh`; shapes and
indices are checked here again so that a wrong call raises instead of
reading past an array.
"""

from libc.math cimport fabs, floor, sqrt
from libc.math cimport pow as cpow
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport free, malloc, realloc

import numpy as np

ctypedef fused idx_t:
    int32_t
    int64_t

ctypedef fused out_t:  # a ring's neighbour indices: int32 below 2**31 vertices
    int32_t
    int64_t


cdef int _check_faces(const idx_t[:, ::1] faces, Py_ssize_t n_verts) except -1:
    """Raise unless ``faces`` is (m, 3) with every index in [0, n_verts) (what
    ``_mesh``'s own check says, by numpy's reductions here)."""
    if faces.shape[1] != 3:
        raise ValueError("faces must be (m, 3)")
    found = np.asarray(faces)
    if found.size and (found.min() < 0 or found.max() >= n_verts):
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
    _fill_ring(faces, start, fill, nbr_a)
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


def _fill_ring(const idx_t[:, ::1] faces, int64_t[::1] start, int64_t[::1] fill,
               out_t[::1] nbr, bint of_faces=False):
    """A counting sort of the half-edges by their tail: into ``nbr`` each
    one's head (the ring), or with ``of_faces`` its face (:func:`star`)."""
    cdef Py_ssize_t i, j
    cdef idx_t a
    with nogil:
        _count(faces, start, fill)
        for i in range(faces.shape[0]):
            for j in range(3):
                a = faces[i, j]
                nbr[fill[a]] = <out_t>i if of_faces else <out_t>faces[i, (j + 1) % 3]
                fill[a] += 1


def smooth_step(const float[:, ::1] cur, float[:, ::1] nxt, const float[:, ::1] orig,
                const int64_t[::1] start, const idx_t[::1] nbr, double lam,
                const double[::1] half, double margin, Py_ssize_t v0, Py_ssize_t v1):
    """One Laplacian step for vertices ``v0:v1``, each kept in its box.

    ``nxt[v] = cur[v] + lam · (mean of the ring − cur[v])``, then clamped per
    axis to the vertex's box, made from where marching cubes put it
    (``orig``, index coordinates): along an axis where it is fractional, the
    grid interval it lies in (the vertex's grid edge) less ``margin`` at
    each end (but never excluding ``orig``), so it stays strictly between the
    samples inside and outside; along an axis where it is a whole number,
    ± ``half`` of that axis.
    """
    cdef Py_ssize_t n = cur.shape[0], v, e, k, cnt
    cdef double s[3]
    cdef float x, y, z
    cdef double w
    cdef const float *q
    if (cur.shape[1] != 3 or nxt.shape[0] != n or nxt.shape[1] != 3 or orig.shape[0] != n
            or orig.shape[1] != 3 or start.shape[0] != n + 1 or half.shape[0] != 3
            or not 0 <= v0 <= v1 <= n or start[n] != nbr.shape[0]):
        raise ValueError("smooth_step: arrays of unexpected shapes")
    with nogil:
        for v in range(v0, v1):
            x = y = z = 0.0  # a ring's sum in float32: a few values of like size
            cnt = start[v + 1] - start[v]
            for e in range(start[v], start[v + 1]):
                q = &cur[nbr[e], 0]
                x += q[0]
                y += q[1]
                z += q[2]
            q = &cur[v, 0]
            if cnt:
                w = lam / cnt
                s[0] = q[0] + (w * x - lam * q[0])
                s[1] = q[1] + (w * y - lam * q[1])
                s[2] = q[2] + (w * z - lam * q[2])
            else:
                s[0] = q[0]
                s[1] = q[1]
                s[2] = q[2]
            _into_box(s, &orig[v, 0], &half[0], margin)
            for k in range(3):
                nxt[v, k] = <float>s[k]
    return None


cdef inline double _floor(double x) noexcept nogil:
    """floor(x) without the library call (x well inside the int64 range)."""
    cdef double t = <double>(<int64_t>x)
    return t - 1.0 if t > x else t


cdef inline void _into_box(double *p, const float *o, const double *half,
                           double margin) noexcept nogil:
    """``p`` clamped to the box of a vertex that marching cubes put at ``o``
    (see :func:`smooth_step`).  Near either end of its edge (within
    ``margin``) the box narrows across the edge too, to nothing at the end:
    there the surface passes through a sample at the level, often where
    several sheets meet, and the vertex stays where the data put it."""
    cdef int k, edge = -1
    cdef double lo, hi, f, ok, taper = 1.0
    cdef double base[3]
    for k in range(3):
        base[k] = _floor(o[k])
        f = o[k] - base[k]
        if f != 0:
            edge = k
            if margin > 0:
                f = f if f < 1.0 - f else 1.0 - f
                if f < margin:
                    taper = f / margin
    for k in range(3):
        ok = o[k]
        if k == edge:
            lo = base[k] + margin
            hi = base[k] + 1.0 - margin
            if ok < lo:
                lo = ok
            if ok > hi:
                hi = ok
        else:
            lo = ok - taper * half[k]
            hi = ok + taper * half[k]
        if p[k] < lo:
            p[k] = lo
        elif p[k] > hi:
            p[k] = hi


def part_volumes(const float[:, ::1] verts, const idx_t[:, ::1] faces,
                 const int64_t[::1] labels, const double[::1] origin,
                 const uint8_t[::1] wanted, double[::1] vol6, Py_ssize_t f0, Py_ssize_t f1):
    """Add 6 × the signed volume of faces ``f0:f1``, about ``origin``, to their
    component's entry of ``vol6``, for the components that are ``wanted``
    (the volume step's sums; a thread per range, each with its own ``vol6``)."""
    cdef Py_ssize_t i, k, count = vol6.shape[0]
    cdef double a[3]
    cdef double u[3]
    cdef double w[3]
    cdef int64_t c
    if (verts.shape[1] != 3 or labels.shape[0] != faces.shape[0] or origin.shape[0] != 3
            or wanted.shape[0] != count or not 0 <= f0 <= f1 <= faces.shape[0]):
        raise ValueError("part_volumes: arrays of unexpected shapes")
    with nogil:
        for i in range(f0, f1):
            c = labels[i]
            if not wanted[c]:
                continue
            for k in range(3):
                a[k] = verts[faces[i, 0], k] - origin[k]
                u[k] = verts[faces[i, 1], k] - origin[k] - a[k]
                w[k] = verts[faces[i, 2], k] - origin[k] - a[k]
            vol6[c] += (a[0] * (u[1] * w[2] - u[2] * w[1])
                        + a[1] * (u[2] * w[0] - u[0] * w[2])
                        + a[2] * (u[0] * w[1] - u[1] * w[0]))
    return None


def restore_setup(const float[:, ::1] after, const float[:, ::1] before,
                  const idx_t[:, ::1] faces, const int64_t[::1] labels,
                  const int64_t[::1] start, const out_t[::1] star, float[:, ::1] normal,
                  float[::1] weight, int64_t[::1] vlabel, Py_ssize_t v0, Py_ssize_t v1):
    """For vertices ``v0:v1``: the unit normal of ``after`` (area-weighted over
    the vertex's faces, from their ``start``/``star`` CSR), the distance from
    ``before`` and the component.  Returns the largest distance."""
    cdef Py_ssize_t n = after.shape[0], v, e, g, k
    cdef double x[3]
    cdef double u[3]
    cdef double w[3]
    cdef double d, wmax = 0.0
    if (after.shape[1] != 3 or before.shape[0] != n or normal.shape[0] != n
            or weight.shape[0] != n or vlabel.shape[0] != n or start.shape[0] != n + 1
            or not 0 <= v0 <= v1 <= n):
        raise ValueError("restore_setup: arrays of unexpected shapes")
    with nogil:
        for v in range(v0, v1):
            x[0] = x[1] = x[2] = 0.0
            for e in range(start[v], start[v + 1]):
                g = star[e]
                for k in range(3):
                    u[k] = after[faces[g, 1], k] - after[faces[g, 0], k]
                    w[k] = after[faces[g, 2], k] - after[faces[g, 0], k]
                x[0] += u[1] * w[2] - u[2] * w[1]
                x[1] += u[2] * w[0] - u[0] * w[2]
                x[2] += u[0] * w[1] - u[1] * w[0]
            d = sqrt(x[0] * x[0] + x[1] * x[1] + x[2] * x[2])
            for k in range(3):
                normal[v, k] = <float>(x[k] / d) if d > 0 else 0.0
            vlabel[v] = labels[star[start[v]]] if start[v + 1] > start[v] else 0
            d = 0.0
            for k in range(3):
                d += (after[v, k] - before[v, k]) * (after[v, k] - before[v, k])
            weight[v] = <float>sqrt(d)
            if weight[v] > wmax:
                wmax = weight[v]
    return wmax


def part_reach(const float[:, ::1] after, const idx_t[:, ::1] faces,
               const int64_t[::1] labels, const float[::1] weight, double[::1] reach,
               Py_ssize_t f0, Py_ssize_t f1):
    """Add, for faces ``f0:f1``, a third of each face's area times the sum of
    its corners' ``weight`` to its component's ``reach`` (how much volume a
    unit shift moves)."""
    cdef Py_ssize_t i, k
    cdef double u[3]
    cdef double w[3]
    cdef double x0, x1, x2
    if (after.shape[1] != 3 or labels.shape[0] != faces.shape[0]
            or weight.shape[0] != after.shape[0] or not 0 <= f0 <= f1 <= faces.shape[0]):
        raise ValueError("part_reach: arrays of unexpected shapes")
    with nogil:
        for i in range(f0, f1):
            for k in range(3):
                u[k] = after[faces[i, 1], k] - after[faces[i, 0], k]
                w[k] = after[faces[i, 2], k] - after[faces[i, 0], k]
            x0 = u[1] * w[2] - u[2] * w[1]
            x1 = u[2] * w[0] - u[0] * w[2]
            x2 = u[0] * w[1] - u[1] * w[0]
            reach[labels[i]] += (sqrt(x0 * x0 + x1 * x1 + x2 * x2) / 6.0
                                 * (weight[faces[i, 0]] + weight[faces[i, 1]]
                                    + weight[faces[i, 2]]))
    return None


def restore_shift(float[:, ::1] after, const float[:, ::1] normal, const float[::1] weight,
                  float[::1] moved, const int64_t[::1] vlabel, const double[::1] scale,
                  double limit, const float[:, ::1] orig, const double[::1] half,
                  double margin, bint clamp, Py_ssize_t v0, Py_ssize_t v1):
    """One pass of the volume step for vertices ``v0:v1``: each moves
    ``scale[part] × weight`` along its normal, at most ``limit`` in all
    (``moved`` keeps count), then (``clamp``) back into its box around ``orig``."""
    cdef Py_ssize_t n = after.shape[0], v, k
    cdef double s, room
    cdef double p[3]
    if (after.shape[1] != 3 or normal.shape[0] != n or weight.shape[0] != n
            or moved.shape[0] != n or vlabel.shape[0] != n or orig.shape[0] != n
            or half.shape[0] != 3 or not 0 <= v0 <= v1 <= n):
        raise ValueError("restore_shift: arrays of unexpected shapes")
    with nogil:
        for v in range(v0, v1):
            s = scale[vlabel[v]]
            if s == 0:
                continue
            s = s * weight[v]
            room = limit - moved[v]
            if room < 0:
                room = 0
            if s > room:
                s = room
            elif s < -room:
                s = -room
            moved[v] += <float>fabs(s)
            for k in range(3):
                p[k] = after[v, k] + normal[v, k] * s
            if clamp:
                _into_box(p, &orig[v, 0], &half[0], margin)
            for k in range(3):
                after[v, k] = <float>p[k]
    return None


def star(const idx_t[:, ::1] faces, Py_ssize_t n_verts):
    """Each vertex's faces as CSR arrays ``(start (n+1,), faces (3m,))``."""
    _check_faces(faces, n_verts)
    start_a = np.zeros(n_verts + 1, np.int64)
    star_a = np.empty(3 * faces.shape[0], np.int64 if 3 * faces.shape[0] >= 2**31 else np.int32)
    fill_a = np.empty(n_verts + 1, np.int64)
    _fill_ring(faces, start_a, fill_a, star_a, True)
    return start_a, star_a


def normals_and_areas(const double[:, ::1] verts, const idx_t[:, ::1] faces,
                      normals_out=None, areas_out=None):
    """Per vertex: the unit normal (the area-weighted mean of its faces'; zero when
    they cancel) and a third of the area of its faces, ``(n, 3)`` and ``(n,)``
    float64, into ``normals_out`` and ``areas_out`` when given (work arrays a
    caller keeps: fresh memory is slow to touch on some machines)."""
    cdef Py_ssize_t n = verts.shape[0], i, j, k
    normals_a = np.empty((n, 3), np.float64) if normals_out is None else normals_out
    areas_a = np.empty(n, np.float64) if areas_out is None else areas_out
    cdef double[:, ::1] normals = normals_a
    cdef double[::1] areas = areas_a
    cdef double u[3]
    cdef double w[3]
    cdef double x[3]
    cdef double length
    if (verts.shape[1] != 3 or normals.shape[0] != n or normals.shape[1] != 3
            or areas.shape[0] != n):
        raise ValueError("normals_and_areas: arrays of unexpected shapes")
    _check_faces(faces, n)
    with nogil:
        for i in range(n):
            areas[i] = 0.0
            for k in range(3):
                normals[i, k] = 0.0
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


# --------------------------------------------------------------------------- decimation
#
# Quadric edge collapse after Garland & Heckbert, scheduled as in Sven
# Forstmann's Fast-Quadric-Mesh-Simplification (the algorithm fast-simplification
# wraps): passes over the triangles with a rising error threshold, each
# collapsing the edges below it whose triangles are not touched yet in that
# pass.  Unlike it, a collapse is made only when the mesh stays a closed
# 2-manifold: the edge lies on exactly two triangles, its ends share exactly
# the two opposite vertices (the link condition), and neither opposite vertex
# would be left with fewer than three triangles; no triangle around may flip
# or become a sliver.  Collapses keep every triangle's winding.



cdef struct Ref:
    int32_t tid
    int32_t tvertex


cdef struct Work:
    double *v          # (n, 3) positions
    double *q          # (n, 10) quadrics
    int32_t *tri       # (m, 3)
    double *err        # (m, 4): three edges' errors and their minimum
    double *normal     # (m, 3)
    uint8_t *deleted   # (m,)
    uint8_t *dirty     # (m,)
    int32_t *tstart    # (n,)
    int32_t *tcount    # (n,)
    int32_t *mark      # (n,) stamps for the link test
    int32_t stamp
    Ref *refs
    Py_ssize_t nrefs, caprefs
    Py_ssize_t n, m
    # the guard (``collapse(..., guard=True)``): every live triangle in each cell
    # of a hashed grid that its box touches, entries appended as triangles move
    double cell        # the grid's cell side
    int64_t mask       # buckets - 1 (a power of two)
    int32_t *head      # (mask + 1,) a bucket's first entry, -1 for none
    int32_t *etid      # an entry's triangle
    int32_t *enext     # the next entry in its bucket
    Py_ssize_t ne, ecap, enough  # entries, room, how many before a rebuild
    bint regrid        # a triangle touched too many cells: rebuild soon
    int32_t *tstamp    # (m,) the last look a triangle was met in
    int32_t tcur
    double cells_per   # the cell side in mean triangle box sides
    int32_t *spare_tid # the packing's second buffers (ecap each)
    int32_t *spare_next
    Py_ssize_t spare_cap
    float *tbox        # (m, 6) a triangle's box: lo, hi
    int32_t *trange    # (m, 6) the cells it is in: first and last along each axis
    float *star        # (scap, STAR_FLOATS) scratch: the triangles a collapse moves
    int32_t *sid       # (scap, 2) their corners other than the merged one
    Py_ssize_t scap
    float cand[9]
    float pair[18]



cdef inline double _qdet(const double *q, int a11, int a12, int a13, int a21, int a22,
                         int a23, int a31, int a32, int a33) noexcept nogil:
    return (q[a11] * q[a22] * q[a33] + q[a13] * q[a21] * q[a32] + q[a12] * q[a23] * q[a31]
            - q[a13] * q[a22] * q[a31] - q[a11] * q[a23] * q[a32] - q[a12] * q[a21] * q[a33])


cdef inline double _qerror(const double *q, double x, double y, double z) noexcept nogil:
    return (q[0] * x * x + 2 * q[1] * x * y + 2 * q[2] * x * z + 2 * q[3] * x + q[4] * y * y
            + 2 * q[5] * y * z + 2 * q[6] * y + q[7] * z * z + 2 * q[8] * z + q[9])


cdef double _edge_error(Work *w, int32_t a, int32_t b, double *p) noexcept nogil:
    """The error of collapsing a–b and where the merged vertex goes (``p``)."""
    cdef double q[10]
    cdef double det, e1, e2, e3, mx, my, mz, dx, dy, dz, length2
    cdef int k
    for k in range(10):
        q[k] = w.q[10 * a + k] + w.q[10 * b + k]
    mx = 0.5 * (w.v[3 * a] + w.v[3 * b])
    my = 0.5 * (w.v[3 * a + 1] + w.v[3 * b + 1])
    mz = 0.5 * (w.v[3 * a + 2] + w.v[3 * b + 2])
    dx = w.v[3 * a] - w.v[3 * b]
    dy = w.v[3 * a + 1] - w.v[3 * b + 1]
    dz = w.v[3 * a + 2] - w.v[3 * b + 2]
    length2 = dx * dx + dy * dy + dz * dz
    det = _qdet(q, 0, 1, 2, 1, 4, 5, 2, 5, 7)
    if det != 0:
        p[0] = -1.0 / det * _qdet(q, 1, 2, 3, 4, 5, 6, 5, 7, 8)
        p[1] = 1.0 / det * _qdet(q, 0, 2, 3, 1, 5, 6, 2, 7, 8)
        p[2] = -1.0 / det * _qdet(q, 0, 1, 3, 1, 4, 6, 2, 5, 8)
        dx = p[0] - mx
        dy = p[1] - my
        dz = p[2] - mz
        if dx * dx + dy * dy + dz * dz <= length2:  # near the edge: the optimum
            return _qerror(q, p[0], p[1], p[2])
    # flat or far off: the better of the ends and the middle
    e1 = _qerror(q, w.v[3 * a], w.v[3 * a + 1], w.v[3 * a + 2])
    e2 = _qerror(q, w.v[3 * b], w.v[3 * b + 1], w.v[3 * b + 2])
    e3 = _qerror(q, mx, my, mz)
    if e3 <= e1 and e3 <= e2:
        p[0] = mx
        p[1] = my
        p[2] = mz
        return e3
    if e1 <= e2:
        p[0] = w.v[3 * a]
        p[1] = w.v[3 * a + 1]
        p[2] = w.v[3 * a + 2]
        return e1
    p[0] = w.v[3 * b]
    p[1] = w.v[3 * b + 1]
    p[2] = w.v[3 * b + 2]
    return e2


cdef void _triangle_errors(Work *w, Py_ssize_t t) noexcept nogil:
    cdef double p[3]
    cdef int j
    cdef double e, lowest = 1e300
    for j in range(3):
        e = _edge_error(w, w.tri[3 * t + j], w.tri[3 * t + (j + 1) % 3], p)
        w.err[4 * t + j] = e
        if e < lowest:
            lowest = e
    w.err[4 * t + 3] = lowest


cdef void _face_normal(Work *w, Py_ssize_t t, double *n) noexcept nogil:
    cdef double *a = &w.v[3 * w.tri[3 * t]]
    cdef double *b = &w.v[3 * w.tri[3 * t + 1]]
    cdef double *c = &w.v[3 * w.tri[3 * t + 2]]
    cdef double ux = b[0] - a[0], uy = b[1] - a[1], uz = b[2] - a[2]
    cdef double vx = c[0] - a[0], vy = c[1] - a[1], vz = c[2] - a[2]
    cdef double length
    n[0] = uy * vz - uz * vy
    n[1] = uz * vx - ux * vz
    n[2] = ux * vy - uy * vx
    length = sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2])
    if length > 0:
        n[0] /= length
        n[1] /= length
        n[2] /= length


cdef int _rebuild_refs(Work *w) noexcept nogil:
    """Drop deleted triangles and rebuild every vertex's list of triangles;
    -1 when out of memory."""
    cdef Py_ssize_t t, live = 0, j, v
    cdef int32_t x
    for t in range(w.m):
        if not w.deleted[t]:
            if live != t:
                for j in range(3):
                    w.tri[3 * live + j] = w.tri[3 * t + j]
                for j in range(4):
                    w.err[4 * live + j] = w.err[4 * t + j]
                for j in range(3):
                    w.normal[3 * live + j] = w.normal[3 * t + j]
            w.deleted[live] = 0
            live += 1
    w.m = live
    for v in range(w.n):
        w.tcount[v] = 0
    for t in range(w.m):
        for j in range(3):
            w.tcount[w.tri[3 * t + j]] += 1
    x = 0
    for v in range(w.n):
        w.tstart[v] = x
        x += w.tcount[v]
        w.tcount[v] = 0
    if 3 * w.m > w.caprefs:
        free(w.refs)
        w.caprefs = 3 * w.m + 1
        w.refs = <Ref *>malloc(w.caprefs * sizeof(Ref))
        if w.refs == NULL:
            return -1
    for t in range(w.m):
        for j in range(3):
            v = w.tri[3 * t + j]
            w.refs[w.tstart[v] + w.tcount[v]].tid = <int32_t>t
            w.refs[w.tstart[v] + w.tcount[v]].tvertex = <int32_t>j
            w.tcount[v] += 1
    w.nrefs = 3 * w.m
    return 0


cdef int _push_ref(Work *w, Ref r) noexcept nogil:
    cdef Ref *grown
    if w.nrefs == w.caprefs:
        grown = <Ref *>realloc(w.refs, 2 * w.caprefs * sizeof(Ref))
        if grown == NULL:
            return -1
        w.refs = grown
        w.caprefs *= 2
    w.refs[w.nrefs] = r
    w.nrefs += 1
    return 0


cdef bint _flips(Work *w, const double *p, int32_t i0, int32_t i1, uint8_t *gone,
                 int *shared) noexcept nogil:
    """Whether moving ``i0`` to ``p`` flips or flattens one of its triangles that
    stay; marks in ``gone`` those on the edge (they go) and counts them."""
    cdef Py_ssize_t k
    cdef Ref r
    cdef int32_t t, s, id1, id2
    cdef double d1[3]
    cdef double d2[3]
    cdef double n[3]
    cdef double l1, l2, ln
    cdef int j
    shared[0] = 0
    for k in range(w.tcount[i0]):
        r = w.refs[w.tstart[i0] + k]
        t = r.tid
        gone[k] = 0
        if w.deleted[t]:
            continue
        s = r.tvertex
        id1 = w.tri[3 * t + (s + 1) % 3]
        id2 = w.tri[3 * t + (s + 2) % 3]
        if id1 == i1 or id2 == i1:
            gone[k] = 1
            shared[0] += 1
            continue
        for j in range(3):
            d1[j] = w.v[3 * id1 + j] - p[j]
            d2[j] = w.v[3 * id2 + j] - p[j]
        l1 = sqrt(d1[0] * d1[0] + d1[1] * d1[1] + d1[2] * d1[2])
        l2 = sqrt(d2[0] * d2[0] + d2[1] * d2[1] + d2[2] * d2[2])
        if l1 == 0 or l2 == 0:
            return True
        for j in range(3):
            d1[j] /= l1
            d2[j] /= l2
        if fabs(d1[0] * d2[0] + d1[1] * d2[1] + d1[2] * d2[2]) > 0.999:
            return True  # a sliver
        n[0] = d1[1] * d2[2] - d1[2] * d2[1]
        n[1] = d1[2] * d2[0] - d1[0] * d2[2]
        n[2] = d1[0] * d2[1] - d1[1] * d2[0]
        ln = sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2])
        if ln == 0:
            return True
        if (n[0] * w.normal[3 * t] + n[1] * w.normal[3 * t + 1]
                + n[2] * w.normal[3 * t + 2]) / ln < 0.2:
            return True  # turns over (or nearly)
    return False


cdef int _live_valence(Work *w, int32_t v) noexcept nogil:
    cdef Py_ssize_t k
    cdef int count = 0
    for k in range(w.tcount[v]):
        if not w.deleted[w.refs[w.tstart[v] + k].tid]:
            count += 1
    return count


cdef bint _link_ok(Work *w, int32_t i0, int32_t i1) noexcept nogil:
    """The link condition: the ends of i0–i1 share exactly two neighbours (the
    edge's opposite vertices), each of which keeps at least three triangles."""
    cdef Py_ssize_t k
    cdef Ref r
    cdef int32_t t, s, x, opposite[2]
    cdef int common = 0, j
    w.stamp += 2
    for k in range(w.tcount[i0]):
        r = w.refs[w.tstart[i0] + k]
        t = r.tid
        if w.deleted[t]:
            continue
        s = r.tvertex
        w.mark[w.tri[3 * t + (s + 1) % 3]] = w.stamp
        w.mark[w.tri[3 * t + (s + 2) % 3]] = w.stamp
    for k in range(w.tcount[i1]):
        r = w.refs[w.tstart[i1] + k]
        t = r.tid
        if w.deleted[t]:
            continue
        s = r.tvertex
        for j in range(1, 3):
            x = w.tri[3 * t + (s + j) % 3]
            if x != i0 and w.mark[x] == w.stamp:
                w.mark[x] = w.stamp + 1  # counted once
                if common < 2:
                    opposite[common] = x
                common += 1
    if common != 2:
        return False
    return _live_valence(w, opposite[0]) > 3 and _live_valence(w, opposite[1]) > 3


cdef int _move_triangles(Work *w, int32_t i0, int32_t v, const uint8_t *gone,
                         Py_ssize_t *removed) noexcept nogil:
    """Triangles of ``v`` after the collapse into ``i0``: those on the edge go,
    the rest now use ``i0`` and get new errors; their references are appended."""
    cdef Py_ssize_t k
    cdef Ref r
    cdef int32_t t
    for k in range(w.tcount[v]):
        r = w.refs[w.tstart[v] + k]
        t = r.tid
        if w.deleted[t]:
            continue
        if gone[k]:
            w.deleted[t] = 1
            removed[0] += 1
            continue
        w.tri[3 * t + r.tvertex] = i0
        w.dirty[t] = 1
        _triangle_errors(w, t)
        _face_normal(w, t, &w.normal[3 * t])
        if _push_ref(w, r) < 0:
            return -1
    return 0


cdef void _plane_quadrics(Work *w) noexcept nogil:
    cdef Py_ssize_t t, j, k
    cdef double n[3]
    cdef double d, qq[10]
    cdef int32_t v
    for k in range(10 * w.n):
        w.q[k] = 0.0
    for t in range(w.m):
        _face_normal(w, t, n)
        for j in range(3):
            w.normal[3 * t + j] = n[j]
        v = w.tri[3 * t]
        d = -(n[0] * w.v[3 * v] + n[1] * w.v[3 * v + 1] + n[2] * w.v[3 * v + 2])
        qq[0] = n[0] * n[0]
        qq[1] = n[0] * n[1]
        qq[2] = n[0] * n[2]
        qq[3] = n[0] * d
        qq[4] = n[1] * n[1]
        qq[5] = n[1] * n[2]
        qq[6] = n[1] * d
        qq[7] = n[2] * n[2]
        qq[8] = n[2] * d
        qq[9] = d * d
        for j in range(3):
            v = w.tri[3 * t + j]
            for k in range(10):
                w.q[10 * v + k] += qq[k]


# The guard: a collapse is refused when a triangle it moves would cross a
# triangle that shares no corner with it (the test of :func:`crossings`, on
# the float32 positions that test reads), so no collapse folds the surface
# through a near sheet, joined to it by an edge or not.  The triangles are
# kept in a hashed grid, rebuilt when the triangles are renumbered or the
# appended entries pile up.

#: the grid's cell side in mean triangle box sides, when most collapses are
#: guarded and when few are (measured on the benchmark CT and spongy bone)
cdef double GUARD_ALL_CELL = 1.5
cdef double GUARD_FEW_CELL = 5.0


cdef enum:
    GUARD_CELLS = 512  # a triangle whose box touches more cells asks for a coarser grid
    STAR_FLOATS = 15   # a moved triangle: 9 corner floats and its box


cdef inline int64_t _bucket(Work *w, int64_t ix, int64_t iy, int64_t iz) noexcept nogil:
    return ((ix * 73856093) ^ (iy * 19349663) ^ (iz * 83492791)) & w.mask


cdef inline void _box(const float *c, double *lo, double *hi) noexcept nogil:
    """The box of the triangle whose corners are c[0:3], c[3:6], c[6:9]."""
    cdef int k
    for k in range(3):
        lo[k] = fmin3(c[k], c[3 + k], c[6 + k])
        hi[k] = fmax3(c[k], c[3 + k], c[6 + k])


cdef inline void _corners(Work *w, Py_ssize_t t, float *c) noexcept nogil:
    cdef int j, k
    for j in range(3):
        for k in range(3):
            c[3 * j + k] = <float>w.v[3 * w.tri[3 * t + j] + k]


cdef int _grow_entries(Work *w) noexcept nogil:
    cdef Py_ssize_t cap = w.ecap
    if _grow(<void **>&w.etid, &cap, sizeof(int32_t)) < 0:
        return -1
    cap = w.ecap
    if _grow(<void **>&w.enext, &cap, sizeof(int32_t)) < 0:
        return -1
    w.ecap = cap
    return 0


cdef int _grid_insert(Work *w, int32_t t, bint fresh) noexcept nogil:
    """Triangle ``t`` into every cell its box touches, unless (not ``fresh``)
    it is in all of them already; -1 when out of memory."""
    cdef float c[9]
    cdef double lo[3]
    cdef double hi[3]
    cdef int64_t a[3]
    cdef int64_t z[3]
    cdef int64_t ix, iy, iz, b
    cdef int k
    _corners(w, t, c)
    _box(c, lo, hi)
    for k in range(3):
        w.tbox[6 * t + k] = <float>lo[k]
        w.tbox[6 * t + 3 + k] = <float>hi[k]
        a[k] = <int64_t>floor(lo[k] / w.cell)
        z[k] = <int64_t>floor(hi[k] / w.cell)
    if not fresh:
        for k in range(3):
            if a[k] < w.trange[6 * t + k] or z[k] > w.trange[6 * t + 3 + k]:
                break
        else:
            return 0  # moved within the cells it is in
    for k in range(3):
        w.trange[6 * t + k] = <int32_t>a[k]
        w.trange[6 * t + 3 + k] = <int32_t>z[k]
    if (z[0] - a[0] + 1) * (z[1] - a[1] + 1) * (z[2] - a[2] + 1) > GUARD_CELLS:
        w.regrid = True
    for ix in range(a[0], z[0] + 1):
        for iy in range(a[1], z[1] + 1):
            for iz in range(a[2], z[2] + 1):
                if w.ne == w.ecap and _grow_entries(w) < 0:
                    return -1
                b = _bucket(w, ix, iy, iz)
                w.etid[w.ne] = t
                w.enext[w.ne] = w.head[b]
                w.head[b] = <int32_t>w.ne
                w.ne += 1
    return 0


cdef int _grid_build(Work *w) noexcept nogil:
    """The grid of the live triangles anew: cells ``cells_per`` times their
    mean box side (a coarser grid when one touched too many cells); -1 when
    out of memory."""
    cdef Py_ssize_t t, live = 0, buckets = 1024
    cdef double side = 0.0, s
    cdef double lo[3]
    cdef double hi[3]
    cdef float c[9]
    cdef int k
    cdef int32_t *grown
    for t in range(w.m):
        if not w.deleted[t]:
            _corners(w, t, c)
            _box(c, lo, hi)
            s = 0.0
            for k in range(3):
                if hi[k] - lo[k] > s:
                    s = hi[k] - lo[k]
            side += s
            live += 1
    side = w.cells_per * side / live if live else 1.0
    if w.regrid and w.cell * 2 > side:
        side = w.cell * 2
    w.cell = side if side > 0 else 1.0
    w.regrid = False
    while buckets < 2 * live:
        buckets *= 2
    if buckets - 1 != w.mask:
        grown = <int32_t *>realloc(w.head, buckets * sizeof(int32_t))
        if grown == NULL:
            return -1
        w.head = grown
        w.mask = buckets - 1
    for t in range(buckets):
        w.head[t] = -1
    w.ne = 0
    for t in range(w.m):
        if not w.deleted[t] and _grid_insert(w, <int32_t>t, True) < 0:
            return -1
    w.enough = 4 * w.ne + 1024  # then a rebuild drops the entries of moved triangles
    return _grid_pack(w)


cdef int _grid_pack(Work *w) noexcept nogil:
    """Each bucket's entries next to each other, in bucket order (a look then
    reads memory in order); -1 when out of memory."""
    cdef int32_t *tid
    cdef int32_t *nxt
    cdef Py_ssize_t b, pos = 0
    cdef int32_t e
    if w.spare_cap != w.ecap:  # the buffers are swapped, not made anew each time
        free(w.spare_tid)
        free(w.spare_next)
        w.spare_tid = <int32_t *>malloc(w.ecap * sizeof(int32_t))
        w.spare_next = <int32_t *>malloc(w.ecap * sizeof(int32_t))
        w.spare_cap = w.ecap
        if w.spare_tid == NULL or w.spare_next == NULL:
            return -1
    tid = w.spare_tid
    nxt = w.spare_next
    for b in range(w.mask + 1):
        e = w.head[b]
        if e < 0:
            continue
        w.head[b] = <int32_t>pos
        while e >= 0:
            tid[pos] = w.etid[e]
            nxt[pos] = <int32_t>(pos + 1)
            pos += 1
            e = w.enext[e]
        nxt[pos - 1] = -1
    w.spare_tid = w.etid
    w.spare_next = w.enext
    w.etid = tid
    w.enext = nxt
    return 0


cdef inline bint _has_corner(Work *w, int32_t t, int32_t x, int32_t y) noexcept nogil:
    cdef int j
    for j in range(3):
        if w.tri[3 * t + j] == x or w.tri[3 * t + j] == y:
            return True
    return False


cdef bint _guard_crosses(Work *w, int32_t i0, int32_t i1, const double *p,
                         const uint8_t *gone0, const uint8_t *gone1) noexcept nogil:
    """Whether merging ``i1`` into ``i0`` at ``p`` would bring a triangle that
    stays through one that shares no corner with it (True also when there is
    no memory to look: the collapse is then not made)."""
    cdef float *c
    cdef float *box
    cdef int32_t fa[3]
    cdef int32_t fb[3]
    cdef float lo[3]
    cdef float hi[3]
    cdef int64_t a[3]
    cdef int64_t z[3]
    cdef int64_t ix, iy, iz
    cdef int32_t v, t, x, u, e
    cdef const uint8_t *gone
    cdef Py_ssize_t k, ns = 0, need = w.tcount[i0] + w.tcount[i1]
    cdef int side, j, q
    if need > w.scap:
        free(w.star)
        free(w.sid)
        w.scap = 2 * need
        w.star = <float *>malloc(w.scap * STAR_FLOATS * sizeof(float))
        w.sid = <int32_t *>malloc(w.scap * 2 * sizeof(int32_t))
        if w.star == NULL or w.sid == NULL:
            free(w.star)
            free(w.sid)
            w.star = NULL
            w.sid = NULL
            w.scap = 0
            return True
    for j in range(3):
        fa[j] = j
        fb[j] = 3 + j
        lo[j] = 3.4e38
        hi[j] = -3.4e38
    # the triangles that stay, as they will be: 9 corners' floats and their box,
    # and their two corners other than the merged one
    for side in range(2):
        v = i0 if side == 0 else i1
        gone = gone0 if side == 0 else gone1
        for k in range(w.tcount[v]):
            t = w.refs[w.tstart[v] + k].tid
            if w.deleted[t] or gone[k]:
                continue
            c = &w.star[STAR_FLOATS * ns]
            q = 0
            for j in range(3):
                x = w.tri[3 * t + j]
                if x == i0 or x == i1:
                    c[3 * j] = <float>p[0]
                    c[3 * j + 1] = <float>p[1]
                    c[3 * j + 2] = <float>p[2]
                else:
                    c[3 * j] = <float>w.v[3 * x]
                    c[3 * j + 1] = <float>w.v[3 * x + 1]
                    c[3 * j + 2] = <float>w.v[3 * x + 2]
                    w.sid[2 * ns + q] = x
                    q += 1
            for j in range(3):
                c[9 + j] = fmin3(c[j], c[3 + j], c[6 + j])
                c[12 + j] = fmax3(c[j], c[3 + j], c[6 + j])
                if c[9 + j] < lo[j]:
                    lo[j] = c[9 + j]
                if c[12 + j] > hi[j]:
                    hi[j] = c[12 + j]
            ns += 1
    for q in range(3):
        a[q] = <int64_t>floor(lo[q] / w.cell)
        z[q] = <int64_t>floor(hi[q] / w.cell)
    if w.tcur == 2147483647:
        for x in range(w.m):
            w.tstamp[x] = 0
        w.tcur = 0
    w.tcur += 1
    # every triangle in the cells of their union box, once
    for ix in range(a[0], z[0] + 1):
        for iy in range(a[1], z[1] + 1):
            for iz in range(a[2], z[2] + 1):
                e = w.head[_bucket(w, ix, iy, iz)]
                while e >= 0:
                    u = w.etid[e]
                    e = w.enext[e]
                    box = &w.tbox[6 * u]
                    if (box[0] > hi[0] or box[1] > hi[1] or box[2] > hi[2]
                            or box[3] < lo[0] or box[4] < lo[1] or box[5] < lo[2]
                            or w.tstamp[u] == w.tcur):
                        continue
                    w.tstamp[u] = w.tcur
                    if w.deleted[u]:
                        continue
                    if _has_corner(w, u, i0, i1):
                        continue  # a triangle of the star: it moves or goes
                    for k in range(ns):
                        c = &w.star[STAR_FLOATS * k]
                        if (box[0] > c[12] or box[1] > c[13] or box[2] > c[14]
                                or box[3] < c[9] or box[4] < c[10] or box[5] < c[11]
                                or _has_corner(w, u, w.sid[2 * k], w.sid[2 * k + 1])):
                            continue
                        for j in range(3):
                            x = w.tri[3 * u + j]
                            w.cand[3 * j] = <float>w.v[3 * x]
                            w.cand[3 * j + 1] = <float>w.v[3 * x + 1]
                            w.cand[3 * j + 2] = <float>w.v[3 * x + 2]
                        for j in range(9):
                            w.pair[j] = c[j]
                            w.pair[9 + j] = w.cand[j]
                        if _faces_cross(w.pair, fa, fb):
                            return True
    return False


def collapse(double[:, ::1] verts, int32_t[:, ::1] faces, Py_ssize_t target,
             double aggressiveness=7.0, int max_passes=200, locked=None, guarded=None):
    """Collapse edges of the closed mesh ``(verts, faces)`` until at most ``target``
    triangles are left or no collapse keeps it a 2-manifold; in place.  No
    edge on a vertex that is ``locked`` (an (n,) uint8 array) collapses.
    No edge on a vertex that is ``guarded`` (an (n,) uint8 array) collapses
    where that would bring a triangle through another that shares no corner
    with it (:func:`crossings`' test, anywhere on the mesh).

    Returns the number of triangles left: the first that many rows of
    ``faces`` (vertex positions in ``verts``; unused vertices are left
    behind for the caller to drop).
    """
    cdef Work w
    cdef Py_ssize_t t, k, removed = 0, live, i
    cdef int it, j, shared0, shared1
    cdef int32_t i0, i1
    cdef double threshold
    cdef double p[3]
    cdef uint8_t *gone0 = NULL
    cdef uint8_t *gone1 = NULL
    cdef Py_ssize_t gone_cap = 0, start, count
    cdef int failed = 0
    cdef const uint8_t[::1] locked_m
    cdef const uint8_t *lock = NULL
    cdef const uint8_t[::1] guarded_m
    cdef const uint8_t *guard = NULL
    cdef int32_t[::1] tstamp_m
    cdef float[:, ::1] tbox_m
    cdef int32_t[:, ::1] trange_m
    if verts.shape[1] != 3:
        raise ValueError("verts must be (n, 3)")
    _check_faces(faces, verts.shape[0])
    if locked is not None:
        locked_m = locked
        if locked_m.shape[0] != verts.shape[0]:
            raise ValueError("locked must have one entry per vertex")
        if locked_m.shape[0]:
            lock = &locked_m[0]
    w.n = verts.shape[0]
    w.m = faces.shape[0]
    w.v = &verts[0, 0] if w.n else NULL
    w.tri = &faces[0, 0] if w.m else NULL
    if w.m == 0 or target >= w.m:
        return w.m
    q_a = np.empty((w.n, 10), np.float64)
    err_a = np.empty((w.m, 4), np.float64)
    normal_a = np.empty((w.m, 3), np.float64)
    deleted_a = np.zeros(w.m, np.uint8)
    dirty_a = np.zeros(w.m, np.uint8)
    tstart_a = np.zeros(w.n, np.int32)
    tcount_a = np.zeros(w.n, np.int32)
    mark_a = np.zeros(w.n, np.int32)
    cdef double[:, ::1] q_m = q_a
    cdef double[:, ::1] err_m = err_a
    cdef double[:, ::1] normal_m = normal_a
    cdef uint8_t[::1] deleted_m = deleted_a
    cdef uint8_t[::1] dirty_m = dirty_a
    cdef int32_t[::1] tstart_m = tstart_a
    cdef int32_t[::1] tcount_m = tcount_a
    cdef int32_t[::1] mark_m = mark_a
    w.q = &q_m[0, 0]
    w.err = &err_m[0, 0]
    w.normal = &normal_m[0, 0]
    w.deleted = &deleted_m[0]
    w.dirty = &dirty_m[0]
    w.tstart = &tstart_m[0]
    w.tcount = &tcount_m[0]
    w.mark = &mark_m[0]
    w.stamp = 0
    w.refs = NULL
    w.caprefs = 0
    w.nrefs = 0
    w.head = NULL
    w.mask = -1
    w.cell = 0.0
    w.regrid = False
    w.ne = 0
    w.ecap = 1024
    w.tcur = 0
    w.etid = w.enext = w.tstamp = NULL
    w.tbox = w.star = NULL
    w.sid = NULL
    w.spare_tid = w.spare_next = NULL
    w.spare_cap = 0
    w.cells_per = 1.5
    w.scap = 0
    if guarded is not None:
        guarded_m = guarded
        if guarded_m.shape[0] != verts.shape[0]:
            raise ValueError("guarded must have one entry per vertex")
        guard = &guarded_m[0]
        if np.count_nonzero(guarded) < 0.05 * w.n:
            w.cells_per = GUARD_FEW_CELL  # few looks: fewer entries to keep
        else:
            w.cells_per = GUARD_ALL_CELL  # many looks: fewer triangles per look
        tstamp_a = np.zeros(w.m, np.int32)
        tstamp_m = tstamp_a
        w.tstamp = &tstamp_m[0]
        tbox_a = np.empty((w.m, 6), np.float32)  # filled by the first build
        tbox_m = tbox_a
        w.tbox = &tbox_m[0, 0]
        trange_a = np.empty((w.m, 6), np.int32)
        trange_m = trange_a
        w.trange = &trange_m[0, 0]
        w.etid = <int32_t *>malloc(w.ecap * sizeof(int32_t))
        w.enext = <int32_t *>malloc(w.ecap * sizeof(int32_t))
        if w.etid == NULL or w.enext == NULL:
            free(w.etid)
            free(w.enext)
            raise MemoryError
    with nogil:
        _plane_quadrics(&w)
        for t in range(w.m):
            _triangle_errors(&w, t)
        live = w.m
        for it in range(max_passes):
            if live <= target:
                break
            if it % 5 == 0:
                if _rebuild_refs(&w) < 0 or (guard != NULL and _grid_build(&w) < 0):
                    failed = 1
                    break
                # the largest valence bounds the per-collapse scratch
                count = 0
                for i in range(w.n):
                    if w.tcount[i] > count:
                        count = w.tcount[i]
                if count + 1 > gone_cap:
                    free(gone0)
                    free(gone1)
                    gone_cap = 2 * count + 64
                    gone0 = <uint8_t *>malloc(gone_cap)
                    gone1 = <uint8_t *>malloc(gone_cap)
                    if gone0 == NULL or gone1 == NULL:
                        failed = 1
                        break
            for t in range(w.m):
                w.dirty[t] = 0
            threshold = 1e-9 * cpow(it + 3, aggressiveness)
            for t in range(w.m):
                if w.err[4 * t + 3] > threshold or w.deleted[t] or w.dirty[t]:
                    continue
                for j in range(3):
                    if w.err[4 * t + j] >= threshold:
                        continue
                    i0 = w.tri[3 * t + j]
                    i1 = w.tri[3 * t + (j + 1) % 3]
                    if lock != NULL and (lock[i0] or lock[i1]):
                        continue
                    if w.tcount[i0] > gone_cap or w.tcount[i1] > gone_cap:
                        continue  # a vertex grown past the scratch: wait for the rebuild
                    _edge_error(&w, i0, i1, p)
                    if _flips(&w, p, i0, i1, gone0, &shared0):
                        continue
                    if _flips(&w, p, i1, i0, gone1, &shared1):
                        continue
                    if shared0 != 2 or shared1 != 2 or not _link_ok(&w, i0, i1):
                        continue
                    if (guard != NULL and (guard[i0] or guard[i1])
                            and _guard_crosses(&w, i0, i1, p, gone0, gone1)):
                        continue
                    w.v[3 * i0] = p[0]
                    w.v[3 * i0 + 1] = p[1]
                    w.v[3 * i0 + 2] = p[2]
                    for k in range(10):
                        w.q[10 * i0 + k] += w.q[10 * i1 + k]
                    start = w.nrefs
                    if (_move_triangles(&w, i0, i0, gone0, &removed) < 0
                            or _move_triangles(&w, i0, i1, gone1, &removed) < 0):
                        failed = 1
                        break
                    count = w.nrefs - start
                    if count <= w.tcount[i0]:  # fits where i0's list was
                        for k in range(count):
                            w.refs[w.tstart[i0] + k] = w.refs[start + k]
                        w.nrefs = start
                    else:
                        w.tstart[i0] = <int32_t>start
                    w.tcount[i0] = <int32_t>count
                    w.tcount[i1] = 0
                    if guard != NULL:  # i0's triangles where they are now
                        for k in range(count):
                            if _grid_insert(&w, w.refs[w.tstart[i0] + k].tid, False) < 0:
                                failed = 1
                        if w.ne > w.enough or w.regrid:
                            if _grid_build(&w) < 0:
                                failed = 1
                    break
                if failed or live - removed <= target:
                    break
            if failed:
                break
            live -= removed
            removed = 0
        if not failed:
            _rebuild_refs(&w)
    free(gone0)
    free(gone1)
    free(w.refs)
    free(w.head)
    free(w.etid)
    free(w.enext)
    free(w.star)
    free(w.sid)
    free(w.spare_tid)
    free(w.spare_next)
    if failed:
        raise MemoryError
    return w.m


# --------------------------------------------------------------------------- untangling
#
# The volume step moves vertices along their normals; where several sheets
# of the surface crowd around one grid sample (a sample close to the level,
# between much brighter neighbours, as in spongy bone), that can fold a
# triangle through one two edges away.  :func:`untangle` finds such pairs
# among the triangles there and puts their corners back where smoothing left
# them (where nothing crossed).

cdef inline int _orient(const float *a, const float *b, const float *c,
                        const float *d) noexcept nogil:
    """Sign of the volume of the tetrahedron (a, b, c, d), in float64."""
    cdef double ux = b[0] - a[0], uy = b[1] - a[1], uz = b[2] - a[2]
    cdef double vx = c[0] - a[0], vy = c[1] - a[1], vz = c[2] - a[2]
    cdef double wx = d[0] - a[0], wy = d[1] - a[1], wz = d[2] - a[2]
    cdef double det = (ux * (vy * wz - vz * wy) - uy * (vx * wz - vz * wx)
                       + uz * (vx * wy - vy * wx))
    return (det > 0) - (det < 0)


cdef inline bint _segment_crosses(const float *p, const float *q, const float *a,
                                  const float *b, const float *c) noexcept nogil:
    """The segment p–q passes through the interior of triangle a b c
    (:func:`converter.mesh.crossing_pairs`' test)."""
    cdef int s1, s2, s3
    if _orient(a, b, c, p) * _orient(a, b, c, q) >= 0:
        return False
    s1 = _orient(p, q, a, b)
    s2 = _orient(p, q, b, c)
    s3 = _orient(p, q, c, a)
    return s1 == s2 and s2 == s3 and s1 != 0


cdef inline bint _faces_cross(const float *v, const idx_t *fa, const idx_t *fb) noexcept nogil:
    """Triangles ``fa`` and ``fb`` (three vertex indices each, into the (n, 3)
    ``v``) cross: an edge of one passes through the other."""
    cdef const float *a[3]
    cdef const float *b[3]
    cdef int j, k
    for j in range(3):
        a[j] = v + 3 * fa[j]
        b[j] = v + 3 * fb[j]
    for k in range(3):  # boxes first
        if (fmax3(a[0][k], a[1][k], a[2][k]) < fmin3(b[0][k], b[1][k], b[2][k])
                or fmax3(b[0][k], b[1][k], b[2][k]) < fmin3(a[0][k], a[1][k], a[2][k])):
            return False
    for j in range(3):
        if _segment_crosses(a[j], a[(j + 1) % 3], b[0], b[1], b[2]):
            return True
        if _segment_crosses(b[j], b[(j + 1) % 3], a[0], a[1], a[2]):
            return True
    return False


cdef inline float fmax3(float x, float y, float z) noexcept nogil:
    if y > x:
        x = y
    return z if z > x else x


cdef inline float fmin3(float x, float y, float z) noexcept nogil:
    if y < x:
        x = y
    return z if z < x else x


def untangle(float[:, ::1] verts, const float[:, ::1] fallback, const idx_t[:, ::1] faces,
             double near, int rounds, stars=None, int workers=1):
    """Undo the folds of the volume step, in place.

    Each triangle with a corner within ``near`` (index units) of a grid
    sample is tested against every triangle on its corners' neighbours that
    shares no corner with it; where two cross, their six corners go back to
    ``fallback`` (the smoothed vertices, before the volume step), and the
    vertices put back are looked around again, for at most ``rounds`` more
    rounds.  Returns ``(crossing pairs found first, pairs left after the
    last round)``.  ``stars`` is :func:`star`'s CSR when the caller has it;
    ``workers`` threads share each round.
    """
    cdef Py_ssize_t n = verts.shape[0], m = faces.shape[0], v, k
    cdef double t, d
    if (verts.shape[1] != 3 or fallback.shape[0] != n or fallback.shape[1] != 3
            or rounds < 0):
        raise ValueError("untangle: arrays of unexpected shapes")
    _check_faces(faces, n)
    if m == 0:
        return 0, 0
    start_a, star_a = star(faces, n) if stars is None else stars
    look_a = np.zeros(n, np.uint8)  # the vertices to look around this round
    cdef uint8_t[::1] look = look_a
    with nogil:
        for v in range(n):
            d = 0.0
            for k in range(3):
                t = verts[v, k] - _floor(verts[v, k] + 0.5)
                d += t * t
            look[v] = d < near * near
    first = found = 0
    for r in range(rounds + 1):
        pairs = _crossings_split(verts, faces, start_a, star_a, look_a, workers)
        found = len(pairs)
        if r == 0:
            first = found
        if found == 0 or r == rounds:
            break
        corners = np.unique(np.asarray(faces)[pairs.reshape(-1)])
        np.asarray(verts)[corners] = np.asarray(fallback)[corners]
        look_a[:] = 0
        look_a[corners] = 1
    return first, found


def crossings(const float[:, ::1] verts, faces, int workers=1):
    """The pairs (k, 2) of triangles sharing no corner that cross, among
    triangles joined through an edge of one corner to a corner of the other
    (where an edge collapse or a shift folds a surface): every triangle looked
    at, on ``workers`` threads."""
    start_a, star_a = star(faces, verts.shape[0])
    look_a = np.ones(verts.shape[0], np.uint8)
    return _crossings_split(verts, faces, start_a, star_a, look_a, workers)


cdef int _grow(void **buf, Py_ssize_t *cap, size_t item) noexcept nogil:
    """Double ``*buf``, a buffer of ``*cap`` items of ``item`` bytes: 0, or -1
    (``*buf`` unchanged) when there is no memory for it."""
    cdef void *grown = realloc(buf[0], 2 * cap[0] * item)
    if grown == NULL:
        return -1
    buf[0] = grown
    cap[0] *= 2
    return 0


def _crossings_split(verts, faces, start, star, look, int workers):
    """:func:`_crossings_around` with ``workers`` threads, each on a range of faces."""
    cdef Py_ssize_t m = faces.shape[0]
    if workers <= 1 or m < 100_000:
        return _crossings_around(verts, faces, start, star, look, 0, m)
    from concurrent.futures import ThreadPoolExecutor

    cuts = [m * k // workers for k in range(workers + 1)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = list(pool.map(lambda k: _crossings_around(verts, faces, start, star, look,
                                                          cuts[k], cuts[k + 1]),
                              range(workers)))
    found = np.concatenate(found)
    return np.unique(found, axis=0) if len(found) else found


def _crossings_around(const float[:, ::1] verts, const idx_t[:, ::1] faces,
                      const int64_t[::1] start, const out_t[::1] star,
                      const uint8_t[::1] look, Py_ssize_t f0, Py_ssize_t f1):
    """The pairs of crossing triangles (k, 2), each once, that :func:`untangle`
    finds: each triangle with a corner to ``look`` around against the
    triangles on its corners' neighbours (a pair met twice is kept once)."""
    cdef Py_ssize_t m = faces.shape[0], x, y, e, e2, g, a, b, j, np_ = 0
    cdef Py_ssize_t pcap = 256, k
    cdef int failed = 0
    cdef Py_ssize_t ny, ycap = 32
    cdef int64_t *pairs = <int64_t *>malloc(2 * pcap * sizeof(int64_t))
    cdef Py_ssize_t *ys = <Py_ssize_t *>malloc(ycap * sizeof(Py_ssize_t))
    if pairs == NULL or ys == NULL:
        free(pairs)
        free(ys)
        raise MemoryError
    if not 0 <= f0 <= f1 <= m or start.shape[0] != verts.shape[0] + 1:
        free(pairs)
        free(ys)
        raise ValueError("_crossings_around: arrays of unexpected shapes")
    with nogil:
        for a in range(f0, f1):
            if not look[faces[a, 0]] and not look[faces[a, 1]] and not look[faces[a, 2]]:
                continue
            # the neighbours of a's corners that are not corners of a, each once
            ny = 0
            for j in range(3):
                x = faces[a, j]
                for e in range(start[x], start[x + 1]):
                    g = star[e]
                    # y: the vertex after x in g (each neighbour of x once)
                    if faces[g, 0] == x:
                        y = faces[g, 1]
                    elif faces[g, 1] == x:
                        y = faces[g, 2]
                    else:
                        y = faces[g, 0]
                    if y == faces[a, 0] or y == faces[a, 1] or y == faces[a, 2]:
                        continue
                    for k in range(ny):
                        if ys[k] == y:
                            break
                    else:
                        if ny == ycap and _grow(<void **>&ys, &ycap, sizeof(Py_ssize_t)) < 0:
                            failed = 1
                            break
                        ys[ny] = y
                        ny += 1
                if failed:
                    break
            if failed:
                break
            for k in range(ny):
                y = ys[k]
                for e2 in range(start[y], start[y + 1]):
                    b = star[e2]
                    if (faces[b, 0] == faces[a, 0] or faces[b, 0] == faces[a, 1]
                            or faces[b, 0] == faces[a, 2] or faces[b, 1] == faces[a, 0]
                            or faces[b, 1] == faces[a, 1] or faces[b, 1] == faces[a, 2]
                            or faces[b, 2] == faces[a, 0] or faces[b, 2] == faces[a, 1]
                            or faces[b, 2] == faces[a, 2]):
                        continue
                    if not _faces_cross(&verts[0, 0], &faces[a, 0], &faces[b, 0]):
                        continue
                    if np_ == pcap and _grow(<void **>&pairs, &pcap, 2 * sizeof(int64_t)) < 0:
                        failed = 1
                        break
                    pairs[2 * np_] = a if a < b else b
                    pairs[2 * np_ + 1] = b if a < b else a
                    np_ += 1
                if failed:
                    break
            if failed:
                break
    free(ys)
    if failed:
        free(pairs)
        raise MemoryError
    found = np.empty((np_, 2), np.int64)
    for k in range(np_):
        found[k, 0] = pairs[2 * k]
        found[k, 1] = pairs[2 * k + 1]
    free(pairs)
    return np.unique(found, axis=0) if np_ else found
