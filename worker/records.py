"""Lasting records, through SQLAlchemy Core: SQLite by default, PostgreSQL
when ``EPHEMESH_DATABASE_URL`` says so.

Nothing here holds patient data, file names or DICOM UIDs: ids are random
opaque tokens, the job report is the converter's safe report, errors are
stable codes with fixed messages, IPs live only in the access log (30 days).
Times are UNIX seconds (float) so both databases compare them alike.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import secrets
import time

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from . import audit
from .private import private_database
from .states import (
    BATCH_ENDED,
    BATCH_LIVE,
    ENDED,
    LIVE,
    SCAN_LIVE,
    STORED,
    WAITING,
    BatchStatus,
    JobStatus,
    ScanStatus,
)

metadata = MetaData()

jobs = Table(
    "jobs", metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(128), nullable=False, index=True),
    Column("batch_id", String(64), index=True),
    Column("seq", Integer, nullable=False, default=0),  # a batch job's place in the listing
    Column("created", Float, nullable=False),
    Column("deadline", Float, nullable=False),
    Column("status", String(16), nullable=False),  # a states.JobStatus
    Column("pick", Boolean, nullable=False, default=False),  # stop to let the owner choose a series
    Column("input_bytes", BigInteger, nullable=False, default=0),
    Column("error_code", String(64)),
    Column("error_message", String(300)),
    Column("series", Text),  # JSON: the safe listing (no UIDs, no descriptions) while choosing
    Column("report", Text),
    Column("finished", Float),
    Column("received_sha256", String(64)),  # salted digest of what was sent (receipts.py)
)

batches = Table(
    "batches", metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(128), nullable=False, index=True),
    Column("created", Float, nullable=False),
    Column("deadline", Float, nullable=False),
    Column("status", String(16), nullable=False),  # a states.BatchStatus
    Column("error_code", String(64)),
    Column("error_message", String(300)),
    Column("received_sha256", String(64)),  # salted digest of what was sent (receipts.py)
)

#: a scan workspace: opaque ids, times, a status and a count; never a series
#: description, time or UID (those live in the store, with the upload)
scans = Table(
    "scans", metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(128), nullable=False, index=True),
    Column("created", Float, nullable=False),
    Column("deadline", Float, nullable=False),
    Column("status", String(16), nullable=False),  # a states.ScanStatus
    Column("error_code", String(64)),
    Column("error_message", String(300)),
    Column("input_bytes", BigInteger, nullable=False, default=0),
    Column("received_sha256", String(64)),  # salted digest of what was sent (receipts.py)
)

#: which jobs were made from which scan (a job's own row stays as every job's)
scan_jobs = Table(
    "scan_jobs", metadata,
    Column("job_id", String(64), primary_key=True),
    Column("scan_id", String(64), nullable=False, index=True),
)

purge_ledger = Table(
    "purge_ledger", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),  # a states.Kind
    Column("object_id", String(64), nullable=False),
    Column("count", Integer, nullable=False, default=1),  # keys or rows deleted under this id
    Column("bytes", BigInteger, nullable=False, default=0),
    Column("created", Float),
    Column("deadline", Float),
    Column("deleted", Float, nullable=False),
    Column("reason", String(16), nullable=False),  # a states.Reason
    Column("late", Boolean, nullable=False, default=False),
    # what a deletion receipt says besides (uploads and results only):
    Column("received", Float),  # when its job's upload came
    Column("converted", Float),  # when its job's result was made
    Column("received_sha256", String(64)),  # the job's salted digest of what was sent
    UniqueConstraint("kind", "object_id", name="uq_ledger_object"),
)

access_log = Table(
    "access_log", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False, index=True),
    Column("ip", String(64), nullable=False),
    Column("method", String(8), nullable=False),
    Column("route", String(120), nullable=False),
    Column("status", Integer, nullable=False),
    Column("bytes", BigInteger, nullable=False),
)

audit_log = Table(
    "audit_log", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False, index=True),
    Column("event", String(40), nullable=False),
    Column("actor", String(80), nullable=False),
    Column("detail", Text),
    # the hash chain (worker/audit.py): this row's content, and the chain up to it
    Column("content_sha256", String(64)),
    Column("chain_sha256", String(64)),
    Column("erased", Boolean, nullable=False, default=False),  # redacted on a subject's request
)

api_keys = Table(
    "api_keys", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(80), nullable=False),
    Column("prefix", String(16), nullable=False, unique=True),
    Column("sha256", String(64), nullable=False, unique=True),
    Column("created", Float, nullable=False),
    Column("last_used", Float),
    Column("revoked", Float),
    Column("options", Text),  # JSON: default conversion options (STOW-RS), checked
)

usage = Table(
    "usage", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key_id", Integer, index=True),
    Column("endpoint", String(80), nullable=False),
    Column("bytes_in", BigInteger, nullable=False),
    Column("bytes_out", BigInteger, nullable=False),
    Column("at", Float, nullable=False),
)

sweeps = Table(
    "sweeps", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False, index=True),
    Column("deleted", Integer, nullable=False),
    Column("late", Integer, nullable=False),
)

admins = Table(
    "admins", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(80), nullable=False, unique=True),
    Column("password_hash", String(200), nullable=False),  # argon2id
    Column("created", Float, nullable=False),
)

#: the methods the access log names; any other token a client sends is ``OTHER``
ACCESS_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")


def access_method(method) -> str:
    """``method`` as the access log keeps it: one of ``ACCESS_METHODS`` or ``OTHER``."""
    return method if method in ACCESS_METHODS else "OTHER"


KEY_PREFIX = "emk_"
#: the PostgreSQL advisory lock that serializes audit appends ("ephe")
AUDIT_LOCK = 0x65706865
#: a deletion this long after its deadline counts as late (clock slack only)
LATE_AFTER_S = 1.0


def is_late(deadline, when) -> bool:
    """Whether a thing deleted at ``when`` went late (the one rule for the
    ledger's ``late`` and the sweeper's counts)."""
    return deadline is not None and when > deadline + LATE_AFTER_S


def _rows(result):
    return [dict(r) for r in result.mappings().all()]


def _json_values(text):
    """Every scalar value in a JSON text (an audit row's detail)."""
    try:
        stack = [json.loads(text or "null")]
    except ValueError:
        return []
    out = []
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif item is not None:
            out.append(str(item))
    return out


class Records:
    """The database, with one small method per thing recorded."""

    def __init__(self, url: str, *, create_empty: bool = True):
        """Open the database at ``url``; one not at the newest schema revision
        is refused (``schema.SchemaOutdated``: run ``ephemesh db upgrade``), an
        empty one made there unless ``create_empty`` is false."""
        from . import schema

        kwargs = {"future": True, "pool_pre_ping": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
            private_database(url)  # 0600 from the start, and narrowed if it was not
        self.engine = create_engine(url, **kwargs)
        try:
            schema.check(self.engine, create_empty=create_empty)
        except BaseException:
            self.engine.dispose()
            raise

    def close(self):
        self.engine.dispose()

    # ---------------------------------------------------------------- jobs
    def add_job(self, job_id, owner, created, deadline, *, batch_id=None, seq=0, pick=False,
                input_bytes=0, received_sha256=None):
        with self.engine.begin() as c:
            c.execute(insert(jobs).values(id=job_id, owner=owner, batch_id=batch_id, seq=int(seq),
                                          created=created, deadline=deadline,
                                          status=JobStatus.QUEUED,
                                          pick=bool(pick), input_bytes=int(input_bytes),
                                          received_sha256=received_sha256))

    def set_job(self, job_id, *, only_if=None, **values) -> bool:
        """Update a job; with ``only_if`` (statuses) only while it is in one of them."""
        q = update(jobs).where(jobs.c.id == job_id)
        if only_if:
            q = q.where(jobs.c.status.in_(list(only_if)))
        with self.engine.begin() as c:
            return c.execute(q.values(**values)).rowcount > 0

    def finish_job(self, job_id, report: dict) -> bool:
        return self.set_job(job_id, only_if=WAITING, status=JobStatus.DONE,
                            report=json.dumps(report), finished=time.time(), series=None)

    def fail_job(self, job_id, code, message) -> bool:
        return self.set_job(job_id, only_if=LIVE, status=JobStatus.FAILED,
                            error_code=code, error_message=message[:300], finished=time.time(),
                            series=None)

    def job(self, job_id):
        with self.engine.connect() as c:
            row = c.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
        return dict(row) if row else None

    def jobs_of_batch(self, batch_id):
        with self.engine.connect() as c:
            return _rows(c.execute(select(jobs).where(jobs.c.batch_id == batch_id)
                                   .order_by(jobs.c.created, jobs.c.seq, jobs.c.id)))

    def unfinished_jobs(self, due_before):
        """Jobs still queued, running or choosing whose input deadline is before ``due_before``."""
        with self.engine.connect() as c:
            return _rows(c.execute(select(jobs).where(
                jobs.c.status.in_(LIVE),
                jobs.c.deadline < due_before)))

    def jobs_since(self, since):
        with self.engine.connect() as c:
            return _rows(c.execute(select(jobs.c.id, jobs.c.status, jobs.c.error_code,
                                          jobs.c.created, jobs.c.deadline, jobs.c.finished,
                                          jobs.c.input_bytes)
                                   .where(jobs.c.created >= since)))

    def purge_jobs(self, older_than) -> int:
        """Forget job and batch rows created before ``older_than`` (they hold
        opaque ids, codes and a report; nothing needs them once long ended)."""
        with self.engine.begin() as c:
            n = c.execute(delete(jobs).where(jobs.c.created < older_than,
                                             jobs.c.status.in_(ENDED))).rowcount
            n += c.execute(delete(batches).where(batches.c.created < older_than,
                                                 batches.c.status.in_(BATCH_ENDED))).rowcount
        return n

    # ---------------------------------------------------------------- batches
    def add_batch(self, batch_id, owner, created, deadline, *, received_sha256=None):
        with self.engine.begin() as c:
            c.execute(insert(batches).values(id=batch_id, owner=owner, created=created,
                                             deadline=deadline, status=BatchStatus.SPLITTING,
                                             received_sha256=received_sha256))

    def set_batch(self, batch_id, *, only_if=None, **values) -> bool:
        q = update(batches).where(batches.c.id == batch_id)
        if only_if:
            q = q.where(batches.c.status.in_(list(only_if)))
        with self.engine.begin() as c:
            return c.execute(q.values(**values)).rowcount > 0

    def fail_batch(self, batch_id, code, message) -> bool:
        return self.set_batch(batch_id, only_if=BATCH_LIVE, status=BatchStatus.FAILED,
                              error_code=code, error_message=message[:300])

    def batch(self, batch_id):
        with self.engine.connect() as c:
            row = c.execute(select(batches).where(batches.c.id == batch_id)).mappings().first()
        return dict(row) if row else None

    def waiting_jobs(self, created_before, due_after):
        """Jobs queued or running, created before ``created_before``, whose
        deadline is after ``due_after`` (candidates for a lost queue entry)."""
        with self.engine.connect() as c:
            return _rows(c.execute(select(jobs.c.id, jobs.c.status, jobs.c.deadline,
                                          jobs.c.created).where(
                jobs.c.status.in_(WAITING), jobs.c.created < created_before,
                jobs.c.deadline > due_after)))

    def waiting_batches(self, created_before, due_after):
        with self.engine.connect() as c:
            return _rows(c.execute(select(batches.c.id, batches.c.status, batches.c.deadline,
                                          batches.c.created).where(
                batches.c.status.in_(BATCH_LIVE), batches.c.created < created_before,
                batches.c.deadline > due_after)))

    def unfinished_batches(self, due_before):
        with self.engine.connect() as c:
            return _rows(c.execute(select(batches).where(batches.c.status.in_(BATCH_LIVE),
                                                         batches.c.deadline < due_before)))

    # ---------------------------------------------------------------- scans
    def add_scan(self, scan_id, owner, created, deadline, *, input_bytes=0,
                 received_sha256=None):
        with self.engine.begin() as c:
            c.execute(insert(scans).values(id=scan_id, owner=owner, created=created,
                                           deadline=deadline, status=ScanStatus.READING,
                                           input_bytes=int(input_bytes),
                                           received_sha256=received_sha256))

    def scan(self, scan_id):
        with self.engine.connect() as c:
            row = c.execute(select(scans).where(scans.c.id == scan_id)).mappings().first()
        return dict(row) if row else None

    def set_scan(self, scan_id, *, only_if=None, **values) -> bool:
        """Update a scan; with ``only_if`` (statuses) only while it is in one of them."""
        q = update(scans).where(scans.c.id == scan_id)
        if only_if:
            q = q.where(scans.c.status.in_(list(only_if)))
        with self.engine.begin() as c:
            return c.execute(q.values(**values)).rowcount > 0

    def fail_scan(self, scan_id, code, message) -> bool:
        return self.set_scan(scan_id, only_if=SCAN_LIVE, status=ScanStatus.FAILED,
                             error_code=code, error_message=message[:300])

    def live_scans(self, due_before=None, *, owner=None):
        """Scans whose upload is kept; with ``due_before``, only those due by
        then; with ``owner`` (a hash), only that owner's, newest first."""
        q = select(scans).where(scans.c.status.in_(SCAN_LIVE))
        if due_before is not None:
            q = q.where(scans.c.deadline < due_before)
        if owner is not None:
            q = q.where(scans.c.owner == owner).order_by(scans.c.created.desc())
        with self.engine.connect() as c:
            return _rows(c.execute(q))

    def add_scan_job(self, job_id, scan_id):
        with self.engine.begin() as c:
            c.execute(insert(scan_jobs).values(job_id=job_id, scan_id=scan_id))

    def scan_of_job(self, job_id):
        with self.engine.connect() as c:
            row = c.execute(select(scan_jobs.c.scan_id)
                            .where(scan_jobs.c.job_id == job_id)).first()
        return row.scan_id if row else None

    def owner_jobs(self, owner, *, status=None, scan_id=None, batch_id=None, limit=50,
                   after=None):
        """An owner's jobs, newest first, optionally of one status, scan or batch;
        ``after``: the (created, id) of the last job of the page before."""
        q = (select(jobs, scan_jobs.c.scan_id)
             .select_from(jobs.outerjoin(scan_jobs, scan_jobs.c.job_id == jobs.c.id))
             .where(jobs.c.owner == owner))
        if status is not None:
            q = q.where(jobs.c.status.in_(list(status)))
        if scan_id is not None:
            q = q.where(scan_jobs.c.scan_id == scan_id)
        if batch_id is not None:
            q = q.where(jobs.c.batch_id == batch_id)
        if after is not None:
            created, job_id = after
            q = q.where(or_(jobs.c.created < created,
                            (jobs.c.created == created) & (jobs.c.id < job_id)))
        q = q.order_by(jobs.c.created.desc(), jobs.c.id.desc()).limit(int(limit))
        with self.engine.connect() as c:
            return _rows(c.execute(q))

    def purge_scans(self, older_than) -> int:
        """Forget ended scan rows (and their job links) created before ``older_than``."""
        with self.engine.begin() as c:
            old = select(scans.c.id).where(scans.c.created < older_than,
                                           scans.c.status.not_in(list(SCAN_LIVE)))
            c.execute(delete(scan_jobs).where(scan_jobs.c.scan_id.in_(old)))
            return c.execute(delete(scans).where(scans.c.created < older_than,
                                                 scans.c.status.not_in(list(SCAN_LIVE)))).rowcount

    # ---------------------------------------------------------------- ledger
    def record_deletion(self, kind, object_id, size, created, deadline, reason, *, count=1,
                        now=None, also=(), converted=None) -> bool:
        """Write one ledger row; False when that object was already recorded
        (so two sweepers racing for one object write one row).

        ``also``: updates that belong to the deletion (``model_gone``), run
        in the same transaction, so they are written with the row or not at
        all: the ledger and the rows it speaks of never disagree, not even
        after a crash.  ``worker.retention`` says which deletion needs which.
        An upload's or a result's row also keeps what its receipt says
        (``worker.receipts``): when its job's upload came, the salted digest
        of what was sent, and ``converted``."""
        now = time.time() if now is None else now
        try:
            with self.engine.begin() as c:
                received = self._received(c, object_id) if kind in STORED else {}
                c.execute(insert(purge_ledger).values(
                    kind=kind, object_id=object_id, count=int(count), bytes=int(size or 0),
                    created=created, deadline=deadline, deleted=now, reason=reason,
                    late=is_late(deadline, now), converted=converted, **received))
                for statement in also:
                    c.execute(statement)
        except IntegrityError:
            return False
        return True

    @staticmethod
    def _received(c, object_id) -> dict:
        """The ledger's receipt columns from the job (or batch) row of ``object_id``."""
        for table in (jobs, batches, scans):
            row = c.execute(select(table.c.created, table.c.received_sha256)
                            .where(table.c.id == object_id)).first()
            if row is not None:
                return {"received": row.created, "received_sha256": row.received_sha256}
        return {}

    def receipt_rows(self, object_id):
        """The ledger rows of ``object_id``'s upload and result (its receipts)."""
        with self.engine.connect() as c:
            return _rows(c.execute(select(purge_ledger).where(
                purge_ledger.c.object_id == object_id, purge_ledger.c.kind.in_(STORED))
                .order_by(purge_ledger.c.deleted, purge_ledger.c.id)))

    @staticmethod
    def model_gone(job_id):
        """The update that turns a ``done`` job whose model went into
        ``deleted``, its report (the model's measures) dropped with it."""
        return (update(jobs).where(jobs.c.id == job_id, jobs.c.status == JobStatus.DONE)
                .values(status=JobStatus.DELETED, report=None))

    def recorded(self, kind, object_id) -> bool:
        with self.engine.connect() as c:
            return c.execute(select(purge_ledger.c.id).where(
                purge_ledger.c.kind == kind, purge_ledger.c.object_id == object_id)).first() is not None

    def ledger(self, since=None):
        q = select(purge_ledger).order_by(purge_ledger.c.deleted, purge_ledger.c.id)
        if since is not None:
            q = q.where(purge_ledger.c.deleted >= since)
        with self.engine.connect() as c:
            return _rows(c.execute(q))

    def purge_summary(self, since=None):
        """Per day (UTC), kind and reason: rows, count, bytes, oldest age at deletion, late."""
        out = {}
        for row in self.ledger(since):
            day = time.strftime("%Y-%m-%d", time.gmtime(row["deleted"]))
            key = (day, row["kind"], row["reason"])
            agg = out.setdefault(key, {"day": day, "kind": row["kind"], "reason": row["reason"],
                                       "count": 0, "bytes": 0, "oldest_age_s": 0.0, "late": 0})
            agg["count"] += row["count"]
            agg["bytes"] += row["bytes"]
            if row["created"] is not None:
                age = round(row["deleted"] - row["created"], 1)
                agg["oldest_age_s"] = max(agg["oldest_age_s"], age)
            agg["late"] += int(bool(row["late"]))
        return [out[k] for k in sorted(out)]

    def record_sweep(self, deleted, late, now=None):
        with self.engine.begin() as c:
            c.execute(insert(sweeps).values(at=time.time() if now is None else now,
                                            deleted=int(deleted), late=int(late)))

    def last_sweep(self):
        with self.engine.connect() as c:
            return c.execute(select(func.max(sweeps.c.at))).scalar()

    def purge_sweeps(self, older_than) -> int:
        """Sweep-run rows are bookkeeping: keep them as long as access logs."""
        with self.engine.begin() as c:
            return c.execute(delete(sweeps).where(sweeps.c.at < older_than)).rowcount

    # ---------------------------------------------------------------- access and audit
    def log_access(self, ip, method, route, status, nbytes, at=None):
        """One access-log row; the method is one of ``ACCESS_METHODS`` (else ``OTHER``)."""
        with self.engine.begin() as c:
            c.execute(insert(access_log).values(at=time.time() if at is None else at, ip=ip[:64],
                                                method=access_method(method), route=route[:120],
                                                status=int(status), bytes=int(nbytes)))

    def oldest_access(self):
        with self.engine.connect() as c:
            return c.execute(select(func.min(access_log.c.at))).scalar()

    def purge_access_log(self, older_than) -> tuple[int, float | None]:
        """Delete access-log rows older than ``older_than``; return (rows, oldest time)."""
        with self.engine.begin() as c:
            oldest = c.execute(select(func.min(access_log.c.at))
                               .where(access_log.c.at < older_than)).scalar()
            n = c.execute(delete(access_log).where(access_log.c.at < older_than)).rowcount
        return n, oldest

    def access_rows_of(self, forms) -> list[dict]:
        """Access-log rows whose address is one of ``forms`` (spellings of one address)."""
        with self.engine.connect() as c:
            return _rows(c.execute(select(access_log).where(access_log.c.ip.in_(list(forms)))
                                   .order_by(access_log.c.at, access_log.c.id)))

    def delete_access_rows_of(self, forms) -> int:
        with self.engine.begin() as c:
            return c.execute(delete(access_log).where(access_log.c.ip.in_(list(forms)))).rowcount

    def access_rows(self, limit=200):
        with self.engine.connect() as c:
            return _rows(c.execute(select(access_log).order_by(access_log.c.at.desc())
                                   .limit(limit)))

    def audit(self, event, actor, detail=None, at=None):
        """Append an audit row to the chain (``worker/audit.py``), one writer
        at a time, so concurrent writers (web processes, workers) never fork it."""
        row = {"at": time.time() if at is None else at, "event": event[:40],
               "actor": actor[:80], "detail": json.dumps(detail or {})}
        content = audit.content_hash(row["at"], row["event"], row["actor"], row["detail"])
        with self.engine.begin() as c:
            self._lock_audit(c)
            previous = c.execute(select(audit_log.c.chain_sha256)
                                 .where(audit_log.c.chain_sha256.is_not(None))
                                 .order_by(audit_log.c.id.desc()).limit(1)).scalar()
            c.execute(insert(audit_log).values(
                **row, content_sha256=content, erased=False,
                chain_sha256=audit.chain_hash(previous or audit.GENESIS, content)))

    def _lock_audit(self, c) -> None:
        """Serialize appends: PostgreSQL's transaction advisory lock; SQLite's
        write lock, taken by a write before the last row is read."""
        if c.dialect.name == "postgresql":
            c.exec_driver_sql(f"SELECT pg_advisory_xact_lock({AUDIT_LOCK})")
        else:
            c.execute(update(audit_log).where(audit_log.c.id == -1).values(erased=False))

    def audit_chain(self):
        """Every audit row, in the order they were appended (for ``audit.verify``)."""
        with self.engine.connect() as c:
            return _rows(c.execute(select(audit_log).order_by(audit_log.c.id)))

    def verify_audit(self) -> audit.AuditCheck:
        return audit.verify(self.audit_chain())

    def audit_rows_with(self, values) -> list[dict]:
        """Audit rows whose detail holds one of ``values`` (pseudonyms) as a value."""
        values = set(values)
        if not values:
            return []
        like = [audit_log.c.detail.like(f"%{v}%") for v in values]
        with self.engine.connect() as c:
            rows = _rows(c.execute(select(audit_log).where(or_(*like), audit_log.c.erased
                                                           .is_(False)).order_by(audit_log.c.id)))
        return [r for r in rows if values & set(_json_values(r["detail"]))]

    def erase_audit_rows(self, ids) -> int:
        """Redact rows (actor and detail) and mark them erased; their hashes
        stay, so the chain still verifies (``audit.verify`` says they were erased)."""
        ids = list(ids)
        if not ids:
            return 0
        with self.engine.begin() as c:
            return c.execute(update(audit_log).where(audit_log.c.id.in_(ids))
                             .values(actor="erased", detail=None, erased=True)).rowcount

    def audit_rows(self, limit=200, event=None):
        q = select(audit_log).order_by(audit_log.c.at.desc(), audit_log.c.id.desc()).limit(limit)
        if event:
            q = q.where(audit_log.c.event == event)
        with self.engine.connect() as c:
            return _rows(c.execute(q))

    # ---------------------------------------------------------------- API keys
    def create_key(self, name, actor="cli", options=None):
        """Create an API key; return ``(key_id, plaintext)``.  Only its
        SHA-256 is stored; the plaintext is shown once by the caller.
        ``options`` (checked conversion options) are the key's defaults."""
        name = (name or "").strip()
        if not name or len(name) > 80:
            raise ValueError("a key name is 1 to 80 characters")
        secret = secrets.token_urlsafe(32)
        plaintext = KEY_PREFIX + secret
        prefix = plaintext[: len(KEY_PREFIX) + 8]
        with self.engine.begin() as c:
            key_id = c.execute(insert(api_keys).values(
                name=name, prefix=prefix, sha256=hashlib.sha256(plaintext.encode()).hexdigest(),
                created=time.time(), options=json.dumps(options) if options else None,
            )).inserted_primary_key[0]
        self.audit("key-created", actor, {"key": key_id, "prefix": prefix})
        return key_id, plaintext

    def verify_key(self, plaintext):
        """The key's row when ``plaintext`` is a live key, else None."""
        if not plaintext or not plaintext.startswith(KEY_PREFIX) or len(plaintext) > 100:
            return None
        digest = hashlib.sha256(plaintext.encode()).hexdigest()
        with self.engine.begin() as c:
            row = c.execute(select(api_keys).where(
                api_keys.c.prefix == plaintext[:len(KEY_PREFIX) + 8])).mappings().first()
            if row is None or row["revoked"] or not hmac.compare_digest(row["sha256"], digest):
                return None
            c.execute(update(api_keys).where(api_keys.c.id == row["id"])
                      .values(last_used=time.time()))
        key = dict(row)
        key["options"] = json.loads(key["options"]) if key.get("options") else {}
        return key

    def list_keys(self):
        with self.engine.connect() as c:
            return _rows(c.execute(
                select(api_keys.c.id, api_keys.c.name, api_keys.c.prefix, api_keys.c.created,
                       api_keys.c.last_used, api_keys.c.revoked, api_keys.c.options)
                .order_by(api_keys.c.id)))

    def revoke_key(self, prefix, actor="cli") -> bool:
        with self.engine.begin() as c:
            n = c.execute(update(api_keys).where(api_keys.c.prefix == prefix,
                                                 api_keys.c.revoked.is_(None))
                          .values(revoked=time.time())).rowcount
        if n:
            self.audit("key-revoked", actor, {"prefix": prefix})
        return bool(n)

    def record_usage(self, key_id, endpoint, bytes_in, bytes_out):
        with self.engine.begin() as c:
            c.execute(insert(usage).values(key_id=key_id, endpoint=endpoint[:80],
                                           bytes_in=int(bytes_in), bytes_out=int(bytes_out),
                                           at=time.time()))

    def usage_rows(self, key_id=None):
        q = select(usage).order_by(usage.c.at)
        if key_id is not None:
            q = q.where(usage.c.key_id == key_id)
        with self.engine.connect() as c:
            return _rows(c.execute(q))

    # ---------------------------------------------------------------- admins
    def add_admin(self, name, password):
        """Create (or reset the password of) an admin account; argon2id hash."""
        name = (name or "").strip()
        if not name or len(name) > 80:
            raise ValueError("an admin name is 1 to 80 characters")
        if not password or len(password) < 10:
            raise ValueError("an admin password has at least 10 characters")
        digest = PasswordHasher().hash(password)
        with self.engine.begin() as c:
            done = c.execute(update(admins).where(admins.c.name == name)
                             .values(password_hash=digest)).rowcount
            if not done:
                c.execute(insert(admins).values(name=name, password_hash=digest,
                                                created=time.time()))
        self.audit("admin-added" if not done else "admin-password-reset", "cli", {"admin": name})

    def verify_admin(self, name, password) -> bool:
        with self.engine.connect() as c:
            row = c.execute(select(admins).where(admins.c.name == name)).mappings().first()
        hasher = PasswordHasher()
        if row is None:
            # spend the same time as a real check, so names cannot be probed by timing
            try:
                hasher.verify(_dummy_hash(), password or "")
            except (VerificationError, InvalidHashError):
                pass
            return False
        try:
            return hasher.verify(row["password_hash"], password or "")
        except (VerificationError, InvalidHashError):
            return False

    def list_admins(self):
        with self.engine.connect() as c:
            return _rows(c.execute(select(admins.c.id, admins.c.name, admins.c.created)
                                   .order_by(admins.c.id)))

    def admin_account(self, name) -> dict | None:
        """The account ``name`` (id, name, password hash), or None."""
        with self.engine.connect() as c:
            row = c.execute(select(admins).where(admins.c.name == name)).mappings().first()
        return dict(row) if row else None

    def admin_account_by_id(self, admin_id: int) -> dict | None:
        """The account with id ``admin_id`` (id, name, password hash), or None."""
        with self.engine.connect() as c:
            row = c.execute(select(admins).where(admins.c.id == admin_id)).mappings().first()
        return dict(row) if row else None

    def remove_admin(self, name, actor="cli") -> bool:
        """Delete the account ``name`` (its sessions end on their next request);
        False when there is none."""
        with self.engine.begin() as c:
            done = c.execute(delete(admins).where(admins.c.name == name)).rowcount
        if done:
            self.audit("admin-removed", actor, {"admin": name})
        return bool(done)


@functools.lru_cache(maxsize=1)
def _dummy_hash():
    return PasswordHasher().hash(secrets.token_hex(16))
