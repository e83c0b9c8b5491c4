"""The purge report: the ledger's per-day figures as a table, a chart (SVG
drawn here, no script), CSV and JSON."""

from __future__ import annotations

import csv
import io
import time

COLUMNS = ("day", "kind", "reason", "count", "bytes", "oldest_age_s", "late")
HOUR = 3600.0


def rows(records, days: int | None = None) -> list[dict]:
    since = None if days is None else time.time() - days * 86400
    return [{c: r.get(c) for c in COLUMNS} for r in records.purge_summary(since)]


def as_csv(report_rows) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in report_rows:
        writer.writerow(r)
    return out.getvalue()


def per_day(report_rows) -> list[dict]:
    """``[{"day", "count", "bytes", "oldest_age_s", "late"}]`` in day order."""
    days = {}
    for r in report_rows:
        d = days.setdefault(r["day"], {"day": r["day"], "count": 0, "bytes": 0,
                                       "oldest_age_s": 0.0, "late": 0})
        d["count"] += r["count"]
        d["bytes"] += r["bytes"]
        d["late"] += r["late"]
        if r["kind"] in ("input", "result"):  # the age that the one-hour promise is about
            d["oldest_age_s"] = max(d["oldest_age_s"], r["oldest_age_s"] or 0.0)
    return [days[k] for k in sorted(days)]


def chart(report_rows, width=640, height=240) -> dict:
    """Coordinates for the SVG chart: bars of deletions per day, a line of the
    oldest age at deletion per day, and the one-hour line (right axis)."""
    days = per_day(report_rows)[-30:]
    left, right, top, bottom = 48, 56, 16, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(len(days), 1)
    slot = plot_w / n
    max_count = max([d["count"] for d in days] + [1])
    max_age = max([d["oldest_age_s"] for d in days] + [HOUR * 1.25])

    def y_count(v):
        return top + plot_h - plot_h * v / max_count

    def y_age(v):
        return top + plot_h - plot_h * v / max_age

    bars, points = [], []
    for i, d in enumerate(days):
        x = left + i * slot
        bars.append({"x": round(x + slot * 0.15, 1), "y": round(y_count(d["count"]), 1),
                     "w": round(slot * 0.7, 1),
                     "h": round(top + plot_h - y_count(d["count"]), 1),
                     "late": d["late"] > 0, "day": d["day"], "count": d["count"]})
        points.append((round(x + slot / 2, 1), round(y_age(d["oldest_age_s"]), 1)))
    labels = [{"x": b["x"] + b["w"] / 2, "text": b["day"][5:]} for b in bars]
    if len(labels) > 10:
        step = -(-len(labels) // 10)
        labels = labels[::step]
    return {
        "width": width, "height": height, "left": left, "top": top,
        "plot_w": plot_w, "plot_h": plot_h, "bottom_y": top + plot_h,
        "bars": bars, "line": " ".join(f"{x},{y}" for x, y in points), "points": points,
        "hour_y": round(y_age(HOUR), 1), "max_count": max_count,
        "max_age_min": round(max_age / 60), "labels": labels, "days": days,
    }
