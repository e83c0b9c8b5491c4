"""A quick reader of the few header elements a scan needs, for plain files.

Most series arrive as single-frame images in a little-endian transfer syntax
(implicit or explicit VR).  For those, this module walks the header element
by element with ``struct`` up to the pixel data, keeps the dozen values the
scan uses and skips everything else by its length: about 0.2 ms a file where
pydicom takes 1–2 ms, and without importing pydicom (0.2 s) at all.

It answers only what it is sure of.  Anything else — another transfer syntax,
a bare dataset without file meta, enhanced multi-frame objects, DICOMDIRs,
a value that is not printable ASCII or a number, an element that
does not parse — returns ``None``, and the caller reads that file with
pydicom as before.  ``tests/converter/test_headers.py`` checks that every
answer it gives is the one pydicom's reading gives.
"""

from __future__ import annotations

import struct

import numpy as np

from .modality import modality_term
from .volume import Slice

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
#: transfer syntaxes whose dataset is not explicit VR little endian
_OTHER_ENCODINGS = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2")

#: VRs with a 2-byte reserved field and a 4-byte length (explicit VR)
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ UC UN UR UT SV UV".split())
_ALL_VRS = frozenset(b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST "
                     b"SV TM UC UI UL UN UR US UT UV".split())

DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
#: SOP class prefixes of objects that are not images to mesh, by kind
NON_IMAGE_CLASSES = (
    ("1.2.840.10008.5.1.4.1.1.88.59", "KO"),
    ("1.2.840.10008.5.1.4.1.1.88.", "SR"),
    ("1.2.840.10008.5.1.4.1.1.11.", "PR"),
    ("1.2.840.10008.5.1.4.1.1.481.3", "RTSTRUCT"),
    ("1.2.840.10008.5.1.4.1.1.481.5", "RTPLAN"),
    ("1.2.840.10008.5.1.4.1.1.481.2", "RTDOSE"),
    ("1.2.840.10008.5.1.4.1.1.66.4", "SEG"),
    ("1.2.840.10008.5.1.4.1.1.104.", "encapsulated document"),
)


def non_image_kind(sop_class: str) -> str | None:
    """The kind of a non-image object (SR, SEG, …) by its SOP class UID, else None."""
    for prefix, kind in NON_IMAGE_CLASSES:
        if sop_class.startswith(prefix):
            return kind
    return None


_PIXEL_DATA = 0x7FE00010
_UNDEFINED = 0xFFFFFFFF

# the elements kept (tag → name); US values are read as unsigned shorts
_STRINGS = {
    0x00080016: "sop_class",
    0x00080060: "modality",
    0x0008103E: "description",
    0x0020000E: "uid",
}
_NUMBER_STRINGS = {  # DS and IS values, kept as ASCII text
    0x00080008: "image_type",  # CS, checked for LOCALIZER
    0x00200011: "series_number",
    0x00200032: "position",
    0x00200037: "orientation",
    0x00280030: "pixel_spacing",
    0x00181164: "imager_pixel_spacing",
    0x00281052: "intercept",
    0x00281053: "slope",
    0x00280008: "frames",
}
_SHORTS = {
    0x00280002: "samples",
    0x00280010: "rows",
    0x00280011: "columns",
    0x00280100: "bits_allocated",
    0x00280101: "bits_stored",
    0x00280103: "pixel_representation",
}
#: US or SS by the pixel representation (implicit VR) or as the file says
_US_OR_SS = {
    0x00280120: "padding",
    0x00280121: "padding_limit",
}
#: elements whose presence sends the file to pydicom: objects this reader
#: does not model
_DEFER = frozenset((
    0x52009229,  # SharedFunctionalGroupsSequence
    0x52009230,  # PerFrameFunctionalGroupsSequence
    0x00041220,  # DirectoryRecordSequence
))
_NUMBER_BYTES = frozenset(b"0123456789+-.eE \\")
_HEAD = 8192
_MAX_HEADER = 4 * 1024 * 1024

_tag_vr_len = struct.Struct("<HH2sH")
_tag_len = struct.Struct("<HHI")
_u32 = struct.Struct("<I")
_u16 = struct.Struct("<H")


class _Defer(Exception):
    """Not a file this reader answers for: ask pydicom."""


class _Buffer:
    """The file's bytes from the start, read further on demand."""

    __slots__ = ("data", "fh", "done")

    def __init__(self, item):
        if item.data is not None:
            self.data, self.fh, self.done = item.data, None, True
        else:
            self.fh = open(item.path, "rb")
            self.data, self.done = self.fh.read(_HEAD), False

    def need(self, end):
        """Make sure bytes up to ``end`` are here (False when the file is shorter)."""
        while end > len(self.data) and not self.done:
            if len(self.data) >= _MAX_HEADER:
                raise _Defer
            more = self.fh.read(max(len(self.data), end - len(self.data)))
            if not more:
                self.done = True
            else:
                self.data += more
        return end <= len(self.data)

    def close(self):
        if self.fh is not None:
            self.fh.close()


def examine(item):
    """``(None, facts, [slice])`` or ``(skip kind, None, None)`` for ``item`` as
    :func:`converter.series._examine_with_pydicom` would give it, or None when pydicom must
    read the file."""
    try:
        buf = _Buffer(item)
    except OSError:
        return None
    try:
        return _examine(buf, item)
    except (_Defer, struct.error, ValueError, IndexError, OverflowError):
        return None
    finally:
        buf.close()


def _examine(buf, item):
    data = buf.data
    if len(data) < 132 or data[128:132] != b"DICM":
        raise _Defer  # a bare dataset: pydicom guesses its encoding
    meta, pos = _file_meta(buf, 132)
    ts = meta.get("ts")
    if ts is None or ts in _OTHER_ENCODINGS:
        raise _Defer
    implicit = ts == IMPLICIT_LE
    values, pixel_at = _dataset(buf, pos, implicit)
    return _result(values, meta, ts, implicit, pixel_at, buf, item)


def _file_meta(buf, pos):
    """The transfer syntax and SOP class of the file meta group; the offset after it."""
    meta = {}
    while buf.need(pos + 8):
        if _u16.unpack_from(buf.data, pos)[0] != 0x0002:
            break
        _, elem, _, length, start = _explicit(buf, pos)
        if length == _UNDEFINED or not buf.need(start + length):
            raise _Defer
        if elem == 0x0010:
            meta["ts"] = _text(buf.data[start:start + length])
        elif elem == 0x0002:
            meta["sop_class"] = _text(buf.data[start:start + length])
        pos = start + length
    return meta, pos


def _dataset(buf, pos, implicit):
    """The kept values (name → bytes) and the offset of the pixel data element."""
    values = {}
    first = True
    while True:
        if not buf.need(pos + 8):
            if buf.need(pos + 1):
                raise _Defer  # a few stray bytes at the end
            return values, None  # no pixel data
        data = buf.data
        if implicit:
            if first and data[pos + 4:pos + 6] in _ALL_VRS:
                raise _Defer  # says implicit, looks explicit: pydicom decides
            group, elem, length = _tag_len.unpack_from(data, pos)
            start = pos + 8
        else:
            group, elem, vr, length, start = _explicit(buf, pos)
        first = False
        tag = group << 16 | elem
        if tag == _PIXEL_DATA:
            return values, pos
        if group == 0xFFFE or group < 0x0008 or tag in _DEFER:
            raise _Defer
        if length == _UNDEFINED:
            pos = _skip_undefined(buf, start, implicit or (not implicit and vr == b"UN"))
            continue
        end = start + length
        if not buf.need(end):
            raise _Defer  # runs past the end of the file
        name = _STRINGS.get(tag) or _NUMBER_STRINGS.get(tag)
        if name is not None:
            values[name] = buf.data[start:end]
        elif (name := _SHORTS.get(tag)) is not None:
            if length != 2:
                raise _Defer
            values[name] = _u16.unpack_from(buf.data, start)[0]
        elif (name := _US_OR_SS.get(tag)) is not None:
            if length != 2:
                raise _Defer
            values[name] = (None if implicit else vr, buf.data[start:end])
        pos = end


def _explicit(buf, pos):
    """(group, element, VR, value length, value offset) of the explicit-VR
    element whose first 8 bytes are at ``pos``."""
    group, elem, vr, short_len = _tag_vr_len.unpack_from(buf.data, pos)
    if vr in _LONG_VRS:
        if not buf.need(pos + 12):
            raise _Defer
        return group, elem, vr, _u32.unpack_from(buf.data, pos + 8)[0], pos + 12
    if vr in _ALL_VRS:
        return group, elem, vr, short_len, pos + 8
    raise _Defer


def _skip_undefined(buf, pos, implicit):
    """The offset after a sequence of undefined length whose items start at ``pos``."""
    depth = 0
    while True:
        if not buf.need(pos + 8):
            raise _Defer
        group, elem, length = _tag_len.unpack_from(buf.data, pos)  # implicit VR's layout
        if group == 0xFFFE:
            if elem == 0xE0DD:  # sequence delimiter
                if length != 0:
                    raise _Defer
                pos += 8
                if depth == 0:
                    return pos
                depth -= 1
                continue
            if elem == 0xE00D:  # item delimiter
                pos += 8
                continue
            if elem != 0xE000:
                raise _Defer
            if length == _UNDEFINED:
                pos += 8  # the item's elements follow
            else:
                pos += 8 + length
            continue
        # an element inside an item of undefined length
        start = pos + 8
        if not implicit:
            _, _, _, length, start = _explicit(buf, pos)
        if length == _UNDEFINED:
            depth += 1  # a nested sequence
            pos = start
        else:
            pos = start + length


def _text(raw):
    """A single UI, CS or LO value as pydicom gives it, trailing NULs and spaces
    gone.  Only printable ASCII is answered here: every character set a DICOM
    file may name reads those bytes alike (escape sequences, other bytes and
    several values go to pydicom)."""
    text = raw.rstrip(b"\0 ")
    if any(c < 0x20 or c > 0x7E or c == 0x5C for c in text):  # 0x5C: the value separator
        raise _Defer
    return text.decode("ascii")


def _numbers(raw, n):
    """``n`` finite decimal numbers from a DS value, or None when it does not hold them."""
    if raw is None or not raw.strip(b" "):
        return None  # absent or empty: pydicom has no values either
    if not set(raw) <= _NUMBER_BYTES:
        raise _Defer
    parts = raw.decode("ascii").split("\\")
    if len(parts) != n:
        if n == 1 or len(parts) == 1:
            raise _Defer  # pydicom's single-value semantics differ: let it answer
        return None
    try:
        out = np.array([float(p) for p in parts], dtype=np.float64)
    except ValueError:
        raise _Defer from None
    return out if np.all(np.isfinite(out)) else None


def _number(raw, default, kind=float):
    """One DS or IS value (``default`` when absent or empty)."""
    if raw is None:
        return default
    if not set(raw) <= _NUMBER_BYTES or b"\\" in raw:
        raise _Defer
    text = raw.decode("ascii").strip()
    if not text:
        return default
    if kind is int:
        if not text.lstrip("+-").isdigit():
            raise _Defer
        return int(text)
    value = float(text)
    return value or default


def _result(values, meta, ts, implicit, pixel_at, buf, item):
    sop = _text(values["sop_class"]) if "sop_class" in values else meta.get("sop_class", "")
    if sop == DICOMDIR_CLASS:
        raise _Defer
    if kind := non_image_kind(sop):
        return kind, None, None
    if "rows" not in values or "columns" not in values:
        raise _Defer
    if "image_type" in values:
        image_type = values["image_type"]
        if not image_type.isascii():
            raise _Defer
        kinds = image_type.decode("ascii").rstrip(" \0").split("\\")
        # one value is a string to pydicom, whose letters are never LOCALIZER
        if len(kinds) > 1 and "LOCALIZER" in [v.upper() for v in kinds]:
            return "localizer", None, None
    if _number(values.get("frames"), 1, int) != 1:
        raise _Defer  # multi-frame: pydicom reads the frames' geometry
    facts = {
        "modality": modality_term(_text(values.get("modality", b""))),
        "rows": values["rows"],
        "columns": values["columns"],
        "bits_allocated": values.get("bits_allocated") or 16,
        "pixel_representation": values.get("pixel_representation") or 0,
        "samples": values.get("samples") or 1,
        "padding": _us_or_ss(values, "padding"),
        "padding_limit": _us_or_ss(values, "padding_limit"),
        "multiframe": False,
        "number": _number(values.get("series_number"), None, int),
        "description": _text(values.get("description", b"")),
        "uid": _text(values.get("uid", b"")),
    }
    position = _numbers(values.get("position"), 3)
    orientation = _numbers(values.get("orientation"), 6)
    spacing_raw = values.get("pixel_spacing") or values.get("imager_pixel_spacing")
    spacing = _numbers(spacing_raw, 2)
    if position is None or orientation is None or spacing is None:
        return "no geometry", None, None
    slope = _number(values.get("slope"), 1.0)
    intercept = _number(values.get("intercept"), 0.0)
    native = _native(values, facts, ts, implicit, pixel_at, buf)
    return None, facts, [Slice(item, None, position, orientation,
                               (float(spacing[0]), float(spacing[1])), float(slope),
                               float(intercept), native)]


def _us_or_ss(values, name):
    """A pixel padding value as pydicom reads it: signed when the file says SS,
    or (implicit VR) when the pixel representation is signed."""
    if name not in values:
        return None
    vr, raw = values[name]
    if vr is None:
        if "pixel_representation" not in values:
            raise _Defer
        vr = b"SS" if values["pixel_representation"] == 1 else b"US"
    if vr not in (b"US", b"SS"):
        raise _Defer
    return int.from_bytes(raw, "little", signed=vr == b"SS")


def _native(values, facts, ts, implicit, pixel_at, buf):
    """Where the uncompressed pixels are (see :func:`native_layout`), or None."""
    if ts not in (IMPLICIT_LE, EXPLICIT_LE) or pixel_at is None:
        return None
    allocated = facts["bits_allocated"]
    buf.need(pixel_at + 12)
    return native_layout(facts, values.get("bits_stored") or allocated, implicit, pixel_at,
                         buf.data[pixel_at:pixel_at + 12])


def native_layout(facts, stored, implicit, start, head):
    """(value offset, numpy dtype, unused high bits) of the uncompressed pixels
    whose PixelData element starts at byte ``start`` with the 12 bytes ``head``
    (little endian, implicit or explicit VR), read as pydicom would return
    them; None when pydicom must decode them."""
    if facts["multiframe"] or facts["samples"] != 1:
        return None
    allocated = facts["bits_allocated"]
    if allocated not in (8, 16, 32) or not 1 <= stored <= allocated:
        return None
    if len(head) < 12 or head[:4] != b"\xe0\x7f\x10\x00":
        return None
    if implicit:
        length, value = int.from_bytes(head[4:8], "little"), start + 8
    elif head[4:6] in (b"OW", b"OB") and head[6:8] == b"\0\0":
        length, value = int.from_bytes(head[8:12], "little"), start + 12
    else:
        return None
    needed = facts["rows"] * facts["columns"] * allocated // 8
    if length == _UNDEFINED or length < needed:
        return None
    signed = facts["pixel_representation"] == 1
    return (value, f"<{'i' if signed else 'u'}{allocated // 8}", allocated - stored)
