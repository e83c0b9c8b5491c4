"""The converter's commands: ``convert``, ``series``, ``sample`` and ``deidentify``.

``register(subparsers)`` adds them to the ``ephemesh`` dispatcher
(``web/cli.py``).  ``convert``'s option arguments are derived from the
options' declaration (``converter/options.py``).  A handler raises
``CommandFailed`` with the converter's exit code (``exits.Exit``); the
dispatcher prints the one line.
"""

from __future__ import annotations

import json
import os
import re
import sys
from contextlib import contextmanager

from .errors import ConverterError, is_out_of_memory
from .exits import CommandFailed, Exit, exit_codes_text
from .options import EXCLUSIVE, OPTIONS, ConvertOptions
from .pipeline import convert, list_series

OUT_OF_MEMORY = "out of memory: the series needs more memory than is free here"


def register(subparsers) -> None:
    """Add ``convert``, ``series``, ``sample`` and ``deidentify`` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "convert", help="convert a DICOM series to STL (or 3MF, OBJ, PLY)",
        description="Convert a DICOM series (folders, files or zips) to a surface model: "
        "STL, 3MF, OBJ or PLY, chosen by --format or the output's extension.",
        epilog=exit_codes_text())
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="folder, file or zip")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="the file to write: .stl, .3mf, .obj (and its .mtl beside it), .ply, "
                        "or .zip (one STL per structure; with --format obj: .obj and .mtl)")
    _add_options(p)
    # "--seed -12,5,3": numbers separated by commas are values, not options
    p._negative_number_matcher = re.compile(r"^-\d*\.?\d+([eE][-+]?\d+)?(,[-+.\deE]*)*$")
    p.add_argument("--report", metavar="REPORT.json", help="write the JSON report here ('-' = stdout)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_convert)

    s = subparsers.add_parser("series", help="list the series found in the inputs",
                              description="List every series found, one line each.",
                              epilog=exit_codes_text())
    s.add_argument("inputs", nargs="+", metavar="INPUT", help="folder, file or zip")
    s.add_argument("--json", action="store_true", help="print JSON instead of lines")
    s.set_defaults(handler=run_series)

    m = subparsers.add_parser("sample", help="write a synthetic CT series to try ephemesh on",
                              description="Write a synthetic CT phantom series (no patient "
                              "data): a body with a spine, long bones and ribs.")
    m.add_argument("folder", help="folder to write into (created if missing)")
    m.add_argument("--slices", type=int, default=80, metavar="N",
                   help="slices, 1 mm apart (2 to 2000; default 80)")
    m.add_argument("--size", type=int, default=128, metavar="PIXELS",
                   help="pixels a side of a 358 mm field of view (16 to 1024; default 128; "
                        "--size 512 --slices 300 is a realistic scan)")
    m.set_defaults(handler=run_sample)

    d = subparsers.add_parser(
        "deidentify", help="remove names, ids and dates from DICOM files before uploading them",
        description="Write a de-identified copy of every DICOM file in the inputs (files, "
        "folders or zips) into OUT: the DICOM PS3.15 Basic Application Level Confidentiality "
        "Profile, as the upload page applies it in the browser (names, ids, dates and times, "
        "institution, physicians, descriptions and private elements removed or emptied; UIDs "
        "replaced by new ones, consistently within the run). Pixel data and geometry are "
        "copied byte for byte. Files are named 000001.dcm, 000002.dcm, ...; no input name is "
        "kept. Not DICOM files and DICOMDIR indexes are skipped.",
        epilog=exit_codes_text())
    d.add_argument("inputs", nargs="+", metavar="IN", help="file, folder or zip")
    d.add_argument("output", metavar="OUT", help="folder to write into (created; must be empty)")
    d.set_defaults(handler=run_deidentify)


def _add_options(parser) -> None:
    """One argument per declared option (``--workers``' default: every core)."""
    groups = {}
    for option in OPTIONS.values():
        group = next((g for g in EXCLUSIVE if option.name in g), None)
        if group is not None and group not in groups:
            groups[group] = parser.add_mutually_exclusive_group()
        target = groups[group] if group is not None else parser
        kwargs = {"dest": option.name, "help": option.help, "default": None}
        if option.type is bool:
            kwargs["action"] = "store_true"
        else:  # a tuple, or a value with its own syntax, stays text: the option checks it
            kwargs.update(type=str if option.type is tuple or option.parse else option.type,
                          metavar=option.metavar, choices=option.choices)
            if option.repeat:
                kwargs["action"] = "append"
        target.add_argument(option.cli_flag, **kwargs)


def _options(args) -> ConvertOptions:
    given = {name: getattr(args, name) for name in OPTIONS if getattr(args, name) is not None}
    given.update({name: ",".join(value) for name, value in given.items()
                  if isinstance(value, list)})  # a repeated flag
    given.setdefault("workers", os.cpu_count() or 1)
    return ConvertOptions(**given)


@contextmanager
def _converting():
    """The converter's errors as one line with their exit code."""
    try:
        yield
    except ConverterError as exc:
        raise CommandFailed(exc.message, exc.exit_code) from None
    except Exception as exc:
        if is_out_of_memory(exc):
            raise CommandFailed(OUT_OF_MEMORY, Exit.NO_MEMORY) from None
        raise  # a bug: the dispatcher's one line (EPHEMESH_DEBUG=1 shows the traceback)


def _check_inputs(paths) -> None:
    for path in paths:
        if not os.path.exists(path):
            raise CommandFailed(f"no such file or folder: {path}", Exit.UNREADABLE)


def run_convert(args) -> None:
    _check_inputs(args.inputs)
    opts = _options(args)
    bar = None if args.no_progress or not sys.stderr.isatty() else _ProgressBar()
    try:
        with _converting():
            result = convert(args.inputs, opts, output=args.output,
                             progress=bar.update if bar else None)
    except OSError as exc:  # e.g. output folder missing or not writable
        raise CommandFailed(f"cannot write output: {exc.strerror or 'I/O error'}",
                            Exit.UNREADABLE) from None
    finally:
        if bar:
            bar.close()
    report = result.report
    if args.report:
        text = json.dumps(report, indent=2)
        if args.report == "-":
            print(text)
        else:
            with open(args.report, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
    for warning in report["warnings"]:
        print(f"ephemesh: warning: {warning}", file=sys.stderr)
    if args.report != "-":
        print(
            f"{args.output}: {report['triangles']} triangles, {report['volume_mm3'] / 1000:.1f} cm³, "
            f"{'watertight' if report['watertight'] else 'NOT watertight'}, "
            f"{report['components']} part(s), {report['frame']} mm, "
            f"{report['timings_s']['total']:.2f} s"
        )


def run_series(args) -> None:
    _check_inputs(args.inputs)
    with _converting():
        listing = list_series(args.inputs)
    if args.json:
        out = {"series": [dict(s.safe_dict(), uid=s.uid, number=s.number,
                               description=s.description) for s in listing.series],
               "skipped": listing.skipped, "warnings": listing.warnings}
        print(json.dumps(out, indent=2))
        return
    for s in listing.series:
        spacing = "×".join(f"{v:g}" for v in s.spacing)
        print(f"{s.index:>2}  #{s.number if s.number is not None else '-':<4} {s.modality:<3} "
              f"{s.slices:>4} slices  {s.rows}×{s.columns}  {spacing} mm  {s.orientation:<8} "
              f"{s.uid}  {s.description}")
    if listing.skipped:
        skipped = ", ".join(f"{n} {kind}" for kind, n in sorted(listing.skipped.items()))
        print(f"skipped: {skipped}")


def run_sample(args) -> None:
    from .sample import write_sample_series  # only here: it makes 1 ms of every start

    try:
        count = write_sample_series(args.folder, slices=args.slices, size=args.size)
    except ValueError as exc:
        raise CommandFailed(str(exc), Exit.USAGE) from None
    except OSError as exc:
        raise CommandFailed(f"cannot write the sample series: {exc.strerror or 'I/O error'}",
                            Exit.UNREADABLE) from None
    print(f"{args.folder}: {count} CT slices written")


def run_deidentify(args) -> None:
    from .deidentify import deidentify  # only here: pydicom is imported by the command

    _check_inputs(args.inputs)
    out = args.output
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise CommandFailed(f"{out} is not an empty folder (nothing is overwritten)", Exit.USAGE)
    try:
        with _converting():
            summary = deidentify(args.inputs, out)
    except OSError as exc:
        raise CommandFailed(f"cannot write into {out}: {exc.strerror or 'I/O error'}",
                            Exit.UNREADABLE) from None
    if not summary.written:
        raise CommandFailed("no DICOM file in the inputs", Exit.UNREADABLE)
    skipped = f", {summary.skipped} skipped (not DICOM, or a DICOMDIR)" if summary.skipped else ""
    print(f"{out}: {summary.written} files de-identified{skipped}")


class _ProgressBar:
    """A one-line progress bar on the terminal: ``reading  [#####.....]  45%``."""

    WIDTH = 30

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.shown = None

    def update(self, stage: str, percent: float) -> None:
        filled = int(self.WIDTH * percent / 100)
        line = f"\r{stage:<8} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {percent:5.1f}%"
        if line != self.shown:
            self.stream.write(line)
            self.stream.flush()
            self.shown = line

    def close(self):
        if self.shown:
            self.stream.write("\r" + " " * len(self.shown) + "\r")
            self.stream.flush()
