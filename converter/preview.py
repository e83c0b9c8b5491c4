"""A reduced copy of a mesh for a 3D view: small enough to send before the
model itself (at most ``MAX_RATIO`` of the binary STL's bytes).

Format ``EPHMESH1`` (little endian)::

    8 bytes   b"EPHMESH1"
    uint32    vertices, faces
    float32×3 origin (mm)     float32×3 scale (mm per step)
    uint32    length of the vertex block, then the block
    uint32    length of the face block, then the block

The vertex block is zlib over the positions quantized to uint16 per axis
(position = origin + q × scale), laid out axis by axis, each axis
delta-coded (mod 2¹⁶) and split into its low then its high bytes.  The face
block is zlib over the flattened vertex indices, delta-coded (int32),
zig-zag mapped to uint32 and split into four byte planes, lowest first.  A
mesh that still comes out too large is decimated (quadric, the converter's
own) until it fits.  The view is within half a quantization step (1/65535
of the model's size) of the mesh it was made from.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

MAGIC = b"EPHMESH1"
#: zlib's level: the fastest (level 6 made the blocks 8 % smaller in 2.5× the
#: time, and the preview is made while the user waits for "done")
LEVEL = 1
#: the preview's bytes at most this share of the binary STL's
MAX_RATIO = 0.2
LEVELS = 65535
#: a zlib stream's first two bytes: deflate, a 32 KiB window, the fastest level
ZLIB_HEAD = b"\x78\x01"


def _planes(values: np.ndarray, width: int) -> np.ndarray:
    """``values`` (contiguous, unsigned, ``width`` bytes each) as byte planes,
    lowest first (one plane copied at a time: no transposed temporary)."""
    raw = values.view(np.uint8).reshape(-1, width)
    out = np.empty((width, len(raw)), np.uint8)
    for k in range(width):
        out[k] = raw[:, k]
    return out


def _deflate(data, strategy: int, last: bool) -> bytes:
    """``data`` as raw deflate at ``LEVEL``: finished when ``last``, else ended
    by a sync flush (on a byte boundary), so that pieces deflated apart can be
    joined into one stream, as pigz joins its blocks."""
    packer = zlib.compressobj(LEVEL, zlib.DEFLATED, -15, 8, strategy)
    return packer.compress(data) + packer.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def _zlib(inputs, pieces) -> bytes:
    """One zlib stream (RFC 1950) of the ``inputs`` joined, from their raw
    deflate ``pieces`` (the last one finished): any inflater reads it."""
    check = 1
    for data in inputs:
        check = zlib.adler32(data, check)
    return ZLIB_HEAD + b"".join(pieces) + struct.pack(">I", check)


def _deltas(values: np.ndarray) -> np.ndarray:
    """Each value minus the one before it (the first as it is), same dtype."""
    out = np.empty_like(values)
    if values.shape[-1]:
        out[..., 0] = values[..., 0]
        np.subtract(values[..., 1:], values[..., :-1], out=out[..., 1:])
    return out


def encode(verts: np.ndarray, faces: np.ndarray) -> bytes:
    """The ``EPHMESH1`` bytes of a mesh (no size limit: see ``preview``).

    The arithmetic is done in place in the narrowest exact type (uint16
    positions, int32 indices, whose zig-zag mod 2³² is the format's): a
    preview of millions of triangles is made while the model is written, and
    every fresh page it touches costs time."""
    v = np.array(verts, dtype=np.float64).reshape(-1, 3)  # a copy: worked on in place
    faces = np.asarray(faces).reshape(-1, 3)
    lo = v.min(axis=0) if len(v) else np.zeros(3)
    hi = v.max(axis=0) if len(v) else np.zeros(3)
    scale = np.where(hi > lo, (hi - lo) / LEVELS, 1.0)
    v -= lo
    v /= scale
    q = np.rint(v, out=v).astype(np.uint16)
    del v
    deltas = _deltas(np.ascontiguousarray(q.T))  # axis by axis, mod 2**16
    vplanes = _planes(deltas.ravel().astype("<u2", copy=False), 2)
    d = _deltas(faces.ravel().astype(np.int32))  # mod 2**32
    zigzag = np.left_shift(d, 1)
    np.bitwise_xor(zigzag, np.right_shift(d, 31, out=d), out=zigzag)
    del d
    fplanes = _planes(zigzag.view(np.uint32).astype("<u4", copy=False), 4)
    # three pieces deflated on two threads (zlib lets go of the GIL): the
    # faces' low plane (the long one), their higher planes, the positions
    # (Huffman only: 2.6 % larger in half the time)
    from concurrent.futures import ThreadPoolExecutor

    pieces = [(fplanes[0], zlib.Z_DEFAULT_STRATEGY, False),
              (fplanes[1:], zlib.Z_DEFAULT_STRATEGY, True),
              (vplanes, zlib.Z_HUFFMAN_ONLY, True)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        low, high, positions = pool.map(lambda piece: _deflate(*piece), pieces)
    fblock = _zlib([fplanes[0], fplanes[1:]], [low, high])
    vblock = _zlib([vplanes], [positions])
    head = MAGIC + struct.pack("<II3f3f", len(q), len(faces), *lo.astype(np.float32),
                               *scale.astype(np.float32))
    return (head + struct.pack("<I", len(vblock)) + vblock
            + struct.pack("<I", len(fblock)) + fblock)


def decode(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """``(verts float32, faces int64)`` of ``EPHMESH1`` bytes (as the page decodes them)."""
    if data[:8] != MAGIC:
        raise ValueError("not an EPHMESH1 preview")
    nv, nf, *rest = struct.unpack_from("<II3f3f", data, 8)
    origin, scale = np.array(rest[:3], np.float32), np.array(rest[3:], np.float32)
    pos = 8 + struct.calcsize("<II3f3f")
    (vlen,) = struct.unpack_from("<I", data, pos)
    vraw = zlib.decompress(data[pos + 4:pos + 4 + vlen])
    pos += 4 + vlen
    (flen,) = struct.unpack_from("<I", data, pos)
    fraw = zlib.decompress(data[pos + 4:pos + 4 + flen])
    deltas = np.frombuffer(vraw, np.uint8).reshape(2, -1).T.copy().view("<u2").reshape(3, nv)
    q = np.cumsum(deltas, axis=1, dtype=np.uint64) % (LEVELS + 1)
    verts = origin + q.T.astype(np.float32) * scale
    zig = np.frombuffer(fraw, np.uint8).reshape(4, -1).T.copy().view("<u4").ravel().astype(np.int64)
    d = (zig >> 1) ^ -(zig & 1)
    faces = np.cumsum(d).reshape(nf, 3)
    return verts.astype(np.float32), faces


def preview(verts, faces, stl_bytes: int) -> bytes:
    """The reduced mesh: encoded, and decimated until it is at most
    ``MAX_RATIO`` of ``stl_bytes``."""
    from .mesh import decimate

    data = encode(verts, faces)
    budget = int(MAX_RATIO * stl_bytes)
    while len(data) > budget and len(faces) > 8:
        fraction = max(0.05, min(0.9, 0.9 * budget / len(data)))
        before = len(faces)
        verts, faces = decimate(verts, faces, fraction=fraction)
        if len(faces) >= before:  # no collapse keeps it closed: as small as it gets
            break
        data = encode(verts, faces)
    return data
