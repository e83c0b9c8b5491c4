"""Marching cubes against scikit-image, the independent reference, and
against the numpy reference of ``tests/reference/marching_numpy.py``.

``kernel`` is the product (:mod:`converter.marching`, the Cython kernel),
``reference`` the vectorized numpy engine; each must agree with scikit-image
(vertices on the isosurface, enclosed volume, closed and manifold wherever
scikit-image's mesh is) and the two must make the same mesh.  Timings live in
``bench/``, never here.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage.measure import marching_cubes as sk_marching_cubes

import converter.marching as mc
from converter import mesh as M
from converter.marching import marching_cubes
from tests import dicomgen as G
from tests.reference import marching_numpy as R

ENGINES = {"reference": R.marching_cubes, "kernel": marching_cubes}


def test_the_compiled_kernels_are_in_use():
    """The install builds the kernels as extension modules."""
    from converter import _marching, _mesh

    for module in (_marching, _mesh):
        assert module.__file__.endswith(".so"), module.__file__


def trilinear(volume, points):
    """Trilinear interpolation of ``volume`` at fractional index ``points``."""
    p = np.asarray(points, np.float64)
    i0 = np.clip(np.floor(p).astype(int), 0, np.array(volume.shape) - 2)
    t = p - i0
    out = np.zeros(len(p))
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                w = (t[:, 0] if dz else 1 - t[:, 0]) * (t[:, 1] if dy else 1 - t[:, 1]) \
                    * (t[:, 2] if dx else 1 - t[:, 2])
                out += w * volume[i0[:, 0] + dz, i0[:, 1] + dy, i0[:, 2] + dx]
    return out


def distance_to_isosurface(volume, level, verts):
    """Per vertex, how far (in voxels) it lies from the isosurface: along its grid
    edge for edge vertices (two integral coordinates), and |f - level| / |grad f|
    of the trilinear field for a cell's extra vertex."""
    vol = volume.astype(np.float64)
    v = verts.astype(np.float64)
    near = np.abs(v - np.rint(v)) < 1e-6
    edge = near.sum(axis=1) >= 2
    out = np.empty(len(v))
    ev, en = v[edge], near[edge]
    axis = np.argmin(en, axis=1)  # the one fractional coordinate
    rows = np.arange(len(ev))
    base = np.rint(ev).astype(int)
    base[rows, axis] = np.floor(ev[rows, axis]).astype(int)
    step = np.zeros_like(base)
    step[rows, axis] = 1
    v0 = vol[tuple(base.T)]
    v1 = vol[tuple((base + step).T)]
    exact = (level - v0) / (v1 - v0)
    out[edge] = np.abs(ev[rows, axis] - base[rows, axis] - exact)
    cv = v[~edge]
    if len(cv):
        f = trilinear(vol, cv) - level
        h = 1e-6
        grad = np.stack([(trilinear(vol, cv + h * np.eye(3)[k]) - trilinear(vol, cv - h * np.eye(3)[k]))
                         / (2 * h) for k in range(3)], axis=1)
        out[~edge] = np.abs(f) / np.linalg.norm(grad, axis=1)
    return out


def check_against_skimage(volume, level, rel_volume=0.005, engine="kernel"):
    verts, faces = ENGINES[engine](volume, level)
    sv, sf, _, _ = sk_marching_cubes(volume.astype(np.float64), level, allow_degenerate=False)
    v = verts.astype(np.float64)
    # every vertex on the isosurface to within 1e-4 voxel
    assert distance_to_isosurface(volume, level, verts).max() <= 1e-4
    ours = M.signed_volume(v, faces)
    theirs = abs(M.signed_volume(sv, sf))  # skimage winds the other way round
    assert ours > 0
    assert ours == pytest.approx(theirs, rel=rel_volume, abs=1e-9)
    topo, sk_topo = M.topology(v, faces), M.topology(sv, sf)
    if sk_topo.watertight:
        assert topo.watertight
    assert topo.manifold
    # no degenerate triangles
    tri = v[faces]
    area2 = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    assert area2.min() > 0
    return verts, faces


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("config", range(1, 255))
def test_every_cube_configuration(config, engine):
    cube = np.array([(config >> i) & 1 for i in range(8)], np.float64).reshape(2, 2, 2)
    volume = np.pad(cube * 2.0 + 0.25, 1, constant_values=0.0)  # inside 2.25, outside 0.25 / 0
    verts, faces = check_against_skimage(volume, 1.0, rel_volume=0.06, engine=engine)
    topo = M.topology(verts.astype(np.float64), faces)
    assert topo.watertight and topo.manifold


@pytest.mark.parametrize("engine", ENGINES)
def test_empty_and_full_configurations(engine):
    for value in (0.0, 2.0):  # configurations 0 and 255
        verts, faces = ENGINES[engine](np.full((4, 4, 4), value), 1.0)
        assert len(verts) == 0 and len(faces) == 0


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_smooth_fields(seed, engine):
    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.normal(size=(28, 30, 32)), 2.0)
    field = np.pad(field, 1, constant_values=field.min() - 1)
    check_against_skimage(field, float(np.percentile(field, 65)), engine=engine)


@pytest.mark.parametrize("engine", ENGINES)
def test_random_rough_field_stays_closed(engine):
    rng = np.random.default_rng(7)
    field = np.pad(rng.normal(size=(16, 17, 18)), 1, constant_values=-10.0)
    verts, faces = ENGINES[engine](field, 0.0)
    topo = M.topology(verts.astype(np.float64), faces)
    assert topo.watertight and topo.manifold


@pytest.mark.parametrize("engine", ENGINES)
def test_sphere_box_and_l_shape(engine):
    z, y, x = np.mgrid[:40, :42, :44].astype(np.float64)
    sphere = 15 - np.sqrt((z - 20) ** 2 + (y - 21) ** 2 + (x - 21.5) ** 2)
    check_against_skimage(sphere, 0.0, engine=engine)
    box = np.zeros((30, 30, 30))
    box[5:20, 8:25, 3:27] = 10
    check_against_skimage(box, 5.0, engine=engine)
    ell = np.zeros((30, 30, 30))
    ell[4:24, 4:10, 4:12] = 10
    ell[4:10, 4:26, 4:12] = 10
    verts, faces = check_against_skimage(ell, 5.0, engine=engine)
    assert M.topology(verts.astype(np.float64), faces).components == 1


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("phantom_name", ["sphere", "box", "l_shape", "two_spheres"])
def test_rendered_phantoms(phantom_name, engine):
    """The int16 phantoms of the end-to-end tests, meshed in index space."""
    phantom = getattr(G, phantom_name)()
    geometry = G.make_geometry(size=(36, 40, 44))
    volume = G.render(phantom, geometry)
    check_against_skimage(np.pad(volume, 1, constant_values=G.BG_HU), 0.5 * (G.FG_HU + G.BG_HU),
                          engine=engine)


@pytest.mark.parametrize("engine", ENGINES)
def test_integer_volume_with_values_exactly_at_the_level(engine):
    rng = np.random.default_rng(3)
    vol = rng.integers(-2, 3, size=(20, 21, 22)).astype(np.int16)
    vol = np.pad(vol, 1, constant_values=-5)
    verts, faces = ENGINES[engine](vol, 0)  # many voxels are exactly 0
    v = verts.astype(np.float64)
    topo = M.topology(v, faces)
    assert topo.watertight and topo.manifold
    tri = v[faces]
    area2 = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    assert area2.min() > 0
    # on the isosurface within 1e-4 voxel (the exact-level voxels' vertices sit 5e-5 off)
    assert distance_to_isosurface(vol, 0, verts).max() <= 1e-4
    # distinct even as float32 patient coordinates far from the origin
    tri32 = (v * 0.7 + 250.0).astype(np.float32)[faces]
    assert not np.any((tri32[:, 0] == tri32[:, 1]).all(1) | (tri32[:, 1] == tri32[:, 2]).all(1)
                      | (tri32[:, 0] == tri32[:, 2]).all(1))


def canonical(verts, faces):
    """The mesh as a set of triangles of rounded coordinates (vertex order free)."""
    tri = np.round(verts[faces].astype(np.float64), 5)
    rolled = [np.roll(tri, -k, axis=1) for k in range(3)]
    keys = np.stack([r.reshape(len(tri), -1) for r in rolled])  # 3 rotations, same winding
    best = np.array([min(map(tuple, keys[:, i])) for i in range(len(tri))])
    return sorted(map(tuple, best))


@pytest.mark.parametrize("engine", ENGINES)
def test_slab_parallel_path_gives_the_same_mesh(monkeypatch, engine):
    module = mc if engine == "kernel" else R
    rng = np.random.default_rng(5)
    field = gaussian_filter(rng.normal(size=(40, 36, 34)), 1.5)
    field = np.pad(field, 1, constant_values=-5.0)
    monkeypatch.setattr(module, "SLAB_VOXELS", 36 * 38 * 3)  # force many slabs
    single = ENGINES[engine](field, 0.05, workers=1)
    double = ENGINES[engine](field, 0.05, workers=2)
    monkeypatch.setattr(module, "SLAB_VOXELS", 10**9)  # one slab
    whole = ENGINES[engine](field, 0.05, workers=1)
    assert canonical(*single) == canonical(*double) == canonical(*whole)
    np.testing.assert_array_equal(single[1], double[1])
    np.testing.assert_array_equal(single[0], double[0])
    if engine == "kernel":  # its numbering does not depend on the slabs at all
        np.testing.assert_array_equal(single[0], whole[0])
        np.testing.assert_array_equal(single[1], whole[1])


def same_mesh(a, b, atol=2e-5):
    """Same triangles (winding included) up to vertex order, coordinates within ``atol``."""
    from scipy.spatial import cKDTree

    (va, fa), (vb, fb) = a, b
    assert len(va) == len(vb) and len(fa) == len(fb)
    if not len(va):
        return
    dist, match = cKDTree(vb.astype(np.float64)).query(va.astype(np.float64))
    assert dist.max() <= atol
    assert len(np.unique(match)) == len(va)  # one to one
    ta, tb = match[fa], fb.copy()
    # rotate each triangle so its smallest vertex comes first (keeps the winding)
    for t in (ta, tb):
        k = np.argmin(t, axis=1)
        t[:] = np.stack([np.take_along_axis(t, ((k + j) % 3)[:, None], 1)[:, 0]
                         for j in range(3)], axis=1)
    ta = ta[np.lexsort(ta.T[::-1])]
    tb = tb[np.lexsort(tb.T[::-1])]
    np.testing.assert_array_equal(ta, tb)


@pytest.mark.parametrize("case", ["smooth", "rough", "integers", "float32", "uint8"])
@pytest.mark.parametrize("pad", [None, "below"])
def test_compiled_kernel_makes_the_numpy_mesh(case, pad):
    rng = np.random.default_rng(11)
    if case == "smooth":
        vol, level = gaussian_filter(rng.normal(size=(30, 26, 28)), 1.7), 0.02
    elif case == "rough":
        vol, level = rng.normal(size=(14, 15, 16)), 0.1
    elif case == "integers":  # many voxels exactly at the level
        vol, level = rng.integers(-3, 4, size=(18, 19, 20)).astype(np.int16), 0
    elif case == "float32":
        vol, level = gaussian_filter(rng.normal(size=(20, 22, 24)), 1.2).astype(np.float32), 0.0
    else:
        vol, level = rng.integers(0, 255, size=(12, 13, 14)).astype(np.uint8), 127.5
    pad_value = None if pad is None else float(np.floor(vol.min())) - 1.0
    ours = marching_cubes(vol, level, pad=pad_value)
    reference = R.marching_cubes(vol, level, pad=pad_value)
    same_mesh(ours, reference)
    if pad is not None:
        assert M.topology(ours[0].astype(np.float64), ours[1]).watertight


@pytest.mark.parametrize("engine", ENGINES)
def test_pad_closes_like_a_padded_copy_and_keeps_index_units(engine):
    rng = np.random.default_rng(2)
    vol = gaussian_filter(rng.normal(size=(16, 18, 20)), 1.5)
    vol[0] += 1.0  # the surface runs into the first plane
    padded = ENGINES[engine](np.pad(vol, 1, constant_values=-9.0), 0.0)
    virtual = ENGINES[engine](vol, 0.0, pad=-9.0)
    same_mesh((virtual[0] + np.float32(1), virtual[1]), padded)
    assert virtual[0].min() >= -1 and M.topology(virtual[0].astype(float), virtual[1]).watertight


@pytest.mark.parametrize("engine", ENGINES)
def test_a_cropped_view_is_meshed_like_its_copy(engine):
    rng = np.random.default_rng(4)
    vol = (gaussian_filter(rng.normal(size=(24, 26, 28)), 1.5) * 1000).astype(np.int16)
    view = vol[3:20, 5:22, 2:25]
    assert not view.flags.c_contiguous
    same_mesh(ENGINES[engine](view, 0, pad=-100),
              ENGINES[engine](np.ascontiguousarray(view), 0, pad=-100), atol=0)


def test_step_gives_full_resolution_units():
    z, y, x = np.mgrid[:41, :41, :41].astype(np.float64)
    sphere = np.pad(15 - np.sqrt((z - 20) ** 2 + (y - 20) ** 2 + (x - 20) ** 2), 1,
                    constant_values=-20)
    full = marching_cubes(sphere, 0.0)
    coarse = marching_cubes(sphere, 0.0, step=2)
    assert len(coarse[1]) < len(full[1]) / 3
    vol_full = M.signed_volume(full[0].astype(float), full[1])
    vol_coarse = M.signed_volume(coarse[0].astype(float), coarse[1])
    assert vol_coarse == pytest.approx(vol_full, rel=0.03)
    np.testing.assert_allclose(coarse[0].mean(axis=0), full[0].mean(axis=0), atol=0.3)
    assert M.topology(coarse[0].astype(float), coarse[1]).watertight


def test_progress_reaches_one():
    seen = []
    z, y, x = np.mgrid[:20, :20, :20]
    marching_cubes((z + y + x).astype(np.int16), 30, progress=seen.append)
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)


@pytest.mark.parametrize("args,kwargs,error,match", [
    ((np.zeros((4, 4)), 0.5), {}, ValueError, "3-D"),
    ((np.zeros((4, 4, 4)), float("nan")), {}, ValueError, "finite"),
    ((np.zeros((4, 4, 4)), 0.5), {"step": 0}, ValueError, "step"),
    ((np.zeros((4, 4, 4)), 0.5), {"workers": 0}, ValueError, "workers"),
    ((np.zeros((4, 4, 4)), 0.5), {"pad": 1.0}, ValueError, "pad"),
    ((np.zeros((4, 4, 4), bool), 0.5), {}, TypeError, "integers or floats"),
    (([[[0.0]]], 0.5), {}, TypeError, "numpy array"),
])
def test_arguments_are_checked(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        marching_cubes(*args, **kwargs)


def test_stored_table_is_the_derived_table():
    from converter import _marching_tables as T

    table, count, centre = T._build()
    np.testing.assert_array_equal(T.TRI_TABLE, table)
    np.testing.assert_array_equal(T.TRI_COUNT, count)
    np.testing.assert_array_equal(T.CENTRE_LOOP, centre)
    # every configuration and decision closes: each crossed edge used by its loops
    assert count.max() <= table.shape[2]


def test_huge_boxes_number_per_slab_and_give_int64_faces(monkeypatch):
    rng = np.random.default_rng(9)
    field = gaussian_filter(rng.normal(size=(30, 20, 22)), 1.5)
    normal = marching_cubes(field, 0.0, pad=-5.0)
    assert normal[1].dtype == np.int32
    monkeypatch.setattr(mc, "INT32_VOXELS", 24 * 22 * 4)  # "huge": 3 planes a slab
    monkeypatch.setattr(mc, "SLAB_VOXELS", 24 * 22 * 3)
    for workers in (1, 2):
        huge = marching_cubes(field, 0.0, pad=-5.0, workers=workers)
        assert huge[1].dtype == np.int64
        np.testing.assert_array_equal(huge[0], normal[0])
        np.testing.assert_array_equal(huge[1], normal[1])


def test_kernel_arrays_own_their_memory_and_bad_calls_raise():
    """The extension hands its C buffers to numpy: the arrays outlive the
    buffers' object; a wrong box or workspace is refused, never read past."""
    import gc

    from converter import _marching

    vol = np.zeros((4, 5, 6), np.int16)
    vol[1:3, 1:4, 2:5] = 10
    whole = mc.SlabGeometry((0, 0, 0, 4, 5, 6), 0, 5.0, 5.0, 5.0)
    out = _marching.Growing()
    work = _marching.Workspace(5, 6)
    _marching.slab(vol, whole, 0, 3, work, out, mc._TABLES)
    verts, codes, centres = out.take()
    del out, work
    gc.collect()
    assert len(verts) and len(codes) and not len(centres)
    assert verts.flags.writeable and verts.dtype == np.float32 and codes.dtype == np.int32
    assert set(np.unique(verts[:, 0])) <= {1.0, 2.0, 0.5, 2.5} and codes.min() >= 0
    v, f = marching_cubes(vol, 5.0)
    np.testing.assert_array_equal(v, verts)
    np.testing.assert_array_equal(f, codes)
    with pytest.raises(ValueError, match="box"):
        _marching.slab(vol, whole._replace(box=(0, 0, 0, 5, 5, 6)), 0, 3,
                       _marching.Workspace(5, 6), _marching.Growing(), mc._TABLES)
    with pytest.raises(ValueError, match="workspace"):
        _marching.slab(vol, whole, 0, 3, _marching.Workspace(7, 8), _marching.Growing(),
                       mc._TABLES)
    with pytest.raises(ValueError, match="slab"):
        _marching.slab(vol, whole, 0, 4, _marching.Workspace(5, 6), _marching.Growing(),
                       mc._TABLES)
