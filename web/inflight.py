"""How much this web server takes in at once, across all its requests and threads.

* **Bytes in flight** (``EPHEMESH_MAX_IN_FLIGHT_MB``): an upload reserves its
  declared length when it starts and then every byte it writes to the store
  or the spool beyond that (unpacked zip members), until it has been handed
  to the queue or refused.  When the budget is full a new upload is refused
  before its body is read, and one that would grow past it stops, with 503
  ``busy`` and ``Retry-After``; one that alone needs more than the whole
  budget is 413 ``too_large``.
* **Uploads per address** (``EPHEMESH_MAX_UPLOADS_PER_ADDRESS``): more at
  once from one address are refused with 429 ``too_many_uploads`` and
  ``Retry-After``.

Both are counted in this process (one ``ephemesh serve``): the addresses
are held in memory only while their uploads run, never written anywhere.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

from .problems import Refused

MB = 1024 * 1024
#: reserved ahead of an upload's writes, so that not every chunk takes the lock
SLACK = 4 * MB
#: seconds a client is asked to wait when the server's budget is full
BUSY_RETRY_S = 10
#: seconds a client is asked to wait when its address has too many uploads running
UPLOADS_RETRY_S = 5


class InFlight:
    """The budget of upload bytes in flight and the uploads running per address."""

    def __init__(self, budget: int, per_address: int):
        if int(budget) < 1 or int(per_address) < 1:
            raise ValueError("the budget and the uploads per address must be at least 1")
        self.budget = int(budget)
        self.per_address = int(per_address)
        self.used = 0
        self._uploads: dict[str, int] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config) -> InFlight:
        return cls(config["EPHEMESH_MAX_IN_FLIGHT"], config["EPHEMESH_MAX_UPLOADS_PER_ADDRESS"])

    def uploads(self, address: str) -> int:
        with self._lock:
            return self._uploads.get(address, 0)

    @contextmanager
    def admit(self, address: str, declared: int):
        """An upload from ``address`` declaring ``declared`` bytes, for as long
        as the block runs; yields its ``Ticket``.  Raises ``Refused`` (429,
        503 or 413) when it may not start."""
        declared = max(0, int(declared or 0))
        with self._lock:
            running = self._uploads.get(address, 0)
            if running >= self.per_address:
                raise Refused("too_many_uploads",
                              f"This address has {running} uploads running; at most "
                              f"{self.per_address} at once. Try again when one has ended.",
                              429, {"Retry-After": str(UPLOADS_RETRY_S)})
            self._uploads[address] = running + 1
        ticket = Ticket(self)
        try:
            ticket.reserve(declared)
            yield ticket
        finally:
            ticket.release()
            with self._lock:
                left = self._uploads.get(address, 1) - 1
                if left > 0:
                    self._uploads[address] = left
                else:
                    self._uploads.pop(address, None)


class Ticket:
    """One upload's share of the budget: what it reserved and what it wrote."""

    def __init__(self, budget: InFlight):
        self.inflight = budget
        self.reserved = 0
        self.written = 0

    def reserve(self, n: int, slack: int = 0) -> None:
        """Reserve ``n`` more bytes (and up to ``slack`` more where there is
        room, so that each write need not ask), or raise ``Refused`` (503
        busy; 413 when this upload alone needs more than the whole budget)."""
        if n <= 0:
            return
        budget = self.inflight
        with budget._lock:
            if budget.used + n <= budget.budget:
                grant = min(n + slack, budget.budget - budget.used)
                budget.used += grant
                self.reserved += grant
                return
            alone = self.reserved + n > budget.budget
        if alone:
            raise Refused("too_large", "The upload needs more room than this server has for "
                          f"uploads in progress ({budget.budget // MB} MB).", 413)
        raise Refused("busy", "The server is taking in as many uploads as it can just now; "
                      "try again in a few seconds.", 503, {"Retry-After": str(BUSY_RETRY_S)})

    def take(self, n: int) -> None:
        """``n`` more bytes are about to be written: beyond what was reserved,
        they are reserved now (``worker.intake.Intake``'s ``take``)."""
        self.written += n
        if self.written > self.reserved:
            self.reserve(self.written - self.reserved, slack=SLACK)

    def release(self) -> None:
        budget = self.inflight
        with budget._lock:
            budget.used -= self.reserved
            self.reserved = 0
