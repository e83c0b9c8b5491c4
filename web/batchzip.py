"""A zip written while it is sent: one STL at a time, never the whole
archive in memory or on disk."""

from __future__ import annotations

import io
import json
import zipfile

CHUNK = 1 << 20


class _Sink(io.RawIOBase):
    """A write-only, unseekable stream whose bytes are taken as they come."""

    def __init__(self):
        self.buffer = bytearray()

    def writable(self):
        return True

    def write(self, data):
        self.buffer += data
        return len(data)

    def take(self) -> bytes:
        out = bytes(self.buffer)
        self.buffer.clear()
        return out


def stream_zip(entries, manifest: dict):
    """Yield the bytes of a zip of ``entries`` (``(name, binary file)`` pairs)
    followed by ``manifest.json``."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for name, fh in entries:
            with fh, zf.open(name, "w", force_zip64=True) as dst:
                while True:
                    chunk = fh.read(CHUNK)
                    if not chunk:
                        break
                    dst.write(chunk)
                    if len(sink.buffer) >= CHUNK:
                        yield sink.take()
            yield sink.take()
        zf.writestr("manifest.json", json.dumps(manifest, indent=2))
    yield sink.take()
