"""STL writing: binary (one structured-array write) and ASCII.

The 80-byte binary header names the coordinate frame and nothing else, e.g.
``ephemesh SPACE=LPS UNITS=mm``; it never holds patient data, UIDs or file
names because nothing but the frame name is ever put into it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

FRAMES = ("LPS", "RAS")

STL_DTYPE = np.dtype(
    [("normal", "<f4", (3,)), ("vertices", "<f4", (3, 3)), ("attr", "<u2")]
)
assert STL_DTYPE.itemsize == 50


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


def binary_records(verts, faces) -> np.ndarray:
    """The triangles as one structured array ready to write."""
    tri = np.asarray(verts, dtype=np.float32)[np.asarray(faces)]
    rec = np.empty(len(tri), STL_DTYPE)
    rec["vertices"] = tri
    rec["normal"] = face_normals(tri)
    rec["attr"] = 0
    return rec


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
    rec = binary_records(verts, faces)

    def write(fh):
        fh.write(header)
        fh.write(np.uint32(len(rec)).tobytes())
        if isinstance(fh, io.BufferedWriter | io.FileIO):
            rec.tofile(fh)
        else:
            fh.write(memoryview(rec).cast("B"))

    _write(out, write)
    return 84 + rec.nbytes


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
