"""Compiled mesh measures and topology (numba) for the report, and STL records.

One pass over the triangles for area, enclosed volume and centroid; edge
counts from half-edges grouped by their lower vertex (a counting sort, then
small per-vertex sorts); components by union-find.  :mod:`converter.mesh` calls these
when numba is available and keeps its numpy code as the reference.
"""

from __future__ import annotations

import numpy as np

from ._jit import njit


def _index_array(faces):
    """Faces as a C-contiguous int32 or int64 array (others are converted)."""
    faces = np.ascontiguousarray(faces)
    return faces if faces.dtype in (np.int32, np.int64) else faces.astype(np.int64)


@njit
def _measures(verts, faces):
    """(area, 6 × volume, centroid sums (3,), origin (3,)) in float64."""
    n = verts.shape[0]
    origin = np.zeros(3)
    for i in range(n):
        for k in range(3):
            origin[k] += verts[i, k]
    if n:
        origin /= n
    area2 = 0.0
    vol6 = 0.0
    moment = np.zeros(3)
    for i in range(faces.shape[0]):
        a0 = verts[faces[i, 0], 0] - origin[0]
        a1 = verts[faces[i, 0], 1] - origin[1]
        a2 = verts[faces[i, 0], 2] - origin[2]
        b0 = verts[faces[i, 1], 0] - origin[0]
        b1 = verts[faces[i, 1], 1] - origin[1]
        b2 = verts[faces[i, 1], 2] - origin[2]
        c0 = verts[faces[i, 2], 0] - origin[0]
        c1 = verts[faces[i, 2], 1] - origin[1]
        c2 = verts[faces[i, 2], 2] - origin[2]
        u0, u1, u2 = b0 - a0, b1 - a1, b2 - a2
        w0, w1, w2 = c0 - a0, c1 - a1, c2 - a2
        x0 = u1 * w2 - u2 * w1
        x1 = u2 * w0 - u0 * w2
        x2 = u0 * w1 - u1 * w0
        area2 += np.sqrt(x0 * x0 + x1 * x1 + x2 * x2)
        v6 = a0 * x0 + a1 * x1 + a2 * x2
        vol6 += v6
        moment[0] += v6 * (a0 + b0 + c0)
        moment[1] += v6 * (a1 + b1 + c1)
        moment[2] += v6 * (a2 + b2 + c2)
    return area2 / 2.0, vol6, moment, origin


def measures(verts, faces):
    """Area, enclosed volume and volume centroid (see :func:`converter.mesh.measures`)."""
    area, vol6, moment, origin = _measures(np.ascontiguousarray(verts, dtype=np.float64),
                                           _index_array(faces))
    centroid = origin + moment / (4.0 * vol6) if vol6 else origin
    return area, vol6 / 6.0, centroid


@njit
def _edge_counts(faces, n_verts, start, keys):
    """(boundary edges, edges on more than two faces, consistently oriented).

    Every half-edge a→b goes into the bucket of its lower vertex as the key
    2·(higher vertex) + (1 when it runs downwards); a bucket sorted holds each
    undirected edge as one run, whose length is the number of faces on it and
    whose low bits tell whether a direction repeats.  ``start`` (n_verts + 1,
    zeros) and ``keys`` (3 × faces) are work arrays.
    """
    m = faces.shape[0]
    for i in range(m):
        for j in range(3):
            a = faces[i, j]
            b = faces[i, (j + 1) % 3]
            start[(a if a < b else b) + 1] += 1
    for v in range(n_verts):
        start[v + 1] += start[v]
    fill = start[:-1].copy()
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
    boundary = 0
    nonmanifold = 0
    oriented = True
    for v in range(n_verts):
        lo, hi = start[v], start[v + 1]
        if hi - lo > 32:
            keys[lo:hi].sort()
        else:  # the usual bucket holds about six keys
            for k in range(lo + 1, hi):
                key = keys[k]
                j = k - 1
                while j >= lo and keys[j] > key:
                    keys[j + 1] = keys[j]
                    j -= 1
                keys[j + 1] = key
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
    return boundary, nonmanifold, oriented


def edge_counts(faces, n_verts):
    """Boundary edges, non-manifold edges and whether no directed edge repeats."""
    faces = _index_array(faces)
    index = np.int32 if 3 * len(faces) < 2**31 and 2 * n_verts + 1 < 2**31 else np.int64
    b, nm, oriented = _edge_counts(faces.astype(index, copy=False), int(n_verts),
                                   np.zeros(int(n_verts) + 1, index),
                                   np.empty(3 * len(faces), index))
    return int(b), int(nm), bool(oriented)


@njit
def _find(parent, v):
    root = v
    while parent[root] != root:
        root = parent[root]
    while parent[v] != root:  # path compression
        parent[v], v = root, parent[v]
    return root


@njit
def _union(faces, n_verts):
    """Union-find over the faces' vertices; each set's root is its smallest vertex."""
    parent = np.arange(n_verts)
    for i in range(faces.shape[0]):
        r0 = _find(parent, faces[i, 0])
        for j in (1, 2):
            r = _find(parent, faces[i, j])
            if r != r0:
                if r < r0:
                    parent[r0] = r
                    r0 = r
                else:
                    parent[r] = r0
    return parent


@njit
def _count_components(faces, n_verts):
    parent = _union(faces, n_verts)
    used = np.zeros(n_verts, np.bool_)
    count = 0
    for i in range(faces.shape[0]):
        root = _find(parent, faces[i, 0])
        if not used[root]:
            used[root] = True
            count += 1
    return count


@njit
def _components(faces, n_verts):
    parent = _union(faces, n_verts)
    used = np.zeros(n_verts, np.bool_)
    for i in range(faces.shape[0]):
        used[_find(parent, faces[i, 0])] = True
    # number components in the order of their smallest vertex, as scipy does
    label_of_root = np.full(n_verts, -1, np.int64)
    count = 0
    for v in range(n_verts):
        if used[v]:
            label_of_root[v] = count
            count += 1
    face_labels = np.empty(faces.shape[0], np.int64)
    for i in range(faces.shape[0]):
        face_labels[i] = label_of_root[_find(parent, faces[i, 0])]
    return count, face_labels


def components(faces, n_verts):
    """Connected components through shared vertices: (count, face labels)."""
    count, labels = _components(_index_array(faces), int(n_verts))
    return int(count), labels


def count_components(faces, n_verts):
    """The number of connected components (no labels)."""
    return int(_count_components(_index_array(faces), int(n_verts)))


@njit
def _bounds(verts):
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    for i in range(verts.shape[0]):
        for k in range(3):
            v = verts[i, k]
            if v < lo[k]:
                lo[k] = v
            if v > hi[k]:
                hi[k] = v
    return lo, hi


def bounds(verts):
    """(min, max) of the vertices per axis, float64."""
    return _bounds(np.ascontiguousarray(verts))


def warm_up():
    """Compile (or load from the cache) the kernels."""
    verts = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.int32)  # as the kernel makes
    measures(verts, faces)
    edge_counts(faces, 4)
    components(faces, 4)
    count_components(faces, 4)
    bounds(verts)
    corners_and_normals(verts.astype(np.float32), faces, np.empty((4, 12), np.float32))


@njit
def _corners_and_normals(verts, faces, block):
    for i in range(faces.shape[0]):
        a, b, c = faces[i, 0], faces[i, 1], faces[i, 2]
        for k in range(3):
            block[i, 3 + k] = verts[a, k]
            block[i, 6 + k] = verts[b, k]
            block[i, 9 + k] = verts[c, k]
        u0, u1, u2 = verts[b, 0] - verts[a, 0], verts[b, 1] - verts[a, 1], verts[b, 2] - verts[a, 2]
        w0, w1, w2 = verts[c, 0] - verts[a, 0], verts[c, 1] - verts[a, 1], verts[c, 2] - verts[a, 2]
        n0 = u1 * w2 - u2 * w1
        n1 = u2 * w0 - u0 * w2
        n2 = u0 * w1 - u1 * w0
        length = np.sqrt(n0 * n0 + n1 * n1 + n2 * n2)
        if length > 0:
            n0, n1, n2 = n0 / length, n1 / length, n2 / length
        block[i, 0] = n0
        block[i, 1] = n1
        block[i, 2] = n2


def corners_and_normals(v32, faces, block):
    """Fill ``block`` (k, 12) float32 with each triangle's unit normal and its
    corners (the payload of binary STL records) from float32 vertices."""
    _corners_and_normals(v32, faces, block)


@njit
def _index_to_patient(ijk, offset, positions, in_plane, out):
    last = positions.shape[0] - 2
    for i in range(ijk.shape[0]):
        k = ijk[i, 0] + offset[0]
        r = ijk[i, 1] + offset[1]
        c = ijk[i, 2] + offset[2]
        k0 = min(max(np.floor(k), 0.0), last)
        t = k - k0
        s = int(k0)
        for j in range(3):
            p0 = positions[s, j]
            out[i, j] = p0 + (positions[s + 1, j] - p0) * t + (r * in_plane[0, j]
                                                               + c * in_plane[1, j])


def index_to_patient(ijk, offset, positions, in_plane):
    """Indices (+ offset) → patient mm, linear between slices (see ``Volume``);
    ``ijk`` float32 or float64, at least two slices."""
    ijk = np.ascontiguousarray(ijk)
    if ijk.dtype not in (np.float32, np.float64):
        ijk = ijk.astype(np.float64)
    out = np.empty((len(ijk), 3), np.float64)
    _index_to_patient(ijk, np.asarray(offset, np.float64), np.ascontiguousarray(positions),
                      np.ascontiguousarray(in_plane), out)
    return out
