"""What the pixel data promise, read before any decoder runs.

Decoders allocate from the sizes their codestream declares, not from the
DICOM header: a 1.6 KB JPEG 2000 frame whose SIZ says 65535×65535 makes
one allocate gigabytes.  This module reads, with ``struct`` and without a
decoder, the frame header of every frame of an encapsulated pixel data
element — JPEG SOFn (baseline, extended, progressive, lossless,
hierarchical DHP), JPEG-LS SOF55 and its LSE size extension, JPEG 2000 SIZ
(bare codestream or JP2 boxes), the RLE segment table — and refuses the
object when a frame's size, components or bit depth disagree with Rows,
Columns, SamplesPerPixel and BitsAllocated.  It also checks that the pixel
data can hold NumberOfFrames frames: exact bytes for native pixels, enough
fragments (and a matching Basic or Extended Offset Table) for encapsulated
ones.

Nothing here allocates from a size read in the file: every walk is bounded
by the bytes actually present.  :func:`check_dataset` (a dataset read
whole, before decoding) and :func:`check_frame_table` (a header read at the
scan, before its frames are listed) apply these checks to what pydicom
read; nothing here imports pydicom.  A refusal is an ``UnreadableInput`` with the
code ``corrupt_pixel_data`` and a one-line message of counts and kinds
(never a value from the file beyond the sizes the converter compares).
"""

from __future__ import annotations

import struct

from .errors import UnreadableInput

CODE = "corrupt_pixel_data"

# transfer syntaxes by codestream family
_JPEG = frozenset((
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    # retired JPEG processes pydicom may still meet
    "1.2.840.10008.1.2.4.52", "1.2.840.10008.1.2.4.53", "1.2.840.10008.1.2.4.54",
    "1.2.840.10008.1.2.4.55", "1.2.840.10008.1.2.4.56", "1.2.840.10008.1.2.4.58",
    "1.2.840.10008.1.2.4.59", "1.2.840.10008.1.2.4.60", "1.2.840.10008.1.2.4.61",
    "1.2.840.10008.1.2.4.62", "1.2.840.10008.1.2.4.63", "1.2.840.10008.1.2.4.64",
    "1.2.840.10008.1.2.4.65", "1.2.840.10008.1.2.4.66",
))
_JPEG_LS = frozenset(("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"))
_J2K = frozenset((
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.92",
    "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
))
_RLE = "1.2.840.10008.1.2.5"
#: syntaxes whose pixel data are not encapsulated (deflate inflates the whole dataset)
NATIVE = frozenset(("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
                    "1.2.840.10008.1.2.1.99"))

_ITEM = 0xE000FFFE  # (FFFE,E000) read as one little-endian uint32
_SEQ_END = 0xE0DDFFFE
_UNDEFINED = 0xFFFFFFFF
#: bytes of a frame's start searched for its header (APPn segments included)
_HEAD_LIMIT = 1 << 20
#: JPEG 2000 allows at most this many tiles (Isot is 16 bits)
_MAX_TILES = 65535

_u16be = struct.Struct(">H")
_u32be = struct.Struct(">I")
_item = struct.Struct("<II")


def refuse(why: str) -> UnreadableInput:
    """The error for pixel data that break their header's promise."""
    return UnreadableInput(f"the pixel data disagree with the image header ({why})", code=CODE)


def is_encapsulated(syntax: str) -> bool:
    return syntax in _JPEG or syntax in _JPEG_LS or syntax in _J2K or syntax == _RLE


def check_native_length(length: int, frames: int, rows: int, columns: int,
                        bits_allocated: int, samples: int) -> None:
    """Native pixel data of ``length`` bytes must hold ``frames`` frames (1-bit
    pixels pack 8 a byte; trailing bytes, such as the padding to an even
    length, are allowed, as pydicom allows them)."""
    needed = -(-(rows * columns * samples * frames * bits_allocated) // 8)
    if length < needed:
        raise refuse(f"{frames} frames need {needed} bytes, the pixel data hold {length}")


# --------------------------------------------------------------------------- fragments


def fragments(read_at, start: int, end: int | None = None, *, limit: int | None = None):
    """The Basic Offset Table and the fragments of encapsulated pixel data.

    ``read_at(offset, n)`` returns up to ``n`` bytes at ``offset`` of the
    encapsulated value, whose items start at ``start`` (the value's first
    byte) and which ends at ``end`` (None: at the sequence delimiter or where
    the bytes end).  Returns ``(offsets, [(item offset, value offset,
    length), …])``; offsets of the table are relative to the first
    fragment's item, as in PS3.5 A.4.  Stops after ``limit`` fragments.
    """
    pos = start
    head = read_at(pos, 8)
    if len(head) < 8 or _item.unpack(head)[0] != _ITEM:
        raise refuse("no offset table item")
    length = _item.unpack(head)[1]
    if length == _UNDEFINED or length % 4:
        raise refuse("a damaged offset table")
    table = read_at(pos + 8, length)
    if len(table) < length:
        raise refuse("a truncated offset table")
    offsets = list(struct.unpack(f"<{length // 4}I", table))
    pos += 8 + length
    frags = []
    first = pos
    while limit is None or len(frags) < limit:
        if end is not None and pos >= end:
            break
        head = read_at(pos, 8)
        if len(head) < 8:
            break  # the bytes end (pydicom reads what is there)
        tag, length = _item.unpack(head)
        if tag == _SEQ_END:
            break
        if tag != _ITEM or length == _UNDEFINED:
            raise refuse("a damaged fragment item")
        value = pos + 8
        stop = value + length
        if end is not None and stop > end:
            raise refuse("a fragment runs past the pixel data")
        if len(read_at(stop - 1, 1)) < 1 and length:
            raise refuse("a truncated fragment")
        frags.append((pos - first, value, length))
        pos = stop
    return offsets, frags


def frames_of(offsets, frags, frames: int, syntax: str, read_at, extended=None):
    """The fragments of each frame: a list of ``frames`` lists of (value offset, length).

    The frames are split by the Extended Offset Table, the Basic Offset
    Table, one fragment a frame, or (no table, more fragments than frames)
    by where a codestream starts.
    """
    if not frags:
        raise refuse("no fragments")
    if frames < 1:
        raise refuse("no frames")
    if len(frags) < frames:
        raise refuse(f"{frames} frames declared, {len(frags)} fragments present")
    table = extended if extended else offsets
    if table:
        if len(table) != frames:
            raise refuse(f"{frames} frames declared, the offset table lists {len(table)}")
        at = {rel: k for k, (rel, _, _) in enumerate(frags)}
        starts = []
        for off in table:
            k = at.get(off)
            if k is None or (starts and k <= starts[-1]):
                raise refuse("an offset table entry points between fragments")
            starts.append(k)
        if starts[0] != 0:
            raise refuse("the offset table does not start at the first fragment")
    elif frames == 1:
        starts = [0]
    elif len(frags) == frames:
        starts = list(range(frames))
    else:
        if syntax == _RLE:
            raise refuse("RLE frames spread over fragments without an offset table")
        starts = [k for k, (_, value, length) in enumerate(frags)
                  if _starts_codestream(read_at(value, min(length, 12)))]
        if len(starts) != frames or starts[0] != 0:
            raise refuse(f"{frames} frames declared, {len(starts)} codestreams found")
    bounds = starts + [len(frags)]
    return [[(v, n) for _, v, n in frags[bounds[i]:bounds[i + 1]]] for i in range(frames)]


def _starts_codestream(head: bytes) -> bool:
    return head[:2] in (b"\xff\xd8", b"\xff\x4f") or head[:12] == _JP2_SIGNATURE


def frame_head(read_at, parts, limit: int = _HEAD_LIMIT) -> bytes:
    """The first bytes (up to ``limit``) of a frame made of ``parts`` fragments."""
    out = []
    left = limit
    for value, length in parts:
        if left <= 0:
            break
        chunk = read_at(value, min(length, left))
        out.append(chunk)
        left -= len(chunk)
    return b"".join(out)


# --------------------------------------------------------------------------- frame headers


class Declared(tuple):
    """(rows, columns, samples, bits) a frame's codestream declares."""

    __slots__ = ()

    def __new__(cls, rows, columns, samples, bits):
        return tuple.__new__(cls, (rows, columns, samples, bits))


def declared(syntax: str, head: bytes, frame_length: int | None = None) -> Declared | None:
    """What the frame whose first bytes are ``head`` declares (None for RLE:
    its table is checked by :func:`check_rle`)."""
    if syntax in _JPEG or syntax in _JPEG_LS:
        return _jpeg(head, syntax in _JPEG_LS)
    if syntax in _J2K:
        return _j2k_or_jp2(head)
    return None


def check_frame(syntax: str, head: bytes, frame_length: int, rows: int, columns: int,
                bits_allocated: int, samples: int) -> None:
    """Refuse a frame whose codestream header disagrees with the image header."""
    if syntax == _RLE:
        check_rle(head, frame_length, bits_allocated, samples)
        return
    got = declared(syntax, head, frame_length)
    if got is None:
        return
    d_rows, d_cols, d_samples, d_bits = got
    if (d_rows, d_cols) != (rows, columns):
        raise refuse(f"a frame declares {d_cols}×{d_rows} pixels, the header {columns}×{rows}")
    if d_samples != samples:
        raise refuse(f"a frame declares {d_samples} components, the header {samples}")
    if not 1 <= d_bits <= max(bits_allocated, 8) or (bits_allocated < 8 and d_bits > 8):
        raise refuse(f"a frame declares {d_bits}-bit samples, the header allocates "
                     f"{bits_allocated} bits")


# JPEG (ITU T.81) and JPEG-LS (T.87)
_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE,
                  0xCF))
_DHP = 0xDE
_SOF55 = 0xF7
_LSE = 0xF8
_NO_LENGTH = frozenset((0x01, *range(0xD0, 0xD8)))  # TEM, RSTn
_MAX_SEGMENTS = 4096


def _jpeg(head: bytes, ls: bool) -> Declared:
    if head[:2] != b"\xff\xd8":
        raise refuse("a frame does not start with a JPEG start-of-image marker")
    pos, n = 2, len(head)
    sof = None
    lse_size = None
    for _ in range(_MAX_SEGMENTS):
        # markers may be preceded by fill bytes (0xFF)
        if pos + 2 > n or head[pos] != 0xFF:
            break
        while pos + 1 < n and head[pos + 1] == 0xFF:
            pos += 1
        if pos + 2 > n:
            break
        marker = head[pos + 1]
        if marker in _NO_LENGTH:
            pos += 2
            continue
        if marker in (0xD8, 0xD9, 0xDA, 0x00):  # SOI again, EOI or SOS before a frame header
            break
        if pos + 4 > n:
            break
        length = _u16be.unpack_from(head, pos + 2)[0]
        if length < 2 or pos + 2 + length > n:
            break
        body = head[pos + 4:pos + 2 + length]
        pos += 2 + length
        if marker == _LSE and ls and body[:1] == b"\x04":
            lse_size = _lse_size(body)
        elif marker in _SOF or marker == _DHP or marker == _SOF55:
            if sof is not None:
                break  # the first frame header (DHP: the whole image) is the one decoded
            if marker != _DHP and (marker == _SOF55) != ls:
                raise refuse("a frame holds another JPEG process than its transfer syntax")
            sof = body
            if not ls:
                break  # JPEG-LS: an LSE segment may still follow with the real size
    if sof is None:
        raise refuse("a frame has no readable JPEG frame header")
    if len(sof) < 6:
        raise refuse("a damaged JPEG frame header")
    bits = sof[0]
    rows, cols = _u16be.unpack_from(sof, 1)[0], _u16be.unpack_from(sof, 3)[0]
    comps = sof[5]
    if ls and (rows == 0 or cols == 0) and lse_size is not None:
        rows = rows or lse_size[0]
        cols = cols or lse_size[1]
    if rows == 0 or cols == 0:
        raise refuse("a frame does not declare its size")
    if len(sof) < 6 + 3 * comps:
        raise refuse("a damaged JPEG frame header")
    return Declared(rows, cols, comps, bits)


def _lse_size(body):
    """(rows, columns) of a JPEG-LS oversize-dimension LSE segment (ID 4)."""
    if len(body) < 2:
        return None
    width = body[1]
    if not 2 <= width <= 4 or len(body) < 2 + 2 * width:
        return None
    rows = int.from_bytes(body[2:2 + width], "big")
    cols = int.from_bytes(body[2 + width:2 + 2 * width], "big")
    return rows, cols


# JPEG 2000 (ITU T.800): a bare codestream (SOC, SIZ) or the JP2 file format
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_MAX_BOXES = 256


def _j2k_or_jp2(head: bytes) -> Declared:
    if head[:12] == _JP2_SIGNATURE:
        return _jp2(head)
    return _j2k(head)


def _j2k(head: bytes) -> Declared:
    if head[:4] != b"\xff\x4f\xff\x51":
        raise refuse("a frame does not start with a JPEG 2000 codestream header")
    if len(head) < 42:
        raise refuse("a truncated JPEG 2000 codestream header")
    lsiz = _u16be.unpack_from(head, 4)[0]
    (xsiz, ysiz, xosiz, yosiz, xtsiz, ytsiz, xtosiz, ytosiz) = struct.unpack_from(">8I", head, 8)
    csiz = _u16be.unpack_from(head, 40)[0]
    if csiz == 0 or lsiz != 38 + 3 * csiz or len(head) < 4 + lsiz:
        raise refuse("a damaged JPEG 2000 codestream header")
    if xsiz <= xosiz or ysiz <= yosiz or xtsiz == 0 or ytsiz == 0 \
            or xtosiz > xosiz or ytosiz > yosiz \
            or xtosiz + xtsiz <= xosiz or ytosiz + ytsiz <= yosiz:
        raise refuse("a damaged JPEG 2000 image or tile size")
    tiles = -(-(xsiz - xtosiz) // xtsiz) * -(-(ysiz - ytosiz) // ytsiz)
    if tiles > _MAX_TILES:
        raise refuse(f"a frame declares {tiles} tiles")
    bits = 0
    for k in range(csiz):
        ssiz, xr, yr = head[42 + 3 * k], head[43 + 3 * k], head[44 + 3 * k]
        if xr == 0 or yr == 0:
            raise refuse("a damaged JPEG 2000 component subsampling")
        bits = max(bits, (ssiz & 0x7F) + 1)
    return Declared(ysiz - yosiz, xsiz - xosiz, csiz, bits)


def _jp2(head: bytes) -> Declared:
    pos, n = 0, len(head)
    ihdr = None
    for _ in range(_MAX_BOXES):
        if pos + 8 > n:
            break
        length, kind = _u32be.unpack_from(head, pos)[0], head[pos + 4:pos + 8]
        body = pos + 8
        if length == 1:
            if pos + 16 > n:
                break
            length = int.from_bytes(head[pos + 8:pos + 16], "big")
            body = pos + 16
        elif length == 0:
            length = n - pos
        if length < body - pos:
            break
        if kind == b"jp2h":  # a superbox: its boxes follow its header
            pos = body
            continue
        if kind == b"ihdr" and body + 14 <= n:
            height, width = _u32be.unpack_from(head, body)[0], _u32be.unpack_from(head, body + 4)[0]
            ihdr = (height, width, _u16be.unpack_from(head, body + 8)[0], (head[body + 10] & 0x7F) + 1)
        if kind == b"jp2c":
            got = _j2k(head[body:pos + length] if pos + length <= n else head[body:])
            if ihdr is not None and ihdr[:3] != tuple(got[:3]):
                raise refuse("a JPEG 2000 image header disagrees with its codestream")
            return got
        pos += length
    raise refuse("a JP2 frame holds no readable codestream")


# RLE (PS3.5 G): a 64-byte header of segment count and offsets
def check_rle(head: bytes, frame_length: int, bits_allocated: int, samples: int) -> None:
    if len(head) < 64:
        raise refuse("a truncated RLE header")
    values = struct.unpack_from("<16I", head)
    count, offsets = values[0], values[1:]
    if bits_allocated % 8 or not 1 <= bits_allocated // 8 * samples <= 15:
        raise refuse(f"RLE cannot hold {samples}×{bits_allocated}-bit samples")
    expected = samples * (bits_allocated // 8)
    if count != expected:
        raise refuse(f"an RLE frame holds {count} segments, the header needs {expected}")
    used = offsets[:count]
    if used[0] != 64:
        raise refuse("an RLE segment table does not start after its header")
    for a, b in zip(used, used[1:] + (frame_length,), strict=True):
        if not a < b <= frame_length:
            raise refuse("an RLE segment lies outside its frame")


# --------------------------------------------------------------------------- whole objects


def check_encapsulated(value, syntax: str, *, rows: int, columns: int, bits_allocated: int,
                       samples: int, frames: int, extended=None) -> None:
    """Check every frame header of the encapsulated ``value`` (bytes) against
    the image header, before a decoder sees it."""
    def read_at(offset, n):
        return value[offset:offset + n] if offset >= 0 else b""

    offsets, frags = fragments(read_at, 0, len(value))
    for parts in frames_of(offsets, frags, frames, syntax, read_at, extended):
        head = frame_head(read_at, parts)
        check_frame(syntax, head, sum(n for _, n in parts), rows, columns, bits_allocated,
                    samples)


def check_frame_count(read_at, start: int, syntax: str, length: int, frames: int, *,
                      rows: int, columns: int, bits_allocated: int, samples: int) -> None:
    """Refuse a ``frames`` count the pixel data cannot hold, reading only item
    headers: the pixel data value starts at ``start`` and is ``length`` bytes
    long (0xFFFFFFFF: undefined, encapsulated)."""
    if frames < 1:
        raise refuse("no frames")
    if syntax in NATIVE and syntax != "1.2.840.10008.1.2.1.99":
        if length == _UNDEFINED:
            raise refuse("native pixel data of undefined length")
        check_native_length(length, frames, rows, columns, bits_allocated, samples)
        return
    if not is_encapsulated(syntax):
        return  # deflated or unknown: the decoder's own checks apply
    end = None if length == _UNDEFINED else start + length
    offsets, frags = fragments(read_at, start, end, limit=frames)
    if offsets and len(offsets) != frames:
        raise refuse(f"{frames} frames declared, the offset table lists {len(offsets)}")
    if len(frags) < frames:
        raise refuse(f"{frames} frames declared, {len(frags)} fragments present")


def pixel_element(head: bytes, implicit: bool, little: bool):
    """``(value offset from the element's start, value length)`` of the Pixel
    Data element whose first 12 bytes are ``head``, or None when they are not one."""
    order = "little" if little else "big"
    if len(head) < 8:
        return None
    group, elem = int.from_bytes(head[0:2], order), int.from_bytes(head[2:4], order)
    if (group, elem) != (0x7FE0, 0x0010):
        return None
    if implicit:
        return 8, int.from_bytes(head[4:8], order)
    if len(head) < 12 or head[4:6] not in (b"OB", b"OW", b"UN") or head[6:8] != b"\0\0":
        return None
    return 12, int.from_bytes(head[8:12], order)


# --------------------------------------------------------------------------- datasets


def check_dataset(ds, ts: str) -> None:
    """Refuse the pixel data of ``ds`` (a pydicom dataset read whole, of
    transfer syntax ``ts``) when they cannot hold what its header promises:
    every frame's codestream header, or the native length, before any
    decoder allocates."""
    if "PixelData" not in ds:
        return  # float pixel data: numpy only
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        bits = int(ds.get("BitsAllocated", 16) or 16)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        raise refuse("image size elements that are not numbers") from None
    if rows < 1 or columns < 1 or samples < 1 or bits not in (1, 8, 16, 32, 64):
        raise refuse(f"{columns}×{rows} pixels of {samples}×{bits} bits")
    value = ds.PixelData
    if is_encapsulated(ts):
        extended = None
        if "ExtendedOffsetTable" in ds and ds.ExtendedOffsetTable:
            table = bytes(ds.ExtendedOffsetTable)
            extended = list(struct.unpack(f"<{len(table) // 8}Q", table[:len(table) // 8 * 8]))
        check_encapsulated(value, ts, rows=rows, columns=columns, bits_allocated=bits,
                           samples=samples, frames=frames, extended=extended)
    elif ts in NATIVE:  # deflated pixels are inflated by now
        check_native_length(len(value), frames, rows, columns, bits, samples)


def check_frame_table(ds, item, where):
    """Refuse (``UnreadableInput``) a multi-frame object whose NumberOfFrames
    its pixel data or its per-frame functional groups cannot hold, before
    anything loops over its frames: only item headers are read.

    ``ds`` is the header pydicom read (no pixels) from ``item`` (a
    ``sources.Item``); ``where`` is ``(offset, the next 12 bytes)`` where
    that header ended."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if frames == 1 and per_frame is None:
        return
    if per_frame is not None and len(per_frame) != frames:
        raise refuse(f"{frames} frames declared, {len(per_frame)} per-frame "
                     "functional groups present")
    implicit, little = ds.original_encoding
    syntax = str(ds.file_meta.get("TransferSyntaxUID", "") or "") or (
        "1.2.840.10008.1.2" if implicit else "1.2.840.10008.1.2.1" if little
        else "1.2.840.10008.1.2.2")
    start, head = where
    element = pixel_element(head, implicit, little)
    if element is None:
        raise refuse("no pixel data element after the header")
    offset, length = element
    rows, columns = int(ds.Rows), int(ds.Columns)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    with _reader(item) as read_at:
        check_frame_count(read_at, start + offset, syntax, length, frames, rows=rows,
                          columns=columns, bits_allocated=bits, samples=samples)


class _reader:
    """``read_at(offset, n)`` over an item's bytes or its file."""

    def __init__(self, item):
        self.item, self.fh = item, None

    def __enter__(self):
        if self.item.data is not None:
            data = self.item.data
            return lambda offset, n: data[offset:offset + n] if offset >= 0 else b""
        self.fh = open(self.item.path, "rb")

        def read_at(offset, n):
            if offset < 0:
                return b""
            self.fh.seek(offset)
            return self.fh.read(n)
        return read_at

    def __exit__(self, *exc):
        if self.fh is not None:
            self.fh.close()
        return False
