"""The facade the web layer calls: create, look at, fetch and delete jobs and batches.

Owners (``session:<id>`` or ``key:<id>``) are stored hashed; a job or batch
is visible only to its owner (anyone else gets ``None``/``NotFound``, the
same as for an id that does not exist).
"""

from __future__ import annotations

import io
import json
import time

from .context import Context
from .submit import enqueue, new_id, owner_hash, submit_job

OPTION_NAMES = ("threshold", "preset", "series", "largest", "min_island_mm3", "smooth",
                "decimate", "max_triangles", "frame", "ascii", "step")
#: a sweeper run older than this is a fault on the admin page
SWEEP_FAULT_AGE_S = 120


class Invalid(ValueError):
    """A request the service refuses; ``code`` is stable, ``message`` safe to show."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


class NotFound(LookupError):
    pass


class Gone(LookupError):
    pass


class NotReady(LookupError):
    pass


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

    @property
    def store(self):
        return self.ctx.store

    def close(self):
        self.ctx.close()

    # ------------------------------------------------------------ options
    def check_options(self, options) -> dict:
        """Return the options checked and normalised; raise ``Invalid``."""
        from converter import ConverterError, ConvertOptions  # noqa: PLC0415

        options = {k: v for k, v in dict(options or {}).items() if v is not None}
        unknown = set(options) - set(OPTION_NAMES)
        if unknown:
            raise Invalid("invalid_option", f"unknown options: {', '.join(sorted(unknown))}")
        try:
            checked = ConvertOptions(**options).validate()
        except ConverterError as exc:
            raise Invalid(exc.code, exc.message) from None
        return {k: getattr(checked, k) for k in options}

    # ------------------------------------------------------------ jobs
    def create_job(self, files, options=None, *, owner, pick_series=False) -> dict:
        """Store the payload, record the job, enqueue ``convert(job_id)``.

        Parameters
        ----------
        files : list of bytes
            DICOM files or zips (member names are never kept).
        options : dict, optional
            Converter options; see ``OPTION_NAMES``.
        owner : str
            ``session:<random>`` or ``key:<id>``; kept only as a hash.
        pick_series : bool
            Stop in status ``choosing`` when the upload holds several series.
        """
        options = self.check_options(options)
        files = [bytes(f) for f in files]
        if not files or not any(files):
            raise Invalid("empty_upload", "no files were uploaded")
        now = time.time()
        job_id = submit_job(self.ctx, files, options, owner_digest=owner_hash(owner),
                            created=now, deadline=now + self.settings.retention_seconds,
                            pick=pick_series)
        self.records.audit("upload", _actor(owner), {"job": job_id, "files": len(files),
                                                     "bytes": sum(map(len, files))})
        return self.get_job(job_id, owner=owner)

    def get_job(self, job_id, *, owner):
        """The job as the owner may see it, or None."""
        row = self.records.job(job_id)
        if row is None or row["owner"] != owner_hash(owner):
            return None
        return self._view(row)

    def _view(self, row):
        status, report = row["status"], row["report"]
        if status == "done" and self.store.meta("result", row["id"]) is None:
            # gone at its deadline (or with a Redis store's restart); the sweeper
            # updates the row right after, and the report goes with the model
            status, report = "deleted", None
        progress = {"stage": status, "percent": 100.0 if status in ("done", "failed") else 0.0}
        if status in ("queued", "running"):
            meta = _job_meta(self.ctx, row["id"])
            if meta and "progress" in meta:
                progress = meta["progress"]
        expires = row["deadline"]
        if status == "done" and row["finished"]:
            expires = row["finished"] + self.settings.retention_seconds
        return {
            "id": row["id"],
            "status": status,
            "progress": progress,
            "report": json.loads(report) if report else None,
            "error": {"code": row["error_code"], "message": row["error_message"]}
            if row["error_code"] else None,
            "created_at": _iso(row["created"]),
            "expires_at": _iso(expires) if status not in ("deleted", "failed") else None,
            "batch_id": row["batch_id"],
            "series": json.loads(row["series"]) if row["series"] else None,
        }

    def choose_series(self, job_id, index, *, owner) -> dict:
        """Convert series ``index`` (1-based, from the job's ``series`` list)."""
        view = self.get_job(job_id, owner=owner)
        if view is None:
            raise NotFound(job_id)
        if view["status"] != "choosing":
            raise Invalid("not_choosing", "this job is not waiting for a series to be chosen")
        try:
            index = int(index)
        except (TypeError, ValueError):
            raise Invalid("invalid_series", "choose a series by its number in the list") from None
        if not 1 <= index <= len(view["series"] or []):
            raise Invalid("invalid_series",
                          f"choose a series from 1 to {len(view['series'] or [])}")
        parts = self.store.get("input", job_id)
        meta = self.store.meta("input", job_id)
        if parts is None or meta is None:
            raise Gone(job_id)
        options = dict(json.loads(parts[0]), series_index=index)
        self.store.put("input", job_id, [json.dumps(options).encode()] + parts[1:],
                       meta["deadline"], created=meta["created"])
        if not self.records.set_job(job_id, only_if=("choosing",), status="queued", series=None):
            raise Invalid("not_choosing", "this job is not waiting for a series to be chosen")
        enqueue(self.ctx, "worker.tasks.convert", job_id, meta["deadline"], attempt=2)
        return self.get_job(job_id, owner=owner)

    def open_result(self, job_id, *, owner):
        """``(binary file, size)`` of the STL; raises NotFound, NotReady or Gone."""
        view = self.get_job(job_id, owner=owner)
        if view is None:
            raise NotFound(job_id)
        if view["status"] in ("queued", "running", "choosing", "failed"):
            raise NotReady(job_id)
        parts = self.store.get("result", job_id) if view["status"] == "done" else None
        if parts is None:
            raise Gone(job_id)
        return io.BytesIO(parts[0]), len(parts[0])

    def delete_job(self, job_id, *, owner, reason="user-request") -> bool:
        """Delete input and result now; False when not found (or not the owner's)."""
        row = self.records.job(job_id)
        if row is None or row["owner"] != owner_hash(owner):
            return False
        self._delete_job(row, reason)
        self.records.audit("job-deleted", _actor(owner), {"job": job_id, "reason": reason})
        return True

    def _delete_job(self, row, reason):
        job_id = row["id"]
        self.records.set_job(job_id, status="deleted", series=None, report=None)
        for kind in ("input", "result"):
            meta = self.store.meta(kind, job_id)
            size = self.store.delete(kind, job_id)
            if size is not None:
                self.records.record_deletion(kind, job_id, size, meta and meta["created"],
                                             meta and meta["deadline"], reason)
        _delete_rq_jobs(self.ctx, job_id, row["deadline"], reason)

    # ------------------------------------------------------------ batches
    def create_batch(self, files, options=None, *, owner) -> dict:
        """Store an upload of many series; a worker makes one job per series."""
        options = self.check_options(options)
        if "series" in options:
            raise Invalid("invalid_option", "a batch converts every series; drop 'series'")
        files = [bytes(f) for f in files]
        if not files or not any(files):
            raise Invalid("empty_upload", "no files were uploaded")
        batch_id = new_id()
        now = time.time()
        deadline = now + self.settings.retention_seconds
        parts = [json.dumps(options).encode()] + files
        self.store.put("input", batch_id, parts, deadline, created=now)
        self.records.add_batch(batch_id, owner_hash(owner), now, deadline)
        enqueue(self.ctx, "worker.tasks.split_batch", batch_id, deadline)
        self.records.audit("batch-upload", _actor(owner), {"batch": batch_id, "files": len(files),
                                                           "bytes": sum(map(len, files))})
        return self.get_batch(batch_id, owner=owner)

    def get_batch(self, batch_id, *, owner):
        row = self.records.batch(batch_id)
        if row is None or row["owner"] != owner_hash(owner):
            return None
        return {
            "id": batch_id,
            "status": row["status"],
            "error": {"code": row["error_code"], "message": row["error_message"]}
            if row["error_code"] else None,
            "created_at": _iso(row["created"]),
            "expires_at": _iso(row["deadline"]),
            "jobs": [self._view(j) for j in self.records.jobs_of_batch(batch_id)],
        }

    def delete_batch(self, batch_id, *, owner) -> bool:
        row = self.records.batch(batch_id)
        if row is None or row["owner"] != owner_hash(owner):
            return False
        self.records.set_batch(batch_id, status="deleted")
        meta = self.store.meta("input", batch_id)
        size = self.store.delete("input", batch_id)
        if size is not None:
            self.records.record_deletion("input", batch_id, size, meta and meta["created"],
                                         meta and meta["deadline"], "user-request")
        _delete_rq_jobs(self.ctx, batch_id, row["deadline"], "user-request")
        for job in self.records.jobs_of_batch(batch_id):
            self._delete_job(job, "user-request")
        self.records.audit("batch-deleted", _actor(owner), {"batch": batch_id})
        return True

    # ------------------------------------------------------------ retention
    def retention_status(self) -> dict:
        """The oldest live object and its deadline; the sweeper's last run."""
        now = time.time()
        oldest = None
        for kind in ("input", "result"):
            for entry in self.store.entries(kind):
                if oldest is None or entry.created < oldest["created"]:
                    oldest = {"kind": kind, "created": entry.created, "deadline": entry.deadline,
                              "age_s": round(now - entry.created, 1),
                              "overdue": now > entry.deadline}
        last = self.records.last_sweep()
        age = None if last is None else round(now - last, 1)
        return {
            "now": now,
            "retention_seconds": self.settings.retention_seconds,
            "access_log_days": self.settings.access_log_days,
            "sweep_seconds": self.settings.sweep_seconds,
            "oldest": oldest,
            "live_objects": sum(len(self.store.entries(k)) for k in ("input", "result")),
            "oldest_access_log": self.records.oldest_access(),
            "last_sweep": last,
            "last_sweep_age_s": age,
            "fault": age is None or age > SWEEP_FAULT_AGE_S
            or bool(oldest and oldest["overdue"]),
        }


def _actor(owner: str) -> str:
    """Audit actor: the kind of owner and, for keys, the key id (never a session id)."""
    kind, _, rest = owner.partition(":")
    return f"key:{rest}" if kind == "key" else kind or "unknown"


def _job_meta(ctx, job_id):
    from rq.job import Job  # noqa: PLC0415

    for rq_id in (f"{job_id}-3", f"{job_id}-2", job_id):
        try:
            return Job.fetch(rq_id, connection=ctx.redis).meta
        except Exception:  # noqa: BLE001, S112 - not there, expired, or Redis wiped
            continue
    return None


def _delete_rq_jobs(ctx, object_id, deadline, reason):
    """Delete the RQ jobs of one job or batch now, with ledger rows."""
    from redis.exceptions import RedisError  # noqa: PLC0415
    from rq.exceptions import NoSuchJobError  # noqa: PLC0415
    from rq.job import Job  # noqa: PLC0415

    from .sweeper import delete_rq_job  # noqa: PLC0415

    for rq_id in (object_id, f"{object_id}-2", f"{object_id}-3"):
        try:
            job = Job.fetch(rq_id, connection=ctx.redis)
        except NoSuchJobError:
            continue
        except RedisError:
            return  # the sweeper deletes them by the deadline
        created = job.created_at.timestamp() if job.created_at else None
        size = delete_rq_job(ctx.redis, rq_id, job)
        ctx.records.record_deletion("redis-job", rq_id, size, created, deadline, reason)
