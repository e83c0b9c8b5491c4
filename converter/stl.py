"""STL writing: binary (records made by a compiled kernel, no per-triangle Python) and ASCII.

Binary records are made in blocks of :data:`BLOCK` triangles by the Cython
extension :mod:`converter._mesh`, and each block is written with one call, so
the whole file never sits in memory twice.

The 80-byte binary header names the coordinate frame and nothing else
(``ephemesh SPACE=LPS UNITS=mm``), as does an ASCII file's first line
(``solid ephemesh_LPS``), plus ``GEOMETRY=ASSUMED`` for a series placed on an
assumed grid; :func:`header_text` makes both, for the files and the report.  They never hold patient data, UIDs or file names because nothing
but the frame name is ever put into them.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np

from . import _mesh
from .mesh import _index_array, check_mesh
from .options import FRAMES  # the output frames; files name them in capitals

STL_DTYPE = np.dtype(
    [("normal", "<f4", (3,)), ("vertices", "<f4", (3, 3)), ("attr", "<u2")]
)
assert STL_DTYPE.itemsize == 50
# the record kernel writes floats in the machine's byte order, and STL's is little-endian
assert sys.byteorder == "little", "ephemesh writes binary STL on little-endian machines only"
#: triangles per written block (12.5 MB of records)
BLOCK = 1 << 18


def _frame_name(frame) -> str:
    """``frame`` (one of ``FRAMES``, any case) as files name it: LPS, RAS or PRINT."""
    if not isinstance(frame, str) or frame.lower() not in FRAMES:
        raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}")
    return frame.upper()


def header_text(frame: str, *, ascii: bool = False, assumed: bool = False) -> str:
    """What a file for ``frame`` starts with: the binary header's text
    (``ephemesh SPACE=LPS UNITS=mm``) or, with ``ascii``, the first line
    (``solid ephemesh_LPS``); with ``assumed`` (a series without positions,
    placed on an assumed grid) ``GEOMETRY=ASSUMED`` (``_ASSUMED``) follows."""
    name = _frame_name(frame)
    if ascii:
        return f"solid ephemesh_{name}" + ("_ASSUMED" if assumed else "")
    return f"ephemesh SPACE={name} UNITS=mm" + (" GEOMETRY=ASSUMED" if assumed else "")


def header_for(frame: str, *, assumed: bool = False) -> bytes:
    """The fixed 80-byte header for ``frame``."""
    return header_text(frame, assumed=assumed).encode("ascii").ljust(80, b" ")


def face_normals(tri: np.ndarray) -> np.ndarray:
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(n, axis=1, keepdims=True)
    np.divide(n, length, out=n, where=length > 0)
    return n


def _fill_records(v32, faces, rec):
    """Fill ``rec`` (a contiguous array of :data:`STL_DTYPE`, one a face) with
    each triangle's unit normal, corners and a zero attribute, from float32
    vertices (the extension checks the shapes and indices)."""
    if rec.dtype.itemsize != 50 or not rec.flags.c_contiguous:
        raise ValueError("rec must be a contiguous array of 50-byte STL records")
    _mesh.stl_records(v32, _index_array(faces), rec.view(np.uint8).reshape(len(rec), 50))


def _records(verts, faces, block):
    """The triangles as structured arrays of at most ``block`` records each;
    the yielded array is reused for the next block."""
    v32 = np.ascontiguousarray(verts, dtype=np.float32)
    m = len(faces)
    if not m:
        return
    size = min(block, m)
    rec = np.empty(size, STL_DTYPE)
    for start in range(0, m, size):
        k = min(size, m - start)
        _fill_records(v32, faces[start:start + k], rec[:k])
        yield rec[:k]


def _write(out, write_fn):
    """Write to a path (atomically, via a temporary file) or a binary file."""
    if isinstance(out, (str, os.PathLike)):
        path = Path(out)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                write_fn(fh)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return
    write_fn(out)


def write_binary(verts, faces, out, frame: str = "lps", *, assumed: bool = False) -> int:
    """Write a binary STL to ``out`` (path or binary file); return bytes written."""
    header = header_for(frame, assumed=assumed)
    verts, faces = check_mesh(verts, faces)
    faces = _index_array(faces)
    count = len(faces)

    def write(fh):
        fh.write(header)
        fh.write(np.uint32(count).tobytes())
        raw = isinstance(fh, io.BufferedWriter | io.FileIO)
        for rec in _records(verts, faces, BLOCK):
            if raw:
                rec.tofile(fh)
            else:
                fh.write(memoryview(rec).cast("B"))

    _write(out, write)
    return 84 + count * STL_DTYPE.itemsize


def write_ascii(verts, faces, out, frame: str = "lps", *, assumed: bool = False) -> int:
    """Write an ASCII STL (``solid ephemesh_LPS``); return bytes written."""
    first = header_text(frame, ascii=True, assumed=assumed)
    tri = np.asarray(verts, dtype=np.float64)[np.asarray(faces)]
    normals = face_normals(tri)
    rows = np.concatenate([normals, tri.reshape(-1, 9)], axis=1)
    fmt = (
        "facet normal %.6e %.6e %.6e\n outer loop\n"
        "  vertex %.6e %.6e %.6e\n  vertex %.6e %.6e %.6e\n  vertex %.6e %.6e %.6e\n"
        " endloop\nendfacet"
    )
    size = 0

    def write(fh):
        nonlocal size
        buf = io.StringIO()
        buf.write(f"{first}\n")
        if len(rows):
            np.savetxt(buf, rows, fmt=fmt, newline="\n")
        buf.write(f"end{first}\n")
        data = buf.getvalue().encode("ascii")
        fh.write(data)
        size = len(data)

    _write(out, write)
    return size
