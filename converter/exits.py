"""How a command ends: the exit codes, and ``CommandFailed``.

A leaf module (it imports nothing), so the converter's errors carry their
exit code and every layer's commands (``converter/commands.py``,
``worker/commands.py``, ``web/commands.py``) raise the one exception; the
``ephemesh`` dispatcher (``web/cli.py``) prints it as one line,
``ephemesh: error: …``, exits with its code and shows this table in
``--help``.
"""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    """The exit codes of every ``ephemesh`` command, with what each means."""

    def __new__(cls, code, meaning):
        member = int.__new__(cls, code)
        member._value_ = code
        member.meaning = meaning
        return member

    DONE = 0, "done"
    FAILED = 1, "failed (a part of the service, or a bug)"
    USAGE = 2, "usage (a bad argument or setting)"
    NO_SERIES = 3, "no usable series"
    UNREADABLE = 4, "unreadable input (or output)"
    NO_MEMORY = 5, "out of memory"
    INVALID = 6, "does not verify (a receipt, the audit log)"
    INTERRUPTED = 130, "interrupted"


class CommandFailed(Exception):
    """A command cannot do what was asked; ``message`` is one line, safe to show
    (no DICOM value, no file content)."""

    def __init__(self, message: str, exit_code: Exit = Exit.FAILED):
        super().__init__(message)
        self.message, self.exit_code = message, exit_code


def exit_codes_text() -> str:
    """The table as ``--help`` shows it."""
    return "exit codes: " + ", ".join(f"{e.value} {e.meaning}" for e in Exit)
