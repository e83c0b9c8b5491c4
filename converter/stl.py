"""STL writing: binary (structured-array writes, no per-triangle Python) and ASCII.

Binary records are made in blocks of :data:`BLOCK` triangles (a compiled
kernel writes the 50-byte records when it is built, numpy otherwise)
and each block is written with one call, so the whole file never sits in
memory twice.

The 80-byte binary header names the coordinate frame and nothing else, e.g.
``ephemesh SPACE=LPS UNITS=mm``; it never holds patient data, UIDs or file
names because nothing but the frame name is ever put into it.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np

from .mesh import check_mesh

FRAMES = ("LPS", "RAS")

STL_DTYPE = np.dtype(
    [("normal", "<f4", (3,)), ("vertices", "<f4", (3, 3)), ("attr", "<u2")]
)
assert STL_DTYPE.itemsize == 50
#: triangles per written block (12.5 MB of records)
BLOCK = 1 << 18


def header_for(frame: str) -> bytes:
    """The fixed 80-byte header for ``frame`` ("LPS" or "RAS")."""
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}")
    text = f"ephemesh SPACE={frame} UNITS=mm".encode("ascii")
    return text.ljust(80, b" ")


def face_normals(tri: np.ndarray) -> np.ndarray:
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(n, axis=1, keepdims=True)
    np.divide(n, length, out=n, where=length > 0)
    return n


def _corners_and_normals_numpy(v32, faces, block):
    """Fill ``block`` (k, 12) float32 with each triangle's unit normal and corners."""
    k = len(faces)
    tri = block[:, 3:].reshape(k, 3, 3)
    np.take(v32, faces, axis=0, out=tri)
    block[:, :3] = face_normals(tri)


def _records_numpy(v32, faces, rec):
    """Fill ``rec`` (k STL records) with normals, corners and a zero attribute."""
    corners = np.empty((len(faces), 12), np.dtype("<f4"))
    _corners_and_normals_numpy(v32, faces, corners)
    rec["normal"] = corners[:, :3]
    rec["vertices"] = corners[:, 3:].reshape(-1, 3, 3)
    rec["attr"] = 0


def _record_filler():
    from . import _compiled  # noqa: PLC0415

    if not _compiled.usable() or sys.byteorder != "little":
        return _records_numpy
    from .mesh_kernel import stl_records  # noqa: PLC0415

    return stl_records


def iter_binary_records(verts, faces, block=BLOCK):
    """The triangles as structured arrays of at most ``block`` records each.

    The yielded array is reused for the next block: write it before asking
    for the next one.
    """
    return _records(*_check(verts, faces), block)


def _records(verts, faces, block):
    v32 = np.ascontiguousarray(verts, dtype=np.float32)
    fill = _record_filler()
    m = len(faces)
    if not m:
        return
    size = min(block, m)
    rec = np.empty(size, STL_DTYPE)
    for start in range(0, m, size):
        k = min(size, m - start)
        fill(v32, faces[start:start + k], rec[:k])
        yield rec[:k]


def _check(verts, faces):
    verts, faces = check_mesh(verts, faces)
    faces = np.ascontiguousarray(faces)
    return verts, faces if faces.dtype in (np.int32, np.int64) else faces.astype(np.int64)


def binary_records(verts, faces) -> np.ndarray:
    """The triangles as one structured array ready to write."""
    parts = [rec.copy() for rec in iter_binary_records(verts, faces)]
    return np.concatenate(parts) if parts else np.zeros(0, STL_DTYPE)


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


def write_binary(verts, faces, out, frame: str = "LPS") -> int:
    """Write a binary STL to ``out`` (path or binary file); return bytes written."""
    header = header_for(frame)
    verts, faces = _check(verts, faces)
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


def write_ascii(verts, faces, out, frame: str = "LPS") -> int:
    """Write an ASCII STL (``solid ephemesh_LPS``); return bytes written."""
    header_for(frame)  # validates the frame
    tri = np.asarray(verts, dtype=np.float64)[np.asarray(faces)]
    normals = face_normals(tri)
    rows = np.concatenate([normals, tri.reshape(-1, 9)], axis=1)
    fmt = (
        "facet normal %.6e %.6e %.6e\n outer loop\n"
        "  vertex %.6e %.6e %.6e\n  vertex %.6e %.6e %.6e\n  vertex %.6e %.6e %.6e\n"
        " endloop\nendfacet"
    )
    name = f"ephemesh_{frame}"
    size = 0

    def write(fh):
        nonlocal size
        buf = io.StringIO()
        buf.write(f"solid {name}\n")
        if len(rows):
            np.savetxt(buf, rows, fmt=fmt, newline="\n")
        buf.write(f"endsolid {name}\n")
        data = buf.getvalue().encode("ascii")
        fh.write(data)
        size = len(data)

    _write(out, write)
    return size


def to_bytes(verts, faces, *, frame="LPS", ascii=False) -> bytes:
    buf = io.BytesIO()
    (write_ascii if ascii else write_binary)(verts, faces, buf, frame)
    return buf.getvalue()
