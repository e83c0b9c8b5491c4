"""Triangle-mesh operations: measures, topology, components, smoothing, decimation.

A mesh is a pair ``(verts, faces)``: ``verts`` an (N, 3) float array in
millimetres, ``faces`` an (M, 3) integer array of vertex indices wound so
that normals point outward (positive enclosed volume).  Nothing loops over
triangles in Python.  The measures, edge counts, components and bounds the
report needs run in the Cython extension :mod:`converter._mesh` (built at
install time; its loops release the GIL, so the report's facts are computed
beside the STL write): one pass over the triangles for area, enclosed volume
and centroid; edge counts from half-edges grouped by their lower vertex (a
counting sort, then small per-vertex sorts); components by union-find.  The
rest is vectorized with numpy/scipy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _mesh


def check_mesh(verts, faces):
    """``(verts, faces)`` as arrays: (N, 3) and (M, 3) indexing existing vertices;
    ValueError for a wrong shape, IndexError for an index out of range."""
    verts = np.asarray(verts)
    faces = np.asarray(faces)
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise ValueError(f"verts must have shape (N, 3), got {verts.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must have shape (M, 3), got {faces.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= len(verts)):
        raise IndexError("faces index vertices that do not exist")
    return verts, faces


def _index_array(faces):
    """Faces as a C-contiguous (m, 3) int32 or int64 array (others are converted)."""
    faces = np.ascontiguousarray(faces).reshape(-1, 3)
    return faces if faces.dtype in (np.int32, np.int64) else faces.astype(np.int64)


def signed_volume(verts, faces) -> float:
    """Enclosed volume (positive for outward normals), in units of verts³."""
    return measures(verts, faces).volume


def drop_degenerate(verts, faces, eps: float = 1e-12):
    """Remove faces that repeat a vertex or have (near) zero area."""
    verts, faces = check_mesh(verts, faces)
    tri = verts.astype(np.float64)[faces]
    twice_area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    keep = (
        (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
        & (twice_area > eps)
    )
    return compact(verts, faces[keep])


def flip_winding(faces, *, in_place=False):
    """Reverse every triangle's winding (its normal turns around).

    With ``in_place`` the given array is changed (no copy of the whole mesh).
    """
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must have shape (M, 3), got {faces.shape}")
    if not in_place:
        return faces[:, [0, 2, 1]]
    second = faces[:, 1].copy()
    faces[:, 1] = faces[:, 2]
    faces[:, 2] = second
    return faces


def compact(verts, faces):
    """Drop vertices no face uses; renumber faces."""
    verts, faces = check_mesh(verts, faces)
    used = np.zeros(len(verts), bool)
    used[faces.reshape(-1)] = True
    if used.all():
        return verts, faces
    new_index = np.cumsum(used) - 1
    return verts[used], new_index[faces].astype(faces.dtype)


@dataclass
class Topology:
    watertight: bool  # every edge shared by exactly two faces
    manifold: bool  # no edge shared by more than two faces, orientation consistent
    boundary_edges: int
    nonmanifold_edges: int
    components: int


def topology(verts, faces) -> Topology:
    """Edge-based closedness and manifoldness checks, and component count."""
    verts, faces = check_mesh(verts, faces)
    n = len(verts)
    if not len(faces):
        return Topology(False, False, 0, 0, 0)
    boundary, nonmanifold, oriented = _edge_counts(faces, n)
    return Topology(
        watertight=boundary == 0 and nonmanifold == 0,
        manifold=nonmanifold == 0 and oriented,
        boundary_edges=boundary,
        nonmanifold_edges=nonmanifold,
        components=_count_components(faces, n),
    )


def _edge_counts(faces, n_verts):
    """Boundary edges, non-manifold edges and whether no directed edge repeats."""
    faces = _index_array(faces)
    index = np.int32 if 3 * len(faces) < 2**31 and 2 * n_verts + 1 < 2**31 else np.int64
    b, nm, oriented = _mesh.edge_counts(faces.astype(index, copy=False), int(n_verts),
                                        np.zeros(int(n_verts) + 1, index),
                                        np.empty(3 * len(faces), index))
    return int(b), int(nm), bool(oriented)


def _count_components(faces, n_verts):
    """The number of connected components (no labels)."""
    return int(_mesh.count_components(_index_array(faces), int(n_verts)))


@dataclass
class Measures:
    area: float
    volume: float
    centroid: np.ndarray


def measures(verts, faces) -> Measures:
    """Area, enclosed volume and volume centroid in one pass over the triangles."""
    verts, faces = check_mesh(verts, faces)
    if not len(faces):
        return Measures(0.0, 0.0, np.zeros(3))
    return _measures(verts, faces)


def _measures(verts, faces) -> Measures:
    """The extension's pass (it checks the shapes and indices again)."""
    area, vol6, moment, origin = _mesh.measures(
        np.ascontiguousarray(verts, dtype=np.float64).reshape(-1, 3), _index_array(faces))
    centroid = origin + moment / (4.0 * vol6) if vol6 else origin
    return Measures(float(area), float(vol6 / 6.0), centroid)


def bounds(verts) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) of the vertices along each axis, float64."""
    verts = np.asarray(verts)
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise ValueError(f"verts must have shape (N, 3), got {verts.shape}")
    if not len(verts):
        raise ValueError("an empty mesh has no bounds")
    verts = np.ascontiguousarray(verts)
    return _mesh.bounds(verts if verts.dtype in (np.float32, np.float64)
                        else verts.astype(np.float64))


def components(faces, n_verts: int) -> tuple[int, np.ndarray]:
    """Connected components through shared vertices.

    Returns ``(count, face_labels)``; labels follow each component's smallest
    vertex.
    """
    faces = np.asarray(faces)
    if not len(faces):
        return 0, np.zeros(0, np.int64)
    count, labels = _mesh.components(_index_array(faces), int(n_verts))
    return int(count), labels


def component_volumes(verts, faces, face_labels, count) -> np.ndarray:
    origin = verts.mean(axis=0)
    tri = verts.astype(np.float64)[faces] - origin
    vol6 = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2]))
    return np.bincount(face_labels, weights=vol6, minlength=count) / 6.0


def keep_largest(verts, faces):
    """Keep only the component enclosing the largest volume."""
    verts, faces = check_mesh(verts, faces)
    count, labels = components(faces, len(verts))
    if count <= 1:
        return verts, faces
    vols = component_volumes(verts, faces, labels, count)
    return compact(verts, faces[labels == int(np.argmax(np.abs(vols)))])


def drop_islands(verts, faces, min_volume: float):
    """Remove components whose enclosed volume is below ``min_volume`` (mm³).

    Cavities (inner surfaces, negative volume) inside a kept component are
    kept with it when they are large enough themselves.
    """
    if min_volume < 0 or not np.isfinite(min_volume):
        raise ValueError(f"min_volume must be a finite number >= 0, got {min_volume}")
    verts, faces = check_mesh(verts, faces)
    count, labels = components(faces, len(verts))
    if count == 0:
        return verts, faces
    vols = np.abs(component_volumes(verts, faces, labels, count))
    return compact(verts, faces[vols[labels] >= min_volume])


def _neighbour_mean_operator(faces, n_verts):
    from scipy import sparse

    a = faces.reshape(-1)
    b = np.roll(faces, -1, axis=1).reshape(-1)
    rows = np.concatenate([a, b])
    cols = np.concatenate([b, a])
    adj = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_verts, n_verts)).tocsr()
    adj.data[:] = 1.0  # duplicates summed by tocsr; an edge counts once
    deg = np.asarray(adj.sum(axis=1)).ravel()
    deg[deg == 0] = 1.0
    return sparse.diags(1.0 / deg) @ adj


def taubin_smooth(verts, faces, iterations: int, lam: float = 0.5, mu: float = -0.53):
    """Taubin λ|μ smoothing: smooths without the shrinking of plain Laplacian.

    Parameters
    ----------
    iterations : int
        Number of λ/μ pairs; 0 returns the input unchanged.
    lam, mu : float
        Positive and negative step factors, ``0 < lam < -mu``.
    """
    if int(iterations) != iterations or iterations < 0:
        raise ValueError(f"iterations must be an integer >= 0, got {iterations}")
    if not (0 < lam < -mu):
        raise ValueError(f"need 0 < lam < -mu, got lam={lam}, mu={mu}")
    verts, faces = check_mesh(verts, faces)
    if iterations == 0 or not len(faces):
        return verts, faces
    mean = _neighbour_mean_operator(faces, len(verts))
    v = verts.astype(np.float64)
    for _ in range(int(iterations)):
        v = v + lam * (mean @ v - v)
        v = v + mu * (mean @ v - v)
    return v.astype(verts.dtype, copy=False), faces


def decimate(verts, faces, *, fraction: float | None = None, max_triangles: int | None = None):
    """Quadric decimation (fast-simplification) to a fraction or a triangle budget.

    Parameters
    ----------
    fraction : float, optional
        Fraction of triangles to keep, in (0, 1].
    max_triangles : int, optional
        Upper bound on the triangle count, >= 4.
    """
    if (fraction is None) == (max_triangles is None):
        raise ValueError("give exactly one of fraction or max_triangles")
    verts, faces = check_mesh(verts, faces)
    if fraction is not None:
        if not (0 < fraction <= 1):
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        target = int(round(len(faces) * fraction))
    else:
        if int(max_triangles) != max_triangles or max_triangles < 4:
            raise ValueError(f"max_triangles must be an integer >= 4, got {max_triangles}")
        target = int(max_triangles)
    if target >= len(faces):
        return verts, faces
    import fast_simplification

    out_v, out_f = fast_simplification.simplify(
        np.ascontiguousarray(verts, dtype=np.float32), np.ascontiguousarray(faces, dtype=np.int32),
        target_count=max(target, 4),
    )
    return drop_degenerate(out_v.astype(np.float64), out_f.astype(np.int64))
