"""Triangle-mesh operations: measures, checks, components, smoothing, decimation.

A mesh is a pair ``(verts, faces)``: ``verts`` an (N, 3) float array in
millimetres, ``faces`` an (M, 3) integer array of vertex indices wound so
that normals point outward (positive enclosed volume).  Nothing loops over
triangles in Python.  The measures, edge counts, components and bounds the
report needs run in the Cython extension :mod:`converter._mesh` (built at
install time; its loops release the GIL, so the report's facts are computed
beside the STL write): one pass over the triangles for area, enclosed volume
and centroid; edge counts from half-edges grouped by their lower vertex (a
counting sort, then small per-vertex sorts); components by union-find.
Constrained smoothing and its volume step run in :mod:`converter._shape`.
The rest is vectorized with numpy/scipy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _mesh, _shape


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


@dataclass
class MeshCheck:
    """What makes a mesh printable, counted (:func:`check`)."""

    boundary_edges: int  # edges on one face
    nonmanifold_edges: int  # edges on more than two faces
    degenerate_triangles: int  # a repeated vertex, or no area to speak of
    oriented: bool  # no directed edge twice: neighbours wound alike
    volume: float  # enclosed; positive when the normals point outward

    @property
    def closed_manifold(self) -> bool:
        """Closed, consistently oriented, outward, no degenerate triangle."""
        return (self.boundary_edges == 0 and self.nonmanifold_edges == 0 and self.oriented
                and self.degenerate_triangles == 0 and self.volume > 0)


def check(verts, faces) -> MeshCheck:
    """Boundary and non-manifold edges, degenerate triangles, orientation and volume.

    A triangle is degenerate when two of its corners are the same vertex or
    its height is below 1e-6 of its longest side (coincident corners, a
    needle of no width).  Self-intersections are :func:`self_intersections`'
    (slower: for tests).
    """
    verts, faces = check_mesh(verts, faces)
    if not len(faces):
        return MeshCheck(0, 0, 0, True, 0.0)
    boundary, nonmanifold, oriented = _edge_counts(faces, len(verts))
    return MeshCheck(boundary, nonmanifold, degenerate_count(verts, faces), oriented,
                     measures(verts, faces).volume)


def degenerate_count(verts, faces, *, ratio=1e-6) -> int:
    """Triangles with a repeated vertex or a height below ``ratio`` × their longest side."""
    verts, faces = check_mesh(verts, faces)
    if not len(faces):
        return 0
    return int(_shape.degenerate_count(np.ascontiguousarray(verts, dtype=np.float64),
                                       _index_array(faces), float(ratio)))


def self_intersections(verts, faces) -> int:
    """The number of pairs of triangles sharing no vertex that cross each other.

    Exact enough for tests on small meshes (float64 orientation tests; pairs
    found through a k-d tree of the triangles' centres): a pair counts when an
    edge of one passes through the other's interior.  Touching and coplanar
    pairs are not counted.
    """
    return len(crossing_pairs(verts, faces))


def crossing_pairs(verts, faces) -> np.ndarray:
    """The (k, 2) face indices of :func:`self_intersections`' pairs."""
    verts, faces = check_mesh(verts, faces)
    none = np.zeros((0, 2), np.int64)
    if len(faces) < 2:
        return none
    v = np.asarray(verts, dtype=np.float64)
    tri = v[faces]
    pairs = _nearby_pairs(tri.min(axis=1), tri.max(axis=1))
    if not len(pairs):
        return none
    fa, fb = faces[pairs[:, 0]], faces[pairs[:, 1]]
    shared = (fa[:, :, None] == fb[:, None, :]).any(axis=(1, 2))
    pairs = pairs[~shared]
    a, b = tri[pairs[:, 0]], tri[pairs[:, 1]]
    overlap = np.all((a.min(axis=1) <= b.max(axis=1)) & (b.min(axis=1) <= a.max(axis=1)), axis=1)
    a, b, pairs = a[overlap], b[overlap], pairs[overlap]
    crossing = np.zeros(len(a), bool)
    for one, other in ((a, b), (b, a)):
        for i in range(3):
            crossing |= _segment_crosses(one[:, i], one[:, (i + 1) % 3], other)
    return pairs[crossing]


def _nearby_pairs(lo, hi):
    """Pairs (i < j) of boxes that may overlap: each box goes into every cell of a
    grid (about twice the median box) it touches; pairs share a cell."""
    size = np.median(hi - lo, axis=0).max() * 2 or 1.0
    first = np.floor(lo / size).astype(np.int64)
    last = np.floor(hi / size).astype(np.int64)
    span = last - first + 1
    count = span.prod(axis=1)
    owner = np.repeat(np.arange(len(lo)), count)
    # the k-th cell of a box, as offsets along each axis
    k = np.arange(len(owner)) - np.repeat(np.cumsum(count) - count, count)
    sx, sy = span[owner, 0], span[owner, 1]
    cell = first[owner] + np.stack([k % sx, (k // sx) % sy, k // (sx * sy)], axis=1)
    cell -= cell.min(axis=0)
    dims = cell.max(axis=0) + 1
    key = (cell[:, 0] * dims[1] + cell[:, 1]) * dims[2] + cell[:, 2]
    order = np.argsort(key, kind="stable")
    key, owner = key[order], owner[order]
    found = []
    for d in range(1, len(key)):
        same = key[d:] == key[:-d]
        if not same.any():
            break
        found.append(np.stack([owner[:-d][same], owner[d:][same]], axis=1))
    if not found:
        return np.zeros((0, 2), np.int64)
    pairs = np.sort(np.concatenate(found), axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    n = np.int64(len(lo))
    key = np.sort(pairs[:, 0] * n + pairs[:, 1])  # one int64 a pair: a 1-d sort
    key = key[np.concatenate(([True], key[1:] != key[:-1]))]
    return np.stack([key // n, key % n], axis=1)


def _orient(a, b, c, d):
    """Sign of the volume of (a, b, c, d), row by row."""
    return np.sign(np.einsum("ij,ij->i", b - a, np.cross(c - a, d - a)))


def _segment_crosses(p, q, tri):
    """Rows where segment p–q passes through the interior of triangle ``tri``."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    sp, sq = _orient(a, b, c, p), _orient(a, b, c, q)
    s1, s2, s3 = _orient(p, q, a, b), _orient(p, q, b, c), _orient(p, q, c, a)
    return (sp * sq < 0) & (s1 == s2) & (s2 == s3) & (s1 != 0)


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


#: the step of each constrained smoothing iteration (the fraction of the way to
#: the ring's mean); with 10 iterations it flattens the terraces of 3 mm slices
#: (tests/converter/test_smoothing.py)
SMOOTH_STEP = 0.9
#: how close (in voxels) a vertex may come to either end of its grid edge: it
#: stays strictly between the samples inside and outside, so surfaces one voxel
#: apart do not meet
SMOOTH_MARGIN = 0.1
#: the volume step's folds are looked for among the triangles with a corner this
#: near (voxels) to a grid sample: where sheets crowd around a sample (spongy
#: bone: every fold found on the benchmark CT had a corner within 0.082, and
#: 0.1 finds each of its 281 pairs, as a look at every triangle does)
UNTANGLE_NEAR = 0.1
#: rounds of putting vertices back and looking again around them
UNTANGLE_ROUNDS = 8


def constrained_smooth(verts, faces, iterations: int, half, *, step: float = SMOOTH_STEP,
                       margin: float = SMOOTH_MARGIN, keep_volume: bool = True,
                       workers: int = 1):
    """Laplacian smoothing with every vertex kept near where marching cubes put it.

    Works on the vertices as marching cubes returns them, in (slice, row,
    column) index coordinates, where a vertex lies on a grid edge: fractional
    along the edge's axis, whole along the other two.  Each iteration moves
    every vertex ``step`` of the way to the mean of its neighbours and then
    back into its box: the grid interval of its edge along the edge's axis,
    ± ``half`` across it (the other axes).  So terraces between thick slices
    flatten out while no vertex leaves the part of the grid where the data
    put the surface.  The uniform mean commutes with the affine index →
    patient map, so smoothing in index space is smoothing in millimetres.
    The shrinking that Laplacian smoothing brings is undone afterwards
    (``keep_volume``) by :func:`restore_volumes`, within the same boxes: no
    vertex leaves its box, which is what keeps the surface from crossing
    itself where two parts or two sides of a thin part are a voxel apart.
    Where the volume step folds a triangle through a near one (sheets that
    crowd around one grid sample), :func:`converter._shape.untangle` puts
    the corners of both back where smoothing left them.

    Parameters
    ----------
    verts : (N, 3) float array
        Index coordinates (marching cubes' output).
    faces : (M, 3) int array
    iterations : int
        0 returns the input unchanged.
    half : sequence of 3 floats
        Half-width of the box across a vertex's edge, per axis, in voxels
        (> 0); the pipeline uses half the finest spacing, in each axis's units.
    step : float
        In (0, 1].
    margin : float
        How near (voxels) a vertex may come to the ends of its edge, in [0, 0.5).
    keep_volume : bool
        Give each part back the volume it enclosed (index space: the same
        ratio in mm for an affine grid).
    workers : int
        Threads sharing each iteration (the result does not depend on it).

    Returns
    -------
    (N, 3) float32 vertices (index coordinates) and the faces, unchanged.
    """
    if int(iterations) != iterations or iterations < 0:
        raise ValueError(f"iterations must be an integer >= 0, got {iterations}")
    if not 0 < step <= 1:
        raise ValueError(f"step must be in (0, 1], got {step}")
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), got {margin}")
    half = np.ascontiguousarray(half, dtype=np.float64).reshape(-1)
    if half.shape != (3,) or not np.all(np.isfinite(half)) or np.any(half <= 0):
        raise ValueError(f"half must be three numbers > 0, got {half}")
    if int(workers) != workers or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers}")
    verts, faces = check_mesh(verts, faces)
    orig = np.ascontiguousarray(verts, dtype=np.float32)
    if iterations == 0 or not len(faces):
        return orig, faces
    start, ring = _shape.ring(_index_array(faces), len(orig))
    n = len(orig)
    parts = min(int(workers), max(1, n // 50_000))
    cuts = [n * k // parts for k in range(parts + 1)]
    pool = None
    if parts > 1:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=parts)
    buffers = [orig.copy(), np.empty_like(orig)]

    def part(k, src, dst):
        _shape.smooth_step(src, dst, orig, start, ring, float(step), half, float(margin),
                           cuts[k], cuts[k + 1])

    try:
        for i in range(int(iterations)):
            src, dst = buffers[i % 2], buffers[1 - i % 2]
            if pool is None:
                part(0, src, dst)
            else:
                list(pool.map(part, range(parts), [src] * parts, [dst] * parts))
    finally:
        if pool is not None:
            pool.shutdown()
    smoothed = buffers[int(iterations) % 2]
    buffers = start = ring = None  # the ring and the spare buffer go before the volume step
    if keep_volume:
        index = _index_array(faces)
        stars = _shape.star(index, n)
        restored = restore_volumes(orig, smoothed, faces, box=(orig, half, float(margin)),
                                   workers=workers, stars=stars)
        _shape.untangle(restored, smoothed, index, UNTANGLE_NEAR, UNTANGLE_ROUNDS, stars,
                        int(workers))
        smoothed = restored
    return smoothed, faces


def restore_volumes(before, after, faces, *, box=None, limit=None, tolerance=1e-4,
                    max_passes=4, workers: int = 1, stars=None):
    """``after`` moved along its normals so each component encloses the volume it
    enclosed in ``before`` (the same faces).

    Each vertex moves in proportion to how far it moved from ``before``: what
    smoothing rounded off goes back where it came from, and flat parts that
    smoothing left alone stay.  Repeated until every component is within
    ``tolerance`` (relative) or ``max_passes`` were made; a part whose last
    shift was cut short by the boxes asks for that much more the next time.
    No vertex moves more than ``limit`` in all (default: as far as smoothing
    moved the farthest): a speck that smoothing shrank to nothing stays
    small.  With ``box`` (``(orig, half, margin)``, index coordinates) each
    pass ends with every vertex back in its :func:`constrained_smooth` box.
    Compiled (the ``_shape`` kernels ``restore_setup``, ``part_volumes``,
    ``part_reach``, ``restore_shift``), float32 with float64 sums, on
    ``workers`` threads; ``stars`` is ``_shape.star``'s CSR when the caller
    has it.

    Returns the moved vertices (float32); ``after`` is not changed.
    """
    before, faces = check_mesh(before, faces)
    before = np.ascontiguousarray(before, dtype=np.float32)
    after = np.array(after, dtype=np.float32, order="C")
    if after.shape != before.shape:
        raise ValueError("before and after must have the same shape")
    if not len(faces):
        return after
    index = _index_array(faces)
    n, m = len(after), len(index)
    count, labels = components(index, n)
    if box is None:
        orig, half, margin, clamp = before, np.ones(3), 0.0, False
    else:
        orig, half, margin = box
        orig = np.ascontiguousarray(orig, dtype=np.float32)
        half, clamp = np.ascontiguousarray(half, dtype=np.float64), True
    start, star = _shape.star(index, n) if stars is None else stars
    parts = max(1, min(int(workers), m // 100_000))
    vcuts = [n * k // parts for k in range(parts + 1)]
    fcuts = [m * k // parts for k in range(parts + 1)]
    pool = None
    if parts > 1:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=parts)

    def each(kernel, cuts):  # kernel(k, lo, hi) on every range k, on the threads
        if pool is None:
            return [kernel(0, cuts[0], cuts[1])]
        return list(pool.map(kernel, range(parts), cuts[:-1], cuts[1:]))

    normal = np.empty_like(after)
    weight = np.empty(n, np.float32)
    vlabel = np.empty(n, np.int64)
    origin = before.mean(axis=0, dtype=np.float64)
    everything = np.ones(count, np.uint8)

    def volumes(verts, wanted):
        sums = [np.zeros(count) for _ in range(parts)]
        each(lambda k, lo, hi: _shape.part_volumes(verts, index, labels, origin, wanted,
                                                   sums[k], lo, hi), fcuts)
        return np.sum(sums, axis=0)

    try:
        vol_before = volumes(before, everything)
        farthest = max(each(lambda k, lo, hi: _shape.restore_setup(
            after, before, index, labels, start, star, normal, weight, vlabel, lo, hi), vcuts))
        if limit is None:
            limit = farthest
        weight += np.float32(1e-6 * (farthest or 1.0))  # every vertex of a part may move a little
        reaches = [np.zeros(count) for _ in range(parts)]
        each(lambda k, lo, hi: _shape.part_reach(after, index, labels, weight, reaches[k],
                                                 lo, hi), fcuts)
        reach = np.sum(reaches, axis=0)
        moved = np.zeros(n, np.float32)
        is_open = np.ones(count, np.uint8)
        gain, scale = np.ones(count), np.zeros(count)
        vol_after = None
        for done in range(max_passes):  # first order in the shift: big shifts take more
            last = vol_after
            vol_after = volumes(after, is_open)
            change = (vol_before - vol_after) / 6.0
            if done:  # the boxes let only part of the asked shift through: ask more (≤ 8×)
                asked = scale * reach
                got = np.divide((vol_after - last) / 6.0, asked, out=np.zeros(count),
                                where=asked != 0)
                gain = np.where(asked != 0, np.maximum(1.0 / np.maximum(got, 0.125), 1.0), gain)
            # each part on its own: one that is done is left alone, and stays so
            is_open &= (np.abs(change) > tolerance * np.abs(vol_before) / 6.0) & (reach > 0)
            if not is_open.any():
                break
            scale = np.where(is_open, gain * change / np.where(reach > 0, reach, 1.0), 0.0)
            each(lambda k, lo, hi, scale=scale: _shape.restore_shift(
                after, normal, weight, moved, vlabel, scale, float(limit), orig, half,
                float(margin), clamp, lo, hi), vcuts)
    finally:
        if pool is not None:
            pool.shutdown()
    return after


#: decimations made until no collapse has folded a triangle through another:
#: the first unguarded, the next with the collapses around the folds found so
#: far guarded (refused where they would bring a triangle through one that
#: shares no corner with it), the last with every collapse guarded (~4 times
#: the time of an unguarded one, so only when the cheaper tries left folds)
UNFOLD_TRIES = 4
#: around each crossing pair, the corners and this many rings of the input mesh
#: around them are guarded in the next try
UNFOLD_RINGS = 2
#: a decimated mesh of at most this many triangles is also searched for crossings
#: everywhere (``crossing_pairs``), not only among triangles joined through an
#: edge: a heavy reduction can bring two sheets through each other with no edge
#: between them (the benchmark CT at 0.02: 12 of 50 pairs); above it (~0.2 s per
#: 10k triangles) the local search alone (it found every pair at 0.1 and above)
GLOBAL_CHECK_FACES = 150_000


def _folds(verts, faces, workers):
    """The pairs (k, 2) of crossing triangles a decimation made (see
    ``GLOBAL_CHECK_FACES``), each once, smaller index first."""
    pairs = _shape.crossings(verts.astype(np.float32), faces, workers)
    if len(faces) <= GLOBAL_CHECK_FACES:
        pairs = np.concatenate([np.asarray(pairs, np.int64).reshape(-1, 2),
                                crossing_pairs(verts, faces)])
    if not len(pairs):
        return np.zeros((0, 2), np.int64)
    return np.unique(np.sort(np.asarray(pairs, np.int64), axis=1), axis=0)


def decimate(verts, faces, *, fraction: float | None = None, max_triangles: int | None = None,
             workers: int = 1):
    """Quadric edge collapse to a fraction or a triangle budget, closed and manifold.

    Compiled (:func:`converter._shape.collapse`): Garland–Heckbert quadrics,
    scheduled in passes of rising error like fast-simplification, but an edge
    collapses only when the mesh stays a closed 2-manifold (the link
    condition; no triangle flips or becomes a sliver), so a closed,
    consistently oriented mesh stays one.  Fewer triangles than asked for
    are left only when no further collapse would keep it so.  Where a
    collapse folds a triangle through another (:func:`_folds`), the
    decimation is made again with the collapses around it guarded (none
    may bring a triangle through another), the last time every collapse
    (see ``UNFOLD_TRIES``); a guarded result with more triangles is taken
    only where the unguarded one missed a ``fraction`` too (a
    ``max_triangles`` budget stays a bound).

    Parameters
    ----------
    fraction : float, optional
        Fraction of triangles to keep, in (0, 1].
    max_triangles : int, optional
        Upper bound on the triangle count, >= 4.
    workers : int
        Threads for the search for folds.

    Returns
    -------
    verts (float64) and faces (int32 or int64) without unused vertices.
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
    if len(verts) >= 2**31:
        raise ValueError("decimation takes meshes of fewer than 2**31 vertices")
    faces32 = np.ascontiguousarray(faces, dtype=np.int32)
    guarded, best, allowed = None, None, max(target, 4)
    for attempt in range(UNFOLD_TRIES):
        out_v = np.array(verts, dtype=np.float64, order="C")  # collapsed in place
        out_f = faces32.copy()
        left = _shape.collapse(out_v, out_f, max(target, 4), guarded=guarded)
        if best is None:
            allowed = max(allowed, left)  # what the unguarded collapse could reach
            if fraction is not None and left > max(target, 4):
                allowed = len(faces)  # a fraction it cannot reach: no folds comes first
        elif left > allowed:
            continue  # refusals cost triangles (a budget is a bound): not this one
        pairs = _folds(out_v, out_f[:left], workers)
        if best is None or len(pairs) < best[0]:
            best = (len(pairs), out_v, left, out_f)
        if not len(pairs):
            break
        # a collapse folded a triangle through another: again, with the
        # collapses around both guarded (every collapse in the last try)
        if guarded is None:
            guarded = np.zeros(len(verts), np.uint8)
        if attempt + 2 >= UNFOLD_TRIES:
            guarded[:] = 1
            continue
        corners = np.unique(out_f[:left][pairs.reshape(-1)])
        for _ in range(UNFOLD_RINGS):
            corners = np.unique(faces32[np.isin(faces32, corners).any(axis=1)])
        guarded[corners] = 1
    _, out_v, left, out_f = best
    return compact(out_v, out_f[:left])
