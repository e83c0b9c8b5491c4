"""Purge reports as a table, CSV or JSON: the one renderer of ``ephemesh
report purges`` and of the admin pages' CSV and JSON downloads.

A summary row is one day, kind and reason; its ``late`` counts the late
deletions in it.  A ledger row is one deletion; its ``late`` is a flag
(``LATE`` in the table, 1 or 0 in CSV, true or false in JSON).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import time

COLUMNS = {
    "summary": ("day", "kind", "reason", "count", "bytes", "oldest_age_s", "late"),
    "ledger": ("deleted", "kind", "object_id", "reason", "count", "bytes", "created", "deadline",
               "late"),
}
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


def as_records(rows, rows_kind="summary") -> list[dict]:
    """The rows with the report's columns only, ``late`` a count (summary)
    or a flag (ledger): what JSON holds."""
    late = bool if rows_kind == "ledger" else (lambda n: int(n or 0))
    return [{c: late(r.get(c)) if c == "late" else r.get(c) for c in COLUMNS[rows_kind]}
            for r in rows]


def render(rows, fmt="table", rows_kind="summary") -> str:
    """Render summary (or ledger) rows as ``table``, ``csv`` or ``json``."""
    columns = COLUMNS[rows_kind]
    if fmt == "json":
        return json.dumps(as_records(rows, rows_kind), indent=1) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for r in as_records(rows, rows_kind):
            writer.writerow([int(v) if isinstance(v, bool) else v for v in r.values()])
        return buf.getvalue()
    if not rows:
        return "nothing deleted in this period\n"
    cells = [[_cell(c, r.get(c), rows_kind) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines) + "\n"
