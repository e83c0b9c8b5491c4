"""Uploads → DICOM file bytes, under limits counted on the bytes actually read.

* A zip is unpacked here, in memory, member by member: entry count, bytes
  unpacked and the expansion ratio are counted on what the decompressor
  really produced (this Python's ``zipfile`` predates the overlapping-entry
  bomb check, so ``file_size`` is never trusted).  Symlink, encrypted and
  nested-archive members refuse the whole upload.
* Member names and client file names are never read into anything: not a
  path, not a log line, not an error.  Files are numbered, nothing more.
* Non-DICOM files next to the images (a disc's viewer, a README, its
  DICOMDIR index) are skipped; an upload with no DICOM image at all is
  refused, naming which of the two it was.
"""

from __future__ import annotations

import io
import stat
import zipfile
from dataclasses import dataclass, field

from .problems import Refused

CHUNK = 1 << 20
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
#: other archive and compression formats (never unpacked, never accepted)
OTHER_ARCHIVES = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"7z\xbc\xaf\x27\x1c", b"Rar!",
                  b"PK\x07\x08", b"\x28\xb5\x2f\xfd")
DICOMDIR_UID = b"1.2.840.10008.1.3.10"
DIRECTORY_RECORD_SEQUENCE = b"\x04\x00\x20\x12"  # tag (0004,1220), little endian
#: a small archive may expand this much whatever its ratio
RATIO_FLOOR = 8 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_files: int = 5000
    max_zip_entries: int = 10000
    max_unpacked: int = 4 << 30
    max_ratio: int = 100

    @classmethod
    def from_config(cls, config) -> Limits:
        return cls(config["EPHEMESH_MAX_FILES"], config["EPHEMESH_MAX_ZIP_ENTRIES"],
                   config["EPHEMESH_MAX_UNPACKED"], config["EPHEMESH_MAX_ZIP_RATIO"])


@dataclass
class Upload:
    files: list = field(default_factory=list)  # DICOM file bytes, in upload order
    received: int = 0  # files seen, zip members included
    skipped: int = 0  # not DICOM, or a DICOMDIR index
    bytes_read: int = 0


def kind_of(data: bytes) -> str:
    """``dicom``, ``dicomdir`` or ``other``, from the first bytes only."""
    head = data[:4096]
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


def _is_zip(data: bytes) -> bool:
    return data[:4] in ZIP_MAGICS


def _is_other_archive(data: bytes) -> bool:
    return any(data.startswith(m) for m in OTHER_ARCHIVES)


class _Counter:
    def __init__(self, limits: Limits):
        self.limits = limits
        self.files = 0
        self.unpacked = 0

    def add_file(self):
        self.files += 1
        if self.files > self.limits.max_files:
            raise Refused("too_many_files",
                          f"The upload holds more than {self.limits.max_files} files.", 413)


def _read_stream(stream, digest=None) -> bytes:
    chunks = []
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            return b"".join(chunks)
        if digest is not None:
            digest.update(chunk)
        chunks.append(chunk)


def _unpack(data: bytes, counter: _Counter) -> list[bytes]:
    limits = counter.limits
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError):
        raise Refused("bad_archive", "A zip archive is damaged or not a zip archive.") from None
    if len(infos) > limits.max_zip_entries:
        raise Refused("zip_too_many_entries",
                      f"A zip archive has more than {limits.max_zip_entries} entries.")
    budget = limits.max_ratio * len(data) + RATIO_FLOOR
    archive_unpacked = 0
    members = []
    for info in infos:
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise Refused("zip_symlink", "A zip archive holds a symbolic link; these are refused.")
        if info.is_dir():
            continue
        if info.flag_bits & 0x1:
            raise Refused("zip_encrypted", "A zip archive is encrypted; upload it unencrypted.")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise Refused("zip_unsupported",
                          "A zip archive uses a compression method other than deflate.")
        counter.add_file()
        chunks = []
        try:
            with archive.open(info) as fh:
                while True:
                    chunk = fh.read(CHUNK)
                    if not chunk:
                        break
                    counter.unpacked += len(chunk)
                    archive_unpacked += len(chunk)
                    if counter.unpacked > limits.max_unpacked:
                        raise Refused("zip_too_large", "The zip archives expand beyond "
                                      f"{limits.max_unpacked // (1024 * 1024)} MB.")
                    if archive_unpacked > budget:
                        raise Refused("zip_ratio", "A zip archive expands more than "
                                      f"{limits.max_ratio} times its size (a zip bomb?).")
                    chunks.append(chunk)
        except (zipfile.BadZipFile, EOFError, ValueError, OSError, RuntimeError,
                NotImplementedError):
            raise Refused("bad_archive", "A zip archive is damaged.") from None
        member = b"".join(chunks)
        if _is_zip(member) or _is_other_archive(member):
            raise Refused("nested_archive",
                          "A zip archive holds another archive; unpack it first.")
        members.append(member)
    return members


def read_upload(storages, limits: Limits, digest=None) -> Upload:
    """Read uploaded ``FileStorage`` parts into DICOM file bytes, or refuse.

    ``digest`` (a ``worker.receipts.UploadDigest``) is fed every part as it
    was sent, chunk by chunk, for the job's deletion receipts."""
    upload = Upload()
    counter = _Counter(limits)
    candidates = []
    for storage in storages:
        if digest is not None:
            digest.part()
        data = _read_stream(storage.stream, digest)
        upload.bytes_read += len(data)
        if not data:
            continue
        if _is_zip(data):
            candidates.extend(_unpack(data, counter))
        elif _is_other_archive(data):
            raise Refused("unsupported_archive",
                          "Only zip archives are accepted (not gzip, 7z, rar or others).")
        else:
            counter.add_file()
            candidates.append(data)
    upload.received = counter.files
    if not candidates:
        raise Refused("no_files", "No files were received: choose DICOM files, a folder or a zip.")
    dicomdirs = 0
    for data in candidates:
        kind = kind_of(data)
        if kind == "dicom":
            upload.files.append(data)
        else:
            upload.skipped += 1
            dicomdirs += kind == "dicomdir"
    if not upload.files:
        if dicomdirs:
            raise Refused("dicomdir_only", "Only a DICOMDIR index was found: upload the whole "
                          "folder or disc (with its image files), not the index alone.")
        raise Refused("not_dicom", "None of the files is a DICOM file.")
    return upload
