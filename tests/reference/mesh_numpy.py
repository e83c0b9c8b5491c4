"""Mesh measures, topology, components and STL records in numpy (and scipy):
the reference the compiled kernels of :mod:`converter.mesh` and
:mod:`converter.stl` are held to."""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from converter.mesh import Measures, Topology, check_mesh


def _tetrahedra(verts, faces):
    """The triangles relative to the vertices' mean (less cancellation), their
    edge cross products and six times their signed tetrahedra's volumes."""
    origin = verts.mean(axis=0)
    tri = verts.astype(np.float64)[faces] - origin
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    # det(v0, v1, v2) = v0 . (v1 x v2) = v0 . ((v1 - v0) x (v2 - v0))
    return origin, tri, cross, np.einsum("ij,ij->i", tri[:, 0], cross)


def measures(verts, faces) -> Measures:
    """Area, enclosed volume and volume centroid."""
    verts, faces = check_mesh(verts, faces)
    if not len(faces):
        return Measures(0.0, 0.0, np.zeros(3))
    origin, tri, cross, vol6 = _tetrahedra(verts, faces)
    area = float(np.sqrt(np.einsum("ij,ij->i", cross, cross)).sum() / 2)
    total = vol6.sum()
    centroid = origin + (vol6[:, None] * tri.sum(axis=1)).sum(axis=0) / (4.0 * total) \
        if total else origin
    return Measures(area, float(total / 6.0), centroid)


def area(verts, faces) -> float:
    """Total surface area, triangle by triangle."""
    verts, faces = check_mesh(verts, faces)
    tri = verts.astype(np.float64)[faces]
    return float(np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]),
                                axis=1).sum() / 2)


def volume_centroid(verts, faces) -> np.ndarray:
    """Centroid of the enclosed volume, from signed tetrahedra."""
    verts, faces = check_mesh(verts, faces)
    origin, tri, _, vol6 = _tetrahedra(verts, faces)
    total = vol6.sum()
    if total == 0:
        return origin
    return origin + (vol6[:, None] * tri.sum(axis=1)).sum(axis=0) / (4.0 * total)


def _edge_keys(faces, n_verts, directed):
    a = faces.reshape(-1).astype(np.int64)
    b = np.roll(faces, -1, axis=1).reshape(-1).astype(np.int64)
    if not directed:
        a, b = np.minimum(a, b), np.maximum(a, b)
    return a * n_verts + b


def _run_lengths(sorted_keys):
    """Lengths of the runs of equal values in a sorted array."""
    if not len(sorted_keys):
        return np.zeros(0, np.int64)
    starts = np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))
    return np.diff(np.append(starts, len(sorted_keys)))


def topology(verts, faces) -> Topology:
    """Edge counts from sorted edge keys, components from scipy."""
    verts, faces = check_mesh(verts, faces)
    n = len(verts)
    if not len(faces):
        return Topology(False, False, 0, 0, 0)
    counts = _run_lengths(np.sort(_edge_keys(faces, n, directed=False)))
    directed = np.sort(_edge_keys(faces, n, directed=True))
    oriented = not np.any(directed[1:] == directed[:-1])
    boundary = int((counts == 1).sum())
    nonmanifold = int((counts > 2).sum())
    return Topology(
        watertight=boundary == 0 and nonmanifold == 0,
        manifold=nonmanifold == 0 and oriented,
        boundary_edges=boundary,
        nonmanifold_edges=nonmanifold,
        components=components(faces, n)[0],
    )


def components(faces, n_verts):
    """``(count, face_labels)`` through shared vertices; labels follow each
    component's smallest vertex."""
    faces = np.asarray(faces)
    if not len(faces):
        return 0, np.zeros(0, np.int64)
    rows = np.concatenate([faces[:, 0], faces[:, 1]])
    cols = np.concatenate([faces[:, 1], faces[:, 2]])
    graph = sparse.coo_matrix((np.ones(len(rows), np.int8), (rows, cols)),
                              shape=(n_verts, n_verts))
    _, vertex_labels = connected_components(graph, directed=False)
    uniq, face_labels = np.unique(vertex_labels[faces[:, 0]], return_inverse=True)
    return len(uniq), face_labels


def corners_and_normals(v32, faces, block):
    """Fill ``block`` (k, 12) float32 with each triangle's unit normal and corners."""
    k = len(faces)
    tri = block[:, 3:].reshape(k, 3, 3)
    np.take(v32, faces, axis=0, out=tri)
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(n, axis=1, keepdims=True)
    np.divide(n, length, out=n, where=length > 0)
    block[:, :3] = n


def stl_records(v32, faces, rec):
    """Fill ``rec`` (k STL records) with normals, corners and a zero attribute."""
    corners = np.empty((len(faces), 12), np.dtype("<f4"))
    corners_and_normals(v32, faces, corners)
    rec["normal"] = corners[:, :3]
    rec["vertices"] = corners[:, 3:].reshape(-1, 3, 3)
    rec["attr"] = 0
