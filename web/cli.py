"""The ``ephemesh`` console script: the one command line of every layer.

It registers each layer's commands (``converter/commands.py``,
``worker/commands.py``, ``web/commands.py``, in that order in ``--help``),
owns the one-line error (``ephemesh: error: …``) and exits with a code from
the one table, ``converter.exits.Exit``, which ``--help`` shows.  A handler
raises ``CommandFailed`` to fail; anything else it raises is a bug: one
line and exit 1 (``EPHEMESH_DEBUG=1`` shows the traceback, which may quote
values from the files, so never by default).

Child processes (``worker.runtime`` starts ``worker`` and ``cron``) run as
``python -m web.cli``.  The command modules import their heavy parts
inside the handlers, so ``ephemesh --help`` and ``ephemesh convert`` start
without Flask, RQ, SQLAlchemy or pydicom.
"""

from __future__ import annotations

import argparse
import os
import sys

# numpy's OpenBLAS would start a thread per core that spins after each call;
# the kernels that matter are ours (they share the cores themselves), so one
# BLAS thread: read when numpy loads, so set before the first import of it
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from converter import commands as converter_commands
from converter.exits import CommandFailed, Exit, exit_codes_text
from worker import commands as worker_commands

from . import commands as web_commands

#: every layer's commands, in ``--help`` order
LAYERS = (converter_commands, worker_commands, web_commands)


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are the one-line ``CommandFailed`` too."""

    def error(self, message):
        raise CommandFailed(f"{message} (see '{self.prog} --help')", Exit.USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ephemesh",
        description="Turn a CT or MR DICOM series into a printable STL surface, keeping nothing.",
        epilog=exit_codes_text(),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for layer in LAYERS:
        layer.register(sub)
    return parser


def run(argv=None) -> int:
    """Parse ``argv``, run the command; return its exit code."""
    try:
        args = build_parser().parse_args(argv)
        args.handler(args)
    except CommandFailed as exc:
        _say(exc.message)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ephemesh: interrupted", file=sys.stderr)
        return Exit.INTERRUPTED
    except Exception:
        if os.environ.get("EPHEMESH_DEBUG") == "1":
            raise
        _say("internal error: the command failed unexpectedly "
             "(run with EPHEMESH_DEBUG=1 to see why)")
        return Exit.FAILED
    return Exit.DONE


def _say(message) -> None:
    print(f"ephemesh: error: {message}", file=sys.stderr)


def main(argv=None) -> None:
    sys.exit(run(argv))


if __name__ == "__main__":  # pragma: no cover
    main()
