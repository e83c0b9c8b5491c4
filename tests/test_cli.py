"""The ``ephemesh`` dispatcher lists every layer's commands, stays quick,
and owns the one-line error and the exit codes."""

import subprocess
import sys

from converter.exits import Exit
from web.cli import build_parser


def test_converter_commands_are_listed():
    parser = build_parser()
    text = parser.format_help()
    for command in ("convert", "series", "sample"):
        assert command in text


def test_every_layers_commands_and_the_exit_codes_are_in_the_help():
    text = " ".join(build_parser().format_help().split())
    for command in ("convert", "series", "sample", "deidentify", "worker", "cron", "sweep",
                    "keys", "report", "receipt", "audit", "serve", "admin", "subject"):
        assert command in text
    for code in Exit:
        assert f"{code.value} {code.meaning}" in text


def test_help_does_not_import_heavy_libraries():
    code = ("import sys; from web.cli import build_parser; build_parser(); "
            "print(','.join(m for m in ('pydicom', 'skimage', 'rq', 'flask', 'sqlalchemy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_a_usage_error_is_one_line_and_exit_2():
    proc = subprocess.run([sys.executable, "-m", "web.cli", "keys", "rotate"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == Exit.USAGE
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("ephemesh: error: ")
    assert "'ephemesh keys --help'" in proc.stderr
