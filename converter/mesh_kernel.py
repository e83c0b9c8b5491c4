"""Compiled mesh measures and topology for the report, and STL records.

The loops are in the Cython extension :mod:`converter._mesh`, built at
install time; these wrappers bring the arrays to the types it takes.  One
pass over the triangles for area, enclosed volume and centroid; edge counts
from half-edges grouped by their lower vertex (a counting sort, then small
per-vertex sorts); components by union-find.  :mod:`converter.mesh` calls
these and keeps its numpy code as the reference.
"""

from __future__ import annotations

import numpy as np

from . import _mesh


def _index_array(faces):
    """Faces as a C-contiguous (m, 3) int32 or int64 array (others are converted)."""
    faces = np.ascontiguousarray(faces).reshape(-1, 3)
    return faces if faces.dtype in (np.int32, np.int64) else faces.astype(np.int64)


def _real_array(verts):
    """Vertices as a C-contiguous (n, 3) float32 or float64 array."""
    verts = np.ascontiguousarray(verts).reshape(-1, 3)
    return verts if verts.dtype in (np.float32, np.float64) else verts.astype(np.float64)


def measures(verts, faces):
    """Area, enclosed volume and volume centroid (see :func:`converter.mesh.measures`)."""
    area, vol6, moment, origin = _mesh.measures(
        np.ascontiguousarray(verts, dtype=np.float64).reshape(-1, 3), _index_array(faces))
    centroid = origin + moment / (4.0 * vol6) if vol6 else origin
    return area, vol6 / 6.0, centroid


def edge_counts(faces, n_verts):
    """Boundary edges, non-manifold edges and whether no directed edge repeats."""
    faces = _index_array(faces)
    index = np.int32 if 3 * len(faces) < 2**31 and 2 * n_verts + 1 < 2**31 else np.int64
    b, nm, oriented = _mesh.edge_counts(faces.astype(index, copy=False), int(n_verts),
                                         np.zeros(int(n_verts) + 1, index),
                                         np.empty(3 * len(faces), index))
    return int(b), int(nm), bool(oriented)


def components(faces, n_verts):
    """Connected components through shared vertices: (count, face labels)."""
    count, labels = _mesh.components(_index_array(faces), int(n_verts))
    return int(count), labels


def count_components(faces, n_verts):
    """The number of connected components (no labels)."""
    return int(_mesh.count_components(_index_array(faces), int(n_verts)))


def bounds(verts):
    """(min, max) of the vertices per axis, float64."""
    return _mesh.bounds(_real_array(verts))


def stl_records(v32, faces, rec):
    """Fill ``rec`` (a contiguous array of ``stl.STL_DTYPE``, one a face) with
    each triangle's unit normal, corners and a zero attribute, from float32
    vertices; the floats are written in the machine's order, so callers use it
    only on little-endian machines."""
    if rec.dtype.itemsize != 50 or not rec.flags.c_contiguous:
        raise ValueError("rec must be a contiguous array of 50-byte STL records")
    _mesh.stl_records(v32, _index_array(faces), rec.view(np.uint8).reshape(len(rec), 50))


def index_to_patient(ijk, offset, positions, in_plane):
    """Indices (+ offset) → patient mm, linear between slices (see ``Volume``);
    ``ijk`` float32 or float64, at least two slices."""
    ijk = _real_array(ijk)
    out = np.empty((len(ijk), 3), np.float64)
    _mesh.index_to_patient(ijk, np.ascontiguousarray(offset, np.float64),
                            np.ascontiguousarray(positions, np.float64),
                            np.ascontiguousarray(in_plane, np.float64), out)
    return out
