"""End to end geometry: DICOM series of analytic phantoms → STL, checked in mm.

Every series is generated from a shape defined in the patient frame, so the
truth (enclosed volume, centroid, bounding box) is known whatever the
orientation, tilt or slice spacing.  The mesh must land on it: volume within
2 %, centroid within 0.5 mm, bounding box within one voxel; closed, manifold,
outward normals, never mirrored.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from stl import mesh as stlmesh

from converter import ConvertOptions, convert, list_series
from converter import mesh as M
from tests import dicomgen as G

GEOMETRIES = {
    "axial": dict(orientation="axial"),
    "sagittal": dict(orientation="sagittal"),
    "coronal": dict(orientation="coronal"),
    "oblique30": dict(orientation="axial", oblique_deg=30.0),
    "tilted": dict(orientation="axial", tilt_deg=25.0),
    "nonuniform": dict(orientation="axial",
                       slice_gaps=[0.7, 1.3, 0.9, 1.6, 0.8] * 7 + [1.0] * 4),
    "sagittal_tilted_nonuniform": dict(orientation="sagittal", tilt_deg=-15.0,
                                       slice_gaps=[1.2, 0.8, 1.5] * 13),
}
PHANTOMS = {"sphere": G.sphere, "box": G.box, "l_shape": G.l_shape}
SIZE = (40, 44, 44)


def _check(report, verts, faces, phantom, geometry, frame="LPS"):
    flip = np.array([-1.0, -1.0, 1.0]) if frame == "RAS" else np.ones(3)
    truth_centroid = phantom.centroid * flip
    truth_box = np.sort(phantom.bbox * flip, axis=0)
    voxel = geometry.max_step
    volume = M.signed_volume(verts, faces)
    assert volume > 0, "normals must point outward"
    assert abs(volume / phantom.volume - 1) < 0.02, (volume, phantom.volume)
    np.testing.assert_allclose(M.measures(verts, faces).centroid, truth_centroid, atol=0.5)
    np.testing.assert_allclose(verts.min(axis=0), truth_box[0], atol=voxel)
    np.testing.assert_allclose(verts.max(axis=0), truth_box[1], atol=voxel)
    topo = M.topology(verts, faces)
    assert topo.watertight and topo.manifold
    assert report["watertight"] and report["manifold"]
    assert report["volume_mm3"] == pytest.approx(volume, rel=1e-6)
    assert report["frame"] == frame


@pytest.mark.parametrize("phantom_name", PHANTOMS)
@pytest.mark.parametrize("geometry_name", GEOMETRIES)
def test_phantom_geometry(tmp_path, geometry_name, phantom_name):
    phantom = PHANTOMS[phantom_name]()
    geometry = G.make_geometry(size=SIZE, **GEOMETRIES[geometry_name])
    G.write_phantom_series(tmp_path, phantom, geometry)
    result = convert([tmp_path], ConvertOptions(threshold=G.MID_HU))
    _check(result.report, result.verts, result.faces, phantom, geometry)


def test_stl_file_matches_the_report_and_reads_back(tmp_path):
    phantom, geometry = G.l_shape(), G.make_geometry("coronal", size=SIZE)
    G.write_phantom_series(tmp_path / "in", phantom, geometry)
    out = tmp_path / "l.stl"
    result = convert([tmp_path / "in"], ConvertOptions(threshold=G.MID_HU), output=out)
    back = stlmesh.Mesh.from_file(str(out))
    assert len(back.vectors) == result.report["triangles"]
    volume, cog, _ = back.get_mass_properties()
    assert volume == pytest.approx(phantom.volume, rel=0.02)
    np.testing.assert_allclose(cog, phantom.centroid, atol=0.5)
    assert out.read_bytes()[:80].rstrip() == b"ephemesh SPACE=LPS UNITS=mm"
    assert result.report["stl"]["header"] == "ephemesh SPACE=LPS UNITS=mm"
    assert result.report["stl"]["bytes"] == out.stat().st_size


def test_ras_frame_is_a_rotation_not_a_mirror(tmp_path):
    phantom, geometry = G.l_shape(), G.make_geometry("axial", size=SIZE, oblique_deg=30)
    G.write_phantom_series(tmp_path, phantom, geometry)
    result = convert([tmp_path], ConvertOptions(threshold=G.MID_HU, frame="ras"))
    _check(result.report, result.verts, result.faces, phantom, geometry, frame="RAS")
    assert result.stl[:80].rstrip() == b"ephemesh SPACE=RAS UNITS=mm"
    assert result.report["stl"]["header"].encode() == result.stl[:80].rstrip()


def test_shuffled_names_without_extension_or_preamble(tmp_path):
    phantom, geometry = G.l_shape(), G.make_geometry("sagittal", size=SIZE, tilt_deg=10)
    G.write_phantom_series(tmp_path / "deep" / "er", phantom, geometry,
                           names="shuffled-noext", preamble=False)
    assert not any(p.suffix for p in (tmp_path / "deep" / "er").iterdir())
    result = convert([tmp_path], ConvertOptions(threshold=G.MID_HU))
    _check(result.report, result.verts, result.faces, phantom, geometry)


def test_a_folder_holding_two_series(tmp_path):
    small_geo = G.make_geometry("axial", size=(30, 40, 40))
    big_geo = G.make_geometry("coronal", size=SIZE)
    G.write_phantom_series(tmp_path / "a", G.sphere(radius=9), small_geo, series_number=3)
    G.write_phantom_series(tmp_path / "b", G.l_shape(), big_geo, series_number=7)
    listing = list_series([tmp_path])
    assert sorted(s.slices for s in listing.series) == [30, 40]
    # default: the largest volume
    result = convert([tmp_path], ConvertOptions(threshold=G.MID_HU))
    _check(result.report, result.verts, result.faces, G.l_shape(), big_geo)
    assert result.report["series"]["chosen"]["slices"] == 40
    assert "largest" in result.report["series"]["why"]
    # by series number
    result = convert([tmp_path], ConvertOptions(threshold=G.MID_HU, series="3"))
    _check(result.report, result.verts, result.faces, G.sphere(radius=9), small_geo)
    # by UID
    uid = next(s.uid for s in listing.series if s.slices == 30)
    result = convert([tmp_path], ConvertOptions(threshold=G.MID_HU, series=uid))
    assert result.report["series"]["chosen"]["slices"] == 30


def test_zip_and_bytes_inputs(tmp_path):
    phantom, geometry = G.box(), G.make_geometry("axial", size=SIZE, oblique_deg=30)
    G.write_phantom_series(tmp_path / "s" / "nested", phantom, geometry)
    archive = shutil.make_archive(str(tmp_path / "scan"), "zip", tmp_path / "s")
    from_zip = convert([archive], ConvertOptions(threshold=G.MID_HU))
    _check(from_zip.report, from_zip.verts, from_zip.faces, phantom, geometry)
    with open(archive, "rb") as fh:
        from_bytes = convert([fh.read()], ConvertOptions(threshold=G.MID_HU))
    assert from_bytes.report["triangles"] == from_zip.report["triangles"]
    files = sorted((tmp_path / "s" / "nested").iterdir())
    from_list = convert([p.read_bytes() for p in files], ConvertOptions(threshold=G.MID_HU))
    assert from_list.report["triangles"] == from_zip.report["triangles"]


def test_structure_touching_the_edge_still_closes(tmp_path):
    geometry = G.make_geometry("axial", size=(30, 40, 40))
    # a slab wider than the scan in x and y and past its top in z
    phantom = G.box((-100, -100, -5), (100, 100, 100))
    G.write_phantom_series(tmp_path, phantom, geometry)
    # raw marching cubes: where the surface closes, to the hundredth of a mm
    result = convert([tmp_path], ConvertOptions(threshold=G.MID_HU, smooth=0))
    topo = M.topology(result.verts, result.faces)
    assert topo.watertight and topo.manifold
    # closes half a voxel beyond the outermost voxel centres (midway to the pad):
    # x, y: 39 mm between centres + 1; z: from -5 to the top centre (14.5) + 0.5
    assert result.report["volume_mm3"] == pytest.approx(40 * 40 * 20, rel=0.01)
    np.testing.assert_allclose(result.report["bbox_mm"], [[-20, -20, -5], [20, 20, 15]], atol=0.01)


def test_options_largest_islands_smoothing_decimation(tmp_path):
    geometry = G.make_geometry("axial", size=SIZE)
    phantom = G.two_spheres()
    G.write_phantom_series(tmp_path, phantom, geometry)
    both = convert([tmp_path], ConvertOptions(threshold=G.MID_HU))
    assert both.report["components"] == 2
    big = convert([tmp_path], ConvertOptions(threshold=G.MID_HU, largest=True))
    assert big.report["components"] == 1
    assert big.report["volume_mm3"] == pytest.approx(4 / 3 * np.pi * 9**3, rel=0.02)
    islands = convert([tmp_path], ConvertOptions(threshold=G.MID_HU, min_island_mm3=500))
    assert islands.report["components"] == 1
    assert any("islands" in w for w in islands.report["warnings"])
    smooth = convert([tmp_path], ConvertOptions(threshold=G.MID_HU, smooth=10))
    assert smooth.report["volume_mm3"] == pytest.approx(phantom.volume, rel=0.03)
    dec = convert([tmp_path], ConvertOptions(threshold=G.MID_HU, decimate=0.2))
    assert dec.report["triangles"] <= 0.22 * both.report["triangles"]
    assert dec.report["volume_mm3"] == pytest.approx(phantom.volume, rel=0.03)
    budget = convert([tmp_path], ConvertOptions(threshold=G.MID_HU, max_triangles=800))
    assert budget.report["triangles"] <= 800
    coarse = convert([tmp_path], ConvertOptions(threshold=G.MID_HU, step=2))
    assert coarse.report["triangles"] < both.report["triangles"] / 2
    assert coarse.report["volume_mm3"] == pytest.approx(phantom.volume, rel=0.1)


def test_presets_use_documented_hu(tmp_path):
    # bone 300 HU: a shell of 1000 HU inside 40 HU tissue inside air
    geometry = G.make_geometry("axial", size=SIZE)
    outer, inner = G.sphere(radius=15), G.sphere(radius=7)
    pts = np.stack([geometry.points(k) for k in range(SIZE[0])])
    hu = np.where(outer.signed_distance(pts) > 0, 40, -1000)
    hu = np.where(inner.signed_distance(pts) > 0, 1000, hu).astype(np.int16)
    G.write_series(tmp_path, hu, geometry=geometry)
    bone = convert([tmp_path], ConvertOptions(preset="bone"))
    skin = convert([tmp_path], ConvertOptions(preset="skin"))
    default = convert([tmp_path], ConvertOptions())
    assert bone.report["threshold"] == {"value": 300.0, "unit": "HU", "source": "preset bone",
                                        "region": "above"}
    assert default.report["threshold"]["source"] == "preset bone"  # CT default
    assert skin.report["threshold"]["value"] == -400.0
    assert bone.report["volume_mm3"] < 0.2 * skin.report["volume_mm3"]
    auto = convert([tmp_path], ConvertOptions(preset="auto"))
    assert auto.report["threshold"]["source"] == "preset auto (Otsu)"


def test_airway_preset_keeps_air_inside_the_body_only(tmp_path):
    geometry = G.make_geometry("axial", size=SIZE)
    body, airway = G.sphere(radius=16), G.sphere(radius=6, center=(2, 0, 0))
    pts = np.stack([geometry.points(k) for k in range(SIZE[0])])
    hu = np.where(body.signed_distance(pts) > 0, 40, -1000)
    hu = np.where(airway.signed_distance(pts) > 0, -1000, hu).astype(np.int16)
    G.write_series(tmp_path, hu, geometry=geometry)
    result = convert([tmp_path], ConvertOptions(preset="airway"))
    assert result.report["components"] == 1
    assert result.report["volume_mm3"] == pytest.approx(airway.volume, rel=0.15)
    np.testing.assert_allclose(result.report["centroid_mm"], [2, 0, 0], atol=0.7)


def test_threshold_without_surface_names_the_data_range(tmp_path):
    G.write_phantom_series(tmp_path, G.sphere(), G.make_geometry(size=(20, 32, 32)))
    from converter import NoUsableSeries

    with pytest.raises(NoUsableSeries) as err:
        convert([tmp_path], ConvertOptions(threshold=5000))
    assert err.value.code == "no_surface"
    assert "-1000" in err.value.message and "1000" in err.value.message


def test_progress_is_reported_per_stage(tmp_path):
    G.write_phantom_series(tmp_path, G.sphere(), G.make_geometry(size=(20, 32, 32)))
    seen = []
    convert([tmp_path], ConvertOptions(threshold=0), progress=lambda s, p: seen.append((s, p)))
    stages = [s for s, _ in seen]
    assert stages[0] == "reading" and stages[-1] == "writing"
    assert {"reading", "surface", "mesh", "writing"} <= set(stages)
    percents = [p for _, p in seen]
    assert percents == sorted(percents) and percents[-1] == 100


def test_long_mesh_steps_are_named_in_the_progress(tmp_path):
    """Smoothing and decimation say so (a bar that cannot move during them
    once sat on "Shaping the mesh: 78 %" for seconds)."""
    G.write_phantom_series(tmp_path, G.sphere(), G.make_geometry(size=(20, 32, 32)))
    seen = []
    convert([tmp_path], ConvertOptions(threshold=0, smooth=2, decimate=0.5),
            progress=lambda s, p: seen.append((s, p)))
    stages = [s for s, _ in seen]
    assert stages.index("mesh") < stages.index("smoothing") < stages.index("decimating") \
        < stages.index("writing")
    percents = [p for _, p in seen]
    assert percents == sorted(percents)


def test_canaries_reach_neither_stl_nor_report(tmp_path):
    canary = "ZQXCANARY"
    uid_root = "1.2.826.0.1.3680043.8.498.424242"
    files = G.write_phantom_series(
        tmp_path, G.sphere(), G.make_geometry(size=(20, 32, 32)),
        patient_name=f"{canary}^PN", patient_id=f"{canary}-ID", series_description=f"{canary} desc",
        private_value=f"{canary}-private", study_uid=uid_root + ".1", series_uid=uid_root + ".2",
        sop_uid_prefix=uid_root + ".3",
    )
    for i, path in enumerate(files):
        path.rename(path.with_name(f"{canary}-file-{i}.dcm"))
    for ascii_ in (False, True):
        result = convert([tmp_path], ConvertOptions(threshold=0, ascii=ascii_))
        blob = result.stl + repr(result.report).encode()
        assert result.stl.startswith(result.report["stl"]["header"].encode())
        for needle in (canary, canary.lower(), uid_root):
            assert needle.encode() not in blob
    listing = list_series([tmp_path])
    assert listing.series[0].uid == uid_root + ".2"  # the listing itself may show it to the user
    assert uid_root not in repr(listing.series[0].safe_dict())


@pytest.mark.parametrize("reader", ["quick", "pydicom"])
def test_one_and_two_workers_make_the_same_stl_and_report(tmp_path, monkeypatch, reader):
    import converter.headers as H
    import converter.loading as L
    import converter.series as S

    monkeypatch.setattr(L, "_PARALLEL_MIN_SLICES", 2)  # fork readers for a small series
    monkeypatch.setattr(S, "PARALLEL_MIN_FILES", 2)  # and read pydicom's headers in a pool
    if reader == "pydicom":
        monkeypatch.setattr(H, "examine", lambda *args: None)
    geometry = G.make_geometry(size=SIZE, tilt_deg=10.0)
    G.write_phantom_series(tmp_path / "s", G.two_spheres(), geometry)
    runs = [convert([tmp_path / "s"], ConvertOptions(threshold=0, workers=w)) for w in (1, 2)]
    assert runs[0].stl == runs[1].stl
    reports = [{k: v for k, v in r.report.items() if k not in ("timings_s", "options")}
               for r in runs]
    assert reports[0] == reports[1]
    assert reports[0]["watertight"] and reports[0]["components"] == 2
