"""``ephemesh cron``: the sweeper's clock.

Every ``sweep_seconds`` RQ's ``CronScheduler`` puts a sweep job on the
maintenance queue, which every worker serves first.  Because a deadline
must not depend on a worker being free (or alive, or on Redis at all), this
process also watches the sweep record: when no sweep has run for one and a
half periods it sweeps by itself.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

from redis.exceptions import RedisError
from rq.cron import CronScheduler

from .context import Context
from .sweeper import sweep, sweep_job

log = logging.getLogger("ephemesh.cron")


def _scheduler(ctx):
    settings = ctx.settings
    period = settings.sweep_seconds
    scheduler = CronScheduler(connection=ctx.redis, name=f"ephemesh-cron-{int(time.time())}")
    scheduler.register(
        sweep_job, queue_name=settings.maintenance_queue, interval=period,
        job_timeout=max(30, period * 5), ttl=period,  # a sweep nobody took is dropped
        result_ttl=min(settings.retention_seconds, max(60, period * 2)),
        failure_ttl=settings.retention_seconds,
    )
    return scheduler


def run(settings=None, stop: threading.Event | None = None) -> None:
    """Run until ``stop`` is set, SIGINT or SIGTERM."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    ctx = Context(settings)
    period = ctx.settings.sweep_seconds
    scheduler = _scheduler(ctx)
    born = False
    try:
        while not stop.is_set():
            try:
                if not born:
                    scheduler.register_birth()
                    born = True
                if scheduler.enqueue_jobs():
                    scheduler.save()
                scheduler.heartbeat()
            except RedisError:
                log.warning("cron: Redis unreachable; sweeping here instead")
                born = False
            last = ctx.records.last_sweep()
            if last is None or time.time() - last > 1.5 * period:
                # nobody ran the sweep job in time: do it here
                sweep(ctx)
            stop.wait(min(1.0, period / 4))
    finally:
        if born:
            try:
                scheduler.register_death()
            except RedisError:
                pass
        ctx.close()
