"""The ``ephemesh`` console script: one dispatcher for every layer's commands.

Each layer contributes ``register(subparsers)``; handlers import what they
need lazily so ``ephemesh --help`` and ``ephemesh convert`` stay fast.
A handler returns the exit code; errors are one line, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: modules that contribute commands, in help order
COMMAND_MODULES = ("converter.commands", "worker.commands", "web.commands")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ephemesh",
        description="Turn a CT or MR DICOM series into a printable STL surface, keeping nothing.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # that layer (or its commands module) does not exist yet: skip it;
            # a missing dependency *inside* a layer still fails loudly
            if exc.name and name.startswith(exc.name):
                continue
            raise
        module.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.handler(args)
    except KeyboardInterrupt:
        print("ephemesh: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
