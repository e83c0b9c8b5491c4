"""Scan workspaces: one upload, read once, looked at and converted as often
as its owner likes, then gone.

* ``create_scan`` stores the upload (``Kind.SCAN``) with its deadline
  (upload + retention), records a ``scans`` row (opaque id, times, status:
  nothing from the files) and enqueues ``read_scan``.
* ``read_scan(scan_id)`` (an RQ job: the work horse's memory limit holds)
  lists the series and decodes each once, into the store next to the upload
  (``Kind.VOLUME``, same deadline): one part per decoded volume (its voxels
  as they lie in memory) and, last, the index (JSON: per series its number,
  description, acquisition time, geometry, value range, grey window,
  Otsu's level; the histogram's counts are made from the volume by the web
  process that is asked for them, and kept beside it).  The index is the
  only place the series' descriptions and times are kept, and it goes with
  the upload.  A scan that cannot be read loses its upload at once (ledger:
  ``failed``).
* ``Scans`` (``Service.scans``) is what the web asks: views of scans, the
  decoded volumes (each web process maps them from the store, or keeps a
  few in a small cache, never past the scan's deadline), jobs made from a
  scan (their input is only their options; the worker converts from the
  scan's upload), and "Done" (``delete``: the upload, the volumes and every
  result made from the scan go now, ledger reason ``user-request``).

The sweeper deletes a scan's upload and volumes at its deadline
(``sweeper.purge_scans``); results made from it go one retention after each
was made, as every result does.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from converter import ConverterError, list_series, silence_pydicom_for_good
from converter.errors import is_out_of_memory
from converter.volume import Volume

from .context import Context
from .intake import Intake
from .retention import delete_all
from .service import Gone, Invalid, NotFound, NotReady, _actor, sizes
from .states import SCAN_LIVE, SCAN_STORED, Kind, Reason, ScanStatus
from .submit import READ, enqueue, new_id, owner_hash, submit_job

log = logging.getLogger("ephemesh.worker")

#: how many decoded volumes one web process keeps mapped or in memory
CACHE_VOLUMES = 4
#: what a scan job's options carry besides the converter's: the scan it converts from
SCAN_OPTION = "scan"


# --------------------------------------------------------------------- writing
def create_scan(ctx, files, *, owner_digest, created, deadline, received_sha256=None) -> str:
    """Store a workspace's upload (bytes, or an ``Intake`` streamed into the
    store already, committed now), record the scan, enqueue its reading."""
    if isinstance(files, Intake):
        scan_id, size = files.object_id, files.commit()
    else:
        scan_id = new_id()
        size = ctx.store.put(Kind.SCAN, scan_id, files, deadline, created=created)
    ctx.records.add_scan(scan_id, owner_digest, created, deadline, input_bytes=size,
                         received_sha256=received_sha256)
    enqueue(ctx, READ, scan_id, deadline)
    return scan_id


def read_scan(scan_id: str) -> str:
    """The RQ job: list and decode the scan's series once; return its status."""
    silence_pydicom_for_good()
    ctx = Context()
    try:
        return _read(ctx, scan_id)
    finally:
        ctx.close()


def _read(ctx, scan_id) -> str:
    row = ctx.records.scan(scan_id)
    if row is None or row["status"] != ScanStatus.READING:
        return row["status"] if row else "missing"
    failure = None
    try:
        files = scan_files(ctx, scan_id)
        if files is None:
            failure = ("input_missing", "the upload was deleted before it was read")
        else:
            listing = list_series(files)
            del files
            ctx.store.put(Kind.VOLUME, scan_id, _volume_parts(ctx, listing), row["deadline"],
                          created=row["created"])
    except ConverterError as exc:
        failure = (exc.code, exc.message)
    except Exception as exc:  # the text could hold DICOM values: never kept
        failure = (("out_of_memory", "the scan needs more memory than a conversion may "
                    "take on this server") if is_out_of_memory(exc)
                   else ("internal_error", "the scan could not be read"))
        if failure[0] == "internal_error":
            log.error("scan %s: reading failed unexpectedly", scan_id)
    if failure is None and ctx.records.set_scan(scan_id, only_if=(ScanStatus.READING,),
                                                status=ScanStatus.READY):
        return ScanStatus.READY
    if failure is not None:
        ctx.records.fail_scan(scan_id, *failure)
    # failed, or deleted while it was read: nothing of it stays
    reason = Reason.FAILED if failure else Reason.USER_REQUEST
    delete_all(ctx, scan_id, reason, deadline=row["deadline"], kinds=SCAN_STORED, rq=False)
    return (ctx.records.scan(scan_id) or {}).get("status", ScanStatus.DELETED)


def scan_files(ctx, scan_id):
    """The scan's uploaded files as the converter reads them: their paths in
    a directory store (read where they lie, never copied into memory
    whole), else their bytes; None once the upload has gone."""
    meta = ctx.store.meta(Kind.SCAN, scan_id)
    if meta is None:
        return None
    paths = [ctx.store.part_path(Kind.SCAN, scan_id, i) for i in range(int(meta["parts"]))]
    if paths and all(p is not None for p in paths):
        return [str(p) for p in paths]
    return ctx.store.get(Kind.SCAN, scan_id)


def _volume_parts(ctx, listing):
    """The decoded volumes, one part each, then the index (JSON): one volume
    in memory at a time."""
    from converter.loading import load_volume
    from converter.views import acquired, summary

    entries = []
    for info in listing.series:
        entry = {"n": info.index, "uid": info.uid, "number": info.number,
                 "description": info.description, "acquired": acquired(listing, info),
                 "modality": info.modality, "slices": info.slices, "rows": info.rows,
                 "columns": info.columns, "orientation": info.orientation,
                 "spacing_mm": [round(float(s), 4) for s in info.spacing[::-1]],
                 "part": None, "error": None}
        entries.append(entry)
        try:
            vol = load_volume(listing, info, workers=ctx.settings.threads())
        except ConverterError as exc:
            entry["error"] = {"code": exc.code, "message": exc.message}
            continue
        entry["volume"] = {
            "dtype": vol.data.dtype.str, "shape": list(vol.data.shape),
            "positions": vol.positions.tolist(), "row_dir": vol.row_dir.tolist(),
            "col_dir": vol.col_dir.tolist(), "pixel_spacing": list(vol.pixel_spacing),
            "modality": vol.modality, "background": float(vol.background)}
        entry.update(summary(vol.data))  # range, grey window, Otsu: the histogram is the web's
        entry["part"] = sum(1 for e in entries if e["part"] is not None)
        yield np.ascontiguousarray(vol.data).data
        del vol
    if not any(e["part"] is not None for e in entries):
        first = next((e["error"] for e in entries if e["error"]), None) or {
            "message": "no series in the upload could be read", "code": "no_usable_series"}
        raise ConverterError(first["message"], code=first["code"])
    yield json.dumps({"series": entries}).encode()


# --------------------------------------------------------------------- reading
@dataclass
class Decoded:
    """One decoded series of a scan, as the web shows it."""

    entry: dict  # its index entry (number, description, geometry, range, window …)
    volume: Volume  # voxels (mapped from the store where it can be) and geometry
    deadline: float
    _histogram: dict | None = None

    @property
    def histogram(self) -> dict:
        """Its histogram (``converter.views.histogram``), counted on first use."""
        if self._histogram is None:
            from converter.views import histogram

            self._histogram = histogram(self.volume.data, self.volume.modality,
                                        otsu=self.entry["otsu"])
        return self._histogram


class _Cache:
    """The decoded volumes this process holds, least recently used out first,
    none past its scan's deadline."""

    def __init__(self, size=CACHE_VOLUMES):
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key):
        now = time.time()
        with self.lock:
            for old in [k for k, v in self.items.items() if v.deadline <= now]:
                del self.items[old]
            item = self.items.get(key)
            if item is not None:
                self.items.move_to_end(key)
            return item

    def put(self, key, value):
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)

    def drop(self, scan_id):
        with self.lock:
            for key in [k for k in self.items if k[0] == scan_id]:
                del self.items[key]


_cache = _Cache()


def _no_series(message) -> NotFound:
    refusal = NotFound(message)
    refusal.code = "series_not_found"
    return refusal


def _iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else None


#: what a series entry shows its uploader (never the UID)
SERIES_FIELDS = ("n", "number", "description", "acquired", "modality", "slices", "rows",
                 "columns", "spacing_mm", "orientation", "error")


class Scans:
    """The scan workspaces of one service (``Service.scans``)."""

    def __init__(self, service):
        self.service = service
        self.ctx = service.ctx

    # ------------------------------------------------------------ life cycle
    def create(self, files, *, owner, received_sha256=None) -> dict:
        """A workspace of ``files`` (bytes, or an ``Intake`` from
        ``Service.receive(kind=Kind.SCAN)``)."""
        if isinstance(files, Intake):
            created, deadline = files.created, files.deadline
        else:
            files = [bytes(f) for f in files]
            if not files or not any(files):
                raise Invalid("empty_upload", "no files were uploaded")
            created = time.time()
            deadline = created + self.ctx.settings.retention_seconds
        counts = sizes(files)
        scan_id = create_scan(self.ctx, files, owner_digest=owner_hash(owner), created=created,
                              deadline=deadline, received_sha256=received_sha256)
        self.ctx.records.audit("scan-upload", _actor(owner), {"scan": scan_id, **counts})
        return self.get(scan_id, owner=owner)

    def row(self, scan_id, owner):
        row = self.ctx.records.scan(scan_id)
        return row if row is not None and row["owner"] == owner_hash(owner) else None

    def get(self, scan_id, *, owner) -> dict | None:
        """The scan as its owner sees it (series listed once ready), or None."""
        row = self.row(scan_id, owner)
        if row is None:
            return None
        status = row["status"]
        if status in SCAN_LIVE and self.ctx.store.meta(Kind.SCAN, scan_id) is None:
            status = ScanStatus.DELETED  # gone at its deadline; the sweeper says so too
        index = self._index(scan_id) if status == ScanStatus.READY else None
        return {
            "id": scan_id, "status": status,
            "series": [{k: e.get(k) for k in SERIES_FIELDS} for e in index["series"]]
            if index else [],
            "error": {"code": row["error_code"], "message": row["error_message"]}
            if row["error_code"] and status == ScanStatus.FAILED else None,
            "created_at": _iso(row["created"]),
            "expires_at": _iso(row["deadline"]) if status in SCAN_LIVE else None,
        }

    def owned(self, owner) -> list[dict]:
        """The owner's scans whose upload is kept, newest first (as ``get``)."""
        views = (self.get(row["id"], owner=owner)
                 for row in self.ctx.records.live_scans(owner=owner_hash(owner)))
        return [v for v in views if v is not None and v["status"] in SCAN_LIVE]

    def delete(self, scan_id, *, owner, reason=Reason.USER_REQUEST) -> bool:
        """"Done": the upload, the decoded volumes and every result made from
        the scan go now (ledger rows); False when there is no such scan."""
        row = self.row(scan_id, owner)
        if row is None:
            return False
        self.ctx.records.set_scan(scan_id, status=ScanStatus.DELETED)
        _cache.drop(scan_id)
        delete_all(self.ctx, scan_id, reason, deadline=row["deadline"], kinds=SCAN_STORED)
        for job in self.ctx.records.owner_jobs(row["owner"], scan_id=scan_id, limit=10**6):
            self.service._delete_job(job, reason)
        self.ctx.records.audit("scan-deleted", _actor(owner), {"scan": scan_id,
                                                               "reason": reason})
        return True

    # ------------------------------------------------------------ volumes
    def _index(self, scan_id):
        meta = self.ctx.store.meta(Kind.VOLUME, scan_id)
        if meta is None:
            return None
        raw = self.ctx.store.get_part(Kind.VOLUME, scan_id, int(meta["parts"]) - 1)
        return json.loads(raw) if raw else None

    def series(self, scan_id, n, *, owner) -> Decoded:
        """Series ``n`` (from 1) of the scan, decoded.  Raises ``NotFound``
        (no such scan or series), ``NotReady`` (still reading, or failed) or
        ``Gone`` (deleted)."""
        row = self.row(scan_id, owner)
        if row is None:
            raise NotFound("there is no such scan")
        if row["status"] == ScanStatus.READING:
            raise NotReady("the scan is still being read")
        if row["status"] == ScanStatus.FAILED:
            raise NotReady("the scan could not be read; it has no series")
        key = (scan_id, int(n))
        meta = self.ctx.store.meta(Kind.VOLUME, scan_id)
        if row["status"] == ScanStatus.DELETED or meta is None:
            _cache.drop(scan_id)
            raise Gone("the scan has been deleted")
        cached = _cache.get(key)
        if cached is not None:
            return cached
        index = self._index(scan_id)
        entries = index["series"] if index else []
        if not 1 <= int(n) <= len(entries):
            raise _no_series(f"there is no series {n} in this scan; its series are 1 to "
                             f"{len(entries)}")
        entry = entries[int(n) - 1]
        if entry["part"] is None:
            raise _no_series(f"series {n} could not be read"
                             + (f": {entry['error']['message']}" if entry.get("error") else ""))
        decoded = Decoded(entry, self._volume(scan_id, entry), meta["deadline"])
        _cache.put(key, decoded)
        return decoded

    def _volume(self, scan_id, entry) -> Volume:
        facts = entry["volume"]
        dtype, shape = np.dtype(facts["dtype"]), tuple(facts["shape"])
        path = self.ctx.store.part_path(Kind.VOLUME, scan_id, entry["part"])
        if path is not None:  # the directory store: mapped, not copied
            data = np.memmap(path, dtype=dtype, mode="r", shape=shape)
        else:
            raw = self.ctx.store.get_part(Kind.VOLUME, scan_id, entry["part"])
            data = np.frombuffer(raw, dtype=dtype).reshape(shape)
        return Volume(data, facts["positions"], facts["row_dir"], facts["col_dir"],
                      tuple(facts["pixel_spacing"]), modality=facts["modality"],
                      background=facts["background"],
                      slice_range=np.array([entry["range"]]))  # no pass for it

    # ------------------------------------------------------------ jobs
    def create_job(self, scan_id, n, options, *, owner) -> dict:
        """Convert series ``n`` of the scan with ``options`` (checked here),
        from the kept upload: no new upload."""
        from converter import ConvertOptions
        from converter.estimate import check

        decoded = self.series(scan_id, n, owner=owner)
        options = self.service.check_options(options)
        options.pop("series", None)
        try:  # what the conversion would refuse on this volume, refused now
            check(decoded.volume, ConvertOptions(**options))
        except ConverterError as exc:
            raise Invalid(exc.code, exc.message) from None
        row = self.row(scan_id, owner)
        payload = dict(options, series=decoded.entry["uid"], **{SCAN_OPTION: scan_id})
        job_id = submit_job(self.ctx, [], payload, owner_digest=row["owner"],
                            created=time.time(), deadline=row["deadline"],
                            received_sha256=row["received_sha256"], scan_id=scan_id)
        return self.service.get_job(job_id, owner=owner)

    def input_of(self, scan_id):
        """The scan's upload (its files), or None once it has gone."""
        return self.ctx.store.get(Kind.SCAN, scan_id)

