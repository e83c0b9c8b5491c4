"""Hostile DICOM files for tests: decoder bombs, broken frame tables, crashing codestreams.

Each maker writes a small series with real geometry (two or more slices,
so the converter gets as far as decoding) whose encapsulated frames are
real codestreams — JPEG baseline (Pillow), JPEG 2000 (openjpeg), JPEG-LS
(frames of pydicom's test file), RLE (pydicom's encoder) — and patches
what a hostile file would patch: the size a codestream declares (SOFn,
SOF55, SIZ), NumberOfFrames, the offset table.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from tests import dicomgen as G

SIZE = 64  # rows and columns of every hostile image


def phantom(n=4, size=SIZE):
    """A small sphere, (n, size, size) HU."""
    geo = G.make_geometry("axial", size=(n, size, size))
    return G.render(G.sphere(radius=size / 3), geo), geo


def jpeg_baseline_frames(n=4, size=SIZE):
    """8-bit JPEG baseline frames (Pillow) of the phantom, as stored values 0..255."""
    from PIL import Image

    vol, _ = phantom(n, size)
    out = []
    for plane in vol:
        img = Image.fromarray(((plane + 1000) // 8).clip(0, 255).astype(np.uint8))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=95)
        out.append(buf.getvalue())
    return out


def j2k_frames(n=4, size=SIZE):
    """16-bit JPEG 2000 lossless codestreams (openjpeg) of the phantom (stored = HU + 1024)."""
    import openjpeg

    vol, _ = phantom(n, size)
    return [bytes(openjpeg.encode((plane + 1024).astype(np.uint16), bits_stored=16,
                                  photometric_interpretation=2))
            for plane in vol]


def jpeg_ls_frames(n=4):
    """16-bit JPEG-LS lossless frames (64×64) from pydicom's emri_small_jpeg_ls_lossless."""
    ds = pydicom.dcmread(get_testdata_file("emri_small_jpeg_ls_lossless.dcm"))
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    return frames[:n]


def rle_frames(n=4, size=SIZE):
    """16-bit RLE frames (pydicom's encoder) of the phantom."""
    from pydicom.pixels.encoders import RLELosslessEncoder

    vol, _ = phantom(n, size)
    return [RLELosslessEncoder.encode((plane + 1024).astype(np.uint16), rows=size,
                                      columns=size, samples_per_pixel=1, bits_allocated=16,
                                      bits_stored=16, pixel_representation=0,
                                      photometric_interpretation="MONOCHROME2",
                                      number_of_frames=1)
            for plane in vol]


FRAMES = {
    "jpeg": (JPEGBaseline8Bit, 8, jpeg_baseline_frames),
    "jpeg-ls": (JPEGLSLossless, 16, jpeg_ls_frames),
    "jpeg2000": (JPEG2000Lossless, 16, j2k_frames),
    "rle": (RLELossless, 16, rle_frames),
}


def write_encapsulated(directory, frames, syntax, *, bits=16, rows=SIZE, columns=SIZE,
                       samples=1, offset_table=False, **header) -> list[Path]:
    """One file a frame, with the phantom's geometry and ``frames`` as its pixel data."""
    directory = Path(directory)
    n = len(frames)
    vol, geo = phantom(n, SIZE)
    paths = G.write_series(directory, vol, geometry=geo, rescale=(1.0, -1024.0))
    out = []
    for path, frame in zip(sorted(paths), frames, strict=True):
        ds = pydicom.dcmread(path)
        ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, samples
        ds.BitsAllocated = ds.BitsStored = bits
        ds.HighBit = bits - 1
        ds.PixelRepresentation = 0
        if samples == 3:
            ds.PhotometricInterpretation, ds.PlanarConfiguration = "RGB", 0
        if bits == 8:
            ds.RescaleSlope, ds.RescaleIntercept = "8", "-1000"
        for key, value in header.items():
            setattr(ds, key, value)
        ds.PixelData = encapsulate([frame], has_bot=offset_table)
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out


def write_kind(directory, kind, n=4, **kw) -> list[Path]:
    """A valid encapsulated series of ``kind`` (jpeg, jpeg-ls, jpeg2000, rle)."""
    syntax, bits, make = FRAMES[kind]
    return write_encapsulated(directory, make(n), syntax, bits=bits, **kw)


# --------------------------------------------------------------------------- patching


_SOF_MARKERS = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD,
                          0xCE, 0xCF, 0xF7))


def declare_size(frame: bytes, rows: int, columns: int) -> bytes:
    """``frame`` with its codestream header (SOFn/SOF55 or SIZ) declaring rows × columns."""
    b = bytearray(frame)
    if b[:4] == b"\xff\x4f\xff\x51":  # J2K SIZ: Xsiz at 8, Ysiz at 12 (offsets 0 here)
        xo, yo = struct.unpack_from(">II", b, 16)
        struct.pack_into(">II", b, 8, columns + xo, rows + yo)
        struct.pack_into(">II", b, 24, columns + xo, rows + yo)  # one tile, as encoded
        return bytes(b)
    pos = 2
    while pos + 4 <= len(b):
        if b[pos] != 0xFF:
            raise ValueError("not a JPEG marker")
        marker = b[pos + 1]
        length = struct.unpack_from(">H", b, pos + 2)[0]
        if marker in _SOF_MARKERS:
            struct.pack_into(">HH", b, pos + 5, rows, columns)
            return bytes(b)
        pos += 2 + length
    raise ValueError("no frame header found")


def bomb(directory, kind, factor: int) -> list[Path]:
    """A series whose header says 64×64 and whose codestreams declare ``factor``
    times that on each side (JPEG fields stop at 65535)."""
    syntax, bits, make = FRAMES[kind]
    side = min(SIZE * factor, 65535)
    frames = [declare_size(f, side, side) for f in make(2)]
    return write_encapsulated(directory, frames, syntax, bits=bits)


def many_frames(path, frames=10**6, *, encapsulated=False, functional_groups=True) -> Path:
    """A small multi-frame object declaring ``frames`` frames (holding two)."""
    vol, geo = phantom(2, 16)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if encapsulated:
        G.write_enhanced(path, vol, geo, transfer_syntax=RLELossless)
    else:
        G.write_enhanced(path, vol, geo)
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = frames
    if not functional_groups:
        # classic multi-frame: geometry in the shared groups only
        shared = ds.SharedFunctionalGroupsSequence[0]
        shared.PlanePositionSequence = ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence
        del ds.PerFrameFunctionalGroupsSequence
    ds.save_as(path, enforce_file_format=True)
    return path


def gdcm_abort(directory) -> list[Path]:
    """JPEG-LS frames (64×64) in files whose header says 128×128: GDCM aborts
    the process (an uncaught C++ exception in gdcmBitmap.cxx) on these."""
    return write_encapsulated(directory, jpeg_ls_frames(2), JPEGLSLossless, bits=16,
                              rows=128, columns=128)


def rle_panic(directory) -> list[Path]:
    """RLE frames of 64×64 in files whose header says 32×32: pylibjpeg-rle
    panics (``PanicException``, a ``BaseException``: index out of bounds)."""
    return write_encapsulated(directory, rle_frames(2), RLELossless, bits=16, rows=32,
                              columns=32)
