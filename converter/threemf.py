"""3MF writing: the 3MF core specification's package, streamed.

A 3MF file is a zip (Open Packaging Conventions) holding
``[Content_Types].xml``, ``_rels/.rels`` and the model, ``3D/3dmodel.model``:
XML with ``unit="millimeter"``, one ``<object>`` per part (named; with
several parts each gets a colour from a ``<basematerials>`` group) and a
``<build>`` item for each.  The model's vertices and triangles are made in
blocks of fixed-width lines (``numtext.py``) and written into the
zip as they are made, so the text of the whole mesh never sits in memory.

The model's metadata is ``Application`` (``ephemesh``) and ``Description``
(the STL header's text: ``ephemesh SPACE=LPS UNITS=mm``); the names are the
parts' names.  Nothing else goes in.
"""

from __future__ import annotations

import zipfile

import numpy as np

from . import numtext
from .formats import hex_color, zip_entry
from .mesh import check_mesh

#: vertices (or triangles) per block of text
BLOCK = 1 << 17
#: digits after the point of a coordinate in mm (0.1 µm)
DECIMALS = 4
#: how the model is kept in the zip: stored, so 3MF is written about as fast
#: as binary STL (deflate, even at level 1, takes 4× the time of making the
#: text; the stored file is ~1.5× a binary STL, and shrinks ~4× zipped)
COMPRESSION = zipfile.ZIP_STORED

CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" '
    'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="model" '
    'ContentType="application/vnd.ms-package.3dmanufacturing-3dmodel+xml"/></Types>\n')
RELS = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Target="/3D/3dmodel.model" Id="rel0" '
    'Type="http://schemas.microsoft.com/3dmanufacturing/2013/01/3dmodel"/></Relationships>\n')
MODEL_PATH = "3D/3dmodel.model"
CORE_NS = "http://schemas.microsoft.com/3dmanufacturing/core/2015/02"


def write(parts, fh, description: str, workers: int = 1) -> None:
    """Write ``parts`` (``formats.Part``) as a 3MF package to the binary file ``fh``;
    ``description`` is the header's text (``formats.header_text``); with
    ``workers`` > 1 the text is made a block ahead on a thread."""
    meshes = [check_mesh(p.verts, p.faces) for p in parts]
    with zipfile.ZipFile(fh, "w", COMPRESSION) as zf:
        zf.writestr(zip_entry("[Content_Types].xml", COMPRESSION), CONTENT_TYPES)
        zf.writestr(zip_entry("_rels/.rels", COMPRESSION), RELS)
        with zf.open(zip_entry(MODEL_PATH, COMPRESSION), "w", force_zip64=True) as model:
            _write_model(model, parts, meshes, description, workers)


def _write_model(out, parts, meshes, description, workers) -> None:
    coloured = len(parts) > 1
    head = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<model unit="millimeter" xml:lang="en-US" xmlns="{CORE_NS}">\n',
        '<metadata name="Application">ephemesh</metadata>\n',
        f'<metadata name="Description">{description}</metadata>\n',
        "<resources>\n",
    ]
    if coloured:
        head.append('<basematerials id="1">\n')
        head += [f'<base name="{p.name}" displaycolor="{hex_color(p.color)}"/>\n' for p in parts]
        head.append("</basematerials>\n")
    out.write("".join(head).encode("ascii"))
    first_id = 2
    for k, (part, (verts, faces)) in enumerate(zip(parts, meshes, strict=True)):
        colour = f' pid="1" pindex="{k}"' if coloured else ""
        out.write(f'<object id="{first_id + k}" name="{part.name}" type="model"{colour}>'
                  "<mesh>\n<vertices>\n".encode("ascii"))
        _vertices(out, verts, workers)
        out.write(b"</vertices>\n<triangles>\n")
        _triangles(out, faces, len(verts), workers)
        out.write(b"</triangles>\n</mesh></object>\n")
    items = "".join(f'<item objectid="{first_id + k}"/>' for k in range(len(parts)))
    out.write(f"</resources>\n<build>{items}</build>\n</model>\n".encode("ascii"))


def _vertices(out, verts, workers=1) -> None:
    if not len(verts):
        return
    digits = numtext.int_digits(np.abs(verts).max())
    width = numtext.decimal_width(digits, DECIMALS)
    line = numtext.LineTemplate(['<vertex x="', width, '" y="', width, '" z="', width, '"/>\n'])

    def make(start):
        chunk = np.asarray(verts[start:start + BLOCK], dtype=np.float64)
        rows = line.block(len(chunk))
        for axis, col in enumerate(line.fields(rows)):
            numtext.fill_decimal(col, chunk[:, axis], digits, DECIMALS)
        return rows

    for rows in numtext.made_ahead(range(0, len(verts), BLOCK), make, workers):
        out.write(rows.data)


def _triangles(out, faces, n_verts, workers=1) -> None:
    if not len(faces):
        return
    digits = numtext.int_digits(max(n_verts - 1, 0))
    line = numtext.LineTemplate(['<triangle v1="', digits, '" v2="', digits, '" v3="', digits,
                                 '"/>\n'])

    def make(start):
        chunk = np.asarray(faces[start:start + BLOCK])
        rows = line.block(len(chunk))
        for corner, col in enumerate(line.fields(rows)):
            numtext.fill_integer(col, chunk[:, corner], digits)
        return rows

    for rows in numtext.made_ahead(range(0, len(faces), BLOCK), make, workers):
        out.write(rows.data)
