"""Files nobody here wrote: pydicom's bundled test files and ``pydicom-data``.

Every compressed file decodes to the same values as its uncompressed twin;
files without a twin decode to the documented shape; enhanced multi-frame
objects load as volumes through the whole reading path.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from converter import ConvertOptions, NoUsableSeries, UnreadableInput, convert, list_series
from converter.loading import decode, load_volume
from converter.series import scan, select
from tests import dicomgen as G


def data_file(name):
    path = get_testdata_file(name)
    assert path is not None, f"{name} missing: pydicom-data must be installed by the test set-up"
    return path


TWINS = [
    # (plain, compressed or differently encoded)
    ("MR_small.dcm", "MR_small_RLE.dcm"),  # RLE lossless
    ("MR_small.dcm", "MR_small_jp2klossless.dcm"),  # JPEG 2000 lossless
    ("MR_small.dcm", "MR_small_bigendian.dcm"),  # explicit VR big endian
    ("MR_small.dcm", "MR_small_implicit.dcm"),  # implicit VR little endian
    ("emri_small.dcm", "emri_small_RLE.dcm"),  # enhanced MR, RLE
    ("emri_small.dcm", "emri_small_jpeg_2k_lossless.dcm"),
    ("emri_small.dcm", "emri_small_jpeg_ls_lossless.dcm"),  # JPEG-LS lossless
    ("emri_small.dcm", "emri_small_big_endian.dcm"),
    ("MR2_UNCR.dcm", "MR2_J2KR.dcm"),  # pydicom-data, 1024²
    ("693_UNCR.dcm", "693_J2KR.dcm"),  # pydicom-data, CT 512²
    ("RG1_UNCR.dcm", "RG1_J2KR.dcm"),  # pydicom-data, CR
]


@pytest.mark.parametrize("plain,other", TWINS)
def test_compressed_twin_decodes_to_the_same_values(plain, other):
    a = decode(data_file(plain))
    b = decode(data_file(other))
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.astype(np.int64), b.astype(np.int64))


@pytest.mark.parametrize("name,shape", [
    ("JPEG-LL.dcm", (1024, 256)),  # JPEG lossless, process 14 SV1
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", (768, 1024)),
    ("JPGExtended.dcm", (1024, 256)),  # JPEG extended (12-bit)
    ("SC_jpeg_no_color_transform.dcm", (256, 256, 3)),  # JPEG baseline
    ("JPEGLSNearLossless_16.dcm", (50, 10)),  # JPEG-LS near-lossless
    ("image_dfl.dcm", (512, 512)),  # deflated explicit VR little endian
])
def test_files_without_twin_decode(name, shape):
    arr = decode(data_file(name))
    assert arr.shape == shape
    assert np.ptp(arr) > 0  # an image, not a blank


def test_a_file_every_decoder_refuses_is_reported_not_crashed():
    """pydicom's JPEG-lossy.dcm has a malformed scan header; all plugins refuse it."""
    with pytest.raises(UnreadableInput) as err:
        decode(data_file("JPEG-lossy.dcm"))
    assert err.value.code == "corrupt_pixel_data"


def test_lossy_jpeg_2000_is_close_to_its_source():
    a = decode(data_file("JPEG2000_UNC.dcm")).astype(np.float64)
    b = decode(data_file("JPEG2000.dcm")).astype(np.float64)
    assert a.shape == b.shape
    assert np.abs(a - b).mean() < 0.02 * np.ptp(a)


def test_enhanced_mr_without_geometry_is_refused_clearly():
    """emri_small (Enhanced MR) holds no plane position or orientation at all."""
    with pytest.raises(NoUsableSeries) as err:
        list_series([data_file("emri_small_jpeg_ls_lossless.dcm")])
    assert err.value.code == "no_geometry" and err.value.exit_code == 3


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless])
def test_enhanced_ct_with_functional_groups(tmp_path, syntax):
    """An Enhanced CT phantom: frames shuffled, geometry in functional groups."""
    phantom = G.l_shape()
    geometry = G.make_geometry("axial", size=(36, 44, 44), oblique_deg=20, tilt_deg=10)
    G.write_enhanced(tmp_path / "enh.dcm", G.render(phantom, geometry), geometry,
                     transfer_syntax=syntax)
    listing = list_series([tmp_path])
    info = listing.series[0]
    assert info.multiframe and info.slices == 36
    vol = load_volume(listing, select(listing))
    np.testing.assert_allclose(vol.positions, geometry.positions, atol=1e-5)
    np.testing.assert_array_equal(vol.data, G.render(phantom, geometry))
    result = convert([tmp_path], ConvertOptions(threshold=G.MID_HU))
    report = result.report
    assert report["watertight"] and report["series"]["chosen"]["multiframe"]
    assert report["volume_mm3"] == pytest.approx(phantom.volume, rel=0.02)
    np.testing.assert_allclose(report["centroid_mm"], phantom.centroid, atol=0.5)


def test_big_endian_and_implicit_single_slices_list_but_are_not_volumes():
    listing = scan([data_file("MR_small_bigendian.dcm"), data_file("CT_small.dcm")])
    assert sorted(s.modality for s in listing.series) == ["CT", "MR"]
    with pytest.raises(NoUsableSeries) as err:
        select(listing)
    assert err.value.code == "single_slice"


def test_dicomdir_and_rtstruct_are_skipped(tmp_path):
    shutil.copy(data_file("DICOMDIR"), tmp_path / "DICOMDIR")
    shutil.copy(data_file("rtstruct.dcm"), tmp_path / "rt")  # no preamble, no file meta
    shutil.copy(data_file("MR_small.dcm"), tmp_path / "a")
    listing = scan([tmp_path])
    assert listing.skipped.get("DICOMDIR") == 1
    assert listing.skipped.get("RTSTRUCT") == 1
    assert len(listing.series) == 1


def test_truncated_file_is_corrupt_pixel_data(tmp_path):
    listing = scan([data_file("MR_truncated.dcm"), data_file("MR_small.dcm")])
    # two MR slices of the same series? they are separate series: pick the truncated one
    assert listing.series
    with pytest.raises(UnreadableInput) as err:
        decode(data_file("MR_truncated.dcm"))
    assert err.value.code == "corrupt_pixel_data"
    assert err.value.exit_code == 4
