"""How the processes log: lines of text (the default) or, with
``EPHEMESH_LOG_FORMAT=json``, one JSON object a line: ``time`` (UTC, ISO
8601 to the millisecond), ``level``, ``logger``, ``event`` (the message),
and when known ``request_id`` (the web's, one per request), ``job_id`` (the
RQ job being run: an opaque id) and ``duration_s``.

The rules of every sink hold: messages are the code's own fixed texts with
opaque ids and numbers; an exception is logged by its type only (its text
and traceback may hold DICOM values or paths), in both formats.
``configure()`` sets up the root logger once per process (``serve``,
``worker``, ``cron``; RQ then adds no handler of its own).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
#: the web's request id, set for each request (``web/app.py``)
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id",
                                                                        default=None)


def _job_id() -> str | None:
    try:
        from rq import get_current_job

        job = get_current_job()
    except Exception:  # outside a work horse
        return None
    return job.id if job is not None else None


class _NoTracebacks(logging.Filter):
    """An exception's text never reaches a log: only its type, as ``exc_type``."""

    def filter(self, record):
        if record.exc_info:
            kind = record.exc_info[0]
            record.exc_type = kind.__name__ if kind else None
            record.exc_info = None
            record.exc_text = None
        record.stack_info = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid:
            line["request_id"] = rid
        job = getattr(record, "job_id", None) or _job_id()
        if job:
            line["job_id"] = job
        for extra in ("duration_s", "status", "route", "method", "exc_type"):
            value = getattr(record, extra, None)
            if value is not None:
                line[extra] = value
        return json.dumps(line, ensure_ascii=True, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    def format(self, record) -> str:
        text = super().format(record)
        exc = getattr(record, "exc_type", None)
        return f"{text} ({exc})" if exc else text


def log_format(environ=None) -> str:
    import os

    env = os.environ if environ is None else environ
    value = (env.get("EPHEMESH_LOG_FORMAT") or "text").strip().lower()
    if value not in FORMATS:
        from .config import ConfigError

        raise ConfigError(f"EPHEMESH_LOG_FORMAT must be one of {', '.join(FORMATS)}, "
                          f"got {value!r}")
    return value


def is_json() -> bool:
    return getattr(logging.getLogger(), "_ephemesh_format", None) == "json"


def configure(fmt: str | None = None, level=logging.INFO, stream=None) -> None:
    """The root logger: one handler on stderr in ``fmt`` (default from
    ``EPHEMESH_LOG_FORMAT``), replacing any there."""
    fmt = fmt or log_format()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(_NoTracebacks())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    root._ephemesh_format = fmt
