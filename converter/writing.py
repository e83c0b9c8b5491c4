"""The pipeline's output stage: frame, format, byte budget, the file and its report entries.

After the mesh steps each part (one per ``--structure``, or the one surface)
is placed in the output frame (``place``: RAS turns 180° about z; PRINT
moves the model to rest on z = 0, centred on x and y; nothing is ever
mirrored), the format is the option's or the output's extension's
(``choose_format``), a byte budget decimates until the file fits
(``meet_budget``, through ``mesh.decimate``), and ``formats.write_model``
writes it.  ``report_entries`` says what was written and what was done.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from . import formats
from . import mesh as meshops
from .errors import UsageError
from .formats import FORMATS, PALETTE, Part, write_model

__all__ = ["Part", "choose_format", "color", "joined", "meet_budget", "place",
           "report_entries", "size_of", "write_model"]

#: tries at decimating to a byte budget before giving up
BUDGET_TRIES = 6


def color(k: int):
    """The colour of the ``k``-th part."""
    return PALETTE[k % len(PALETTE)]


def choose_format(opts, path=None) -> str:
    """The format to write: ``opts.format``, else the extension of ``path``,
    else binary STL; ``UsageError`` (``invalid_format``) for an unknown
    extension, one that contradicts the format, or several STL parts in a
    file that is not a zip."""
    try:
        by_extension = formats.format_for_path(path) if path is not None else None
    except ValueError as exc:
        raise UsageError(str(exc), code="invalid_format") from None
    fmt = opts.format or by_extension or "stl"
    suffix = Path(os.fspath(path)).suffix.lower() if path is not None else ""
    if by_extension and opts.format and suffix != ".zip" \
            and by_extension != fmt.removesuffix("-ascii"):
        raise UsageError(f"the output's extension {suffix} does not match format {fmt} "
                         f"(use {FORMATS[fmt].extension}, or .zip)", code="invalid_format")
    if suffix == ".zip" and fmt not in ("stl", "stl-ascii", "obj"):
        raise UsageError(f"format {fmt} is one file, not a zip: name the output "
                         f"{FORMATS[fmt].extension}", code="invalid_format")
    several = len(opts.structures()) > 1
    if several and path is not None and suffix == ".stl":
        raise UsageError("several structures in STL are one file each: name the output .zip, "
                         "or choose format 3mf, obj or ply", code="invalid_format")
    return fmt


def place(parts, frame: str):
    """``parts`` in ``frame`` (from LPS), and the offset PRINT added (else None).

    RAS is a 180° turn about z, ``(x, y, z) → (-x, -y, z)``; PRINT moves the
    whole model (every part by the same offset) so that its bounding box is
    centred on x = y = 0 and its lowest point is at z = 0.  Both are
    rotations or translations: the winding, the volume and the handedness
    are those of LPS.
    """
    if frame == "lps":
        return parts, None
    if frame == "ras":
        turn = np.array([-1.0, -1.0, 1.0])
        return [Part(p.name, p.verts * turn, p.faces, p.color) for p in parts], None
    if frame != "print":
        raise ValueError(f"unknown frame {frame!r}")
    lows, highs = zip(*(meshops.bounds(p.verts) for p in parts if len(p.verts)), strict=True)
    lo, hi = np.min(lows, axis=0), np.max(highs, axis=0)
    offset = np.array([-(lo[0] + hi[0]) / 2, -(lo[1] + hi[1]) / 2, -lo[2]])
    moved = [Part(p.name, p.verts + offset, p.faces, p.color) for p in parts]
    return moved, [round(float(x), 3) for x in offset]


def joined(parts):
    """The parts as one mesh ``(verts, faces)`` (no copy for one part)."""
    if len(parts) == 1:
        return parts[0].verts, parts[0].faces
    base = np.cumsum([0] + [len(p.verts) for p in parts[:-1]])
    verts = np.concatenate([np.asarray(p.verts, dtype=np.float64) for p in parts])
    faces = np.concatenate([np.asarray(p.faces, dtype=np.int64) + b
                            for p, b in zip(parts, base, strict=True)])
    return verts, faces


class _Null(io.RawIOBase):
    """A binary sink that keeps nothing (``formats`` counts what goes in)."""

    def writable(self):
        return True

    def write(self, data):
        return memoryview(data).nbytes


def size_of(parts, fmt: str, frame: str, path=None, *, assumed: bool = False) -> int:
    """Bytes ``parts`` take as ``fmt`` (an OBJ beside its .mtl: both)."""
    if fmt == "obj" and not formats.zipped(fmt, len(parts), path):
        from . import obj

        counting = formats._Counting(_Null())
        obj.write_obj(parts, counting, formats.header_text(fmt, frame, assumed=assumed),
                      Path(os.fspath(path)).with_suffix(".mtl").name)
        return counting.count + len(obj.mtl_text(parts).encode("ascii"))
    return write_model(parts, fmt, _Null(), frame, assumed=assumed)


def _smallest(part) -> Part:
    """A tetrahedron spanning ``part``'s bounding box: the smallest closed mesh."""
    lo, hi = meshops.bounds(part.verts)
    verts = np.array([lo, [hi[0], lo[1], lo[2]], [lo[0], hi[1], lo[2]], [lo[0], lo[1], hi[2]]])
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return Part(part.name, verts, faces, part.color)


def meet_budget(parts, fmt: str, frame: str, max_bytes: int, *, path=None, assumed=False):
    """Decimate ``parts`` until they fit in ``max_bytes`` as ``fmt``.

    Returns the parts and the report's ``budget`` entry (what was done).
    ``UsageError`` (``budget_too_small``) when no closed mesh of that many
    parts fits, or decimation cannot get there.
    """
    size = size_of(parts, fmt, frame, path, assumed=assumed)
    triangles = sum(len(p.faces) for p in parts)
    entry = {"max_bytes": int(max_bytes), "bytes_before": int(size), "triangles_before": triangles}
    if size <= max_bytes:
        return parts, dict(entry, action="none: the file fits")
    smallest = size_of([_smallest(p) for p in parts], fmt, frame, path, assumed=assumed)
    if max_bytes < smallest:
        raise UsageError(f"max_bytes {max_bytes} is too small for any closed mesh: the smallest "
                         f"{fmt} of {len(parts)} part(s) takes {smallest} bytes",
                         code="budget_too_small")
    target = triangles * max_bytes / size
    for _ in range(BUDGET_TRIES):
        shares = [max(4, int(target * len(p.faces) / triangles)) for p in parts]
        trial = []
        for part, share in zip(parts, shares, strict=True):
            verts, faces = meshops.decimate(part.verts, part.faces, max_triangles=share)
            trial.append(Part(part.name, verts, faces, part.color))
        got = size_of(trial, fmt, frame, path, assumed=assumed)
        if got <= max_bytes:
            after = sum(len(p.faces) for p in trial)
            return trial, dict(entry, action=f"decimated from {triangles} to {after} triangles "
                                             f"to fit {max_bytes} bytes", triangles_after=after)
        target = sum(len(p.faces) for p in trial) * max_bytes / got * 0.97
        if min(len(p.faces) for p in trial) <= 4 and all(s == 4 for s in shares):
            break
    raise UsageError(f"max_bytes {max_bytes} cannot be met: decimation reached {got} bytes",
                     code="budget_too_small")


def report_entries(parts, levels, fmt, frame, size, placed, budget, *, path=None,
                   assumed=False, volumes=None) -> dict:
    """The report's entries about the output: ``file``, ``parts`` (and
    ``stl`` for STL, ``print_offset_mm`` for PRINT, ``budget`` for a byte
    budget); ``volumes`` are the parts' enclosed volumes when the caller
    has measured them already."""
    header = formats.header_text(fmt, frame, assumed=assumed)
    entries = {"file": dict(formats.delivery(fmt, len(parts), path), bytes=int(size),
                            header=header),
               "parts": []}
    if volumes is None:
        volumes = [meshops.measures(part.verts, part.faces).volume for part in parts]
    for part, (_, level), volume in zip(parts, levels, volumes, strict=True):
        entries["parts"].append({
            "name": part.name, "low": level.value, "high": level.high,
            "triangles": int(len(part.faces)), "vertices": int(len(part.verts)),
            "volume_mm3": round(volume, 3),
            "color": formats.hex_color(part.color)})
    if fmt in ("stl", "stl-ascii"):
        entries["stl"] = {"format": "ascii" if fmt == "stl-ascii" else "binary",
                          "bytes": int(size), "header": header}
    if placed is not None:
        entries["print_offset_mm"] = placed
    if budget is not None:
        entries["budget"] = budget
    return entries
