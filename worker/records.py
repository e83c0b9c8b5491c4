"""Lasting records, through SQLAlchemy Core: SQLite by default, PostgreSQL
when ``EPHEMESH_DATABASE_URL`` says so.

Nothing here holds patient data, file names or DICOM UIDs: ids are random
opaque tokens, the job report is the converter's safe report, errors are
stable codes with fixed messages, IPs live only in the access log (30 days).
Times are UNIX seconds (float) so both databases compare them alike.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time

from sqlalchemy import (
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
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

metadata = MetaData()

jobs = Table(
    "jobs", metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(128), nullable=False, index=True),
    Column("batch_id", String(64), index=True),
    Column("created", Float, nullable=False),
    Column("deadline", Float, nullable=False),
    Column("status", String(16), nullable=False),  # queued running done failed deleted
    Column("error_code", String(64)),
    Column("error_message", String(300)),
    Column("report", Text),
    Column("finished", Float),
)

purge_ledger = Table(
    "purge_ledger", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),  # input result redis-job access-log
    Column("object_id", String(64), nullable=False),
    Column("bytes", Integer, nullable=False, default=0),
    Column("created", Float),
    Column("deadline", Float),
    Column("deleted", Float, nullable=False),
    Column("reason", String(16), nullable=False),  # converted expired user-request failed
    Column("late", Boolean, nullable=False, default=False),
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
    Column("bytes", Integer, nullable=False),
)

audit_log = Table(
    "audit_log", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False, index=True),
    Column("event", String(40), nullable=False),
    Column("actor", String(80), nullable=False),
    Column("detail", Text),
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
)

usage = Table(
    "usage", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key_id", Integer, index=True),
    Column("endpoint", String(80), nullable=False),
    Column("bytes_in", Integer, nullable=False),
    Column("bytes_out", Integer, nullable=False),
    Column("at", Float, nullable=False),
)

sweeps = Table(
    "sweeps", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False, index=True),
    Column("deleted", Integer, nullable=False),
    Column("late", Integer, nullable=False),
)

KEY_PREFIX = "emk_"


class Records:
    """The database, with one small method per thing recorded."""

    def __init__(self, url: str):
        kwargs = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
        self.engine = create_engine(url, **kwargs)
        metadata.create_all(self.engine)

    def close(self):
        self.engine.dispose()

    # ---------------------------------------------------------------- jobs
    def add_job(self, job_id, owner, created, deadline, batch_id=None):
        with self.engine.begin() as c:
            c.execute(insert(jobs).values(id=job_id, owner=owner, batch_id=batch_id,
                                          created=created, deadline=deadline, status="queued"))

    def set_job(self, job_id, **values):
        with self.engine.begin() as c:
            c.execute(update(jobs).where(jobs.c.id == job_id).values(**values))

    def finish_job(self, job_id, report: dict):
        self.set_job(job_id, status="done", report=json.dumps(report), finished=time.time())

    def fail_job(self, job_id, code, message):
        self.set_job(job_id, status="failed", error_code=code, error_message=message[:300],
                     finished=time.time())

    def job(self, job_id):
        with self.engine.connect() as c:
            row = c.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
        return dict(row) if row else None

    def jobs_of_batch(self, batch_id):
        with self.engine.connect() as c:
            rows = c.execute(select(jobs).where(jobs.c.batch_id == batch_id)
                             .order_by(jobs.c.created)).mappings().all()
        return [dict(r) for r in rows]

    # ---------------------------------------------------------------- ledger
    def record_deletion(self, kind, object_id, size, created, deadline, reason, now=None) -> bool:
        """Write one ledger row; False when that object was already recorded."""
        now = time.time() if now is None else now
        late = deadline is not None and now > deadline + 60  # one sweep period of grace
        try:
            with self.engine.begin() as c:
                c.execute(insert(purge_ledger).values(
                    kind=kind, object_id=object_id, bytes=int(size or 0), created=created,
                    deadline=deadline, deleted=now, reason=reason, late=bool(late)))
        except IntegrityError:
            return False
        return True

    def ledger(self, since=None):
        q = select(purge_ledger).order_by(purge_ledger.c.deleted)
        if since is not None:
            q = q.where(purge_ledger.c.deleted >= since)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings().all()]

    def purge_summary(self, since=None):
        """Per day, kind and reason: count, bytes, oldest age at deletion, late count."""
        out = {}
        for row in self.ledger(since):
            day = time.strftime("%Y-%m-%d", time.gmtime(row["deleted"]))
            key = (day, row["kind"], row["reason"])
            agg = out.setdefault(key, {"day": day, "kind": row["kind"], "reason": row["reason"],
                                       "count": 0, "bytes": 0, "oldest_age_s": 0.0, "late": 0})
            agg["count"] += 1
            agg["bytes"] += row["bytes"]
            if row["created"] is not None:
                agg["oldest_age_s"] = max(agg["oldest_age_s"], round(row["deleted"] - row["created"], 1))
            agg["late"] += int(bool(row["late"]))
        return [out[k] for k in sorted(out)]

    def record_sweep(self, deleted, late, now=None):
        with self.engine.begin() as c:
            c.execute(insert(sweeps).values(at=time.time() if now is None else now,
                                            deleted=deleted, late=late))

    def last_sweep(self):
        with self.engine.connect() as c:
            return c.execute(select(func.max(sweeps.c.at))).scalar()

    # ---------------------------------------------------------------- access and audit
    def log_access(self, ip, method, route, status, nbytes, at=None):
        with self.engine.begin() as c:
            c.execute(insert(access_log).values(at=time.time() if at is None else at, ip=ip,
                                                method=method[:8], route=route[:120],
                                                status=int(status), bytes=int(nbytes)))

    def purge_access_log(self, older_than) -> int:
        with self.engine.begin() as c:
            return c.execute(delete(access_log).where(access_log.c.at < older_than)).rowcount

    def audit(self, event, actor, detail=None):
        with self.engine.begin() as c:
            c.execute(insert(audit_log).values(at=time.time(), event=event, actor=actor,
                                               detail=json.dumps(detail or {})))

    # ---------------------------------------------------------------- API keys
    def create_key(self, name):
        """Create an API key; return ``(key_id, plaintext)``.  Only its
        SHA-256 is stored; the plaintext is shown once by the caller."""
        if not name or len(name) > 80:
            raise ValueError("a key name is 1 to 80 characters")
        secret = secrets.token_urlsafe(32)
        plaintext = KEY_PREFIX + secret
        prefix = plaintext[: len(KEY_PREFIX) + 8]
        with self.engine.begin() as c:
            key_id = c.execute(insert(api_keys).values(
                name=name, prefix=prefix, sha256=hashlib.sha256(plaintext.encode()).hexdigest(),
                created=time.time())).inserted_primary_key[0]
        self.audit("key-created", "cli", {"prefix": prefix})
        return key_id, plaintext

    def verify_key(self, plaintext):
        if not plaintext or not plaintext.startswith(KEY_PREFIX):
            return None
        digest = hashlib.sha256(plaintext.encode()).hexdigest()
        with self.engine.begin() as c:
            row = c.execute(select(api_keys).where(api_keys.c.prefix == plaintext[:len(KEY_PREFIX) + 8])
                            ).mappings().first()
            if row is None or row["revoked"] or not hmac.compare_digest(row["sha256"], digest):
                return None
            c.execute(update(api_keys).where(api_keys.c.id == row["id"]).values(last_used=time.time()))
        return dict(row)

    def list_keys(self):
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(
                select(api_keys.c.id, api_keys.c.name, api_keys.c.prefix, api_keys.c.created,
                       api_keys.c.last_used, api_keys.c.revoked).order_by(api_keys.c.id)).mappings()]

    def revoke_key(self, prefix) -> bool:
        with self.engine.begin() as c:
            n = c.execute(update(api_keys).where(api_keys.c.prefix == prefix,
                                                 api_keys.c.revoked.is_(None))
                          .values(revoked=time.time())).rowcount
        if n:
            self.audit("key-revoked", "cli", {"prefix": prefix})
        return bool(n)

    def record_usage(self, key_id, endpoint, bytes_in, bytes_out):
        with self.engine.begin() as c:
            c.execute(insert(usage).values(key_id=key_id, endpoint=endpoint, bytes_in=int(bytes_in),
                                           bytes_out=int(bytes_out), at=time.time()))
