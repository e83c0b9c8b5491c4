"""Conversion options, declared once.

Each field of ``ConvertOptions`` carries its declaration: type (from the
annotation), default, bounds, choices, help text, and where it is offered.
``OPTIONS`` holds them by name, and everything that lists options is
derived from it: ``validate()``, the command line's arguments
(``converter/commands.py``), the options a job may carry
(``worker/service.py``), the web form's fields and the upload page's input
bounds (``web/options.py``) and the OpenAPI schema (``web/openapi.py``).
Adding an option is a field here and its use in the pipeline.
"""

from __future__ import annotations

import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import NamedTuple

from .errors import UsageError
from .formats import FORMATS
from .presets import PRESETS

#: output frames: RAS is LPS turned 180° about the z axis; PRINT is LPS moved
#: to rest on z = 0, centred on x and y (superior up); never mirrored
FRAMES = ("lps", "ras", "print")
#: how the upload page names the frames
FRAME_LABELS = {"lps": "DICOM patient frame (LPS)", "ras": "RAS (LPS turned 180° about z)",
                "print": "Ready to print: centred, resting on z = 0"}


@dataclass(frozen=True)
class Option:
    """One option's declaration (see ``ConvertOptions``)."""

    name: str
    type: type  # bool, int, float, str, or tuple (of ``length`` floats)
    default: object
    help: str
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None  # an exclusive minimum
    choices: tuple[str, ...] | None = None  # compared without case
    flag: str | None = None  # the command line's flag when not --the-name
    metavar: str | None = None
    job: bool = True  # a job may carry it (False: the machine that runs it decides)
    web: bool = True  # the web form and the API offer it
    parse: Callable | None = None  # text → value (raises UsageError), before the checks
    repeat: bool = False  # the command line's flag may be given again (values joined by ",")
    length: int | None = None  # a tuple's number of values

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def check(self, value):
        """``value`` normalised to this option's type; ``UsageError`` naming
        what is allowed (code ``invalid_<name>``)."""
        if value is None:
            return self.default
        if self.parse is not None and isinstance(value, str):
            value = self.parse(value)
        if self.type is bool:
            return bool(value)
        if self.type is str:
            return self._check_text(str(value).strip())
        if self.type is tuple:
            return self._check_numbers(value)
        return self._check_number(value)

    def _refuse(self, allowed):
        return UsageError(f"{self.name} must be {allowed}", code=f"invalid_{self.name}")

    def _check_text(self, text):
        if self.choices is None:
            if not text:
                raise UsageError(f"{self.name} must not be empty", code=f"invalid_{self.name}")
            return text
        if text.lower() not in self.choices:
            raise self._refuse("one of " + ", ".join(self.choices))
        return text.lower()

    def _check_numbers(self, value):
        """``length`` finite numbers, from ``"1,2,3"`` or a sequence, as a tuple of floats."""
        parts = value.split(",") if isinstance(value, str) else value
        try:
            numbers = tuple(float(v) for v in parts)
        except (TypeError, ValueError):
            numbers = ()
        if len(numbers) != self.length or not all(map(math.isfinite, numbers)):
            raise self._refuse(f"{self.length} numbers separated by commas ({self.metavar})")
        return numbers

    def _check_number(self, value):
        try:
            number = float(value)
            whole = int(value) if self.type is int else None
        except (TypeError, ValueError):
            number = whole = None
        if self.type is int:
            if whole is None or number != whole or not self.minimum <= whole <= self.maximum:
                raise self._refuse(f"a whole number from {self.minimum} to {self.maximum}")
            return whole
        if number is None or not math.isfinite(number):
            raise self._refuse("a finite number")
        if self.above is not None and not (self.above < number <= self.maximum):
            raise self._refuse(f"a number in ({self.above:g}, {self.maximum:g}]")
        if self.minimum is not None and number < self.minimum:
            raise self._refuse(f"a number >= {self.minimum:g}")
        return number


class Structure(NamedTuple):
    """One part of the model: the voxels from ``low`` up to (not including) ``high``."""

    name: str
    low: float
    high: float | None  # None: no upper bound

    def text(self) -> str:
        return f"{self.name}={self.low:g}" + ("" if self.high is None else f":{self.high:g}")


#: what a structure's name may be (it names a part in the file)
STRUCTURE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
#: at most this many structures in one job
MAX_STRUCTURES = 8


def _refuse_structure(message):
    return UsageError(f"structure {message}; give NAME=LOW[:HIGH], e.g. bone=300 or "
                      "soft=-100:300 (names: a letter, then letters, digits, _ or -; up to "
                      f"{MAX_STRUCTURES} structures, ranges not overlapping)",
                      code="invalid_structure")


def parse_structures(text: str) -> list[Structure]:
    """``"bone=300,soft=-100:300"`` → the structures, checked: names unique and
    well formed, each range LOW < HIGH, no two ranges overlapping."""
    found = []
    for item in (t.strip() for t in str(text).split(",")):
        name, sep, band = item.partition("=")
        name = name.strip()
        if not sep or not STRUCTURE_NAME.fullmatch(name):
            raise _refuse_structure(f"{item[:40]!r} is not NAME=LOW[:HIGH]" if not sep
                                    else f"name {name[:40]!r} is not allowed")
        low_text, colon, high_text = band.partition(":")
        try:
            low = float(low_text)
            high = float(high_text) if colon else None
        except ValueError:
            raise _refuse_structure(f"{name}: {band[:40]!r} is not LOW or LOW:HIGH") from None
        if not math.isfinite(low) or (high is not None and not math.isfinite(high)):
            raise _refuse_structure(f"{name}: the range must be finite numbers")
        if high is not None and not low < high:
            raise _refuse_structure(f"{name}: the range {low:g}:{high:g} is empty")
        found.append(Structure(name, low, high))
    if len(found) > MAX_STRUCTURES:
        raise _refuse_structure(f"list holds {len(found)} structures")
    names = [s.name.lower() for s in found]
    if len(set(names)) != len(names):
        raise _refuse_structure("names repeat")
    ordered = sorted(found, key=lambda s: s.low)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if a.high is None or a.high > b.low:
            raise _refuse_structure(f"ranges of {a.name} and {b.name} overlap")
    return found


def _structures_text(text: str) -> str:
    return ",".join(s.text() for s in parse_structures(text))


#: byte-size suffixes of --max-bytes (powers of 1000: k, M, G; or 1024: Ki, Mi, Gi)
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kKMG]i?)?B?\s*")
_FACTORS = {None: 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9,
            "ki": 2**10, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def parse_size(text: str) -> int:
    """``"500k"``, ``"2M"``, ``"1.5Mi"``, ``"120000"`` → bytes."""
    match = _SIZE.fullmatch(str(text))
    if not match:
        raise UsageError("max_bytes must be a number of bytes, with an optional suffix k, M "
                         "or G (or Ki, Mi, Gi), e.g. 5M", code="invalid_max_bytes")
    return int(float(match.group(1)) * _FACTORS[match.group(2)])


def _option(default=None, **declared):
    return field(default=default, metadata={"option": declared})


@dataclass
class ConvertOptions:
    """What to extract and how to shape the mesh.

    Every field is declared with its help text and bounds; ``OPTIONS`` has
    them by name, and ``validate()`` checks a value against them.
    """

    threshold: float | None = _option(
        help="isovalue in modality units (HU for CT)", metavar="HU")
    preset: str | None = _option(
        choices=tuple(PRESETS),
        help="the tissue, in this order: " + ", ".join(p.label for p in PRESETS.values())
        + "; default: bone for CT, auto otherwise")
    series: str | None = _option(
        help="series UID or number (default: the largest volume)", metavar="UID|N")
    assume_geometry: bool = _option(
        False, help="convert a series whose images carry no position: slices in instance "
                    "order, spacing from the headers (or --spacing); the geometry is assumed")
    spacing: tuple[float, ...] | None = _option(
        length=3, metavar="DX,DY,DZ",
        help="with --assume-geometry: column, row and slice spacing in mm")
    largest: bool = _option(False, help="keep only the largest part (the same as --keep-parts 1)")
    # the region: which voxels are meshed (converter/region.py), in the patient frame
    crop: tuple[float, ...] | None = _option(
        length=6, metavar="X0,Y0,Z0,X1,Y1,Z1",
        help="keep only the box between these two corners, in patient mm (LPS, or RAS with "
             "--frame ras)")
    seed: tuple[float, ...] | None = _option(
        length=3, metavar="X,Y,Z",
        help="keep only the part holding this point (patient mm, the frame of --crop; a point "
             "on the part's surface will do); parts are 6-connected voxels")
    keep_parts: int | None = _option(minimum=1, maximum=10**6, metavar="N",
                                     help="keep the N largest parts")
    remove_table: bool = _option(False, help="CT: drop the couch and the head rest")
    hollow: float | None = _option(above=0.0, maximum=200.0, metavar="MM",
                                   help="hollow the model, leaving a wall this thick (mm) "
                                        "inside its surface")
    min_island_mm3: float | None = _option(
        minimum=0.0, flag="--min-island", metavar="MM3",
        help="drop parts enclosing less than this volume (mm³)")
    smooth: int = _option(
        10, minimum=0, maximum=500, metavar="N",
        help="constrained smoothing iterations: each moves every vertex toward its "
             "neighbours but keeps it on its marching-cubes grid edge (± half the finest "
             "voxel across it), and each part keeps its volume; removes the terraces of "
             "thick slices (default 10; 0: raw marching cubes)")
    decimate: float | None = _option(above=0.0, maximum=1.0, metavar="FRACTION",
                                     help="fraction of triangles to keep, in (0, 1]")
    max_triangles: int | None = _option(minimum=4, maximum=10**9, metavar="N",
                                        help="triangle budget")
    structure: str | None = _option(
        parse=_structures_text, repeat=True, metavar="NAME=LOW[:HIGH]",
        help="a part of the model: the voxels from LOW up to HIGH (modality units), e.g. "
             "bone=300 or soft=-100:300; give it again for more parts (one object each in "
             "3MF, OBJ and PLY; one STL each in a zip); not with threshold or preset")
    frame: str = _option("lps", choices=FRAMES,
                         help="output frame: lps (the default), ras (LPS turned 180° about "
                              "z) or print (LPS centred on x and y, resting on z = 0); never "
                              "mirrored")
    format: str | None = _option(
        choices=tuple(FORMATS),
        help="file format: " + "; ".join(f"{f.name}: {f.label}" for f in FORMATS.values())
        + "; default: from the output's extension (.stl, .3mf, .obj, .ply; .zip: one STL per "
          "part), else stl")
    max_bytes: int | None = _option(
        minimum=1, maximum=10**12, parse=parse_size, metavar="N",
        help="largest file size in bytes (suffixes k, M, G): the mesh is decimated until the "
             "file fits")
    ascii: bool = _option(False, web=False, help="write ASCII STL (the same as --format "
                                                 "stl-ascii)")
    step: int = _option(1, minimum=1, maximum=16, metavar="N", web=False,
                        help="sample every N voxels, for a coarse preview (default 1)")
    workers: int = _option(1, minimum=1, maximum=64, metavar="N", job=False, web=False,
                           help="threads (and reading processes) to use; 1 runs everything "
                                "in the calling thread (default: every core on the command "
                                "line, the worker's share of them in a job)")

    def validate(self) -> ConvertOptions:
        """Check every option; raise ``UsageError`` naming what is allowed."""
        for group in EXCLUSIVE:
            given = [name for name in group if getattr(self, name) not in (None, False)]
            if len(given) > 1:
                raise UsageError(f"give {' or '.join(given)}, not {'both' if len(given) == 2 else 'several'}",
                                 code="invalid_option")
        for option in OPTIONS.values():
            setattr(self, option.name, option.check(getattr(self, option.name)))
        if self.spacing is not None and not self.assume_geometry:
            raise UsageError("spacing is for a series without positions: give it with "
                             "assume_geometry", code="invalid_spacing")
        if self.spacing is not None and min(self.spacing) <= 0:
            raise UsageError("spacing must be 3 numbers above 0 (DX,DY,DZ)", code="invalid_spacing")
        if self.crop is not None:
            lo, hi = self.crop[:3], self.crop[3:]
            if any(a == b for a, b in zip(lo, hi, strict=True)):
                raise UsageError("crop is an empty box: two opposite corners X0,Y0,Z0,X1,Y1,Z1 "
                                 "that differ on every axis", code="invalid_crop")
        if self.ascii:  # the older flag: an alias of format stl-ascii
            if self.format not in (None, "stl-ascii"):
                raise UsageError(f"ascii writes STL; it cannot be given with format "
                                 f"{self.format}", code="invalid_format")
            self.format, self.ascii = "stl-ascii", False
        return self

    def structures(self) -> list[Structure]:
        """The parts asked for (``structure``); empty for one part by threshold or preset."""
        return parse_structures(self.structure) if self.structure else []


#: groups of options of which only one may be given
EXCLUSIVE = (("threshold", "preset", "structure"), ("decimate", "max_triangles"),
             ("largest", "keep_parts", "seed"))


def _declarations():
    hints = typing.get_type_hints(ConvertOptions)
    for f in fields(ConvertOptions):
        hint = hints[f.name]
        if typing.get_origin(hint) is not tuple:  # X | None: X
            hint = next(t for t in typing.get_args(hint) or (hint,) if t is not type(None))
        yield Option(f.name, typing.get_origin(hint) or hint, f.default, **f.metadata["option"])


#: every option's declaration, by name, in the order of ``ConvertOptions``
OPTIONS: dict[str, Option] = {o.name: o for o in _declarations()}
#: what a job may carry (the worker sets the rest)
JOB_OPTIONS = tuple(name for name, o in OPTIONS.items() if o.job)
#: what the web form and the API offer
WEB_OPTIONS = tuple(name for name, o in OPTIONS.items() if o.web)
