"""A slice view as the workspace sends it: a PNG (grey, or with the surface
region drawn over it) or the values themselves.

The overlay is exact and easy to test: a pixel outside the region is grey
(red = green = blue), a pixel inside it is tinted red (red = 128 + grey/2,
green = blue = grey/2, so red ≠ green on every one of them).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

#: zlib level of the PNGs: fast (a slice must go out in a few milliseconds)
PNG_LEVEL = 1
#: a thumbnail's longest side, in pixels
THUMBNAIL_PX = 128


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png(pixels: np.ndarray) -> bytes:
    """A PNG of ``pixels``: (height, width) grey or (height, width, 3) RGB, uint8."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    height, width = pixels.shape[:2]
    colour = 2 if pixels.ndim == 3 else 0
    rows = pixels.reshape(height, -1)
    raw = np.zeros((height, rows.shape[1] + 1), dtype=np.uint8)  # filter byte 0 per row
    raw[:, 1:] = rows
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(raw.tobytes(), PNG_LEVEL)) + _chunk(b"IEND", b""))


def tinted(grey: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RGB of ``grey`` with the pixels of ``mask`` tinted red."""
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    half = grey[mask] // 2
    rgb[mask] = np.stack([half + 128, half, half], axis=1)
    return rgb


def values(image: np.ndarray) -> bytes:
    """The image's values as little-endian int16, rounded and clipped, row-major."""
    out = np.rint(image) if image.dtype.kind == "f" else image
    return np.clip(out, -32768, 32767).astype("<i2").tobytes()


def thumbnail_step(height: int, width: int) -> int:
    """The stride that brings the longest side to at most ``THUMBNAIL_PX``."""
    return max(1, -(-max(height, width) // THUMBNAIL_PX))
