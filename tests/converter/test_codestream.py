"""The codestream reader (converter.codestream): what each frame declares,
read without a decoder, agrees with the real codestreams of every kind, and
every way a frame table or header can break is refused — never anything
but ``UnreadableInput``, never an allocation from a declared size."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.encaps import encapsulate

from converter import codestream as C
from converter.errors import UnreadableInput
from tests import hostile as H

JPEG, JPEG_LS, J2K, RLE = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.80",
                           "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5")


def _refused(fn, *args, **kw):
    with pytest.raises(UnreadableInput) as err:
        fn(*args, **kw)
    assert err.value.code == "corrupt_pixel_data"
    assert "\n" not in err.value.message
    return err.value.message


@pytest.mark.parametrize("kind,syntax,declared", [
    ("jpeg", JPEG, (64, 64, 1, 8)),
    ("jpeg-ls", JPEG_LS, (64, 64, 1, 16)),
    ("jpeg2000", J2K, (64, 64, 1, 16)),
])
def test_what_real_codestreams_declare_is_read(kind, syntax, declared):
    frame = H.FRAMES[kind][2](1)[0]
    assert tuple(C.declared(syntax, frame)) == declared
    blown = H.declare_size(frame, 640, 6400)
    assert tuple(C.declared(syntax, blown))[:2] == (640, 6400)


def test_a_jp2_file_is_read_through_its_boxes():
    import openjpeg

    arr = (np.arange(48 * 80).reshape(48, 80) % 4000).astype(np.uint16)
    jp2 = bytes(openjpeg.encode(arr, bits_stored=12, photometric_interpretation=2,
                                codec_format=1))
    assert jp2[:12] == C._JP2_SIGNATURE
    assert tuple(C.declared(J2K, jp2)) == (48, 80, 1, 12)
    # the image header box and the codestream must agree
    at = jp2.index(b"ihdr") + 4
    bad = jp2[:at] + struct.pack(">I", 4800) + jp2[at + 4:]
    assert "disagrees" in _refused(C.declared, J2K, bad)


def test_jpeg_ls_takes_its_size_from_the_oversize_lse_segment():
    frame = bytearray(H.jpeg_ls_frames(1)[0])
    sof = frame.index(b"\xff\xf7")
    struct.pack_into(">HH", frame, sof + 5, 0, 0)  # the size is given by LSE ID 4
    lse = b"\xff\xf8" + struct.pack(">H", 2 + 2 + 4) + b"\x04\x02" + struct.pack(">HH", 64, 64)
    end = sof + 2 + struct.unpack_from(">H", frame, sof + 2)[0]
    with_lse = bytes(frame[:end]) + lse + bytes(frame[end:])
    assert tuple(C.declared(JPEG_LS, with_lse)) == (64, 64, 1, 16)
    huge = with_lse.replace(lse, lse[:-4] + struct.pack(">HH", 60000, 60000))
    assert tuple(C.declared(JPEG_LS, huge))[:2] == (60000, 60000)
    assert "does not declare its size" in _refused(C.declared, JPEG_LS, bytes(frame))


def test_a_frame_that_disagrees_is_refused_naming_sizes_not_values():
    frame = H.jpeg_baseline_frames(1)[0]
    msg = _refused(C.check_frame, JPEG, H.declare_size(frame, 64000, 64000), len(frame),
                   64, 64, 8, 1)
    assert msg == ("the pixel data disagree with the image header (a frame declares "
                   "64000×64000 pixels, the header 64×64)")
    assert "components" in _refused(C.check_frame, JPEG, frame, len(frame), 64, 64, 8, 3)
    assert "16-bit" in _refused(C.check_frame, J2K, H.j2k_frames(1)[0], 9, 64, 64, 8, 1)
    # a JPEG-LS stream under a JPEG syntax and the other way round
    assert "another JPEG process" in _refused(
        C.check_frame, JPEG, H.jpeg_ls_frames(1)[0], 9, 64, 64, 16, 1)
    assert "another JPEG process" in _refused(C.check_frame, JPEG_LS, frame, 9, 64, 64, 8, 1)


def test_jpeg2000_tiles_and_subsampling_are_checked():
    frame = bytearray(H.j2k_frames(1)[0])
    struct.pack_into(">II", frame, 24, 1, 1)  # 1×1 tiles: 4096 of them is fine
    assert tuple(C.declared(J2K, bytes(frame))) == (64, 64, 1, 16)
    struct.pack_into(">IIIIII", frame, 8, 60000, 60000, 0, 0, 1, 1)
    assert "tiles" in _refused(C.declared, J2K, bytes(frame))
    frame = bytearray(H.j2k_frames(1)[0])
    frame[43] = 0  # XRsiz of the first component
    assert "subsampling" in _refused(C.declared, J2K, bytes(frame))


def test_rle_segment_tables_are_checked():
    frame = H.rle_frames(1)[0]
    C.check_rle(frame, len(frame), 16, 1)
    assert "needs 1" in _refused(C.check_rle, frame, len(frame), 8, 1)
    assert "needs 6" in _refused(C.check_rle, frame, len(frame), 16, 3)
    bad = bytearray(frame)
    struct.pack_into("<I", bad, 8, len(frame) + 10)  # the second segment past the end
    assert "outside" in _refused(C.check_rle, bytes(bad), len(bad), 16, 1)
    struct.pack_into("<I", bad, 4, 60)
    assert "after its header" in _refused(C.check_rle, bytes(bad), len(bad), 16, 1)
    assert "truncated" in _refused(C.check_rle, frame[:40], 40, 16, 1)


def _value(frames, bot=True):
    return encapsulate(frames, has_bot=bot)


def test_frames_are_found_by_table_by_count_or_by_codestream_starts():
    frames = H.j2k_frames(3)
    kw = dict(rows=64, columns=64, bits_allocated=16, samples=1, frames=3)
    C.check_encapsulated(_value(frames), J2K, **kw)
    C.check_encapsulated(_value(frames, bot=False), J2K, **kw)
    # each frame in two fragments, no table: split where a codestream starts
    split = encapsulate(frames, fragments_per_frame=2, has_bot=False)
    C.check_encapsulated(split, J2K, **kw)
    split_bot = encapsulate(frames, fragments_per_frame=2, has_bot=True)
    C.check_encapsulated(split_bot, J2K, **kw)
    assert "3 codestreams" in _refused(C.check_encapsulated, split, J2K, **dict(kw, frames=2))
    assert "the offset table lists 3" in _refused(
        C.check_encapsulated, _value(frames), J2K, **dict(kw, frames=2))
    assert "3 fragments present" in _refused(
        C.check_encapsulated, _value(frames), J2K, **dict(kw, frames=10**6))


def test_broken_offset_tables_and_items_are_refused():
    frames = H.j2k_frames(2)
    kw = dict(rows=64, columns=64, bits_allocated=16, samples=1, frames=2)
    value = bytearray(_value(frames))
    struct.pack_into("<I", value, 12, 7)  # the second frame's offset between fragments
    assert "between fragments" in _refused(C.check_encapsulated, bytes(value), J2K, **kw)
    value = bytearray(_value(frames))
    struct.pack_into("<I", value, 4, 0xFFFFFFFF)  # the table's length
    assert "offset table" in _refused(C.check_encapsulated, bytes(value), J2K, **kw)
    value = bytearray(_value(frames))
    struct.pack_into("<I", value, 20, 0xFFFFFFF0)  # the first fragment's length
    assert "past" in _refused(C.check_encapsulated, bytes(value), J2K, **kw)
    assert "no offset table item" in _refused(C.check_encapsulated, b"\0" * 64, J2K, **kw)
    assert "no frames" in _refused(C.check_encapsulated, bytes(_value(frames)), J2K,
                                   **dict(kw, frames=0))
    rle = H.rle_frames(2)
    assert "RLE frames spread" in _refused(
        C.check_encapsulated, encapsulate(rle, fragments_per_frame=2, has_bot=False), RLE,
        **dict(kw, frames=2))


def test_native_lengths_must_hold_every_frame():
    C.check_native_length(64 * 64 * 2 * 3, 3, 64, 64, 16, 1)
    C.check_native_length(64 * 64 * 2 * 3 + 1, 3, 64, 64, 16, 1)
    assert "need 8192000000 bytes" in _refused(C.check_native_length, 8192, 10**6, 64, 64, 16, 1)
    C.check_native_length(64 * 64 // 8, 1, 64, 64, 1, 1)  # 1-bit pixels pack 8 a byte
    _refused(C.check_native_length, 64 * 64 // 8 - 1, 1, 64, 64, 1, 1)


def _pydicom_encapsulated():
    root = Path(pydicom.data.__file__).parent / "test_files"
    out = []
    for path in sorted(root.rglob("*.dcm")):
        try:
            ds = pydicom.dcmread(path, force=True)
            ts = str(ds.file_meta.get("TransferSyntaxUID", ""))
        except Exception:
            continue
        if C.is_encapsulated(ts) and "PixelData" in ds:
            out.append((path.name, ds, ts))
    return out


#: pydicom's files no decoder decodes either (checked in test_pydicom_files)
BROKEN = {"JPEG2000-embedded-sequence-delimiter.dcm", "JPEG-lossy.dcm",
          "emri_small_jpeg_2k_lossless_too_short.dcm", "UN_sequence.dcm"}


def test_every_decodable_encapsulated_pydicom_file_passes():
    checked = 0
    for name, ds, ts in _pydicom_encapsulated():
        kw = dict(rows=int(ds.Rows), columns=int(ds.Columns),
                  bits_allocated=int(ds.BitsAllocated), samples=int(ds.SamplesPerPixel),
                  frames=int(ds.get("NumberOfFrames", 1) or 1))
        try:
            C.check_encapsulated(ds.PixelData, ts, **kw)
            checked += 1
        except UnreadableInput:
            assert name in BROKEN, name
    assert checked > 30


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.sampled_from([JPEG, JPEG_LS, J2K, RLE]))
def test_any_bytes_are_read_fast_and_refused_only_as_unreadable(data, syntax):
    t = time.perf_counter()
    values = [data]
    if len(data) >= 2:
        values += [encapsulate([data], has_bot=True), encapsulate([data, data])]
    for value in values:
        try:
            C.check_encapsulated(value, syntax, rows=64, columns=64, bits_allocated=16,
                                 samples=1, frames=1)
        except UnreadableInput as exc:
            assert exc.code == "corrupt_pixel_data"
    assert time.perf_counter() - t < 0.5


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**16 - 1),
       st.integers(0, 2**16 - 1))
def test_hostile_header_fields_never_allocate(size_a, size_b, short_a, short_b):
    """Any SIZ or SOF values: an answer at once (the sizes are compared, never used)."""
    j2k = bytearray(H.j2k_frames(1)[0])
    struct.pack_into(">IIII", j2k, 8, size_a, size_b, size_a // 7, size_b // 3)
    jpeg = bytearray(H.jpeg_baseline_frames(1)[0])
    at = jpeg.index(b"\xff\xc0")
    struct.pack_into(">HH", jpeg, at + 5, short_a, short_b)
    for syntax, frame in ((J2K, bytes(j2k)), (JPEG, bytes(jpeg))):
        try:
            C.check_frame(syntax, frame, len(frame), 64, 64, 16, 1)
        except UnreadableInput:
            pass
