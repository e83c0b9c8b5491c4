"""The region options on phantoms with known answers: crop, seed, keep-parts,
largest, remove-table and hollow (converter/region.py).

Every result is a closed 2-manifold with outward normals; cuts lie within a
voxel of where they were asked for; a hollow sphere's shell holds the
analytic volume.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from converter import ConvertOptions, convert
from converter import mesh as M
from converter.errors import NoUsableSeries, UsageError
from tests import dicomgen as G

SIZE = (40, 44, 44)
BIG, SMALL = 4 / 3 * np.pi * 9**3, 4 / 3 * np.pi * 4**3  # G.two_spheres()


def _closed(result):
    topo = M.topology(result.verts, result.faces)
    assert topo.watertight and topo.manifold, topo
    assert topo.boundary_edges == 0 and topo.nonmanifold_edges == 0
    assert M.signed_volume(result.verts, result.faces) > 0
    assert result.report["watertight"] and result.report["manifold"]
    return topo


@pytest.fixture(scope="module")
def two_spheres(tmp_path_factory):
    path = tmp_path_factory.mktemp("two")
    G.write_phantom_series(path, G.two_spheres(), G.make_geometry("axial", size=SIZE))
    return path


@pytest.fixture(scope="module")
def body_on_table(tmp_path_factory):
    path = tmp_path_factory.mktemp("table")
    geometry = G.make_geometry("axial", size=(30, 88, 88), spacing=(1.5, 1.5), slice_gaps=2.0)
    G.write_series(path, G.body_on_table(geometry), geometry=geometry)
    return path


def _convert(path, **options):
    options.setdefault("threshold", G.MID_HU)
    return convert([path], ConvertOptions(**options))


# ------------------------------------------------------------------ crop

@pytest.mark.parametrize("geometry", ["axial", "oblique30", "tilted"])
def test_crop_cuts_a_sphere_in_half_in_patient_mm(tmp_path, geometry):
    kw = {"axial": {}, "oblique30": {"oblique_deg": 30.0}, "tilted": {"tilt_deg": 20.0}}[geometry]
    G.write_phantom_series(tmp_path, G.sphere(radius=12), G.make_geometry(size=SIZE, **kw))
    result = _convert(tmp_path, crop=(0, -30, -30, 30, 30, 30))
    _closed(result)
    half = 4 / 3 * np.pi * 12**3 / 2
    assert result.report["volume_mm3"] == pytest.approx(half, rel=0.05)
    (lo, hi) = result.report["bbox_mm"]
    assert -1.0 <= lo[0] <= 1.0  # the cut lies within a voxel of the box's face
    assert hi[0] == pytest.approx(12, abs=1.0)
    assert result.report["region"]["crop_mm"] == [[0, -30, -30], [30, 30, 30]]
    assert result.report["options"]["crop"] == (0, -30, -30, 30, 30, 30)


def test_crop_in_ras_and_corners_in_any_order(two_spheres):
    lps = _convert(two_spheres, crop=(2, -20, -20, 20, 20, 20))
    assert lps.report["volume_mm3"] == pytest.approx(SMALL, rel=0.1)
    # the same box in RAS (x and y turned), its corners swapped: the same part, turned
    ras = _convert(two_spheres, crop=(-2, 20, 20, -20, -20, -20), frame="ras")
    assert ras.report["volume_mm3"] == pytest.approx(lps.report["volume_mm3"], rel=1e-6)
    assert ras.report["bbox_mm"][1][0] == pytest.approx(-lps.report["bbox_mm"][0][0], abs=1e-6)


@pytest.mark.parametrize("crop, error, code", [
    ((100, 100, 100, 200, 200, 200), UsageError, "crop_outside"),
    ((0, 0, 0, 0, 10, 10), UsageError, "invalid_crop"),  # empty
    ("1,2,3", UsageError, "invalid_crop"),
    ("1,2,3,4,5,x", UsageError, "invalid_crop"),
    ((-20, 15, -20, 20, 20, 20), NoUsableSeries, "no_surface"),  # inside, but only air
])
def test_crop_refusals(two_spheres, crop, error, code):
    with pytest.raises(error) as caught:
        _convert(two_spheres, crop=crop)
    assert caught.value.code == code
    assert "crop" in caught.value.message or "nothing" in caught.value.message


# ------------------------------------------------------------------ seed

@pytest.mark.parametrize("seed, frame", [
    ((12, 0, 0), "lps"),  # the small sphere's centre
    ((16.4, 0, 0), "lps"),  # on its surface, as picked on a preview
    ((-12, 0, 0), "ras"),  # its centre in RAS
])
def test_seed_keeps_the_part_holding_the_point(two_spheres, seed, frame):
    result = _convert(two_spheres, seed=seed, frame=frame)
    _closed(result)
    assert result.report["components"] == 1
    assert result.report["volume_mm3"] == pytest.approx(SMALL, rel=0.1)
    assert result.report["region"]["parts_found"] == 2
    centre = np.mean(result.report["bbox_mm"], axis=0)
    np.testing.assert_allclose(centre, [12 if frame == "lps" else -12, 0, 0], atol=0.5)


@pytest.mark.parametrize("seed, code", [
    ((0, 15, 0), "seed_in_background"),
    ((0, 0, 100), "seed_outside"),
    ("1,2", "invalid_seed"),
    ("1,2,nan", "invalid_seed"),
])
def test_seed_refusals(two_spheres, seed, code):
    with pytest.raises(UsageError) as caught:
        _convert(two_spheres, seed=seed)
    assert caught.value.code == code
    assert "seed" in caught.value.message


# ------------------------------------------------------------------ parts

def test_keep_parts_and_largest(two_spheres):
    both = _convert(two_spheres)
    assert both.report["components"] == 2
    one = _convert(two_spheres, keep_parts=1)
    largest = _convert(two_spheres, largest=True)
    for result in (one, largest):
        _closed(result)
        assert result.report["components"] == 1
        assert result.report["volume_mm3"] == pytest.approx(BIG, rel=0.02)
    assert largest.report["triangles"] == one.report["triangles"]
    two = _convert(two_spheres, keep_parts=2)
    assert two.report["volume_mm3"] == pytest.approx(both.report["volume_mm3"], rel=1e-9)
    assert two.report["region"] == {"parts_found": 2, "parts_kept": 2}


@pytest.mark.parametrize("options", [
    {"largest": True, "keep_parts": 2}, {"seed": (12, 0, 0), "keep_parts": 1},
    {"seed": (12, 0, 0), "largest": True}])
def test_one_way_of_choosing_parts(two_spheres, options):
    with pytest.raises(UsageError) as caught:
        _convert(two_spheres, **options)
    assert caught.value.code == "invalid_option"


@pytest.mark.parametrize("value", [0, -1, 2.5, "x"])
def test_keep_parts_refusals(two_spheres, value):
    with pytest.raises(UsageError) as caught:
        _convert(two_spheres, keep_parts=value)
    assert caught.value.code == "invalid_keep_parts"


# ------------------------------------------------------------------ table

def test_remove_table_keeps_the_body_and_drops_couch_and_head_rest(body_on_table):
    bone = convert([body_on_table], ConvertOptions(preset="bone"))
    assert bone.report["bbox_mm"][0][0] < -55  # the couch is as dense as bone
    spine = convert([body_on_table], ConvertOptions(preset="bone", remove_table=True))
    _closed(spine)
    assert spine.report["components"] == 1
    (lo, hi) = np.array(spine.report["bbox_mm"])
    np.testing.assert_allclose(lo[:2], [-6, 6], atol=1.0)  # the spine: radius 6 at y = 12
    np.testing.assert_allclose(hi[:2], [6, 18], atol=1.0)
    # all of the spine: the same as a box around it (the couch lies beyond y = 25)
    boxed = convert([body_on_table], ConvertOptions(preset="bone", crop=(-20, 0, -40, 20, 22, 40)))
    assert spine.report["volume_mm3"] == pytest.approx(boxed.report["volume_mm3"], rel=0.01)
    assert spine.report["region"]["table_removed_mm3"] > 10000

    skin = convert([body_on_table], ConvertOptions(preset="skin", remove_table=True))
    _closed(skin)
    (lo, hi) = np.array(skin.report["bbox_mm"])
    np.testing.assert_allclose([lo[0], hi[0]], [-40, 40], atol=1.0)  # not the couch's ±60
    np.testing.assert_allclose([lo[1], hi[1]], [-25, 25], atol=1.0)  # the couch lies below
    # the airways (enclosed air) are inside the body: nothing of them goes
    airway = convert([body_on_table], ConvertOptions(preset="airway"))
    kept = convert([body_on_table], ConvertOptions(preset="airway", remove_table=True))
    assert kept.report["volume_mm3"] == pytest.approx(airway.report["volume_mm3"], rel=1e-9)


@pytest.mark.parametrize("name, preset, check", [
    # a head in a U-shaped head rest (pydicom-data): the skull alone is left
    ("693_UNCR.dcm", "bone", lambda plain, kept: kept["components"] == 1 < plain["components"]
     and np.ptp(kept["bbox_mm"], axis=0)[0] < np.ptp(plain["bbox_mm"], axis=0)[0] - 50),
    # an abdomen on the couch (pydicom): the body's back is where the couch was (+y)
    ("explicit_VR-UN.dcm", "skin", lambda plain, kept: kept["bbox_mm"][1][1]
     < plain["bbox_mm"][1][1] - 50 and kept["volume_mm3"] > 0.9 * plain["volume_mm3"]),
], ids=["head-rest", "couch"])
def test_remove_table_on_real_ct(tmp_path, name, preset, check):
    path = G.slab_of(name, tmp_path)
    plain = convert([path], ConvertOptions(preset=preset, workers=2)).report
    kept = convert([path], ConvertOptions(preset=preset, remove_table=True, workers=2))
    _closed(kept)
    assert kept.report["region"]["table_removed_mm3"] > 1000
    assert check(plain, kept.report), (plain["bbox_mm"], kept.report["bbox_mm"])


def test_remove_table_on_mr_is_a_warning(tmp_path):
    G.write_phantom_series(tmp_path, G.sphere(), G.make_geometry(size=SIZE), modality="MR",
                           rescale=(1.0, 0.0))
    plain = convert([tmp_path], ConvertOptions(threshold=0))
    result = convert([tmp_path], ConvertOptions(threshold=0, remove_table=True))
    assert result.report["triangles"] == plain.report["triangles"]
    assert any("remove_table is for CT" in w for w in result.report["warnings"])


# ------------------------------------------------------------------ hollow

@pytest.mark.parametrize("spacing, gap, wall", [((1.0, 1.0), 1.0, 3.0), ((0.8, 0.8), 2.0, 4.0)])
def test_hollow_sphere_holds_the_analytic_shell(tmp_path, spacing, gap, wall):
    radius = 14.0
    size = (int(36 / gap), int(36 / spacing[0]), int(36 / spacing[1]))
    G.write_phantom_series(tmp_path, G.sphere(radius=radius),
                           G.make_geometry(size=size, spacing=spacing, slice_gaps=gap))
    solid = _convert(tmp_path)
    result = _convert(tmp_path, hollow=wall)
    topo = _closed(result)
    assert topo.components == 2  # two nested surfaces
    count, labels = M.components(result.faces, len(result.verts))
    volumes = sorted(M.component_volumes(result.verts, result.faces, labels, count))
    assert volumes[0] < 0 < volumes[1]  # the inner one faces inwards
    shell = 4 / 3 * np.pi * (radius**3 - (radius - wall) ** 3)
    # the outer surface is the solid's; the shell within 3 % of the analytic one
    assert volumes[1] == pytest.approx(solid.report["volume_mm3"], rel=1e-6)
    assert result.report["volume_mm3"] == pytest.approx(shell, rel=0.03)
    assert -volumes[0] == pytest.approx(4 / 3 * np.pi * (radius - wall) ** 3, rel=0.03)
    assert result.report["region"]["hollow_wall_mm"] == wall


def test_hollow_thicker_than_the_part(two_spheres):
    with pytest.raises(UsageError) as caught:
        _convert(two_spheres, hollow=12)
    assert caught.value.code == "hollow_too_thick"
    assert "thicker than the part" in caught.value.message


@pytest.mark.parametrize("value", [0, -2, 1000, "x"])
def test_hollow_refusals(two_spheres, value):
    with pytest.raises(UsageError) as caught:
        _convert(two_spheres, hollow=value)
    assert caught.value.code == "invalid_hollow"


def test_region_options_together(two_spheres):
    result = _convert(two_spheres, crop=(-30, -30, -30, 30, 30, 3), seed=(-8, 0, 0), hollow=2)
    _closed(result)
    assert result.report["components"] == 2
    assert result.report["bbox_mm"][1][2] <= 3.0 + 1.0
    assert set(result.report["region"]) >= {"crop_mm", "seed_mm", "parts_found", "hollow_wall_mm"}


# ------------------------------------------------------------------ the command line

def _ephemesh(*args):
    return subprocess.run([sys.executable, "-m", "web.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_command_line(two_spheres, tmp_path):
    out, report = tmp_path / "o.stl", tmp_path / "r.json"
    base = ["convert", two_spheres, "-o", out, "--threshold", G.MID_HU]
    done = _ephemesh(*base, "--seed", "-8,0,0", "--hollow", "2", "--report", report)
    assert done.returncode == 0, done.stderr
    data = json.loads(report.read_text())
    assert data["options"]["seed"] == [-8, 0, 0] and data["options"]["hollow"] == 2
    assert data["region"]["parts_kept"] == 1 and data["components"] == 2
    for extra, pattern in [(["--crop", "100,100,100,200,200,200"], "crop box .* holds no voxel"),
                           (["--seed", "0,15,0"], "seed .* lies in the background"),
                           (["--hollow", "12"], "thicker than the part"),
                           (["--crop", "1,2,3"], "crop must be 6 numbers"),
                           (["--largest", "--keep-parts", "2"], "not allowed with")]:
        proc = _ephemesh(*base, *extra)
        assert proc.returncode == 2, (extra, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ephemesh: error: "), proc.stderr
        assert re.search(pattern, lines[0]), lines[0]
    helptext = _ephemesh("convert", "--help").stdout
    for flag in ("--crop X0,Y0,Z0,X1,Y1,Z1", "--seed X,Y,Z", "--keep-parts N", "--remove-table",
                 "--hollow MM", "--assume-geometry", "--spacing DX,DY,DZ"):
        assert flag in helptext


def test_the_estimate_takes_the_region_on_a_volume_shared_read_only(tmp_path):
    """The workspace's volume is mapped read-only: a crop, a seed or a parts
    count there must not write into it (they once raised, a 500 on the page)."""
    from converter import list_series
    from converter.estimate import estimate
    from converter.loading import load_volume

    G.make_series_dir(tmp_path, "two_spheres", size=(28, 36, 48))
    listing = list_series([tmp_path])
    vol = load_volume(listing, listing.series[0])
    vol.data.setflags(write=False)
    before = vol.data.copy()
    whole = estimate(vol, ConvertOptions(threshold=300))["triangles"]
    for region in ({"crop": "-24,-18,-14,0.5,18,14"}, {"seed": "-8,0,0"}, {"keep_parts": 1}):
        part = estimate(vol, ConvertOptions(threshold=300, **region))["triangles"]
        assert 0 < part < whole, region
    assert np.array_equal(vol.data, before)


def test_region_with_several_structures_applies_to_each(two_spheres):
    both = convert([two_spheres], ConvertOptions(structure="core=0,rim=-900:0", keep_parts=1))
    alone = convert([two_spheres], ConvertOptions(structure="rim=-900:0", keep_parts=1))
    core = convert([two_spheres], ConvertOptions(threshold=0, keep_parts=1))
    # each structure gets the region on its own: its parts are as when it is alone
    assert both.report["volume_mm3"] == pytest.approx(
        alone.report["volume_mm3"] + core.report["volume_mm3"], rel=1e-6)
    assert [r["parts_kept"] for r in both.report["region"]] == [1, 1]


@pytest.mark.parametrize("mesh", [{}, {"smooth": 0}, {"decimate": 0.3}], ids=["default", "raw", "decimated"])
@pytest.mark.parametrize("region", [
    {"crop": (-30, -30, -30, 30, 30, 2)}, {"seed": (12, 0, 0)}, {"keep_parts": 1},
    {"hollow": 2.5}, {"hollow": 2.5, "keep_parts": 2, "crop": (-30, -30, -30, 30, 30, 2)},
], ids=["crop", "seed", "keep", "hollow", "all"])
def test_closed_after_every_region_option(two_spheres, region, mesh):
    result = _convert(two_spheres, **region, **mesh)
    _closed(result)
    assert result.report["volume_mm3"] > 0


def test_with_the_print_frame_crop_and_seed_are_lps(two_spheres):
    # the print frame is known only once the model is made: the region is given in LPS
    result = _convert(two_spheres, seed=(12, 0, 0), crop=(0, -30, -30, 30, 30, 30), frame="print")
    assert result.report["frame"] == "PRINT" and result.report["components"] == 1
    assert result.report["volume_mm3"] == pytest.approx(SMALL, rel=0.1)
    assert min(v[2] for v in result.report["bbox_mm"]) == pytest.approx(0, abs=1e-6)
