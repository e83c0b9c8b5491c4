"""Input walking: folders, files, zip archives and bytes → candidate files.

Every candidate is an ``Item`` that can hand out its bytes (or its path, so
pydicom can read a file lazily).  Client file names and zip member names are
never kept beyond the walk and never used as paths; items are numbered.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import UnreadableInput

ZIP_MAGIC = b"PK\x03\x04"
MAX_ZIP_DEPTH = 2
#: refuse archives whose members would expand beyond this (bytes actually read)
MAX_UNPACKED_BYTES = 8 * 1024**3


@dataclass
class Item:
    """One candidate file: a path on disk or bytes in memory."""

    index: int
    path: str | None = None
    data: bytes | None = None

    def source(self):
        """What pydicom can read: the path, or a fresh BytesIO."""
        return self.path if self.path is not None else io.BytesIO(self.data)

    def head(self, n: int = 132) -> bytes:
        if self.data is not None:
            return self.data[:n]
        with open(self.path, "rb") as fh:
            return fh.read(n)


def iter_items(inputs):
    """Yield an ``Item`` for every file in ``inputs`` (recursively, through zips)."""
    counter = iter(range(1, 1 << 62))
    unpacked = [0]
    for entry in inputs:
        if isinstance(entry, (bytes, bytearray, memoryview)):
            yield from _from_bytes(bytes(entry), counter, unpacked, 0)
        elif hasattr(entry, "read"):
            yield from _from_bytes(entry.read(), counter, unpacked, 0)
        elif isinstance(entry, (str, os.PathLike)):
            path = Path(entry)
            if path.is_dir():
                for root, dirs, files in os.walk(path):
                    dirs.sort()
                    for name in sorted(files):
                        full = os.path.join(root, name)
                        if os.path.isfile(full):
                            yield from _from_path(full, counter, unpacked)
            elif path.is_file():
                yield from _from_path(str(path), counter, unpacked)
            else:
                raise UnreadableInput("an input path does not exist", code="not_found")
        else:
            raise TypeError(
                f"inputs must be paths, bytes or binary files, got {type(entry).__name__}"
            )


def _from_path(path, counter, unpacked):
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError:
        raise UnreadableInput("an input file cannot be read", code="not_found") from None
    if magic == ZIP_MAGIC:
        with open(path, "rb") as fh:
            yield from _from_zip(fh, counter, unpacked, 1)
    else:
        yield Item(next(counter), path=path)


def _from_bytes(data, counter, unpacked, depth):
    if data[:4] == ZIP_MAGIC:
        yield from _from_zip(io.BytesIO(data), counter, unpacked, depth + 1)
    else:
        yield Item(next(counter), data=data)


def _from_zip(fileobj, counter, unpacked, depth):
    if depth > MAX_ZIP_DEPTH:
        raise UnreadableInput("archives nested too deeply", code="bad_archive")
    try:
        archive = zipfile.ZipFile(fileobj)
        members = [m for m in archive.infolist() if not m.is_dir()]
        for member in members:
            if (member.external_attr >> 16) & 0o170000 == 0o120000:
                continue  # symlink entries are never followed
            data = _read_member(archive, member, unpacked)
            yield from _from_bytes(data, counter, unpacked, depth)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, ValueError):
        raise UnreadableInput("a zip archive is damaged or uses an unsupported feature",
                              code="bad_archive") from None


def _read_member(archive, member, unpacked):
    chunks = []
    with archive.open(member) as fh:
        while True:
            chunk = fh.read(1 << 20)
            if not chunk:
                break
            unpacked[0] += len(chunk)
            if unpacked[0] > MAX_UNPACKED_BYTES:
                raise UnreadableInput("the archive expands beyond the size limit", code="too_large")
            chunks.append(chunk)
    return b"".join(chunks)
