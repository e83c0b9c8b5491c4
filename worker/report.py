"""Purge reports as a table, CSV or JSON (``ephemesh report purges``; the
admin pages use the same rows)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import time

SUMMARY_COLUMNS = ("day", "kind", "reason", "count", "bytes", "oldest_age_s", "late")
LEDGER_COLUMNS = ("deleted", "kind", "object_id", "reason", "count", "bytes", "created",
                  "deadline", "late")
_AGE = re.compile(r"^(\d+)([dhm])$")


def parse_since(text):
    """``None``, a date, an ISO time (UTC) or an age (``7d``, ``12h``, ``30m``) → UNIX time."""
    if text is None:
        return None
    text = text.strip()
    match = _AGE.match(text)
    if match:
        n, unit = int(match.group(1)), match.group(2)
        return time.time() - n * {"d": 86400, "h": 3600, "m": 60}[unit]
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("--since takes a date (2026-11-01), a time (2026-11-01T12:00) "
                         "or an age (7d, 12h, 30m)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def format_time(ts):
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def _cell(column, value, rows_kind):
    if column in ("deleted", "created", "deadline"):
        return format_time(value)
    if column == "late" and rows_kind == "ledger":
        return "LATE" if value else ""
    return "" if value is None else str(value)


def render(rows, fmt="table", rows_kind="summary") -> str:
    """Render summary (or ledger) rows as ``table``, ``csv`` or ``json``."""
    columns = SUMMARY_COLUMNS if rows_kind == "summary" else LEDGER_COLUMNS
    if fmt == "json":
        return json.dumps([{c: r.get(c) for c in columns} for r in rows], indent=1) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow([r.get(c) if c not in ("late",) else int(bool(r.get(c)))
                             for c in columns])
        return buf.getvalue()
    if not rows:
        return "nothing deleted in this period\n"
    cells = [[_cell(c, r.get(c), rows_kind) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines) + "\n"
