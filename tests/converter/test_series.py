"""Series grouping, splitting, sorting and their warnings."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from converter import NoUsableSeries, list_series
from converter.loading import load_volume
from converter.series import select
from tests import dicomgen as G


def test_split_by_orientation_drops_a_lone_localizer(tmp_path):
    uid = pydicom.uid.generate_uid()
    geo = G.make_geometry("axial", size=(20, 32, 32))
    G.write_phantom_series(tmp_path / "ax", G.sphere(), geo, series_uid=uid)
    loc = G.make_geometry("coronal", size=(1, 32, 32))
    G.write_phantom_series(tmp_path / "loc", G.sphere(), loc, series_uid=uid)
    listing = list_series([tmp_path])
    assert len(listing.series) == 1 and listing.series[0].slices == 20
    assert listing.skipped.get("localizer") == 1


def test_localizer_image_type_is_skipped(tmp_path):
    geo = G.make_geometry("axial", size=(12, 24, 24))
    G.write_phantom_series(tmp_path / "a", G.sphere(radius=8), geo)
    G.write_phantom_series(tmp_path / "b", G.sphere(radius=8), G.make_geometry("sagittal", size=(3, 24, 24)),
                           extra={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]})
    listing = list_series([tmp_path])
    assert listing.skipped.get("localizer") == 3
    assert [s.slices for s in listing.series] == [12]


def test_one_uid_two_orientations_and_sizes_are_split(tmp_path):
    uid = pydicom.uid.generate_uid()
    G.write_phantom_series(tmp_path / "a", G.sphere(), G.make_geometry("axial", size=(15, 32, 32)),
                           series_uid=uid)
    G.write_phantom_series(tmp_path / "b", G.sphere(), G.make_geometry("sagittal", size=(10, 32, 32)),
                           series_uid=uid)
    G.write_phantom_series(tmp_path / "c", G.sphere(), G.make_geometry("axial", size=(8, 40, 40)),
                           series_uid=uid)
    listing = list_series([tmp_path])
    assert sorted(s.slices for s in listing.series) == [8, 10, 15]
    assert len({s.uid for s in listing.series}) == 3
    assert all(s.uid.startswith(uid) for s in listing.series)
    # the plain UID picks the largest part; a part's own UID picks that part
    assert select(listing, uid).slices == 15
    part = next(s for s in listing.series if s.slices == 10)
    assert select(listing, part.uid).slices == 10
    assert part.orientation == "sagittal"


def test_duplicates_are_dropped_and_gaps_reported(tmp_path):
    geo = G.make_geometry("axial", size=(20, 24, 24))
    vol = G.render(G.sphere(radius=6), geo)
    positions = geo.positions.copy()
    keep = [k for k in range(20) if k not in (9, 10, 11)]  # a 4 mm gap
    G.write_series(tmp_path / "a", vol[keep], geometry=G.Geometry((len(keep), 24, 24), positions[keep],
                                                                    geo.row_dir, geo.col_dir, geo.spacing))
    G.write_series(tmp_path / "dup", vol[[3, 4]], geometry=G.Geometry((2, 24, 24), positions[[3, 4]],
                                                                        geo.row_dir, geo.col_dir, geo.spacing),
                   series_uid=_uid_of(tmp_path / "a"), seed=1)
    listing = list_series([tmp_path])
    info = listing.series[0]
    assert info.slices == 17
    vol_loaded = load_volume(listing, info)
    text = " ".join(vol_loaded.warnings)
    assert "2 duplicate slices" in text
    assert "gap of 4.00 mm" in text and "not interpolated" in text
    assert np.all(np.diff(vol_loaded.positions[:, 2]) > 0)


def _uid_of(folder):
    return str(pydicom.dcmread(next(iter(sorted(folder.iterdir())))).SeriesInstanceUID)


def test_tilt_and_uneven_spacing_are_reported(tmp_path):
    geo = G.make_geometry("axial", size=(16, 24, 24), tilt_deg=20, slice_gaps=[1.0, 1.5] * 7 + [1.0])
    G.write_phantom_series(tmp_path, G.sphere(radius=6), geo)
    listing = list_series([tmp_path])
    vol = load_volume(listing, select(listing))
    text = " ".join(vol.warnings)
    assert "gantry tilt of 20.0°" in text
    assert "non-uniform slice spacing" in text


def test_pixel_padding_becomes_background(tmp_path):
    geo = G.make_geometry("axial", size=(6, 20, 20))
    hu = G.render(G.sphere(radius=5), geo)
    hu[:, :3, :] = -3024  # outside the field of view, stored as the padding value
    G.write_series(tmp_path, hu, geometry=geo, pixel_padding_value=-3024 + 1024)
    listing = list_series([tmp_path])
    vol = load_volume(listing, select(listing))
    assert vol.data.dtype == np.int16
    assert vol.data[:, :3, :].max() == vol.background == -1024
    assert vol.data.min() == -1024


def test_float_rescale_gives_float32(tmp_path):
    geo = G.make_geometry("axial", size=(5, 16, 16))
    G.write_series(tmp_path, G.render(G.sphere(radius=4), geo) / 2, geometry=geo, rescale=(0.5, -1024))
    listing = list_series([tmp_path])
    vol = load_volume(listing, select(listing))
    assert vol.data.dtype == np.float32


def test_series_not_found_names_what_is_there(tmp_path):
    G.write_phantom_series(tmp_path, G.sphere(), G.make_geometry(size=(6, 20, 20)), series_number=12)
    listing = list_series([tmp_path])
    with pytest.raises(NoUsableSeries) as err:
        select(listing, "99")
    assert err.value.code == "series_not_found"
    assert "1 series available (series numbers 12)" in err.value.message
