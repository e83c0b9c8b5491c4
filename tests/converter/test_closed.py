"""Every mesh handed out is a closed, consistently oriented, outward 2-manifold,
whatever the options: the option matrix, in one place.

``SMOOTH × REDUCE × PARTS`` are crossed in full on an analytic phantom (two
spheres, whose truth is known: volume, centroid, bounding box); ``OTHERS``
(the region, hollow and output options) each run once with the default
smoothing and a decimation; ``REAL`` crosses a few on short scans made of
pydicom's and pydicom-data's CT and MR slices.  Each result must have 0
boundary edges, 0 edges on more than two triangles, no degenerate triangle,
one orientation, a positive volume and no triangle crossing another; on the phantom, geometry within the
tolerances of ``test_phantoms.py``.  To add an option, add its values to the
dictionary it belongs to.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from converter import ConvertOptions, convert
from converter import mesh as M
from tests import dicomgen as G

#: smoothing: raw marching cubes, the default, a lot
SMOOTH = {"raw": dict(smooth=0), "default": {}, "strong": dict(smooth=60)}
#: triangle reduction
REDUCE = {"all": {}, "half": dict(decimate=0.5), "tenth": dict(decimate=0.1),
          "budget": dict(max_triangles=600)}
#: which parts are kept, and the truth they leave (a two_spheres() attribute)
BIG, SMALL = G.sphere((-8.0, 0, 0), 9.0), G.sphere((12.0, 0, 0), 4.0)
PARTS = {"every": ({}, (BIG, SMALL)), "largest": (dict(largest=True), (BIG,)),
         "islands": (dict(min_island_mm3=300), (BIG,)), "two": (dict(keep_parts=2), (BIG, SMALL))}
#: the other options, each once (with the default smoothing and decimation 0.3)
OTHERS = {
    "seed": (dict(seed=(-8.0, 0.0, 0.0)), (BIG,)),
    "crop": (dict(crop=(-20.0, -12.0, -12.0, 4.0, 12.0, 12.0)), (BIG,)),
    "remove_table": (dict(remove_table=True), (BIG, SMALL)),
    "ras": (dict(frame="ras"), None),
    "print": (dict(frame="print"), None),
    "hollow": (dict(hollow=2.0), None),
}
SIZE = (40, 44, 44)


@pytest.fixture(scope="module")
def phantom_scan(tmp_path_factory):
    path = tmp_path_factory.mktemp("two_spheres")
    G.write_phantom_series(path, G.two_spheres(), G.make_geometry("axial", size=SIZE,
                                                                  tilt_deg=10.0))
    return path


def _assert_closed(result, *, crossings=True):
    check = M.check(result.verts, result.faces)
    assert check.closed_manifold, check
    if crossings:  # no triangle through another (the exact test: slow on big meshes)
        assert M.self_intersections(result.verts, result.faces) == 0
    assert result.report["watertight"] and result.report["manifold"]
    assert result.report["degenerate_triangles"] == 0
    return check


def _assert_geometry(result, parts, reduced):
    volume = sum(p.volume for p in parts)
    centroid = sum(p.volume * p.centroid for p in parts) / volume
    lo = np.min([p.bbox[0] for p in parts], axis=0)
    hi = np.max([p.bbox[1] for p in parts], axis=0)
    assert result.report["volume_mm3"] == pytest.approx(volume, rel=0.03 if reduced else 0.02)
    np.testing.assert_allclose(result.report["centroid_mm"], centroid, atol=0.5)
    np.testing.assert_allclose(result.report["bbox_mm"], [lo, hi], atol=1.0)  # one voxel


@pytest.mark.parametrize("smooth,reduce,parts",
                         list(itertools.product(SMOOTH, REDUCE, PARTS)))
def test_every_combination_is_closed_and_where_the_phantom_is(phantom_scan, smooth, reduce,
                                                              parts):
    keep, truth = PARTS[parts]
    options = ConvertOptions(threshold=G.MID_HU, **SMOOTH[smooth], **REDUCE[reduce], **keep)
    result = convert([phantom_scan], options)
    _assert_closed(result)
    assert result.report["components"] == len(truth)
    if reduce == "budget":
        assert result.report["triangles"] <= 600
    _assert_geometry(result, truth, reduced=reduce != "all")


@pytest.mark.parametrize("name", OTHERS)
def test_the_other_options_are_closed_too(phantom_scan, name):
    extra, truth = OTHERS[name]
    result = convert([phantom_scan], ConvertOptions(threshold=G.MID_HU, decimate=0.3, **extra))
    check = _assert_closed(result)
    if truth is not None:
        _assert_geometry(result, truth, reduced=True)
    if name == "hollow":  # the big sphere's shell: outer and inner surface
        assert result.report["components"] >= 3
        shell = 4 / 3 * np.pi * (9.0**3 - 7.0**3)
        assert shell < check.volume < shell + SMALL.volume * 1.05
    else:
        assert result.report["volume_mm3"] == pytest.approx(
            sum(p.volume for p in truth or (BIG, SMALL)), rel=0.03)


#: pydicom (-data) slices made into short scans: (file, preset)
REAL = {"ct-head": ("693_UNCR.dcm", "bone"), "ct-abdomen": ("CT_small.dcm", "skin"),
        "mr": ("MR_small.dcm", "auto")}
REAL_OPTIONS = {"default": {}, "raw-tenth": dict(smooth=0, decimate=0.1),
                "largest-budget": dict(largest=True, max_triangles=2000),
                "strong-half-islands": dict(smooth=60, decimate=0.5, min_island_mm3=50),
                "fiftieth": dict(decimate=0.02)}


@pytest.fixture(scope="module")
def real_scans(tmp_path_factory):
    return {key: G.slab_of(name, tmp_path_factory.mktemp(key), slices=6)
            for key, (name, _) in REAL.items()}


@pytest.mark.parametrize("options", REAL_OPTIONS)
@pytest.mark.parametrize("scan", REAL)
def test_real_scans_are_closed_with_every_option(real_scans, scan, options):
    result = convert([real_scans[scan]], ConvertOptions(preset=REAL[scan][1], workers=2,
                                                        **REAL_OPTIONS[options]))
    check = _assert_closed(result)
    assert check.volume > 0
    if "max_triangles" in REAL_OPTIONS[options]:
        assert result.report["triangles"] <= 2000
