"""OBJ writing: one group and one material per part, and the ``.mtl`` beside it.

``write_obj`` streams the OBJ text (``mtllib``, then per part ``o NAME``,
``usemtl NAME``, its ``v`` lines and its ``f`` lines, indices from 1 across
the file) in blocks of fixed-width lines (``numtext.py``);
``mtl_text`` is the materials (``Kd`` the part's colour).  Delivered as one
file, OBJ is a zip holding ``model.obj`` and ``model.mtl`` (``formats.py``);
``write_pair`` writes ``X.obj`` and ``X.mtl`` side by side for the command
line.  The first line is a comment naming the frame and the units
(``# ephemesh SPACE=LPS UNITS=mm``); OBJ itself has no units.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import numtext
from .formats import _atomic, header_text
from .mesh import check_mesh

#: vertices (or faces) per block of text
BLOCK = 1 << 17
#: digits after the point of a coordinate in mm
DECIMALS = 4


def write_obj(parts, out, header: str, mtl_name: str) -> None:
    """Write the OBJ text of ``parts`` to the binary file ``out``: ``header``
    (``formats.header_text``) as its first comment, naming ``mtl_name``."""
    meshes = [check_mesh(p.verts, p.faces) for p in parts]
    total = sum(len(v) for v, _ in meshes)
    largest = max((float(np.abs(v).max()) for v, _ in meshes if len(v)), default=0.0)
    digits = numtext.int_digits(largest)
    width = numtext.decimal_width(digits, DECIMALS)
    vline = numtext.LineTemplate(["v ", width, " ", width, " ", width, "\n"])
    index_digits = numtext.int_digits(total)
    fline = numtext.LineTemplate(["f ", index_digits, " ", index_digits, " ", index_digits, "\n"])
    out.write(f"# {header}\nmtllib {mtl_name}\n".encode("ascii"))
    base = 1
    for part, (verts, faces) in zip(parts, meshes, strict=True):
        out.write(f"o {part.name}\nusemtl {part.name}\n".encode("ascii"))
        for start in range(0, len(verts), BLOCK):
            chunk = np.asarray(verts[start:start + BLOCK], dtype=np.float64)
            rows = vline.block(len(chunk))
            for axis, col in enumerate(vline.fields(rows)):
                numtext.fill_decimal(col, chunk[:, axis], digits, DECIMALS)
            out.write(rows.data)
        for start in range(0, len(faces), BLOCK):
            chunk = np.asarray(faces[start:start + BLOCK])
            rows = fline.block(len(chunk))
            for corner, col in enumerate(fline.fields(rows)):
                numtext.fill_integer(col, chunk[:, corner], index_digits, offset=base)
            out.write(rows.data)
        base += len(verts)


def mtl_text(parts) -> str:
    """The materials: one ``newmtl NAME`` per part, its colour as ``Kd``."""
    lines = ["# ephemesh"]
    for part in parts:
        r, g, b = part.color
        lines += [f"newmtl {part.name}", f"Kd {r:.3f} {g:.3f} {b:.3f}", "Ka 0 0 0",
                  "Ks 0.1 0.1 0.1", "d 1", "illum 2"]
    return "\n".join(lines) + "\n"


def write_pair(parts, path: Path, frame: str, assumed: bool = False) -> int:
    """Write ``path`` (``X.obj``) and ``X.mtl`` beside it, each atomically;
    return the OBJ's bytes."""
    mtl = path.with_suffix(".mtl")
    header = header_text("obj", frame, assumed=assumed)
    size = _atomic(path, lambda fh: write_obj(parts, fh, header, os.fspath(mtl.name)))
    _atomic(mtl, lambda fh: fh.write(mtl_text(parts).encode("ascii")))
    return size
