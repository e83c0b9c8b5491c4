"""Waiting for something a real process does, with a limit."""

from __future__ import annotations

import time


def wait_for(predicate, timeout=60, what="a condition"):
    """Poll ``predicate`` every 0.1 s; return its first true value, or fail
    after ``timeout`` seconds naming ``what`` was awaited."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
