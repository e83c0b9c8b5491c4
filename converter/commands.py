"""``ephemesh convert`` and ``ephemesh series``: the converter on the command line.

Errors print one line (``ephemesh: error: ...``) and exit with 2 (usage),
3 (no usable series), 4 (unreadable input) or 5 (out of memory); never a
traceback.  A bug (an error that is not about the input) is one line too,
exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

PRESET_NAMES = ("bone", "skin", "soft-tissue", "teeth", "airway", "auto")
EXIT_INTERNAL = 1
EXIT_NO_MEMORY = 5
OUT_OF_MEMORY = "out of memory: the series needs more memory than is free here"


def register(subparsers) -> None:
    """Add ``convert`` and ``series`` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "convert", help="convert a DICOM series to STL",
        description="Convert a DICOM series (folders, files or zips) to an STL surface.",
        epilog="exit codes: 0 done, 1 internal error, 2 usage, 3 no usable series, "
               "4 unreadable input, 5 out of memory",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="folder, file or zip")
    p.add_argument("-o", "--output", required=True, metavar="OUT.stl", help="STL file to write")
    level = p.add_mutually_exclusive_group()
    level.add_argument("--threshold", type=float, metavar="HU", help="isovalue in modality units")
    level.add_argument("--preset", choices=PRESET_NAMES,
                       help="bone 300, skin -400, soft-tissue 20, teeth 1200, airway -400 (air "
                            "inside the body), auto (Otsu). Default: bone for CT, auto otherwise")
    p.add_argument("--series", metavar="UID|N", help="series UID or number (default: largest)")
    p.add_argument("--largest", action="store_true", help="keep only the largest component")
    p.add_argument("--min-island", type=float, metavar="MM3", dest="min_island_mm3",
                   help="drop parts enclosing less than this volume")
    p.add_argument("--smooth", type=int, default=0, metavar="N", help="Taubin smoothing iterations")
    dec = p.add_mutually_exclusive_group()
    dec.add_argument("--decimate", type=float, metavar="FRACTION",
                     help="fraction of triangles to keep, in (0, 1]")
    dec.add_argument("--max-triangles", type=int, metavar="N", help="triangle budget")
    p.add_argument("--frame", choices=("lps", "ras"), default="lps", help="output frame (default lps)")
    p.add_argument("--ascii", action="store_true", help="write ASCII STL")
    p.add_argument("--step", type=int, default=1, metavar="N", help="sample every N voxels (preview)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes to use (default: all cores; 1 = one core)")
    p.add_argument("--report", metavar="REPORT.json", help="write the JSON report here ('-' = stdout)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_convert)

    s = subparsers.add_parser("series", help="list the series found in the inputs",
                              description="List every series found, one line each.")
    s.add_argument("inputs", nargs="+", metavar="INPUT", help="folder, file or zip")
    s.add_argument("--json", action="store_true", help="print JSON instead of lines")
    s.set_defaults(handler=run_series)

    m = subparsers.add_parser("sample", help="write a synthetic CT series to try ephemesh on",
                              description="Write a synthetic CT phantom series (no patient data).")
    m.add_argument("folder", help="folder to write into (created if missing)")
    m.set_defaults(handler=run_sample)


def _fail(message: str, code: int) -> int:
    print(f"ephemesh: error: {message}", file=sys.stderr)
    return code


def _internal_error() -> int:
    """A bug, not bad input: one line and exit 1; ``EPHEMESH_DEBUG=1`` shows the
    traceback (which may quote values from the files, so never by default)."""
    if os.environ.get("EPHEMESH_DEBUG") == "1":
        raise
    return _fail("internal error: the conversion failed unexpectedly "
                 "(run with EPHEMESH_DEBUG=1 to see why)", EXIT_INTERNAL)


def _check_inputs(paths) -> str | None:
    for path in paths:
        if not os.path.exists(path):
            return f"no such file or folder: {path}"
    return None


def run_convert(args) -> int:
    from .errors import EXIT_UNREADABLE, ConverterError, is_out_of_memory  # noqa: PLC0415
    from .pipeline import ConvertOptions, convert  # noqa: PLC0415

    problem = _check_inputs(args.inputs)
    if problem:
        return _fail(problem, EXIT_UNREADABLE)
    opts = ConvertOptions(
        threshold=args.threshold, preset=args.preset, series=args.series, largest=args.largest,
        min_island_mm3=args.min_island_mm3, smooth=args.smooth, decimate=args.decimate,
        max_triangles=args.max_triangles, frame=args.frame, ascii=args.ascii, step=args.step,
        workers=args.workers or (os.cpu_count() or 1),
    )
    bar = None if args.no_progress or not sys.stderr.isatty() else _ProgressBar()
    try:
        result = convert(args.inputs, opts, output=args.output,
                         progress=bar.update if bar else None)
    except ConverterError as exc:
        return _fail(exc.message, exc.exit_code)
    except OSError as exc:  # e.g. output folder missing or not writable
        return _fail(f"cannot write output: {exc.strerror or 'I/O error'}", 4)
    except Exception as exc:  # noqa: BLE001 - a bug: one line (its text could hold DICOM values)
        if is_out_of_memory(exc):
            return _fail(OUT_OF_MEMORY, EXIT_NO_MEMORY)
        return _internal_error()
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
    return 0


def run_series(args) -> int:
    from .errors import EXIT_UNREADABLE, ConverterError, is_out_of_memory  # noqa: PLC0415
    from .pipeline import list_series  # noqa: PLC0415

    problem = _check_inputs(args.inputs)
    if problem:
        return _fail(problem, EXIT_UNREADABLE)
    try:
        listing = list_series(args.inputs)
    except ConverterError as exc:
        return _fail(exc.message, exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - see run_convert
        if is_out_of_memory(exc):
            return _fail(OUT_OF_MEMORY, EXIT_NO_MEMORY)
        return _internal_error()
    if args.json:
        out = {"series": [dict(s.safe_dict(), uid=s.uid, number=s.number,
                               description=s.description) for s in listing.series],
               "skipped": listing.skipped, "warnings": listing.warnings}
        print(json.dumps(out, indent=2))
        return 0
    for s in listing.series:
        spacing = "×".join(f"{v:g}" for v in s.spacing)
        print(f"{s.index:>2}  #{s.number if s.number is not None else '-':<4} {s.modality:<3} "
              f"{s.slices:>4} slices  {s.rows}×{s.columns}  {spacing} mm  {s.orientation:<8} "
              f"{s.uid}  {s.description}")
    if listing.skipped:
        skipped = ", ".join(f"{n} {kind}" for kind, n in sorted(listing.skipped.items()))
        print(f"skipped: {skipped}")
    return 0


def run_sample(args) -> int:
    from .sample import write_sample_series  # noqa: PLC0415

    try:
        count = write_sample_series(args.folder)
    except OSError as exc:
        return _fail(f"cannot write the sample series: {exc.strerror or 'I/O error'}", 4)
    print(f"{args.folder}: {count} CT slices written")
    return 0


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


def main(argv=None) -> int:
    """Run the converter commands alone (``python -m converter.commands``)."""
    parser = argparse.ArgumentParser(prog="ephemesh")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
