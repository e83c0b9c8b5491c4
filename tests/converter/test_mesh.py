"""Mesh measures and operations on meshes with known answers; the compiled
kernels against the numpy reference of ``tests/reference/mesh_numpy.py``."""

import numpy as np
import pytest

from converter import mesh as M
from tests.reference import mesh_numpy as R


def cube(lo=(0, 0, 0), size=1.0):
    """A closed unit cube, 12 triangles, outward normals."""
    v = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float) * size
    v += np.asarray(lo, float)
    # index = 4x + 2y + z
    f = np.array([
        [0, 1, 3], [0, 3, 2],  # x=0 face, normal -x
        [4, 6, 7], [4, 7, 5],  # x=1
        [0, 4, 5], [0, 5, 1],  # y=0
        [2, 3, 7], [2, 7, 6],  # y=1
        [0, 2, 6], [0, 6, 4],  # z=0
        [1, 5, 7], [1, 7, 3],  # z=1
    ])
    return v, f


def icosphere(radius=10.0, subdivisions=3, center=(0, 0, 0)):
    t = (1 + 5 ** 0.5) / 2
    v = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
                  [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], float)
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9],
                  [5, 11, 4], [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2],
                  [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10],
                  [8, 6, 7], [9, 8, 1]])
    for _ in range(subdivisions):
        edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
        uniq, inv = np.unique(edges, axis=0, return_inverse=True)
        mid = len(v) + inv.reshape(3, -1).T  # a=01, b=12, c=20
        v = np.concatenate([v, (v[uniq[:, 0]] + v[uniq[:, 1]]) / 2])
        a, b, c = mid[:, 0], mid[:, 1], mid[:, 2]
        f = np.concatenate([np.stack([f[:, 0], a, c], 1), np.stack([f[:, 1], b, a], 1),
                            np.stack([f[:, 2], c, b], 1), np.stack([a, b, c], 1)])
    v = v / np.linalg.norm(v, axis=1, keepdims=True) * radius + np.asarray(center, float)
    return v, f


def test_cube_measures():
    v, f = cube(size=2.0)
    assert M.signed_volume(v, f) == pytest.approx(8.0)
    assert M.measures(v, f).area == pytest.approx(24.0)
    np.testing.assert_allclose(M.measures(v, f).centroid, [1, 1, 1], atol=1e-12)
    topo = M.topology(v, f)
    assert topo.watertight and topo.manifold and topo.components == 1


def test_inside_out_cube_has_negative_volume():
    v, f = cube()
    assert M.signed_volume(v, f[:, [0, 2, 1]]) == pytest.approx(-1.0)


def test_open_and_nonmanifold_meshes_are_flagged():
    v, f = cube()
    topo = M.topology(v, f[:-1])
    assert not topo.watertight and topo.boundary_edges == 3
    # a third face on an existing edge makes it non-manifold
    v2 = np.vstack([v, [[0.5, -1, 0.5]]])
    topo = M.topology(v2, np.vstack([f, [[0, 1, 8]]]))
    assert not topo.manifold and topo.nonmanifold_edges == 1
    # inconsistent winding: flip one face
    g = f.copy()
    g[0] = g[0, [0, 2, 1]]
    assert not M.topology(v, g).manifold


def test_components_keep_largest_and_drop_islands():
    v1, f1 = cube(size=3.0)
    v2, f2 = cube(lo=(10, 0, 0), size=1.0)
    v = np.vstack([v1, v2])
    f = np.vstack([f1, f2 + len(v1)])
    count, labels = M.components(f, len(v))
    assert count == 2 and len(labels) == 24
    lv, lf = M.keep_largest(v, f)
    assert M.signed_volume(lv, lf) == pytest.approx(27.0) and len(lv) == 8
    iv, i_f = M.drop_islands(v, f, 5.0)
    assert M.signed_volume(iv, i_f) == pytest.approx(27.0)
    kv, kf = M.drop_islands(v, f, 0.5)
    assert M.signed_volume(kv, kf) == pytest.approx(28.0)
    with pytest.raises(ValueError, match="min_volume"):
        M.drop_islands(v, f, -1)


def test_drop_degenerate_and_compact():
    v, f = cube()
    v = np.vstack([v, [[5, 5, 5]]])  # unused vertex
    f = np.vstack([f, [[0, 0, 1], [0, 1, 1]]])  # repeated-vertex faces
    v2, f2 = M.drop_degenerate(v, f)
    assert len(f2) == 12 and len(v2) == 8
    assert M.topology(v2, f2).watertight


def test_constrained_smoothing_keeps_vertices_in_their_boxes_and_parts_their_volume():
    from converter.marching import marching_cubes

    z, y, x = np.mgrid[0:14, 0:30, 0:30]
    field = 9.0 - np.sqrt(((z - 6.5) * 3) ** 2 + (y - 14.2) ** 2 + (x - 15.1) ** 2)
    verts, faces = marching_cubes(np.where(field > 0, 1.0, -1.0), 0.0, pad=-1.0)  # terraces
    half = np.array([1 / 6, 0.5, 0.5])
    smooth, same = M.constrained_smooth(verts, faces, 10, half)
    assert same is faces and smooth.dtype == np.float32
    moved = np.abs(smooth - verts)
    assert moved.max() > 0.1  # it does something
    whole = verts == np.floor(verts)  # across the vertex's edge: at most half
    assert np.all(moved[whole] <= np.broadcast_to(half, verts.shape)[whole] + 1e-6)
    edge = ~whole  # along it: inside the edge, 0.1 voxel from its ends
    assert np.all(smooth[edge] >= np.floor(verts[edge]) + M.SMOOTH_MARGIN - 1e-6)
    assert np.all(smooth[edge] <= np.floor(verts[edge]) + 1 - M.SMOOTH_MARGIN + 1e-6)
    shrunk, _ = M.constrained_smooth(verts, faces, 10, half, keep_volume=False)
    assert M.signed_volume(shrunk, faces) < 0.95 * M.signed_volume(verts, faces)
    assert M.signed_volume(smooth, faces) == pytest.approx(M.signed_volume(verts, faces),
                                                           rel=1e-3)
    np.testing.assert_array_equal(M.constrained_smooth(verts, faces, 0, half)[0], verts)
    threads, _ = M.constrained_smooth(verts, faces, 10, half, workers=3)
    np.testing.assert_array_equal(threads, smooth)  # threads change nothing
    assert M.check(smooth, faces).closed_manifold
    assert M.self_intersections(smooth, faces) == 0


def test_the_volume_step_leaves_no_triangle_folded_through_another():
    """Spongy bone (the sample's texture: voxels just below the level between
    much brighter ones) crowds sheets of the surface around grid samples; the
    volume step alone folds triangles through near ones there, and the
    smoothing puts them back (``_shape.untangle``), keeping the volume."""
    from converter import _shape
    from converter.marching import marching_cubes
    from converter.sample import sample_volume

    verts, faces = marching_cubes(np.pad(sample_volume(12, 256), 1, constant_values=-2000),
                                  300.0)
    half = np.array([0.5 * 0.7 / 3, 0.5, 0.5])
    shrunk, _ = M.constrained_smooth(verts, faces, 10, half, keep_volume=False)
    orig = np.ascontiguousarray(verts, dtype=np.float32)
    folded = M.restore_volumes(orig, shrunk, faces, box=(orig, half, M.SMOOTH_MARGIN))
    crossings = M.self_intersections(folded, faces)
    assert crossings > 0  # a case that needs the step
    # the compiled search, looking at every triangle, finds what the exact test does
    probe = folded.copy()
    assert _shape.untangle(probe, shrunk, faces, 1.0, 0) == (crossings, crossings)
    assert _shape.untangle(probe, shrunk, faces, M.UNTANGLE_NEAR, 0)[0] == crossings
    smooth, _ = M.constrained_smooth(verts, faces, 10, half)
    assert M.self_intersections(smooth, faces) == 0
    assert M.check(smooth, faces).closed_manifold
    assert M.signed_volume(smooth, faces) == pytest.approx(M.signed_volume(verts, faces),
                                                           rel=1e-3)


def test_decimation_folds_no_triangle_through_another():
    """A plain edge collapse of spongy bone folds a few triangles through near
    ones; ``decimate`` makes it again with the collapses there guarded."""
    from converter import _shape
    from converter.marching import marching_cubes
    from converter.sample import sample_volume

    verts, faces = marching_cubes(np.pad(sample_volume(24, 256), 1, constant_values=-2000),
                                  300.0)
    smooth, _ = M.constrained_smooth(verts, faces, 10, np.array([0.5 * 0.7 / 3, 0.5, 0.5]))
    plain_v = smooth.astype(np.float64)
    plain_f = np.ascontiguousarray(faces, dtype=np.int32).copy()
    left = _shape.collapse(plain_v, plain_f, len(faces) // 2)
    assert M.self_intersections(plain_v, plain_f[:left]) > 0  # a case that needs the check
    dv, df = M.decimate(smooth, faces, fraction=0.5, workers=2)
    assert M.self_intersections(dv, df) == 0
    assert M.check(dv, df).closed_manifold
    assert len(df) <= len(faces) // 2 * 1.01


def test_a_guarded_collapse_folds_nothing_and_costs_no_triangles():
    """``collapse(..., guarded=...)`` refuses every collapse of a guarded vertex
    that would bring a triangle through another (joined by an edge or not):
    on spongy bone at 0.02, where the plain collapse folds, none is left, with
    as many triangles; guarding nothing changes nothing."""
    from converter import _shape
    from converter.marching import marching_cubes
    from converter.sample import sample_volume

    verts, faces = marching_cubes(np.pad(sample_volume(24, 256), 1, constant_values=-2000),
                                  300.0)
    smooth, _ = M.constrained_smooth(verts, faces, 10, np.array([0.5 * 0.7 / 3, 0.5, 0.5]))
    target = round(len(faces) * 0.02)

    def collapsed(guarded):
        v = smooth.astype(np.float64)
        f = np.ascontiguousarray(faces, dtype=np.int32).copy()
        left = _shape.collapse(v, f, target, guarded=guarded)
        return v, f[:left]

    plain = collapsed(None)
    assert M.self_intersections(*plain) > 0  # a case that needs the guard
    none = collapsed(np.zeros(len(smooth), np.uint8))
    np.testing.assert_array_equal(none[1], plain[1])
    np.testing.assert_array_equal(none[0], plain[0])
    v, f = collapsed(np.ones(len(smooth), np.uint8))
    assert M.self_intersections(v, f) == 0
    assert M.check(*M.compact(v, f)).closed_manifold
    assert len(f) <= target * 1.01
    with pytest.raises(ValueError, match="guarded"):
        collapsed(np.ones(3, np.uint8))


def test_heavy_decimation_finds_folds_no_edge_joins():
    """At 0.02 of spongy bone the plain collapse brings sheets through each
    other that no edge joins (the local search cannot see them: the global one,
    ``GLOBAL_CHECK_FACES``, does); the decimated mesh has no crossing left."""
    from converter import _shape
    from converter.marching import marching_cubes
    from converter.sample import sample_volume

    verts, faces = marching_cubes(np.pad(sample_volume(120, 384), 1, constant_values=-2000),
                                  300.0)
    smooth, _ = M.constrained_smooth(verts, faces, 10, np.array([0.5 * 0.7 / 3, 0.5, 0.5]))
    target = round(len(faces) * 0.02)
    plain_v = smooth.astype(np.float64)
    plain_f = np.ascontiguousarray(faces, dtype=np.int32).copy()
    left = _shape.collapse(plain_v, plain_f, target)
    local = {tuple(sorted(p)) for p in _shape.crossings(plain_v.astype(np.float32),
                                                         plain_f[:left], 2).tolist()}
    found = {tuple(sorted(p)) for p in M.crossing_pairs(plain_v, plain_f[:left]).tolist()}
    assert found - local  # a case that needs the global search
    assert left <= M.GLOBAL_CHECK_FACES
    dv, df = M.decimate(smooth, faces, fraction=0.02, workers=2)
    assert M.self_intersections(dv, df) == 0
    assert M.check(dv, df).closed_manifold
    assert len(df) <= target * 1.01


def test_the_fold_search_sees_crossings_no_edge_joins():
    """Two parts through each other share no edge: the local search cannot see
    them, the decimation's (``mesh._folds``, on a mesh this small) does."""
    from converter import _shape

    v, f = icosphere(radius=5.0, subdivisions=1)
    verts = np.concatenate([v, v + (4.0, 0, 0)])
    faces = np.ascontiguousarray(np.concatenate([f, f + len(v)]), dtype=np.int32)
    assert len(_shape.crossings(verts.astype(np.float32), faces, 1)) == 0
    found = M._folds(verts, faces, 1)
    assert len(found) == M.self_intersections(verts, faces) > 0
    assert (found[:, 0] < found[:, 1]).all()


def test_constrained_smoothing_checks_arguments():
    v, f = cube()
    with pytest.raises(ValueError, match="iterations"):
        M.constrained_smooth(v, f, -1, [0.5] * 3)
    with pytest.raises(ValueError, match="half"):
        M.constrained_smooth(v, f, 1, [0.5, 0.5])
    with pytest.raises(ValueError, match="step"):
        M.constrained_smooth(v, f, 1, [0.5] * 3, step=1.5)


def test_decimate_to_fraction_and_budget():
    v, f = icosphere(radius=10.0, subdivisions=4)  # 5120 triangles
    dv, df = M.decimate(v, f, fraction=0.25)
    assert abs(len(df) - 1280) <= 0.05 * 1280
    assert M.check(dv, df).closed_manifold
    assert abs(M.signed_volume(dv, df) / M.signed_volume(v, f) - 1) < 0.03
    bv, bf = M.decimate(v, f, max_triangles=500)
    assert len(bf) <= 500 and M.check(bv, bf).closed_manifold
    tv, tf = M.decimate(v, f, max_triangles=4)  # down to a tetrahedron, still closed
    assert len(tf) == 4 and M.check(tv, tf).closed_manifold
    with pytest.raises(ValueError, match="fraction"):
        M.decimate(v, f, fraction=1.5)
    with pytest.raises(ValueError, match="exactly one"):
        M.decimate(v, f)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"verts must have shape \(N, 3\)"):
        M.signed_volume(np.zeros((3, 2)), np.zeros((1, 3), int))
    with pytest.raises(IndexError, match="do not exist"):
        M.measures(np.zeros((3, 3)), np.array([[0, 1, 5]]))


def test_one_pass_measures_agree_with_the_separate_ones():
    v, f = icosphere(radius=4.0, subdivisions=3, center=(3, -1, 7))
    m = M.measures(v, f)
    assert m.area == pytest.approx(R.area(v, f))
    assert m.volume == pytest.approx(M.signed_volume(v, f))
    np.testing.assert_allclose(m.centroid, R.volume_centroid(v, f), atol=1e-9)
    np.testing.assert_allclose(m.centroid, [3, -1, 7], atol=1e-9)


def _odd_meshes():
    """Closed, open, non-manifold, misoriented and multi-part meshes."""
    rng = np.random.default_rng(8)
    v, f = cube()
    sphere_v, sphere_f = icosphere(subdivisions=2)
    yield v, f
    yield v, f[:-1]  # open
    yield v, np.concatenate([f, f[:1]])  # a face twice: non-manifold
    yield v, np.concatenate([f[:1, ::-1], f[1:]])  # one face flipped
    v2, f2 = cube(lo=(3, 0, 0))
    yield np.concatenate([v, v2, sphere_v + 20]), np.concatenate(
        [f, f2 + len(v), sphere_f + 2 * len(v)])
    yield sphere_v, sphere_f[rng.permutation(len(sphere_f))]
    yield rng.normal(size=(30, 3)), rng.integers(0, 30, size=(50, 3))  # random soup


def test_compiled_measures_topology_and_components_match_numpy():
    for verts, faces in _odd_meshes():
        fast, ref = M.measures(verts, faces), R.measures(verts, faces)
        assert fast.area == pytest.approx(ref.area, rel=1e-12, abs=1e-12)
        assert fast.volume == pytest.approx(ref.volume, rel=1e-12, abs=1e-12)
        np.testing.assert_allclose(fast.centroid, ref.centroid, rtol=1e-10, atol=1e-9)
        assert M.topology(verts, faces) == R.topology(verts, faces)
        count, labels = M.components(faces, len(verts))
        ref_count, ref_labels = R.components(faces, len(verts))
        assert count == ref_count
        np.testing.assert_array_equal(labels, ref_labels)


def test_flip_winding_copies_or_works_in_place():
    v, f = cube()
    flipped = M.flip_winding(f)
    assert M.signed_volume(v, flipped) == pytest.approx(-1.0)
    assert M.signed_volume(v, f) == pytest.approx(1.0)  # the input is untouched
    same = f.copy()
    assert M.flip_winding(same, in_place=True) is same
    np.testing.assert_array_equal(same, flipped)
    with pytest.raises(ValueError, match="shape"):
        M.flip_winding(np.zeros((2, 2), int))


def test_bounds_and_component_count():
    v, f = icosphere(subdivisions=1)
    lo, hi = M.bounds(v)
    np.testing.assert_array_equal(lo, v.min(axis=0))
    np.testing.assert_array_equal(hi, v.max(axis=0))
    for verts, faces in _odd_meshes():
        assert M.topology(verts, faces).components == R.components(faces, len(verts))[0]


def test_compiled_mesh_kernels_refuse_bad_indices_and_shapes():
    """The extension checks what it is given instead of reading past an array."""
    from converter import stl

    verts = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    good = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.int32)
    assert M._edge_counts(good, 4) == (0, 0, True)
    assert M._count_components(good, 4) == 1
    for bad in (np.array([[0, 1, 4]]), np.array([[0, -1, 2]], np.int32)):
        for call in (lambda f: M._edge_counts(f, 4),
                     lambda f: M.components(f, 4),
                     lambda f: M._count_components(f, 4),
                     lambda f: M._measures(verts, f),
                     lambda f: stl._fill_records(
                         verts.astype(np.float32), f, np.empty(1, stl.STL_DTYPE))):
            with pytest.raises(ValueError):
                call(bad)
    with pytest.raises(ValueError):
        stl._fill_records(verts.astype(np.float32), good, np.empty(3, stl.STL_DTYPE))


def test_check_counts_what_makes_a_mesh_unprintable():
    v, f = cube()
    good = M.check(v, f)
    assert good.closed_manifold and good.volume == pytest.approx(1.0)
    assert M.check(v, f[:-1]).boundary_edges == 3
    assert M.check(v, np.concatenate([f, f[:1]])).nonmanifold_edges == 3
    assert not M.check(v, np.concatenate([f[:1, ::-1], f[1:]])).oriented
    assert not M.check(v, f[:, ::-1]).closed_manifold  # inside out
    flat = np.concatenate([v, v[:1]])  # a ninth vertex on top of the first
    sliver = M.check(flat, np.concatenate([f, [[0, 8, 1], [8, 0, 1]]]))
    assert sliver.degenerate_triangles == 2 and not sliver.closed_manifold
    assert M.check(v, np.array([[0, 0, 1]])).degenerate_triangles == 1


def test_self_intersections_are_found_and_touching_is_not():
    v, f = icosphere(radius=5.0, subdivisions=1)
    assert M.self_intersections(v, f) == 0
    two = np.concatenate([v, v + (4.0, 0, 0)]), np.concatenate([f, f + len(v)])
    assert M.self_intersections(*two) > 0  # overlapping spheres cross
    apart = np.concatenate([v, v + (11.0, 0, 0)]), np.concatenate([f, f + len(v)])
    assert M.self_intersections(*apart) == 0
    c, cf = cube()
    dent = c.copy()
    dent[7] = (-0.5, 0.5, 0.5)  # a corner pushed out through the opposite face
    assert M.self_intersections(dent, cf) > 0


def test_decimation_of_marching_cubes_stays_a_closed_manifold_at_every_fraction():
    """Rough surfaces with thin parts and handles (49 parts, genus 140): where
    collapsing without the link condition (fast-simplification) leaves 133
    edges on four triangles at 0.2.  Below some size a part with handles has
    no collapse left that keeps it closed: the mesh stops there."""
    from converter.marching import marching_cubes

    rng = np.random.default_rng(3)
    field = rng.normal(size=(24, 24, 24))
    for _ in range(3):  # a little smoothing: tubes and sheets, not dust
        field = (field + np.roll(field, 1, 0) + np.roll(field, 1, 1) + np.roll(field, 1, 2)) / 4
    verts, faces = marching_cubes(field, 0.1, pad=-10.0)
    verts = verts.astype(np.float64) * (2.0, 0.5, 0.5)
    assert M.check(verts, faces).closed_manifold
    for fraction in (0.5, 0.2, 0.05):
        dv, df = M.decimate(verts, faces, fraction=fraction)
        check = M.check(dv, df)
        assert check.closed_manifold, (fraction, check)
        assert M.self_intersections(dv, df) == 0, fraction  # a plain collapse: 289 at 0.05
        assert len(df) <= max(round(len(faces) * fraction), 0.07 * len(faces))
        assert M.topology(dv, df).components <= M.topology(verts, faces).components
