"""PLY writing: binary little-endian, one file for every part.

Header: ``ply``, ``format binary_little_endian 1.0``, a comment naming the
frame and units (``comment ephemesh SPACE=LPS UNITS=mm``), with several
parts one ``comment part K NAME FACES`` each (their faces follow one another
in that order), then float32 ``x y z`` vertices (with several parts, also
``red green blue`` of the part's colour) and faces as ``uchar 3`` plus three
``int`` indices.  Records are made in blocks with numpy and written as they
are made.
"""

from __future__ import annotations

import numpy as np

from .mesh import check_mesh

#: vertices (or faces) per block
BLOCK = 1 << 18
FACE = np.dtype([("n", "u1"), ("v", "<i4", (3,))], align=False)
assert FACE.itemsize == 13


def _vertex_dtype(coloured: bool) -> np.dtype:
    fields = [("xyz", "<f4", (3,))]
    if coloured:
        fields.append(("rgb", "u1", (3,)))
    return np.dtype(fields, align=False)


def header(parts, text: str, n_verts: int, n_faces: int) -> bytes:
    """The PLY header for ``parts`` with these counts; ``text`` is the first
    comment (``formats.header_text``)."""
    coloured = len(parts) > 1
    lines = ["ply", "format binary_little_endian 1.0", f"comment {text}"]
    if coloured:
        lines += [f"comment part {k} {p.name} {len(p.faces)}" for k, p in enumerate(parts)]
    lines += [f"element vertex {n_verts}", "property float x", "property float y",
              "property float z"]
    if coloured:
        lines += ["property uchar red", "property uchar green", "property uchar blue"]
    lines += [f"element face {n_faces}", "property list uchar int vertex_indices",
              "end_header"]
    return ("\n".join(lines) + "\n").encode("ascii")


def write(parts, out, text: str) -> None:
    """Write ``parts`` (``formats.Part``) as one binary PLY to the binary file ``out``,
    ``text`` its first comment."""
    meshes = [check_mesh(p.verts, p.faces) for p in parts]
    n_verts = sum(len(v) for v, _ in meshes)
    if n_verts >= 2**31:
        raise ValueError("PLY's int indices hold fewer than 2**31 vertices")
    coloured = len(parts) > 1
    out.write(header(parts, text, n_verts, sum(len(f) for _, f in meshes)))
    vertex = _vertex_dtype(coloured)
    for part, (verts, _) in zip(parts, meshes, strict=True):
        rgb = np.array([round(min(max(c, 0.0), 1.0) * 255) for c in part.color], np.uint8)
        for start in range(0, len(verts), BLOCK):
            chunk = verts[start:start + BLOCK]
            rec = np.empty(len(chunk), vertex)
            rec["xyz"] = chunk
            if coloured:
                rec["rgb"] = rgb
            out.write(rec.data)
    base = 0
    for verts, faces in meshes:
        for start in range(0, len(faces), BLOCK):
            chunk = faces[start:start + BLOCK]
            rec = np.empty(len(chunk), FACE)
            rec["n"] = 3
            rec["v"] = chunk + base
            out.write(rec.data)
        base += len(verts)
