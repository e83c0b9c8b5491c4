"""Uncompressed pixels read straight from the files equal what pydicom decodes."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from converter import headers as H
from converter import series as S
from converter.loading import load_volume
from tests import dicomgen as G


def _load(inputs, workers=1):
    listing = S.scan(inputs)
    info = S.select(listing)
    return listing, load_volume(listing, info, workers=workers)


def _volume(shape=(6, 12, 14), seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(-1024, 2000, size=shape).astype(np.int16)


def _rewrite(paths, **attrs):
    """Change header values (and optionally the stored words) of each file."""
    words = attrs.pop("_words", None)
    for path in paths:
        ds = pydicom.dcmread(path)
        dtype = ds.pixel_array.dtype
        for key, value in attrs.items():
            setattr(ds, key, value)
        if words is not None:
            ds.PixelData = words(np.frombuffer(ds.PixelData, dtype)).tobytes()
        ds.save_as(path)


CASES = {
    "explicit": {},
    "implicit": {"transfer_syntax": ImplicitVRLittleEndian},
    "padding": {"pixel_padding_value": -2000},
    "unsigned": {"rescale": (1.0, -3000.0)},
    "slope": {"rescale": (2.0, -1024.0)},
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("workers", [1, 2])
def test_native_reading_matches_pydicom(tmp_path, monkeypatch, case, workers):
    vol = _volume()
    if case == "padding":
        vol[:, :2] = -2000 - 1024  # stored value -2000 marks padding
    G.write_series(tmp_path, vol, **CASES[case])
    import converter.loading as L

    monkeypatch.setattr(L, "_PARALLEL_MIN_SLICES", 1)
    listing, fast = _load([tmp_path], workers)
    assert all(s.native is not None for s in listing.stacks[1].slices)
    monkeypatch.setattr(S, "_native_pixels", lambda *args: None)  # pydicom's reading
    monkeypatch.setattr(H, "_native", lambda *args: None)  # and the quick reader's
    listing, slow = _load([tmp_path], workers)
    assert all(s.native is None for s in listing.stacks[1].slices)
    assert fast.data.dtype == slow.data.dtype
    np.testing.assert_array_equal(fast.data, slow.data)
    assert fast.background == slow.background


@pytest.mark.parametrize("signed", [False, True])
def test_unused_high_bits_are_ignored_as_pydicom_does(tmp_path, monkeypatch, signed):
    vol = _volume() if signed else np.abs(_volume()).astype(np.int16)
    paths = G.write_series(tmp_path, vol, rescale=(1.0, 0.0))

    def garbage_above_12_bits(words):
        w = words.astype(np.uint16) & 0x0FFF
        return (w | 0xA000).astype(words.dtype)  # bits 13..15 hold garbage

    _rewrite(paths, BitsStored=12, HighBit=11, _words=garbage_above_12_bits)
    listing, fast = _load([tmp_path])
    assert listing.stacks[1].slices[0].native[2] == 4
    monkeypatch.setattr(S, "_native_pixels", lambda *args: None)  # pydicom's reading
    monkeypatch.setattr(H, "_native", lambda *args: None)  # and the quick reader's
    _, slow = _load([tmp_path])
    np.testing.assert_array_equal(fast.data, slow.data)


def test_bytes_and_zip_inputs_read_natively(tmp_path):
    vol = _volume()
    paths = G.write_series(tmp_path / "s", vol)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in paths:
            zf.write(p, p.name)
    listing, from_zip = _load([buf.getvalue()])
    assert all(s.native is not None for s in listing.stacks[1].slices)
    _, from_files = _load([tmp_path / "s"])
    np.testing.assert_array_equal(from_zip.data, from_files.data)
    np.testing.assert_array_equal(from_files.data, vol)


@pytest.mark.parametrize("workers", [1, 2])
def test_compressed_and_truncated_pixels(tmp_path, monkeypatch, workers):
    import converter.loading as L

    monkeypatch.setattr(L, "_PARALLEL_MIN_SLICES", 1)  # 2: the error comes from a forked reader
    vol = _volume()
    G.write_series(tmp_path / "rle", vol, transfer_syntax=RLELossless)
    listing, rle = _load([tmp_path / "rle"], workers)
    assert all(s.native is None for s in listing.stacks[1].slices)
    np.testing.assert_array_equal(rle.data, vol)
    paths = G.write_series(tmp_path / "cut", vol, transfer_syntax=ExplicitVRLittleEndian)
    listing = S.scan([tmp_path / "cut"])
    data = paths[3].read_bytes()
    paths[3].write_bytes(data[:-100])  # truncated after the scan
    from converter.errors import UnreadableInput

    with pytest.raises(UnreadableInput) as err:
        load_volume(listing, S.select(listing), workers=workers)
    assert err.value.code == "corrupt_pixel_data"


@pytest.mark.parametrize("workers", [1, 2])
def test_values_beyond_int16_fall_back_to_float32(tmp_path, monkeypatch, workers):
    import converter.loading as L

    monkeypatch.setattr(L, "_PARALLEL_MIN_SLICES", 1)  # 2: forked readers meet the overflow
    vol = np.full((4, 8, 8), 100.0)
    vol[2, 3, 3] = 40000.0
    G.write_series(tmp_path, vol, rescale=(1.0, 0.0))
    _, loaded = _load([tmp_path], workers)
    assert loaded.data.dtype == np.float32
    assert loaded.data.max() == 40000.0


def test_unsigned_words_above_32767_rescale_exactly(tmp_path):
    vol = np.linspace(-9000, 30000, 4 * 8 * 8).reshape(4, 8, 8).round()
    G.write_series(tmp_path, vol, rescale=(1.0, -10000.0))  # stored up to 40000 (uint16)
    listing, loaded = _load([tmp_path])
    assert listing.stacks[1].slices[0].native[1] == "<u2"
    assert loaded.data.dtype == np.int16
    np.testing.assert_array_equal(loaded.data, vol)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("padding", [False, True])
def test_loader_summaries_match_the_voxels(tmp_path, monkeypatch, padding, workers):
    import converter.loading as L

    monkeypatch.setattr(L, "_PARALLEL_MIN_SLICES", 1)
    vol = _volume(seed=3)
    if padding:
        vol[:, :2] = -2000 - 1024
    G.write_series(tmp_path, vol, pixel_padding_value=-2000 if padding else None)
    _, loaded = _load([tmp_path], workers)
    data = loaded.data
    assert loaded.value_range() == (float(data.min()), float(data.max()))
    for level in (-500.0, 0.0, 1500.0):
        expected = [data.max(axis=(1, 2)) > level, data.max(axis=(0, 2)) > level,
                    data.max(axis=(0, 1)) > level]
        for got, want in zip(loaded.crossing_box(level), expected, strict=True):
            np.testing.assert_array_equal(got, want)
    if padding:
        assert loaded.row_max is None
    else:
        np.testing.assert_array_equal(loaded.row_max, data.max(axis=2))
        np.testing.assert_array_equal(loaded.col_max, data.max(axis=1))
