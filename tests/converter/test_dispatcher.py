"""The ``ephemesh`` dispatcher lists every layer's commands and stays quick."""

import subprocess
import sys

from web.cli import build_parser


def test_converter_commands_are_listed():
    parser = build_parser()
    text = parser.format_help()
    for command in ("convert", "series", "sample"):
        assert command in text


def test_help_does_not_import_heavy_libraries():
    code = ("import sys; from web.cli import build_parser; build_parser(); "
            "print(','.join(m for m in ('pydicom', 'skimage', 'rq', 'flask', 'sqlalchemy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
