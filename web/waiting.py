"""Asking about many jobs at once, and waiting for one to change.

``GET /api/v1/jobs`` lists the caller's jobs (newest first, filtered by
status, scan or batch, a page at a time), so a batch client polls once
instead of once per job.  ``GET /api/v1/jobs/{id}?wait=S`` answers when the
job's status changes, or after ``S`` seconds (at most ``MAX_WAIT_S``): the
request listens for the worker's announcement (``worker.changes``) and
looks at the job's row at least every ``POLL_S`` seconds, and at most
``MAX_WAITERS`` requests of one web process wait at a time (a request beyond
that answers at once, with ``X-Wait: busy``), so waiters never take every
thread of the server.  Each request counts once against the rate limits,
however long it waits.
"""

from __future__ import annotations

import base64
import threading
import time
from contextlib import nullcontext

from flask import g, url_for

from worker.states import JobStatus

from .jobs import service
from .problems import workspace

MAX_WAIT_S = 30
POLL_S = 0.25
#: half the web server's default threads (``serve --threads 8``): uploads and
#: downloads always find a thread, however many clients wait (8 let 20
#: waiting clients starve the uploads; bench/service.py)
MAX_WAITERS = 4
PAGE = 50
MAX_PAGE = 500
FILTERS = ("status", "scan", "batch", "limit", "cursor")
_waiters = threading.BoundedSemaphore(MAX_WAITERS)


def wait_seconds(args) -> float:
    """The ``wait`` argument in seconds (0 without one); refused outside 0–30."""
    raw = args.get("wait")
    if raw is None or raw == "":
        return 0.0
    try:
        seconds = float(raw)
    except ValueError:
        raise workspace("invalid_wait", most=MAX_WAIT_S) from None
    if not 0 <= seconds <= MAX_WAIT_S:
        raise workspace("invalid_wait", most=MAX_WAIT_S)
    return seconds


def until_changed(view, seconds, look, listener=None):
    """``look()`` again whenever ``listener`` (a ``worker.changes.Listener``,
    not entered yet) hears of a change, and at least every ``POLL_S``, until
    its status differs from ``view``'s or ``seconds`` have passed; the latest
    view."""
    if not _waiters.acquire(blocking=False):
        g.wait_busy = True
        return view
    try:
        end = time.monotonic() + seconds
        with listener or nullcontext() as heard:
            while (left := end - time.monotonic()) > 0:
                if heard is None:
                    time.sleep(min(POLL_S, left))
                else:
                    heard.wait(min(POLL_S, left))
                latest = look()
                if latest["status"] != view["status"]:
                    return latest
        return look()
    finally:
        _waiters.release()


def _cursor(created, job_id) -> str:
    return base64.urlsafe_b64encode(f"{created!r}:{job_id}".encode()).decode()


def _after(raw):
    if not raw:
        return None
    try:
        created, job_id = base64.urlsafe_b64decode(raw.encode()).decode().split(":", 1)
        return float(created), job_id
    except (ValueError, UnicodeError):
        raise workspace("invalid_cursor") from None


def job_list(args, owner, as_json) -> dict:
    """``{"jobs": [...], "next": URL or None}`` for ``GET /api/v1/jobs``."""
    for name in args:
        if name not in FILTERS:
            raise workspace("invalid_filter", name=name[:40])
    status = None
    if args.get("status"):
        status = [s.strip() for s in args["status"].split(",") if s.strip()]
        if any(s not in set(JobStatus) for s in status):
            raise workspace("invalid_filter", name="status " + ",".join(status)[:40])
    try:
        limit = int(args.get("limit") or PAGE)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_PAGE:
        raise workspace("invalid_filter", name=f"limit (1 to {MAX_PAGE})")
    jobs = service().list_jobs(owner=owner, status=status, scan_id=args.get("scan") or None,
                               batch_id=args.get("batch") or None, limit=limit + 1,
                               after=_after(args.get("cursor")))
    page, more = jobs[:limit], len(jobs) > limit
    nxt = None
    if more:
        last = page[-1]["_cursor"]
        query = {k: v for k, v in args.items() if k != "cursor"}
        nxt = url_for("api.list_jobs", **query, cursor=_cursor(*last))
    return {"jobs": [as_json(j) for j in page], "next": nxt}
