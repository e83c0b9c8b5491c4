"""The facade the web layer calls for jobs and batches: create, look at,
fetch and delete them, and the retention status.

It is one of the worker side's two public objects.  The other is
``Records`` (``Service.records``): the web writes its access-log, usage and
audit rows there and reads API keys, admin accounts and the purge ledger
from it, each a one-line call that a facade method would only repeat.  The
web also shares the service's Redis connection (``Service.redis``) for its
rate limits, login locks and address pseudonyms.

Owners (``session:<id>`` or ``key:<id>``) are stored hashed; a job or batch
is visible only to its owner (anyone else gets ``None``/``NotFound``, the
same as for an id that does not exist).
"""

from __future__ import annotations

import functools
import io
import json
import time
from typing import BinaryIO, NamedTuple

from rq.job import Job

from converter import ConverterError, ConvertOptions, encapsulated
from converter.formats import download, is_binary_stl
from converter.options import JOB_OPTIONS

from . import metrics
from .context import Context
from .intake import FIRST_FILE, Intake, Limits
from .receipts import body as receipt_body
from .retention import delete_all
from .states import (
    DICOM_PART,
    LIVE,
    MODEL_PART,
    PREVIEW_PART,
    REPORT_PART,
    STORED,
    WAITING,
    BatchStatus,
    JobStatus,
    Kind,
    Reason,
)
from .submit import (
    CHOSEN_ATTEMPT,
    CONVERT,
    FROM_PACS,
    SPLIT,
    enqueue,
    new_id,
    owner_hash,
    rq_ids,
    store_input,
    submit_job,
)

#: a sweeper run older than this is a fault on the admin page
SWEEP_FAULT_AGE_S = 120


class Invalid(ValueError):
    """A request the service refuses; ``code`` is stable, ``message`` safe to show."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


class _Unanswered(LookupError):
    """What was asked for is not there (for this owner); ``code`` is stable,
    ``message`` (the class's, or a more precise one) safe to show."""

    code = message = ""

    def __init__(self, message=None):
        super().__init__(message or self.message)
        self.message = message or self.message


class NotFound(_Unanswered):
    code, message = "not_found", "there is no such job"


class OpenedResult(NamedTuple):
    """A result to send: the file, its size, its download name and media type."""

    file: BinaryIO
    size: int
    name: str
    media_type: str


class NotReady(_Unanswered):
    code, message = "not_ready", "the job has no result (not finished yet, or failed)"


class Gone(_Unanswered):
    code, message = "gone", "the result has been deleted"


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

    @functools.cached_property
    def scans(self):
        """The scan workspaces (``worker.scans.Scans``)."""
        from .scans import Scans  # it builds on this module

        return Scans(self)

    def close(self):
        self.ctx.close()

    # ------------------------------------------------------------ options
    def check_options(self, options) -> dict:
        """Return the options checked and normalised; raise ``Invalid``."""
        options = {k: v for k, v in dict(options or {}).items() if v is not None}
        unknown = set(options) - set(JOB_OPTIONS)
        if unknown:
            raise Invalid("invalid_option", f"unknown options: {', '.join(sorted(unknown))}")
        try:
            checked = ConvertOptions(**options).validate()
        except ConverterError as exc:
            raise Invalid(exc.code, exc.message) from None
        return {k: getattr(checked, k) for k in options}

    def _upload(self, files, options) -> tuple[list[bytes] | Intake, dict]:
        """The upload's files (bytes, or an ``Intake`` holding them in the store)
        and its options checked; raise ``Invalid`` (an intake is aborted then)."""
        try:
            options = self.check_options(options)
        except Invalid:
            if isinstance(files, Intake):
                files.abort()
            raise
        if isinstance(files, Intake):
            return files, options
        files = [bytes(f) for f in files]
        if not files or not any(files):
            raise Invalid("empty_upload", "no files were uploaded")
        return files, options

    def receive(self, limits: Limits, *, kind=Kind.INPUT, digest=None, spool_dir=None,
                take=None) -> Intake:
        """A new upload, streamed into the store as it is fed
        (``worker.intake.Intake``): give it to ``create_job`` or
        ``create_batch`` (``kind`` input: the options go before the files),
        or to ``scans.create`` (``kind`` scan: files only), once ``finish``
        has counted it; or ``abort`` it.  Its deadline runs from now."""
        if kind not in (Kind.INPUT, Kind.SCAN):
            raise ValueError(f"an upload is stored as {Kind.INPUT} or {Kind.SCAN}, not {kind!r}")
        now = time.time()
        writer = self.store.writer(kind, new_id(), now + self.settings.retention_seconds,
                                   created=now)
        return Intake(writer, limits, first_file=FIRST_FILE if kind == Kind.INPUT else 0,
                      digest=digest, spool_dir=spool_dir, take=take)

    # ------------------------------------------------------------ jobs
    def create_job(self, files, options=None, *, owner, pick_series=False,
                   received_sha256=None, received_at=None, from_pacs=False) -> dict:
        """Store the payload, record the job, enqueue ``convert_job(job_id)``.

        Parameters
        ----------
        files : list of bytes, or worker.intake.Intake
            DICOM files or zips (member names are never kept), or an upload
            streamed into the store by ``receive``.
        options : dict, optional
            Converter options; see ``converter.options.JOB_OPTIONS``.
        owner : str
            ``session:<random>`` or ``key:<id>``; kept only as a hash.
        pick_series : bool
            Stop in status ``choosing`` when the upload holds several series.
        received_sha256 : str, optional
            The salted digest of what the upload sent (``worker.receipts``),
            which the job's deletion receipts carry.
        received_at : float, optional
            When the upload's first byte came (a PACS's series arrives over
            time); the deadline counts from it.  Default: now.
        from_pacs : bool
            A series a PACS sent (STOW-RS, C-STORE): its model is kept as a
            DICOM instance with the source's patient and study too, and
            goes to ``EPHEMESH_RETURN_TO`` when done.
        """
        files, options = self._upload(files, options)
        if from_pacs:
            options[FROM_PACS] = True
        if isinstance(files, Intake):
            created, deadline = files.created, files.deadline
        else:
            created = time.time() if received_at is None else min(float(received_at),
                                                                   time.time())
            deadline = created + self.settings.retention_seconds
        job_id = submit_job(self.ctx, files, options, owner_digest=owner_hash(owner),
                            created=created, deadline=deadline,
                            pick=pick_series, received_sha256=received_sha256)
        self.records.audit("upload", _actor(owner), {"job": job_id, **sizes(files)})
        return self.get_job(job_id, owner=owner)

    def get_job(self, job_id, *, owner):
        """The job as the owner may see it, or None."""
        row = _owned(self.records.job(job_id), owner)
        return None if row is None else self._view(row)

    def _view(self, row):
        status, report = row["status"], row["report"]
        if status == JobStatus.DONE and self.store.meta(Kind.RESULT, row["id"]) is None:
            # gone at its deadline (or with a Redis store's restart); the sweeper
            # writes the same to the row with the ledger row, and the report goes
            # with the model (Records.model_gone)
            status, report = JobStatus.DELETED, None
        complete = status in (JobStatus.DONE, JobStatus.FAILED)
        progress = {"stage": status, "percent": 100.0 if complete else 0.0}
        if status in WAITING:
            meta = _job_meta(self.ctx, row["id"])
            if meta and "progress" in meta:
                progress = meta["progress"]
        expires = row["deadline"]
        if status == JobStatus.DONE and row["finished"]:
            expires = row["finished"] + self.settings.retention_seconds
        return {
            "id": row["id"],
            "status": status,
            "progress": progress,
            "report": json.loads(report) if report else None,
            "error": {"code": row["error_code"], "message": row["error_message"]}
            if row["error_code"] else None,
            "created_at": _iso(row["created"]),
            "expires_at": _iso(expires) if status not in (JobStatus.DELETED, JobStatus.FAILED)
            else None,
            "batch_id": row["batch_id"],
            "scan_id": row["scan_id"] if "scan_id" in row else self.records.scan_of_job(row["id"]),
            "series": json.loads(row["series"]) if row["series"] else None,
        }

    def list_jobs(self, *, owner, status=None, scan_id=None, batch_id=None, limit=50,
                  after=None) -> list[dict]:
        """The owner's jobs, newest first (see ``Records.owner_jobs``)."""
        rows = self.records.owner_jobs(owner_hash(owner), status=status, scan_id=scan_id,
                                       batch_id=batch_id, limit=limit, after=after)
        return [dict(self._view(row), _cursor=(row["created"], row["id"])) for row in rows]

    def choose_series(self, job_id, index, *, owner) -> dict:
        """Convert series ``index`` (1-based, from the job's ``series`` list)."""
        view = self.get_job(job_id, owner=owner)
        if view is None:
            raise NotFound()
        if view["status"] != JobStatus.CHOOSING:
            raise Invalid("not_choosing", "this job is not waiting for a series to be chosen")
        try:
            index = int(index)
        except (TypeError, ValueError):
            raise Invalid("invalid_series", "choose a series by its number in the list") from None
        if not 1 <= index <= len(view["series"] or []):
            raise Invalid("invalid_series",
                          f"choose a series from 1 to {len(view['series'] or [])}")
        parts = self.store.get(Kind.INPUT, job_id)
        meta = self.store.meta(Kind.INPUT, job_id)
        if parts is None or meta is None:  # its time was up (the sweeper came between two looks)
            raise Gone("the upload has been deleted: its time was up. Upload it again to "
                       "convert one of its series")
        options = dict(json.loads(parts[0]), series_index=index)
        self.store.put(Kind.INPUT, job_id, [json.dumps(options).encode()] + parts[1:],
                       meta["deadline"], created=meta["created"])
        if not self.records.set_job(job_id, only_if=(JobStatus.CHOOSING,),
                                    status=JobStatus.QUEUED, series=None):
            raise Invalid("not_choosing", "this job is not waiting for a series to be chosen")
        enqueue(self.ctx, CONVERT, job_id, meta["deadline"], attempt=CHOSEN_ATTEMPT)
        return self.get_job(job_id, owner=owner)

    def open_result(self, job_id, *, owner, dicom=False) -> OpenedResult:
        """The job's model file (its format's name and media type from the
        report), or with ``dicom`` its Encapsulated STL instance (binary STL
        results only); raises NotFound, NotReady or Gone."""
        view = self.get_job(job_id, owner=owner)
        if view is None:
            raise NotFound()
        if view["status"] in LIVE or view["status"] == JobStatus.FAILED:
            raise NotReady()
        done = view["status"] == JobStatus.DONE
        report = self.store.get_part(Kind.RESULT, job_id, REPORT_PART) if done else None
        if report is None:
            raise Gone()
        if dicom:  # a PACS's series keeps its identity; any other gets a new one
            parts = self.store.get(Kind.RESULT, job_id)
            if parts is None:
                raise Gone()
            model = parts[MODEL_PART]
            if parts[DICOM_PART]:
                model = encapsulated.around(model, parts[DICOM_PART])
            elif is_binary_stl(json.loads(report).get("file")):
                model = encapsulated.encapsulate(model, encapsulated.Source.anonymous())
            else:
                raise NotReady("this job's model has no DICOM instance (binary STL only)")
            return OpenedResult(io.BytesIO(model), len(model), "model.dcm", "application/dicom")
        # the model is sent from where it lies (a directory store's file), not
        # read into memory first
        fh = self.store.part_file(Kind.RESULT, job_id, MODEL_PART)
        if fh is None:
            raise Gone()
        size = fh.seek(0, io.SEEK_END)
        fh.seek(0)
        name, media_type = download(json.loads(report).get("file"))
        return OpenedResult(fh, size, name, media_type)

    def open_preview(self, job_id, *, owner) -> bytes:
        """The reduced mesh the job made for the 3D view; raises as ``open_result``."""
        view = self.get_job(job_id, owner=owner)
        if view is None:
            raise NotFound()
        if view["status"] in LIVE or view["status"] == JobStatus.FAILED:
            raise NotReady()
        part = self.store.get_part(Kind.RESULT, job_id, PREVIEW_PART) \
            if view["status"] == JobStatus.DONE else None
        if part is None:
            raise Gone()
        return part

    def delete_job(self, job_id, *, owner, reason=Reason.USER_REQUEST) -> bool:
        """Delete input and result now; False when not found (or not the owner's)."""
        row = _owned(self.records.job(job_id), owner)
        if row is None:
            return False
        self._delete_job(row, reason)
        self.records.audit("job-deleted", _actor(owner), {"job": job_id, "reason": reason})
        return True

    def _delete_job(self, row, reason):
        self.records.set_job(row["id"], status=JobStatus.DELETED, series=None, report=None)
        delete_all(self.ctx, row["id"], reason, deadline=row["deadline"])

    def receipts(self, job_id, *, owner) -> list[dict]:
        """The unsigned deletion receipts of the job's upload and result (those
        deleted so far); raises NotFound for another owner's or no job."""
        if _owned(self.records.job(job_id), owner) is None:
            raise NotFound()
        return [receipt_body(row) for row in self.records.receipt_rows(job_id)]

    # ------------------------------------------------------------ batches
    def create_batch(self, files, options=None, *, owner, received_sha256=None) -> dict:
        """Store an upload of many series; a worker makes one job per series
        (each carries the batch's ``received_sha256`` to its receipts)."""
        files, options = self._upload(files, options)
        if "series" in options:
            if isinstance(files, Intake):
                files.abort()
            raise Invalid("invalid_option", "a batch converts every series; drop 'series'")
        if isinstance(files, Intake):
            batch_id, now, deadline = files.object_id, files.created, files.deadline
        else:
            batch_id, now = new_id(), time.time()
            deadline = now + self.settings.retention_seconds
        size = store_input(self.ctx, batch_id, files, options, created=now, deadline=deadline)
        metrics.count(self.ctx, "ephemesh_received_bytes", size)
        self.records.add_batch(batch_id, owner_hash(owner), now, deadline,
                               received_sha256=received_sha256)
        enqueue(self.ctx, SPLIT, batch_id, deadline)
        self.records.audit("batch-upload", _actor(owner), {"batch": batch_id, **sizes(files)})
        return self.get_batch(batch_id, owner=owner)

    def get_batch(self, batch_id, *, owner):
        row = _owned(self.records.batch(batch_id), owner)
        if row is None:
            return None
        jobs = [dict(self._view(j), seq=j["seq"]) for j in self.records.jobs_of_batch(batch_id)]
        status = row["status"]
        if status == BatchStatus.READY and any(j["status"] in LIVE for j in jobs):
            status = BatchStatus.CONVERTING
        return {
            "id": batch_id,
            "status": status,
            "error": {"code": row["error_code"], "message": row["error_message"]}
            if row["error_code"] else None,
            "created_at": _iso(row["created"]),
            "expires_at": _iso(row["deadline"]),
            # each job's ``seq``: its series' number in the batch upload's listing
            "jobs": jobs,
        }

    def delete_batch(self, batch_id, *, owner) -> bool:
        row = _owned(self.records.batch(batch_id), owner)
        if row is None:
            return False
        self.records.set_batch(batch_id, status=BatchStatus.DELETED)
        delete_all(self.ctx, batch_id, Reason.USER_REQUEST, deadline=row["deadline"],
                   kinds=(Kind.INPUT,))  # a batch's results are its jobs
        for job in self.records.jobs_of_batch(batch_id):
            self._delete_job(job, Reason.USER_REQUEST)
        self.records.audit("batch-deleted", _actor(owner), {"batch": batch_id})
        return True

    # ------------------------------------------------------------ retention
    def retention_status(self) -> dict:
        """The oldest live object and its deadline; the sweeper's last run."""
        now = time.time()
        oldest = None
        for kind in STORED:
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
            "live_objects": sum(len(self.store.entries(k)) for k in STORED),
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


def _owned(row, owner):
    """``row`` when it is ``owner``'s, else None (as for an id that does not exist)."""
    return row if row is not None and row["owner"] == owner_hash(owner) else None


def sizes(files) -> dict:
    if isinstance(files, Intake):
        return {"files": files.upload.files, "bytes": files.upload.size}
    return {"files": len(files), "bytes": sum(map(len, files))}


def _job_meta(ctx, job_id):
    """The ``meta`` of the job's latest RQ job (its progress), or None."""
    for rq_job_id in reversed(rq_ids(job_id)):
        try:
            return Job.fetch(rq_job_id, connection=ctx.redis).meta
        except Exception:  # not there, expired, or Redis wiped
            continue
    return None
