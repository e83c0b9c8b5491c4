"""Putting work on the queue: store the payload, record the job, enqueue it.

The one place that calls ``enqueue``: every TTL is explicit and inside the
retention (``Queue()`` ignores TTLs; they belong on ``enqueue``), the job's
only argument is its opaque id, and its deadline rides in ``job.meta`` so the
worker can keep a TTL on the job key even while the job runs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time

from rq import Queue, Retry

from . import metrics
from .intake import Intake

#: how often a killed conversion is tried again
RETRIES = 2
#: every job and batch id has this length (RQ ids add "-N" for later attempts)
ID_LENGTH = 22
#: RQ attempt numbers: 1 the first enqueue, CHOSEN_ATTEMPT after the owner chose
#: a series, LOST_ATTEMPT when the sweeper puts back work a Redis restart lost
CHOSEN_ATTEMPT = 2
LOST_ATTEMPT = 3
#: the RQ jobs (``worker/tasks.py``), named as RQ imports them in the work horse
CONVERT = "worker.tasks.convert_job"
SPLIT = "worker.tasks.split_batch"
READ = "worker.scans.read_scan"  # a scan workspace's series, read once


#: kept with an upload's options (in the store only): the series came from a
#: PACS (STOW-RS or C-STORE), so its model is kept as a DICOM instance that
#: carries the source's patient and study, and goes back to
#: ``EPHEMESH_RETURN_TO`` when done
FROM_PACS = "from_pacs"


def new_id() -> str:
    """An opaque, unguessable id (22 characters of A-Z a-z 0-9 _ -)."""
    token = secrets.token_urlsafe(16)
    assert len(token) == ID_LENGTH
    return token


def derived_id(parent: str, n: int) -> str:
    """A stable id for the ``n``-th child of ``parent`` (a batch's jobs), so a
    batch split twice after a crash makes each job once.  As unguessable as
    the parent, which only its owner knows."""
    digest = hashlib.sha256(f"{parent}:{n}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:ID_LENGTH]


def owner_hash(owner: str) -> str:
    """Owners (``session:…``, ``key:…``) are kept only as a hash."""
    return hashlib.sha256(owner.encode()).hexdigest()


def submit_job(ctx, files, options, *, owner_digest, created, deadline, batch_id=None,
               seq=0, pick=False, job_id=None, received_sha256=None, scan_id=None) -> str:
    """Store ``files`` and ``options`` as a job's input and enqueue its conversion.

    Parameters
    ----------
    ctx : worker.context.Context
    files : list of bytes, or worker.intake.Intake
        The files, or an upload already streamed into the store (its id is
        the job's, its created time and deadline are the ones given).
    options : dict
        Converter options (already checked); may carry ``series`` (UID or
        number) — it lives in the store with the payload, never elsewhere.
    owner_digest : str
        ``owner_hash`` of the owner.
    created, deadline : float
        UNIX times; the input is deleted by ``deadline`` at the latest.
    received_sha256 : str, optional
        The salted digest of what the upload sent (``worker.receipts``),
        for the job's deletion receipts.
    scan_id : str, optional
        The scan workspace the job converts from (its options say so too).

    Returns
    -------
    str
        The new job id.  With ``job_id`` given (a batch being split again
        after a crash) an existing job of that id is left as it is.
    """
    if isinstance(files, Intake):
        job_id = files.object_id
    elif job_id is None:
        job_id = new_id()
    elif ctx.records.job(job_id) is not None:
        return job_id
    size = store_input(ctx, job_id, files, options, created=created, deadline=deadline)
    if batch_id is None:  # a batch's jobs were received as the batch
        metrics.count(ctx, "ephemesh_received_bytes", size)
    ctx.records.add_job(job_id, owner_digest, created, deadline, batch_id=batch_id, seq=seq,
                        pick=pick, input_bytes=size, received_sha256=received_sha256)
    if scan_id is not None:
        ctx.records.add_scan_job(job_id, scan_id)
    enqueue(ctx, CONVERT, job_id, deadline)
    return job_id


def store_input(ctx, object_id, files, options, *, created, deadline) -> int:
    """The input object: the options as JSON, then the files (a list of bytes,
    or an ``Intake`` that holds them in the store already and commits now).
    Returns its size."""
    first = json.dumps(options).encode()
    if isinstance(files, Intake):
        return files.commit(first)
    parts = [first] + [bytes(f) for f in files]
    return ctx.store.put("input", object_id, parts, deadline, created=created)


def rq_id(object_id: str, attempt: int = 1) -> str:
    """The RQ job id of the ``attempt``-th enqueue of ``object_id``'s work."""
    return object_id if attempt <= 1 else f"{object_id}-{attempt}"


def rq_ids(object_id: str) -> tuple[str, ...]:
    """Every RQ job id ``object_id``'s work may have had, first attempt first."""
    return tuple(rq_id(object_id, attempt) for attempt in range(1, LOST_ATTEMPT + 1))


def object_of(rq_job_id: str) -> str:
    """The job or batch id an RQ job id belongs to (inverse of ``rq_id``)."""
    return rq_job_id[:ID_LENGTH]


def enqueue(ctx, func: str, object_id: str, deadline: float, *, retries: int = RETRIES,
            attempt: int = 1):
    """Enqueue ``func(object_id)`` with every TTL explicit and inside the retention.

    A second enqueue of the same work (after the owner chose a series) uses
    ``attempt=2``: a fresh RQ job id, so the first job's keys stay apart.
    """
    settings = ctx.settings
    left = max(1, int(deadline - time.time()))
    queue = Queue(settings.queue, connection=ctx.redis)
    kwargs = {"retry": Retry(max=retries)} if retries else {}
    return queue.enqueue(
        func, object_id,
        job_id=rq_id(object_id, attempt),
        description=func.rsplit(".", 1)[-1],  # never the arguments
        job_timeout=max(1, min(settings.job_timeout, left)),
        ttl=left,  # the longest it may wait in the queue
        result_ttl=left,
        failure_ttl=left,
        meta={"deadline": deadline},
        **kwargs,
    )
