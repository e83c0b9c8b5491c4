"""The facade the web layer calls: create, look at, fetch and delete jobs.

Owner tokens (``session:<id>`` or ``key:<id>``) are stored hashed; a job is
visible only to its owner.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import time

from .context import Context

OPTION_NAMES = ("threshold", "preset", "series", "largest", "min_island_mm3", "smooth",
                "decimate", "max_triangles", "frame", "ascii", "step")


class Invalid(ValueError):
    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


class NotFound(LookupError):
    pass


class Gone(LookupError):
    pass


class NotReady(LookupError):
    pass


def _owner_hash(owner: str) -> str:
    return hashlib.sha256(owner.encode()).hexdigest()


def _iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else None


class Service:
    def __init__(self, settings=None, context=None):
        self.ctx = context or Context(settings)
        self.settings = self.ctx.settings

    @property
    def records(self):
        return self.ctx.records

    @property
    def redis(self):
        return self.ctx.redis

    def close(self):
        self.ctx.close()

    def _check_options(self, options):
        from converter import ConverterError, ConvertOptions  # noqa: PLC0415

        unknown = set(options) - set(OPTION_NAMES)
        if unknown:
            raise Invalid("invalid_option", f"unknown options: {', '.join(sorted(unknown))}")
        try:
            ConvertOptions(**options).validate()
        except ConverterError as exc:
            raise Invalid(exc.code, exc.message) from None

    def create_job(self, files, options=None, *, owner, batch_id=None) -> dict:
        """Store the payload, record the job, enqueue ``convert(job_id)``."""
        options = dict(options or {})
        self._check_options(options)
        parts = [json.dumps(options).encode()]
        for f in files:
            parts.append(f if isinstance(f, bytes) else f.read())
        job_id = secrets.token_urlsafe(16)
        now = time.time()
        deadline = now + self.settings.retention_seconds
        self.ctx.store.put("input", job_id, parts, deadline, created=now)
        self.records.add_job(job_id, _owner_hash(owner), now, deadline, batch_id)
        enqueue_convert(self.ctx, job_id, deadline)
        return self.get_job(job_id, owner=owner)

    def get_job(self, job_id, *, owner):
        row = self.records.job(job_id)
        if row is None or row["owner"] != _owner_hash(owner):
            return None
        status = row["status"]
        progress = {"stage": status, "percent": 100.0 if status in ("done", "failed") else 0.0}
        if status in ("queued", "running"):
            meta = _job_meta(self.ctx, job_id)
            if meta and "progress" in meta:
                progress = meta["progress"]
        expires = row["deadline"]
        if status == "done" and row["finished"]:
            expires = row["finished"] + self.settings.retention_seconds
        return {
            "id": job_id,
            "status": status,
            "progress": progress,
            "report": json.loads(row["report"]) if row["report"] else None,
            "error": {"code": row["error_code"], "message": row["error_message"]}
            if row["error_code"] else None,
            "created_at": _iso(row["created"]),
            "expires_at": _iso(expires),
            "batch_id": row["batch_id"],
        }

    def open_result(self, job_id, *, owner):
        view = self.get_job(job_id, owner=owner)
        if view is None:
            raise NotFound(job_id)
        if view["status"] in ("queued", "running", "failed"):
            raise NotReady(job_id)
        parts = self.ctx.store.get("result", job_id)
        if view["status"] == "deleted" or parts is None:
            raise Gone(job_id)
        return io.BytesIO(parts[0]), len(parts[0])

    def delete_job(self, job_id, *, owner, reason="user-request") -> bool:
        if self.get_job(job_id, owner=owner) is None:
            return False
        for kind in ("input", "result"):
            meta = self.ctx.store.meta(kind, job_id)
            size = self.ctx.store.delete(kind, job_id)
            if size is not None:
                self.records.record_deletion(kind, job_id, size, meta and meta["created"],
                                             meta and meta["deadline"], reason)
        self.records.set_job(job_id, status="deleted")
        _delete_rq_job(self.ctx, job_id)
        self.records.audit("job-deleted", "owner", {"job": job_id, "reason": reason})
        return True


def _job_meta(ctx, job_id):
    from rq.exceptions import NoSuchJobError  # noqa: PLC0415
    from rq.job import Job  # noqa: PLC0415

    try:
        return Job.fetch(job_id, connection=ctx.redis).meta
    except (NoSuchJobError, Exception):  # noqa: BLE001 - Redis wiped or key expired
        return None


def _delete_rq_job(ctx, job_id):
    from rq.job import Job  # noqa: PLC0415

    try:
        Job.fetch(job_id, connection=ctx.redis).delete()
    except Exception:  # noqa: BLE001 - already gone
        pass


def enqueue_convert(ctx, job_id, deadline):
    """Enqueue with every TTL explicit and inside the retention."""
    from rq import Queue, Retry  # noqa: PLC0415

    from .tasks import convert  # noqa: PLC0415

    left = max(1, int(deadline - time.time()))
    settings = ctx.settings
    queue = Queue(settings.queue, connection=ctx.redis)
    return queue.enqueue(
        convert, job_id,
        job_id=job_id,
        description="ephemesh.convert",
        job_timeout=min(settings.job_timeout, left),
        ttl=left,  # longest it may wait in the queue
        result_ttl=settings.retention_seconds,
        failure_ttl=settings.retention_seconds,
        retry=Retry(max=2),
    )
