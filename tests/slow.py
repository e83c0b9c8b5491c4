"""``ephemesh`` with slow conversions, for the tests that must catch a job
mid-way (kill its horse, watch its progress, see its key's TTL while it
runs): ``python -m tests.slow SECONDS ARGS...`` runs the real command line
(``web.cli``) with ``ARGS``, in a process whose work horses sleep
``SECONDS`` after every progress report they write.

The workers stay real RQ processes on the real Redis: RQ forks them and
their horses from this process, so they inherit the wrapped progress
callback; the processes the runtime starts (``serve``'s workers and cron)
run through this module too.  With ``TEST_REDIS_WAIT_S`` in the environment
a result writer waits that long for a Redis gone away, not
``worker.store.REDIS_WAIT_S`` (to see a job past that bound in seconds).
"""

from __future__ import annotations

import os
import sys
import time

from web import cli
from worker import runtime, store, tasks


def slow_down(delay: float) -> None:
    """Make every work horse of this process sleep ``delay`` seconds after
    each progress report it writes into its job's meta."""

    class SlowProgress(tasks.JobProgress):
        def __call__(self, stage, percent):
            before = (self.stage, self.last)
            super().__call__(stage, percent)
            if (self.stage, self.last) != before:  # it wrote a report
                time.sleep(delay)

    tasks.JobProgress = SlowProgress
    runtime.COMMAND_LINE = tuple(command(delay))


def command(delay) -> list[str]:
    """The command line of a slow ``ephemesh`` (its arguments follow)."""
    return [sys.executable, "-m", "tests.slow", str(delay)]


if __name__ == "__main__":
    slow_down(float(sys.argv[1]))
    if os.environ.get("TEST_REDIS_WAIT_S"):
        store.REDIS_WAIT_S = float(os.environ["TEST_REDIS_WAIT_S"])
    cli.main(sys.argv[2:])
