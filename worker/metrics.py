"""The service's metrics for Prometheus (``/metrics`` on the web and on a
worker host's health port), each declared once here.

Events are counted where they happen, in whichever process that is (a
work horse that lives for one job, the web, the sweeper), into one Redis
hash (``ephemesh:metrics``), so no per-process files are needed and every
``/metrics`` gives the whole service's totals: scrape one of them (a Redis
restart, or an hour with nothing counted — the hash lives at most the
retention, like every ephemesh key — starts the counts again, which
Prometheus reads as a counter reset).
Deletions are read from the purge ledger, which is kept and so only grows;
queue depth, workers, the oldest live object and the last sweep are read at
scrape time.  Labels are fixed words only (outcomes, stable error codes,
kinds, reasons): never a job id, an address or anything from a file.
A metric that cannot be written (Redis away) is dropped, never the job.
"""

from __future__ import annotations

import json
import logging
import time

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import CollectorRegistry
from redis.exceptions import RedisError
from sqlalchemy import func, select

from .states import STORED

log = logging.getLogger("ephemesh.metrics")
KEY = "ephemesh:metrics"

#: counters: name (without ``_total``) → (help, label names)
COUNTERS = {
    "ephemesh_jobs": ("Conversion jobs ended, by outcome (done, failed) and error code",
                      ("outcome", "code")),
    "ephemesh_received_bytes": ("Upload bytes stored for conversion", ()),
    "ephemesh_sent_bytes": ("Result bytes sent to their owners", ()),
}
#: histograms: name → (help, bucket upper bounds)
HISTOGRAMS = {
    "ephemesh_conversion_seconds": ("Seconds a conversion job ran (done jobs)",
                                    (0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 900)),
    "ephemesh_queue_wait_seconds": ("Seconds a conversion job waited in the queue",
                                    (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900)),
}


def _field(name, labels=()) -> str:
    return name + "|" + json.dumps(list(labels))


def _add(ctx, increments) -> None:
    """Apply ``[(field, amount)]`` to the hash; like every ephemesh key it
    lives at most the retention (an idle hour resets the counts)."""
    try:
        pipe = ctx.redis.pipeline(transaction=False)
        for field, amount in increments:
            pipe.hincrbyfloat(KEY, field, float(amount))
        pipe.expire(KEY, ctx.settings.retention_seconds)
        pipe.execute()
    except (RedisError, OSError):
        log.warning("a metric was not counted (Redis unreachable)")


def count(ctx, name: str, amount: float = 1, labels=()) -> None:
    """Add ``amount`` to counter ``name`` (label values in the declared order)."""
    declared = COUNTERS[name][1]
    if len(labels) != len(declared):
        raise ValueError(f"{name} takes the labels {declared}")
    _add(ctx, [(_field(name, [str(v) for v in labels]), amount)])


def observe(ctx, name: str, value: float) -> None:
    """One observation of histogram ``name``."""
    bounds = HISTOGRAMS[name][1]
    bucket = next((str(b) for b in bounds if value <= b), "+Inf")
    _add(ctx, [(_field(name, ["bucket", bucket]), 1), (_field(name, ["sum"]), value)])


def job_ended(ctx, outcome: str, code: str | None = None) -> None:
    count(ctx, "ephemesh_jobs", 1, (outcome, code or ""))


class Collector:
    """Reads everything at scrape time (``prometheus_client`` collector)."""

    def __init__(self, ctx):
        self.ctx = ctx

    def collect(self):
        yield from self._events()
        yield from self._deletions()
        yield from self._queues()
        yield from self._retention()

    def _events(self):
        try:
            raw = self.ctx.redis.hgetall(KEY)
        except (RedisError, OSError):
            raw = {}
        values: dict[str, dict] = {}
        for field, value in raw.items():
            name, _, labels = field.decode().partition("|")
            values.setdefault(name, {})[tuple(json.loads(labels))] = float(value)
        for name, (text, labels) in COUNTERS.items():
            family = CounterMetricFamily(name, text, labels=labels)
            for key, value in sorted(values.get(name, {}).items()):
                family.add_metric(list(key), value)
            if not labels and not values.get(name):
                family.add_metric([], 0.0)
            yield family
        for name, (text, bounds) in HISTOGRAMS.items():
            seen = values.get(name, {})
            buckets, total = [], 0.0
            for bound in [*map(str, bounds), "+Inf"]:
                total += seen.get(("bucket", bound), 0.0)
                buckets.append((bound, total))
            family = HistogramMetricFamily(name, text)
            family.add_metric([], buckets, seen.get(("sum",), 0.0))
            yield family

    def _deletions(self):
        from .records import purge_ledger as t

        objects = CounterMetricFamily("ephemesh_deleted_objects",
                                      "Things deleted (purge ledger), by kind and reason",
                                      labels=("kind", "reason"))
        size = CounterMetricFamily("ephemesh_deleted_bytes",
                                   "Bytes deleted (purge ledger), by kind", labels=("kind",))
        late = CounterMetricFamily("ephemesh_late_deletions",
                                   "Deletions after their deadline, by kind", labels=("kind",))
        try:
            with self.ctx.records.engine.connect() as c:
                rows = c.execute(select(t.c.kind, t.c.reason, func.sum(t.c.count),
                                        func.sum(t.c.bytes),
                                        func.sum(t.c.late.cast(t.c.count.type)))
                                 .group_by(t.c.kind, t.c.reason)).all()
        except Exception:  # the database away: these families stay empty this time
            rows = []
        by_kind: dict[str, list[float]] = {}
        for kind, reason, n, nbytes, nlate in rows:
            objects.add_metric([kind, reason], float(n or 0))
            totals = by_kind.setdefault(kind, [0.0, 0.0])
            totals[0] += float(nbytes or 0)
            totals[1] += float(nlate or 0)
        for kind, (nbytes, nlate) in sorted(by_kind.items()):
            size.add_metric([kind], nbytes)
            late.add_metric([kind], nlate)
        yield from (objects, size, late)

    def _queues(self):
        from rq import Queue, Worker

        depth = GaugeMetricFamily("ephemesh_queue_depth", "Jobs waiting in each queue",
                                  labels=("queue",))
        workers = GaugeMetricFamily("ephemesh_workers", "RQ workers, busy or idle",
                                    labels=("state",))
        settings = self.ctx.settings
        try:
            for label, name in (("conversion", settings.queue),
                                ("maintenance", settings.maintenance_queue)):
                depth.add_metric([label], float(Queue(name, connection=self.ctx.redis).count))
            states = [w.get_state() for w in Worker.all(connection=self.ctx.redis)]
            workers.add_metric(["busy"], float(sum(s == "busy" for s in states)))
            workers.add_metric(["idle"], float(sum(s != "busy" for s in states)))
        except (RedisError, OSError):
            pass
        yield from (depth, workers)

    def _retention(self):
        now = time.time()
        oldest = GaugeMetricFamily("ephemesh_oldest_live_object_age_seconds",
                                   "Age of the oldest upload or result still stored (0: none)")
        live = GaugeMetricFamily("ephemesh_live_objects", "Uploads and results stored",
                                 labels=("kind",))
        since = GaugeMetricFamily("ephemesh_last_sweep_age_seconds",
                                  "Seconds since the sweeper last finished (-1: never)")
        try:
            created = []
            for kind in STORED:
                entries = self.ctx.store.entries(kind)
                live.add_metric([kind], float(len(entries)))
                created += [e.created for e in entries]
            oldest.add_metric([], max(0.0, now - min(created)) if created else 0.0)
        except Exception:  # the store away
            pass
        try:
            last = self.ctx.records.last_sweep()
            since.add_metric([], -1.0 if last is None else max(0.0, now - last))
        except Exception:
            pass
        yield from (oldest, live, since)


def registry(ctx) -> CollectorRegistry:
    """A registry holding only the service's collector (no process metrics)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(Collector(ctx))
    return reg


def exposition(reg) -> tuple[str, bytes]:
    """``(content type, body)`` of a scrape."""
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

    return CONTENT_TYPE_LATEST, generate_latest(reg)
