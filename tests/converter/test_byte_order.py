"""Big-endian pixel data are made native before any view: a 16-bit big-endian
series gives the same volume and the same mesh as its little-endian twin
(generated series, and pydicom's big-endian test files)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRBigEndian

from converter import ConvertOptions, convert
from converter.loading import decode, load_volume
from converter.series import scan, select
from tests import dicomgen as G


def _volume_and_mesh(folder, workers=1, **options):
    listing = scan([folder])
    vol = load_volume(listing, select(listing), workers=workers)
    result = convert([folder], ConvertOptions(workers=workers, **options))
    return vol, result


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("rescale", [(1.0, -1024.0), (1.0, -3000.0), (2.0, -1024.0)])
def test_a_generated_big_endian_series_meshes_as_its_little_endian_twin(
        tmp_path, monkeypatch, workers, rescale):
    import converter.loading as L

    monkeypatch.setattr(L, "_PARALLEL_MIN_SLICES", 1)  # the pooled path too
    phantom = G.l_shape()
    geo = G.make_geometry("axial", size=(20, 40, 44))
    values = G.render(phantom, geo)
    G.write_series(tmp_path / "le", values, geometry=geo, rescale=rescale)
    G.write_series(tmp_path / "be", values, geometry=geo, rescale=rescale,
                   transfer_syntax=ExplicitVRBigEndian)
    raw = (tmp_path / "be" / "slice0000.dcm").read_bytes()
    assert b"1.2.840.10008.1.2.2" in raw[:400]
    le_vol, le = _volume_and_mesh(tmp_path / "le", workers, threshold=G.MID_HU)
    be_vol, be = _volume_and_mesh(tmp_path / "be", workers, threshold=G.MID_HU)
    np.testing.assert_array_equal(be_vol.data, le_vol.data)
    np.testing.assert_array_equal(be_vol.data, values)  # 2000 is 2000, not -12281
    assert be.stl == le.stl
    assert be.report["volume_mm3"] == pytest.approx(phantom.volume, rel=0.03)


def _two_slices(folder, name, big_endian):
    """pydicom's test file twice, 2 mm apart, in its own encoding."""
    folder.mkdir()
    for k in range(2):
        ds = pydicom.dcmread(get_testdata_file(name))
        position = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [position[0], position[1], position[2] + 2 * k]
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{k}"
        dcmwrite(folder / f"{k}.dcm", ds, implicit_vr=False, little_endian=not big_endian)


def test_pydicoms_big_endian_mr_meshes_as_its_little_endian_twin(tmp_path):
    _two_slices(tmp_path / "le", "MR_small.dcm", False)
    _two_slices(tmp_path / "be", "MR_small_bigendian.dcm", True)
    le_vol, le = _volume_and_mesh(tmp_path / "le", threshold=600)
    be_vol, be = _volume_and_mesh(tmp_path / "be", threshold=600)
    np.testing.assert_array_equal(be_vol.data, le_vol.data)
    assert le.report["triangles"] > 1000
    assert be.stl == le.stl


@pytest.mark.parametrize("plain,big", [("MR_small.dcm", "MR_small_bigendian.dcm"),
                                       ("emri_small.dcm", "emri_small_big_endian.dcm")])
def test_decoded_big_endian_pixels_are_native(plain, big):
    a, b = decode(get_testdata_file(plain)), decode(get_testdata_file(big))
    assert b.dtype.isnative and b.dtype == a.dtype
    np.testing.assert_array_equal(a, b)
    # a view of the words, as the fast loading path takes, holds the same values
    np.testing.assert_array_equal(b.view(np.int16 if b.dtype.kind == "i" else np.uint16), a)
