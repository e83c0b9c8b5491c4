"""A series whose images carry no ImagePositionPatient: refused by default with
the way to convert it anyway; ``assume_geometry`` converts it (slices in
instance order, spacing from the headers or ``spacing``) and says so in the
report, the listing and the STL header."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from converter import ConvertOptions, convert
from converter.errors import NoUsableSeries, UsageError
from tests import dicomgen as G

GAP = 1.5


def _without_positions(directory, *, drop=("ImagePositionPatient",), gap=GAP):
    geometry = G.make_geometry("axial", size=(24, 36, 36), spacing=(0.8, 0.8), slice_gaps=gap)
    paths = G.write_phantom_series(directory, G.sphere(radius=9), geometry,
                                   names="shuffled-noext")
    for path in paths:
        ds = pydicom.dcmread(path)
        for name in drop:
            if name in ds:
                delattr(ds, name)
        if "SliceThickness" not in drop:
            ds.SpacingBetweenSlices = gap
        ds.save_as(path)
    return directory, geometry


def test_refused_by_default_saying_how_to_convert(tmp_path):
    path, _ = _without_positions(tmp_path)
    with pytest.raises(NoUsableSeries) as caught:
        convert([path], ConvertOptions(threshold=G.MID_HU))
    assert caught.value.code == "no_geometry"
    assert "--assume-geometry" in caught.value.message and "--spacing" in caught.value.message


def test_assumed_geometry_from_the_headers(tmp_path):
    path, _ = _without_positions(tmp_path / "bare")
    placed = tmp_path / "placed"
    G.write_phantom_series(placed, G.sphere(radius=9), G.make_geometry(
        "axial", size=(24, 36, 36), spacing=(0.8, 0.8), slice_gaps=GAP))
    truth = convert([placed], ConvertOptions(threshold=G.MID_HU))
    result = convert([path], ConvertOptions(threshold=G.MID_HU, assume_geometry=True))
    report = result.report
    # the same voxels on the same grid (placed elsewhere: the origin is assumed)
    assert report["volume_mm3"] == pytest.approx(truth.report["volume_mm3"], rel=1e-6)
    np.testing.assert_allclose(np.ptp(report["bbox_mm"], axis=0),
                               np.ptp(truth.report["bbox_mm"], axis=0), atol=1e-3)
    assert report["watertight"] and report["manifold"]
    assert report["series"]["chosen"]["geometry"] == "assumed"
    assert report["series"]["chosen"]["spacing_mm"] == [GAP, 0.8, 0.8]
    assert report["stl"]["header"] == "ephemesh SPACE=LPS UNITS=mm GEOMETRY=ASSUMED"
    assert result.stl[:80].rstrip() == b"ephemesh SPACE=LPS UNITS=mm GEOMETRY=ASSUMED"
    assert any(w.startswith("geometry assumed") and "instance order" in w
               for w in report["warnings"])
    assert truth.report["series"]["chosen"]["geometry"] == "from the headers"


def test_instance_order_and_given_spacing(tmp_path):
    path, _ = _without_positions(tmp_path)
    result = convert([path], ConvertOptions(threshold=G.MID_HU, assume_geometry=True,
                                            spacing="1,1,3", ascii=True))
    # twice the slice gap and 1.25 times the pixels: the volume scales with them
    plain = convert([path], ConvertOptions(threshold=G.MID_HU, assume_geometry=True))
    scale = (3 / GAP) * (1 / 0.8) ** 2
    assert result.report["volume_mm3"] == pytest.approx(plain.report["volume_mm3"] * scale,
                                                        rel=1e-3)
    assert result.stl.startswith(b"solid ephemesh_LPS_ASSUMED\n")
    assert "(given)" in " ".join(result.report["warnings"])
    # slices in instance order: reversed instance numbers would scramble nothing here, so
    # shuffle them and see the sphere fall apart
    for p in sorted(path.iterdir()):
        ds = pydicom.dcmread(p)
        ds.InstanceNumber = (int(ds.InstanceNumber) * 7) % 24 + 1  # a permutation
        ds.save_as(p)
    scrambled = convert([path], ConvertOptions(threshold=G.MID_HU, assume_geometry=True))
    assert scrambled.report["components"] > 1


def test_no_spacing_in_the_headers_asks_for_spacing(tmp_path):
    path, _ = _without_positions(tmp_path, drop=("ImagePositionPatient", "SliceThickness"))
    with pytest.raises(NoUsableSeries) as caught:
        convert([path], ConvertOptions(threshold=G.MID_HU, assume_geometry=True))
    assert caught.value.code == "no_spacing" and "--spacing" in caught.value.message
    result = convert([path], ConvertOptions(threshold=G.MID_HU, assume_geometry=True,
                                            spacing=(0.8, 0.8, GAP)))
    assert result.report["watertight"]


@pytest.mark.parametrize("options, code", [
    ({"spacing": "1,1,1"}, "invalid_spacing"),  # without assume_geometry
    ({"assume_geometry": True, "spacing": "1,0,1"}, "invalid_spacing"),
    ({"assume_geometry": True, "spacing": "1,1"}, "invalid_spacing"),
])
def test_spacing_refusals(options, code):
    with pytest.raises(UsageError) as caught:
        ConvertOptions(**options).validate()
    assert caught.value.code == code
