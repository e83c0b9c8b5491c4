"""The DICOM C-STORE receiver (``ephemesh scp``): a PACS sends series, each
becomes a conversion job, and the model goes back (``EPHEMESH_RETURN_TO``).

* Associations are accepted only from ``EPHEMESH_SCP_PEERS`` (AE title and
  address); anyone else gets A-ASSOCIATE-RJ "calling AE title not
  recognised".  Verification (C-ECHO) and the storage classes that hold CT
  and MR images (classic and enhanced) are offered, each with every transfer
  syntax the converter can decode: a syntax nobody here can decode is
  refused at association, per presentation context.
* Each instance received is added to its series (one per association and
  Series Instance UID).  When the association is released, or a series has
  been idle for ``EPHEMESH_SCP_IDLE_SECONDS``, each series becomes a job
  whose deadline counts from its first instance.  An aborted association
  drops what it sent.  Nothing of a series is written anywhere but the job's
  input in the store; UIDs are keys of a dictionary in this process only,
  never logged.
* Refusals are C-STORE statuses: 0xA700 (out of resources: a series over
  the instance or byte limit), 0xC000 (cannot understand: not a DICOM
  dataset, no Series Instance UID).
"""

from __future__ import annotations

import io
import logging
import threading
import time
from dataclasses import dataclass, field

from converter.decoders import decodable_syntaxes

from .returning import quiet_pynetdicom

log = logging.getLogger("ephemesh.scp")

#: the storage SOP classes offered: CT and MR images, classic and enhanced
STORAGE_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
    "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image Storage
)
VERIFICATION = "1.2.840.10008.1.1"
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
OWNER_KIND = "peer"


@dataclass
class _Series:
    first: float  # when its first byte came
    last: float  # when its last instance came
    files: list = field(default_factory=list)
    size: int = 0


class Receiver:
    """Series being received, keyed by (association, Series Instance UID).

    Parameters
    ----------
    service : worker.service.Service
    max_files, max_bytes : int
        What one series may hold (today's upload limits).
    idle_seconds : float
        A series idle this long becomes a job even while its association is open.
    """

    def __init__(self, service, *, max_files: int, max_bytes: int, idle_seconds: float):
        self.service = service
        self.max_files, self.max_bytes = int(max_files), int(max_bytes)
        self.idle_seconds = float(idle_seconds)
        self._lock = threading.Lock()
        self._series: dict[tuple, _Series] = {}
        self._peer: dict[int, str] = {}  # association -> owner
        self.jobs: list[str] = []  # ids of the jobs made (for the tests and the log)

    def opened(self, assoc_key: int, owner: str) -> None:
        with self._lock:
            self._peer[assoc_key] = owner

    def stored(self, assoc_key: int, series_uid: str, data: bytes) -> int:
        """Add one instance; return the C-STORE status."""
        now = time.time()
        with self._lock:
            key = (assoc_key, series_uid)
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series(first=now, last=now)
            if len(series.files) >= self.max_files or series.size + len(data) > self.max_bytes:
                return OUT_OF_RESOURCES
            series.files.append(data)
            series.size += len(data)
            series.last = now
        return SUCCESS

    def released(self, assoc_key: int) -> list[str]:
        """The association ended well: each of its series becomes a job."""
        return self._submit(lambda key, _s: key[0] == assoc_key, forget=assoc_key)

    def aborted(self, assoc_key: int) -> int:
        """The association was aborted: drop what it sent; return the instances dropped."""
        with self._lock:
            keys = [k for k in self._series if k[0] == assoc_key]
            dropped = sum(len(self._series.pop(k).files) for k in keys)
            self._peer.pop(assoc_key, None)
        return dropped

    def idle(self, now: float | None = None) -> list[str]:
        """Series idle for ``idle_seconds`` become jobs."""
        now = time.time() if now is None else now
        return self._submit(lambda _k, s: now - s.last >= self.idle_seconds)

    def pending(self) -> int:
        with self._lock:
            return len(self._series)

    def _submit(self, chosen, forget=None) -> list[str]:
        with self._lock:
            taken = [(k, self._series.pop(k)) for k in [k for k, s in self._series.items()
                                                          if chosen(k, s)]]
            owners = {k: self._peer.get(k[0], OWNER_KIND) for k, _ in taken}
            if forget is not None:
                self._peer.pop(forget, None)
        made = []
        for key, series in taken:
            try:
                view = self.service.create_job(series.files, {}, owner=owners[key],
                                               received_at=series.first, from_pacs=True)
            except Exception as exc:  # a refused series is logged by code only
                log.warning("a received series of %d instances was not converted (%s)",
                            len(series.files), getattr(exc, "code", type(exc).__name__))
                continue
            made.append(view["id"])
            log.info("job %s: a series of %d instances received", view["id"], len(series.files))
        with self._lock:
            self.jobs.extend(made)
        return made


def _series_uid(data: bytes) -> str | None:
    from pydicom import dcmread

    try:
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True,
                     specific_tags=["SeriesInstanceUID"])
        return str(ds.SeriesInstanceUID) or None
    except Exception:  # unreadable is one status, whatever the reason
        return None


class SCP:
    """The pynetdicom application entity around a ``Receiver``.

    ``start()`` listens in threads and returns; ``stop()`` ends every
    association (their series become jobs when released in time) and the
    idle checker."""

    def __init__(self, service, settings, *, port: int, ae_title: str, peers, host="0.0.0.0",
                 max_files=5000, max_bytes=4 << 30):
        from pynetdicom import AE, evt

        quiet_pynetdicom()
        self.settings = settings
        self.peers = tuple(peers)
        self.host, self.port = host, int(port)
        self.receiver = Receiver(service, max_files=max_files, max_bytes=max_bytes,
                                 idle_seconds=settings.scp_idle_seconds)
        self.ae = AE(ae_title=ae_title)
        self.ae.maximum_associations = 16
        self.ae.network_timeout = self.ae.acse_timeout = 30
        self.ae.dimse_timeout = 60
        syntaxes = list(decodable_syntaxes())
        for uid in STORAGE_CLASSES:
            self.ae.add_supported_context(uid, syntaxes)
        self.ae.add_supported_context(VERIFICATION)
        self.handlers = [(evt.EVT_REQUESTED, self._requested), (evt.EVT_C_STORE, self._store),
                         (evt.EVT_C_ECHO, lambda _e: SUCCESS),
                         (evt.EVT_RELEASED, self._released), (evt.EVT_ABORTED, self._aborted)]
        self.server = None
        self._stop = threading.Event()
        self._ticker = None

    def start(self):
        self.server = self.ae.start_server((self.host, self.port), block=False,
                                           evt_handlers=self.handlers)
        self.port = self.server.server_address[1]
        self._ticker = threading.Thread(target=self._tick, name="scp-idle", daemon=True)
        self._ticker.start()
        log.info("C-STORE receiver %s listening on port %d", self.ae.ae_title, self.port)
        return self

    def stop(self):
        self._stop.set()
        if self.server is not None:
            self.server.shutdown()
        if self._ticker is not None:
            self._ticker.join(timeout=5)

    def request_stop(self):
        """Make ``wait`` return (from a signal handler)."""
        self._stop.set()

    def wait(self, timeout=None) -> bool:
        """Wait until a stop is requested; False after ``timeout`` seconds."""
        return self._stop.wait(timeout)

    # -------------------------------------------------------------- events
    def _tick(self):
        period = max(0.2, min(5.0, self.settings.scp_idle_seconds / 4))
        while not self._stop.wait(period):
            self.receiver.idle()

    def _requested(self, event):
        assoc = event.assoc
        # the A-ASSOCIATE-RQ itself: the requestor's fields are filled in later
        calling = str(assoc.requestor.primitive.calling_ae_title or "").strip()
        address = assoc.requestor.address
        if not any(p.allows(calling, address) for p in self.peers):
            log.warning("association from an unknown peer refused")
            # as pynetdicom's own refusals: A-ASSOCIATE-RJ, permanent, calling
            # AE title not recognised; then the DUL stops once it has sent it
            assoc.acse.send_reject(0x01, 0x01, 0x03)
            assoc.is_rejected = True
            assoc.kill()
            return
        self.receiver.opened(id(assoc), f"{OWNER_KIND}:{calling.strip()}")

    def _store(self, event):
        data = event.encoded_dataset()
        uid = _series_uid(data)
        if uid is None:
            return CANNOT_UNDERSTAND
        return self.receiver.stored(id(event.assoc), uid, data)

    def _released(self, event):
        self.receiver.released(id(event.assoc))

    def _aborted(self, event):
        self.receiver.aborted(id(event.assoc))
