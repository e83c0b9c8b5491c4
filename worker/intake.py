"""Uploads taken into the store as they arrive, under limits counted on the bytes read.

An ``Intake`` is fed the parts of an upload as they were sent (``begin``,
``feed`` chunk by chunk, ``end``) and writes what it keeps straight to the
store's ``Writer`` for the new input object, never holding a file whole:

* Each part's first bytes (``HEAD``) say what it is.  A DICOM file is
  written to the store as it comes, one part per file; anything else that
  is not an archive (a disc's viewer, a README, its DICOMDIR index) is
  counted and skipped; another archive format is refused.
* A zip is spooled to an unnamed temporary file in the spool directory (on
  the store's medium: put it on a tmpfs) and unpacked from there member by
  member, each member streamed to the store the same way.  Entry count,
  bytes unpacked and the expansion ratio are counted on what the
  decompressor really produced (this Python's ``zipfile`` predates the
  overlapping-entry bomb check, so ``file_size`` is never trusted).
  Symlink, encrypted and nested-archive members refuse the whole upload.
* Member names and client file names are never read into anything: not a
  path, not a log line, not an error.  Files are numbered, nothing more.
* Every byte written to the store or the spool is first passed to ``take``
  (the web server's budget of bytes in flight), which may refuse it.
* A receipt's digest (``worker.receipts.UploadDigest``) is fed every part
  as it was sent, chunk by chunk.

A refusal is ``Refusal`` (a stable ``code``, a safe message, an HTTP
status); whatever ends an intake before ``commit`` — a refusal, a client
gone, a full disk — ``abort`` removes every byte of it from the store.
"""

from __future__ import annotations

import stat
import tempfile
import zipfile
from dataclasses import dataclass

CHUNK = 1 << 20
#: how much of a file is looked at to tell what it is
HEAD = 4096
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
#: other archive and compression formats (never unpacked, never accepted)
OTHER_ARCHIVES = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"7z\xbc\xaf\x27\x1c", b"Rar!",
                  b"PK\x07\x08", b"\x28\xb5\x2f\xfd")
DICOMDIR_UID = b"1.2.840.10008.1.3.10"
DIRECTORY_RECORD_SEQUENCE = b"\x04\x00\x20\x12"  # tag (0004,1220), little endian
#: a small archive may expand this much whatever its ratio
RATIO_FLOOR = 8 * 1024 * 1024
#: the part that holds an input's options (``worker.submit``); files follow it
FIRST_FILE = 1


class Refusal(Exception):
    """An upload this service will not take: ``code`` is stable, ``message``
    safe to show (counts and limits only), ``status`` the HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass(frozen=True)
class Limits:
    """What one upload may hold (``EPHEMESH_MAX_FILES``, ``…_MAX_ZIP_ENTRIES``,
    ``…_MAX_UNPACKED_MB``, ``…_MAX_ZIP_RATIO``)."""

    max_files: int = 5000
    max_zip_entries: int = 10000
    max_unpacked: int = 4 << 30
    max_ratio: int = 100

    def __post_init__(self):
        for name in ("max_files", "max_zip_entries", "max_unpacked", "max_ratio"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")

    @classmethod
    def from_config(cls, config) -> Limits:
        return cls(config["EPHEMESH_MAX_FILES"], config["EPHEMESH_MAX_ZIP_ENTRIES"],
                   config["EPHEMESH_MAX_UNPACKED"], config["EPHEMESH_MAX_ZIP_RATIO"])


@dataclass
class Upload:
    """What an intake took: counts only."""

    files: int = 0  # DICOM files stored, in upload order
    received: int = 0  # files seen, zip members included
    skipped: int = 0  # not DICOM, or a DICOMDIR index
    bytes_read: int = 0  # as sent
    size: int = 0  # bytes of the files stored


def kind_of(data: bytes) -> str:
    """``dicom``, ``dicomdir`` or ``other``, from the first bytes only."""
    head = data[:HEAD]
    if len(head) >= 132 and head[128:132] == b"DICM":
        meta = head[132:1024]
    elif len(head) >= 8 and (int.from_bytes(head[:2], "little") in (0x0002, 0x0008)
                             or int.from_bytes(head[:2], "big") in (0x0002, 0x0008)):
        meta = head[:1024]
    else:
        return "other"
    at = meta.find(DICOMDIR_UID)
    if at >= 0:
        after = meta[at + len(DICOMDIR_UID):at + len(DICOMDIR_UID) + 1]
        if after in (b"", b"\x00", b" "):
            return "dicomdir"
    if DIRECTORY_RECORD_SEQUENCE in head:
        return "dicomdir"
    return "dicom"


def is_zip(head: bytes) -> bool:
    return head[:4] in ZIP_MAGICS


def is_other_archive(head: bytes) -> bool:
    return any(head.startswith(m) for m in OTHER_ARCHIVES)


def _take_nothing(n: int) -> None:
    return None


class Intake:
    """One upload streamed into a new input object of the store.

    Parameters
    ----------
    writer : worker.store.Writer
        The new object's writer; files go to parts ``first_file``, … and
        ``commit`` writes the parts before them (a job's input: its options).
    limits : Limits
    first_file : int
        The part number of the first file: ``FIRST_FILE`` (a job's or batch's
        input, whose part 0 is its options) or 0 (a scan: files only).
    digest : worker.receipts.UploadDigest, optional
        Fed every part as sent.
    spool_dir : str or Path, optional
        Where zips are spooled (default: the system's temporary directory).
    take : callable, optional
        ``take(n)`` before ``n`` more bytes go to the store or the spool; it
        may raise (a budget of bytes in flight) to refuse the upload.
    """

    def __init__(self, writer, limits: Limits, *, first_file: int = FIRST_FILE, digest=None,
                 spool_dir=None, take=None):
        if not isinstance(limits, Limits):
            raise TypeError("limits must be a worker.intake.Limits")
        if first_file not in (0, FIRST_FILE):
            raise ValueError(f"first_file must be 0 or {FIRST_FILE}, got {first_file!r}")
        self.writer = writer
        self.first_file = first_file
        self.limits = limits
        self.digest = digest
        self.spool_dir = None if spool_dir is None else str(spool_dir)
        self.take = take or _take_nothing
        self.upload = Upload()
        self.unpacked = 0  # bytes unpacked from every zip of the upload
        self.dicomdirs = 0
        self._head = bytearray()
        self._sink = None  # where the current part's bytes go once its head is known
        self._spool = None
        self._open = False

    @property
    def object_id(self) -> str:
        return self.writer.object_id

    @property
    def created(self) -> float:
        return self.writer.created

    @property
    def deadline(self) -> float:
        return self.writer.deadline

    # ------------------------------------------------------------ parts as sent
    def begin(self) -> None:
        """A new part of the upload starts."""
        if self._open:
            self.end()
        if self.digest is not None:
            self.digest.part()
        self._open = True
        self._head.clear()
        self._sink = None

    def feed(self, data: bytes) -> None:
        """The next bytes of the current part, as sent."""
        if not self._open:
            raise ValueError("begin a part before feeding it")
        if not data:
            return
        if self.digest is not None:
            self.digest.update(data)
        self.upload.bytes_read += len(data)
        if self._sink is None:
            self._head += data
            if len(self._head) < HEAD:
                return
            data, self._sink = bytes(self._head), self._route_part(bytes(self._head[:HEAD]))
            self._head.clear()
        self._sink(data)

    def end(self) -> None:
        """The current part is complete: a zip is unpacked now."""
        if not self._open:
            return
        self._open = False
        if self._sink is None:
            if not self._head:
                return  # an empty part: nothing was sent in it
            data, self._sink = bytes(self._head), self._route_part(bytes(self._head))
            self._head.clear()
            self._sink(data)
        self._sink = None
        if self._spool is not None:
            spool, self._spool = self._spool, None
            with spool:
                self._unpack(spool)

    def add(self, stream) -> None:
        """One whole part from a readable binary stream (``read(n)``)."""
        self.begin()
        while chunk := stream.read(CHUNK):
            self.feed(chunk)
        self.end()

    def finish(self) -> Upload:
        """Every part is in: the counts, or a refusal (no files, no DICOM image)."""
        self.end()
        if not self.upload.received:
            raise Refusal("no_files",
                          "No files were received: choose DICOM files, a folder or a zip.")
        if not self.upload.files:
            if self.dicomdirs:
                raise Refusal("dicomdir_only", "Only a DICOMDIR index was found: upload the "
                              "whole folder or disc (with its image files), not the index "
                              "alone.")
            raise Refusal("not_dicom", "None of the files is a DICOM file.")
        return self.upload

    def commit(self, *before: bytes) -> int:
        """Write the parts ``before`` the files (a job's options; nothing for a
        scan) and make the object visible; returns its size."""
        if len(before) != self.first_file:
            raise ValueError(f"{self.first_file} part(s) go before the files, got {len(before)}")
        for i, data in enumerate(before):
            self.writer.open_part(i)
            self.take(len(data))
            self.writer.write(data)
        return self.writer.commit()

    def abort(self) -> None:
        """Remove every byte of the upload from the store and the spool (safe to
        call twice, and after ``commit``, when it does nothing)."""
        self._open = False
        if self._spool is not None:
            spool, self._spool = self._spool, None
            spool.close()
        self.writer.abort()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is not None:
            self.abort()
        return False

    # ------------------------------------------------------------ routing
    def _count_file(self) -> None:
        self.upload.received += 1
        if self.upload.received > self.limits.max_files:
            raise Refusal("too_many_files",
                          f"The upload holds more than {self.limits.max_files} files.", 413)

    def _route_part(self, head: bytes):
        """Where a part's bytes go, from its head: the spool (a zip), the store or nowhere."""
        if is_zip(head):
            self._spool = tempfile.TemporaryFile(dir=self.spool_dir)
            spool = self._spool

            def to_spool(data):
                self.take(len(data))
                spool.write(data)

            return to_spool
        if is_other_archive(head):
            raise Refusal("unsupported_archive",
                          "Only zip archives are accepted (not gzip, 7z, rar or others).")
        return self._route_file(head)

    def _route_file(self, head: bytes):
        self._count_file()
        kind = kind_of(head)
        if kind != "dicom":
            self.upload.skipped += 1
            self.dicomdirs += kind == "dicomdir"
            return _discard
        self.writer.open_part(self.first_file + self.upload.files)
        self.upload.files += 1
        writer, upload = self.writer, self.upload

        def to_store(data):
            self.take(len(data))
            writer.write(data)
            upload.size += len(data)

        return to_store

    # ------------------------------------------------------------ zips
    def _unpack(self, spool) -> None:
        limits = self.limits
        archive_size = spool.tell()
        spool.seek(0)
        try:
            archive = zipfile.ZipFile(spool)
            infos = archive.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError):
            raise Refusal("bad_archive", "A zip archive is damaged or not a zip archive.") \
                from None
        if len(infos) > limits.max_zip_entries:
            raise Refusal("zip_too_many_entries",
                          f"A zip archive has more than {limits.max_zip_entries} entries.")
        budget = limits.max_ratio * archive_size + RATIO_FLOOR
        archive_unpacked = 0
        for info in infos:
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise Refusal("zip_symlink",
                              "A zip archive holds a symbolic link; these are refused.")
            if info.is_dir():
                continue
            if info.flag_bits & 0x1:
                raise Refusal("zip_encrypted", "A zip archive is encrypted; upload it unencrypted.")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise Refusal("zip_unsupported",
                              "A zip archive uses a compression method other than deflate.")
            sink, head = None, bytearray()
            try:
                with archive.open(info) as fh:
                    while True:
                        chunk = fh.read(CHUNK)
                        if not chunk:
                            break
                        self.unpacked += len(chunk)
                        archive_unpacked += len(chunk)
                        if self.unpacked > limits.max_unpacked:
                            raise Refusal("zip_too_large", "The zip archives expand beyond "
                                          f"{limits.max_unpacked // (1024 * 1024)} MB.")
                        if archive_unpacked > budget:
                            raise Refusal("zip_ratio", "A zip archive expands more than "
                                          f"{limits.max_ratio} times its size (a zip bomb?).")
                        if sink is None:
                            head += chunk
                            if len(head) < HEAD:
                                continue
                            chunk, sink = bytes(head), self._route_member(bytes(head[:HEAD]))
                        sink(chunk)
            except (zipfile.BadZipFile, EOFError, ValueError, OSError, RuntimeError,
                    NotImplementedError, zipfile.LargeZipFile) as exc:
                if isinstance(exc, OSError) and exc.errno is not None:
                    raise  # the store or the spool: no space, not the archive's fault
                raise Refusal("bad_archive", "A zip archive is damaged.") from None
            if sink is None:  # a member shorter than HEAD (or empty)
                self._route_member(bytes(head))(bytes(head))

    def _route_member(self, head: bytes):
        if is_zip(head) or is_other_archive(head):
            raise Refusal("nested_archive",
                          "A zip archive holds another archive; unpack it first.")
        return self._route_file(head)


def _discard(data: bytes) -> None:
    return None
