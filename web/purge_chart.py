"""The purge report's chart on the admin page: the ledger's per-day figures
as coordinates for an SVG drawn by the template (no script).  The table, CSV
and JSON of the same rows come from ``worker.report``."""

from __future__ import annotations

import datetime
import time

HOUR = 3600.0


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


def chart(report_rows, width=640, height=240, today: str | None = None,
          days: int | None = None) -> dict:
    """Coordinates for the SVG chart: bars of deletions per day, a line of the
    oldest age at deletion per day, and the one-hour line (right axis).

    The x axis is the calendar: the ``days`` up to today (the admin's "Days
    shown"), or without it 7 to 30 days from the first data day; one busy day
    is one slim bar, and quiet days are gaps."""
    data = {d["day"]: d for d in per_day(report_rows)}
    end = datetime.date.fromisoformat(today or time.strftime("%Y-%m-%d", time.gmtime()))
    if data:
        end = max(end, datetime.date.fromisoformat(max(data)))
    first = datetime.date.fromisoformat(min(data)) if data else end
    span = max(1, int(days)) if days else max(7, min(30, (end - first).days + 1))
    calendar = [(end - datetime.timedelta(days=span - 1 - i)).isoformat() for i in range(span)]
    days = [data[day] for day in calendar if day in data]
    left, right, top, bottom = 48, 56, 16, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    slot = plot_w / span
    max_count = max([d["count"] for d in days] + [1])
    max_age = max([d["oldest_age_s"] for d in days] + [HOUR * 1.25])

    def y_count(v):
        return top + plot_h - plot_h * v / max_count

    def y_age(v):
        return top + plot_h - plot_h * v / max_age

    bars, points, labels = [], [], []
    step = -(-span // 8)  # at most 8 dates under the axis, today's always
    for i, day in enumerate(calendar):
        x = left + i * slot
        if (span - 1 - i) % step == 0:
            labels.append({"x": round(x + slot / 2, 1), "text": day[5:]})
        d = data.get(day)
        if d is None:
            continue
        bars.append({"x": round(x + slot * 0.15, 1), "y": round(y_count(d["count"]), 1),
                     "w": round(slot * 0.7, 1),
                     "h": round(top + plot_h - y_count(d["count"]), 1),
                     "late": d["late"] > 0, "day": d["day"], "count": d["count"]})
        points.append((round(x + slot / 2, 1), round(y_age(d["oldest_age_s"]), 1)))
    return {
        "width": width, "height": height, "left": left, "top": top,
        "plot_w": plot_w, "plot_h": plot_h, "bottom_y": top + plot_h,
        "bars": bars, "line": " ".join(f"{x},{y}" for x, y in points), "points": points,
        "hour_y": round(y_age(HOUR), 1), "max_count": max_count,
        "max_age_min": round(max_age / 60), "labels": labels, "days": days,
    }
