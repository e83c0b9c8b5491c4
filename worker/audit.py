"""The audit log's hash chain: what makes a changed or removed row visible.

Each row keeps two hashes (``worker/records.py`` writes them as it appends,
one writer at a time: PostgreSQL's advisory lock, SQLite's write lock)::

    content_sha256 = SHA-256(canonical JSON of {at, event, actor, detail})
    chain_sha256   = SHA-256(previous row's chain_sha256 || content_sha256)

(hex strings, concatenated; the first row's previous chain is 64 zeros).
A changed row no longer matches its content hash; a removed row, or a
content hash rewritten to match a change, breaks the chain at the next row.

Erasing a data subject's rows (``web/subjects.py``) redacts their content
(``actor`` and ``detail``) and marks them ``erased`` but keeps both hashes,
so the chain still holds: ``verify`` reports erased rows as erased, not as
tampered, and checks that the erasure records (``subject-erased`` rows)
account for every one of them.  The chain shows tampering by anyone who
cannot rewrite every later row; note the head (``AuditCheck.head``) outside
the database to catch even that, or a removed last row.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field

GENESIS = "0" * 64
#: the event an erasure writes; its detail says how many audit rows it erased
ERASED_EVENT = "subject-erased"


def content_hash(at: float, event: str, actor: str, detail: str | None) -> str:
    canonical = json.dumps({"at": at, "event": event, "actor": actor, "detail": detail},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def chain_hash(previous: str, content: str) -> str:
    return hashlib.sha256((previous + content).encode("ascii")).hexdigest()


@dataclass
class AuditCheck:
    rows: int = 0
    erased: int = 0
    unchained: int = 0  # rows written before the chain existed (older ephemesh)
    head: str = GENESIS
    problems: list = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


def _when(at) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at)) if at else "?"


def verify(rows) -> AuditCheck:
    """Check the chain over ``rows`` (every audit row, in id order)."""
    check = AuditCheck()
    previous, previous_id, started, accounted = GENESIS, None, False, 0
    for row in rows:
        check.rows += 1
        name = f"row {row['id']} ({row['event']}, {_when(row['at'])})"
        if row["content_sha256"] is None:
            if started:
                check.problems.append(f"{name} has no hash: it was added around the chain")
            else:
                check.unchained += 1
            continue
        started = True
        if row["erased"]:
            check.erased += 1
        elif content_hash(row["at"], row["event"], row["actor"], row["detail"]) \
                != row["content_sha256"]:
            check.problems.append(f"{name} was changed")
        if chain_hash(previous, row["content_sha256"]) != row["chain_sha256"]:
            after = f"row {previous_id}" if previous_id is not None else "the start"
            check.problems.append(f"{name} does not follow from {after}: a row between them "
                                  "was removed, or this row's hash was rewritten")
        if row["event"] == ERASED_EVENT and not row["erased"]:
            try:
                accounted += int(json.loads(row["detail"] or "{}").get("audit_rows", 0))
            except (ValueError, TypeError, AttributeError):
                pass
        previous, previous_id = row["chain_sha256"] or previous, row["id"]
    if check.erased > accounted:
        check.problems.append(f"{check.erased} rows are marked erased, but the erasure records "
                              f"account for {accounted}")
    check.head = previous
    return check
