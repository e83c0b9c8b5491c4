"""The DICOM C-STORE receiver (``ephemesh scp``): a PACS sends series, each
becomes a conversion job, and the model goes back (``EPHEMESH_RETURN_TO``).

* Associations are accepted only from ``EPHEMESH_SCP_PEERS`` (AE title and
  address); anyone else gets A-ASSOCIATE-RJ "calling AE title not
  recognised".  Verification (C-ECHO) and the storage classes that hold CT
  and MR images (classic and enhanced) are offered, each with every transfer
  syntax the converter can decode: a syntax nobody here can decode is
  refused at association, per presentation context.
* Each instance received is streamed into the store as its series' upload
  (one per association and Series Instance UID; ``worker.intake``).  When the association is released, or a series has
  been idle for ``EPHEMESH_SCP_IDLE_SECONDS``, each series becomes a job
  whose deadline counts from its first instance.  An aborted association
  drops what it sent (and so does stopping the receiver).  Nothing of a
  series is written anywhere but its upload in the store; UIDs are keys of a
  dictionary in this process only, never logged.
* Refusals are C-STORE statuses: 0xA700 (out of resources: a series over
  the instance or byte limit), 0xC000 (cannot understand: not a DICOM
  dataset, no Series Instance UID).
"""

from __future__ import annotations

import io
import logging
import threading
import time
from dataclasses import dataclass

from converter.decoders import decodable_syntaxes

from .intake import Limits, Refusal
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
    intake: object  # worker.intake.Intake: the instances go to the store as they come
    last: float  # when its last instance came
    count: int = 0
    size: int = 0


class Receiver:
    """Series being received, keyed by (association, Series Instance UID).

    Parameters
    ----------
    service : worker.service.Service
    limits : worker.intake.Limits
        What one series may hold (the upload limits).
    idle_seconds : float
        A series idle this long becomes a job even while its association is open.
    """

    def __init__(self, service, *, limits: Limits, idle_seconds: float):
        self.service = service
        self.limits = limits
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
        with self._lock:
            key = (assoc_key, series_uid)
            series = self._series.get(key)
            if series is None:  # its deadline counts from its first byte
                series = self._series[key] = _Series(self.service.receive(self.limits),
                                                     time.time())
            if (series.count >= self.limits.max_files
                    or series.size + len(data) > self.limits.max_unpacked):
                return OUT_OF_RESOURCES
            try:
                series.intake.add(io.BytesIO(data))
            except Refusal:
                return CANNOT_UNDERSTAND
            except OSError:  # the store is full
                return OUT_OF_RESOURCES
            series.count += 1
            series.size += len(data)
            series.last = time.time()
        return SUCCESS

    def released(self, assoc_key: int) -> list[str]:
        """The association ended well: each of its series becomes a job."""
        return self._submit(lambda key, _s: key[0] == assoc_key, forget=assoc_key)

    def aborted(self, assoc_key: int) -> int:
        """The association was aborted: drop what it sent; return the instances dropped."""
        with self._lock:
            dropped = [self._series.pop(k) for k in list(self._series) if k[0] == assoc_key]
            self._peer.pop(assoc_key, None)
        for series in dropped:
            series.intake.abort()
        return sum(s.count for s in dropped)

    def idle(self, now: float | None = None) -> list[str]:
        """Series idle for ``idle_seconds`` become jobs."""
        now = time.time() if now is None else now
        return self._submit(lambda _k, s: now - s.last >= self.idle_seconds)

    def pending(self) -> int:
        with self._lock:
            return len(self._series)

    def close(self) -> None:
        """Drop every series still being received (the receiver stops)."""
        with self._lock:
            dropped, self._series = list(self._series.values()), {}
        for series in dropped:
            series.intake.abort()

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
                series.intake.finish()
                view = self.service.create_job(series.intake, {}, owner=owners[key],
                                               from_pacs=True)
            except Exception as exc:  # a refused series is logged by its code only
                series.intake.abort()
                log.warning("a received series of %d instances was not converted (%s)",
                            series.count, getattr(exc, "code", type(exc).__name__))
                continue
            made.append(view["id"])
            log.info("job %s: a series of %d instances received", view["id"], series.count)
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
                 limits: Limits | None = None):
        from pynetdicom import AE, evt

        quiet_pynetdicom()
        self.settings = settings
        self.peers = tuple(peers)
        self.host, self.port = host, int(port)
        self.receiver = Receiver(service, limits=limits or Limits(),
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
        self.receiver.close()

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
