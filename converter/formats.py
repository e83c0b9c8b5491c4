"""The output formats, declared once, and the one function that writes a model.

``FORMATS`` holds each format's name, label, extension and media type; the
``format`` option (``converter/options.py``) takes its names, the command
line guesses one from the output's extension (``format_for_path``), and the
service names and types a download from the report's ``file`` entry, which
``delivery`` makes.  A model is a list of ``Part``s (one per structure, or
one), written by ``write_model``:

==========  =========================================  =======================
format      one part                                   several parts
==========  =========================================  =======================
stl         binary STL (``stl.py``)                    a zip, one STL per part
stl-ascii   ASCII STL                                  a zip, one STL per part
3mf         3MF, mm (``threemf.py``)                   one object per part, coloured
obj         a zip: ``model.obj`` + ``model.mtl``       one group and material per part
            (``obj.py``; on the command line ``X.obj``
            writes ``X.obj`` and ``X.mtl``)
ply         binary PLY (``ply.py``)                    one file, vertex colours
==========  =========================================  =======================

Headers, names and metadata hold the frame, the units, ``ephemesh`` and the
part names the caller chose (``[A-Za-z][A-Za-z0-9_-]*``), nothing else: no
patient data, UIDs or file names can reach them.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

#: the media type of a zip (several STLs, or OBJ with its materials)
ZIP_TYPE = "application/zip"


@dataclass(frozen=True)
class Format:
    """One output format's declaration."""

    name: str
    short: str  # what a download button calls it ("STL", "3MF")
    label: str
    extension: str  # of the file holding the model (".zip" for a zipped delivery is separate)
    media_type: str
    parts_in_one_file: bool  # several structures go in one file (else one file each, zipped)


#: every output format, by name, in the order ``--help`` and the upload page show them
FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("stl", "STL", "binary STL", ".stl", "model/stl", False),
    Format("stl-ascii", "STL", "ASCII STL", ".stl", "model/stl", False),
    Format("3mf", "3MF", "3MF (millimetres, named and coloured parts)", ".3mf", "model/3mf",
           True),
    Format("obj", "OBJ", "OBJ with a material per part (.obj and .mtl; as one file, a zip)",
           ".obj", "model/obj", True),
    Format("ply", "PLY", "binary PLY", ".ply", "application/octet-stream", True),
)}
#: the extensions the command line tells a format by (``.zip``: STLs, one per part)
EXTENSIONS = {".stl": "stl", ".3mf": "3mf", ".obj": "obj", ".ply": "ply", ".zip": "stl"}
#: colours of the parts, in order (sRGB), for the formats that carry them
PALETTE = ((0.90, 0.86, 0.76), (0.80, 0.33, 0.30), (0.36, 0.56, 0.80), (0.45, 0.72, 0.42),
           (0.93, 0.69, 0.25), (0.62, 0.45, 0.75), (0.35, 0.75, 0.75), (0.60, 0.60, 0.60))


@dataclass
class Part:
    """One named, closed surface of the model: ``verts`` (n, 3) in mm, ``faces`` (m, 3)."""

    name: str
    verts: object
    faces: object
    color: tuple[float, float, float] = PALETTE[0]


def hex_color(color) -> str:
    """``#RRGGBB`` of an sRGB colour in [0, 1]."""
    return "#" + "".join(f"{round(min(max(c, 0.0), 1.0) * 255):02X}" for c in color)


def zip_entry(name: str, compress_type=zipfile.ZIP_STORED) -> zipfile.ZipInfo:
    """A zip member named ``name`` dated 1980-01-01 (no clock in the file)."""
    info = zipfile.ZipInfo(name)
    info.compress_type = compress_type
    return info


def format_for_path(path) -> str | None:
    """The format an output path's extension names, ``None`` without an extension;
    ValueError for an extension no format has."""
    suffix = Path(os.fspath(path)).suffix.lower()
    if not suffix:
        return None
    if suffix not in EXTENSIONS:
        raise ValueError(f"cannot tell the format from the extension {suffix}: use one of "
                         + ", ".join(EXTENSIONS) + " or give --format")
    return EXTENSIONS[suffix]


def zipped(fmt: str, parts: int, path=None) -> bool:
    """Whether the model goes out as a zip: a path ending ``.zip``, several
    parts of a one-part format, or OBJ (with its .mtl) anywhere but a path
    ending ``.obj``."""
    suffix = Path(os.fspath(path)).suffix.lower() if path is not None else None
    if suffix == ".zip":
        return True
    if fmt == "obj":
        return suffix != ".obj"
    return parts > 1 and not FORMATS[fmt].parts_in_one_file


def delivery(fmt: str, parts: int, path=None) -> dict:
    """The report's ``file`` entry, less ``bytes``: format, extension and media
    type of what is written, whether it is a zip, and its header text."""
    declared = FORMATS[fmt]
    is_zip = zipped(fmt, parts, path)
    return {"format": fmt, "zip": is_zip,
            "extension": ".zip" if is_zip else declared.extension,
            "media_type": ZIP_TYPE if is_zip else declared.media_type}


def download(file_entry: dict | None) -> tuple[str, str]:
    """``(file name, media type)`` for a result whose report's ``file`` entry is
    ``file_entry`` (``model.3mf``, ``model/3mf``; without one, binary STL)."""
    if not file_entry:
        return "model.stl", FORMATS["stl"].media_type
    return "model" + file_entry["extension"], file_entry["media_type"]


def is_binary_stl(file_entry: dict | None) -> bool:
    """Whether a result (its report's ``file`` entry) is one binary STL, what a
    DICOM Encapsulated STL instance can hold."""
    entry = file_entry or {}
    return entry.get("format", "stl") == "stl" and not entry.get("zip")


def header_text(fmt: str, frame: str, *, assumed: bool = False) -> str:
    """The text the file's header carries: ``ephemesh SPACE=LPS UNITS=mm``
    (an ASCII STL's first line: ``solid ephemesh_LPS``; ``GEOMETRY=ASSUMED``
    follows for a series placed on an assumed grid)."""
    from . import stl

    return stl.header_text(frame, ascii=fmt == "stl-ascii", assumed=assumed)


def write_model(parts: list[Part], fmt: str, out, frame: str = "lps", *,
                assumed: bool = False, workers: int = 1) -> int:
    """Write ``parts`` as ``fmt`` to ``out`` (a path, atomically, or a binary
    file); return the bytes written.  A path ending ``.obj`` gets its ``.mtl``
    beside it (not counted).  ``workers`` > 1 lets 3MF's text be made on a
    thread while it is written (``ConvertOptions.workers``)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {tuple(FORMATS)}, got {fmt!r}")
    if not parts:
        raise ValueError("a model needs at least one part")
    path = out if isinstance(out, (str, os.PathLike)) else None
    if fmt == "obj" and not zipped(fmt, len(parts), path):
        from . import obj

        return obj.write_pair(parts, Path(path), frame, assumed)
    if zipped(fmt, len(parts), path):
        return _atomic(out, lambda fh: _write_zip(parts, fmt, fh, frame, assumed))
    return _atomic(out, lambda fh: _write_one(parts, fmt, fh, frame, assumed, workers))


def _write_one(parts, fmt, fh, frame, assumed, workers=1) -> int:
    from . import ply, stl, threemf

    if fmt in ("stl", "stl-ascii"):
        (part,) = parts
        writer = stl.write_ascii if fmt == "stl-ascii" else stl.write_binary
        return writer(part.verts, part.faces, fh, frame, assumed=assumed)
    header = header_text(fmt, frame, assumed=assumed)
    if fmt == "3mf":
        return threemf.write(parts, fh, header, workers)
    return ply.write(parts, fh, header)


def _write_zip(parts, fmt, fh, frame, assumed) -> None:
    """A zip of one STL per part (``NAME.stl``), or OBJ's ``model.obj`` + ``model.mtl``;
    stored, not deflated (Python's zlib deflates text at a tenth of the writers' pace)."""
    from . import obj

    with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
        if fmt == "obj":
            with zf.open(zip_entry("model.obj"), "w", force_zip64=True) as member:
                obj.write_obj(parts, member, header_text(fmt, frame, assumed=assumed),
                              "model.mtl")
            zf.writestr(zip_entry("model.mtl"), obj.mtl_text(parts))
        else:
            for part in parts:
                with zf.open(zip_entry(f"{part.name}.stl"), "w", force_zip64=True) as member:
                    _write_one([part], fmt, member, frame, assumed)


class _Counting:
    """A binary file that counts what is written to it."""

    def __init__(self, fh):
        self.fh, self.count = fh, 0

    def write(self, data):
        n = self.fh.write(data)
        self.count += len(memoryview(data).cast("B")) if n is None else n
        return n

    def tell(self):
        return self.count

    def seekable(self):
        return False

    def flush(self):
        self.fh.flush()


def _atomic(out, write_fn) -> int:
    """``write_fn(fh)`` to a path (via a temporary file, renamed) or a binary file;
    the bytes written."""
    if not isinstance(out, (str, os.PathLike)):
        counting = _Counting(out)
        write_fn(counting)
        return counting.count
    path = Path(out)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write_fn(fh)
            size = fh.tell()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return size
