"""The worker side's vocabularies, declared once: job and batch states, the
kinds of object the purge ledger records, and why each was deleted.

They are ``StrEnum``s, so a member is the very string the database, the API
and the job page hold (``JobStatus.DONE == "done"``).  Adding a state, a kind
or a reason is one line here (and a place in the named sets below); the
records, the sweeper, the service, the OpenAPI document and the job page
read them from here.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"  # on the queue (again, after a lost queue or a series choice)
    RUNNING = "running"  # a work horse converts it
    CHOOSING = "choosing"  # stopped for its owner to choose a series (upload kept)
    DONE = "done"  # its model and report are stored
    FAILED = "failed"  # ended with an error code (upload gone)
    DELETED = "deleted"  # deleted on request, or its model went at its deadline


class BatchStatus(StrEnum):
    SPLITTING = "splitting"  # a worker splits it into one job per series
    #: split, and some of its jobs still wait or convert (never stored: the
    #: row says READY once split, and the facade says CONVERTING until its jobs end)
    CONVERTING = "converting"
    READY = "ready"  # every one of its jobs has ended (done, failed or deleted)
    FAILED = "failed"
    DELETED = "deleted"


class ScanStatus(StrEnum):
    """A scan workspace: one upload, looked at and converted as often as its owner likes."""

    READING = "reading"  # a worker reads its series once
    READY = "ready"  # its series are listed and decoded
    FAILED = "failed"  # it could not be read (upload gone)
    DELETED = "deleted"  # its owner said "Done", or its deadline came (upload gone)


#: a job a worker is to run or runs: its progress moves (the job page polls)
WAITING = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})
#: a job that has not ended: the sweeper fails it (``expired``) at its deadline
LIVE = WAITING | {JobStatus.CHOOSING}
#: a job that has ended: it holds no upload
ENDED = frozenset({JobStatus.DONE, JobStatus.FAILED, JobStatus.DELETED})
BATCH_LIVE = frozenset({BatchStatus.SPLITTING})
BATCH_ENDED = frozenset({BatchStatus.READY, BatchStatus.FAILED, BatchStatus.DELETED})
#: a scan whose upload is kept (until "Done" or its deadline)
SCAN_LIVE = frozenset({ScanStatus.READING, ScanStatus.READY})
SCAN_ENDED = frozenset({ScanStatus.FAILED, ScanStatus.DELETED})
#: the row of a job or of a batch (the store holds both kinds' uploads) that has ended
OWNER_ENDED = ENDED | BATCH_ENDED


class Kind(StrEnum):
    """What a purge-ledger row records the deletion of."""

    INPUT = "input"  # an upload and its options (store)
    RESULT = "result"  # an STL and its report (store)
    REDIS_JOB = "redis-job"  # every Redis key of one RQ job
    ACCESS_LOG = "access-log"  # access-log rows past their days (one row per sweep)
    SCAN = "scan"  # a scan workspace's upload, kept until "Done" or its deadline (store)
    VOLUME = "volume"  # a scan's decoded volumes and its listing, gone with the upload (store)


#: the kinds the payload store holds
STORED = (Kind.INPUT, Kind.RESULT, Kind.SCAN, Kind.VOLUME)
#: what a scan workspace keeps in the store under its id
SCAN_STORED = (Kind.SCAN, Kind.VOLUME)
#: a result's parts in the store, in order: the model file, its report (JSON),
#: its DICOM header (a PACS's binary STL; else empty), the reduced mesh for the 3D view
MODEL_PART, REPORT_PART, DICOM_PART, PREVIEW_PART = range(4)


class Reason(StrEnum):
    """Why a thing was deleted."""

    CONVERTED = "converted"  # its conversion (or split) ended well
    EXPIRED = "expired"  # its deadline came
    USER_REQUEST = "user-request"  # its owner deleted it
    FAILED = "failed"  # its conversion failed
    SHUTDOWN = "shutdown"  # the service stopped ('ephemesh serve' without --keep-on-stop)
