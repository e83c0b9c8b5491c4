"""A ``multipart/related`` body (RFC 2387, as STOW-RS sends it) read part
by part from a stream, never whole: ``parts(read, boundary)`` yields each
part's headers and an iterator over its body's chunks, which must be read
(or ``drain``-ed) before the next part.  What the body may hold is bounded:
header blocks of ``MAX_HEADER`` bytes, at most ``max_parts`` parts; a body
that ends before its closing delimiter is ``Malformed``."""

from __future__ import annotations

from collections.abc import Callable, Iterator

CHUNK = 1 << 16
MAX_HEADER = 16 << 10
MAX_BOUNDARY = 200
CRLF = b"\r\n"


class Malformed(ValueError):
    """The body is not the multipart/related it says it is (a safe message)."""


class Part:
    """One part: ``headers`` (lower-case names) and its body, chunk by chunk."""

    def __init__(self, headers: dict, body: Iterator[bytes]):
        self.headers = headers
        self._body = body

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def __iter__(self):
        return self._body

    def drain(self) -> None:
        for _ in self._body:
            pass


def boundary_of(content_type_params: dict) -> bytes:
    """The boundary parameter, checked (RFC 2046 says 1 to 70 characters;
    Orthanc's DICOMweb client sends 73, so up to ``MAX_BOUNDARY``)."""
    boundary = (content_type_params.get("boundary") or "").strip('"')
    if not 0 < len(boundary) <= MAX_BOUNDARY:
        raise Malformed("the multipart/related content type has no valid boundary")
    return boundary.encode("latin-1")


class _Reader:
    def __init__(self, read: Callable[[int], bytes], boundary: bytes):
        self.read = read
        self.delimiter = CRLF + b"--" + boundary
        # the first delimiter may open the body: give it the CRLF it lacks
        self.buf = bytearray(CRLF)
        self.eof = False

    def fill(self) -> bool:
        if self.eof:
            return False
        data = self.read(CHUNK)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def skip_to_delimiter(self, limit: int) -> None:
        skipped = 0
        while (i := self.buf.find(self.delimiter)) < 0:
            keep = len(self.delimiter) - 1
            if len(self.buf) > keep:
                skipped += len(self.buf) - keep
                del self.buf[:-keep]
            if skipped > limit:
                raise Malformed("the body's preamble is too long")
            if not self.fill():
                raise Malformed("the body holds no part (no boundary line found)")
        del self.buf[:i + len(self.delimiter)]

    def need(self, n: int) -> None:
        while len(self.buf) < n and self.fill():
            pass

    def line_end(self) -> bool:
        """After a delimiter: ``--`` closes the body (False); otherwise skip
        the rest of the delimiter line (True)."""
        self.need(2)
        if self.buf[:2] == b"--":
            return False
        while (i := self.buf.find(CRLF)) < 0:
            if len(self.buf) > 1024 or not self.fill():
                raise Malformed("a boundary line does not end")
        if self.buf[:i].strip(b" \t"):
            raise Malformed("a boundary line has text after the boundary")
        del self.buf[:i + 2]
        return True

    def headers(self) -> dict:
        self.need(2)
        if self.buf[:2] == CRLF:  # no headers at all
            del self.buf[:2]
            return {}
        while (i := self.buf.find(CRLF + CRLF)) < 0:
            if len(self.buf) > MAX_HEADER or not self.fill():
                raise Malformed("a part's headers are too long or do not end")
        if i > MAX_HEADER:
            raise Malformed("a part's headers are too long")
        block = bytes(self.buf[:i]).decode("latin-1")
        del self.buf[:i + 4]
        headers = {}
        for line in block.split("\r\n"):
            name, colon, value = line.partition(":")
            if not colon:
                raise Malformed("a part's header line has no name")
            headers[name.strip().lower()] = value.strip()
        return headers

    def body(self) -> Iterator[bytes]:
        keep = len(self.delimiter) - 1
        while True:
            i = self.buf.find(self.delimiter)
            if i >= 0:
                if i:
                    yield bytes(self.buf[:i])
                del self.buf[:i + len(self.delimiter)]
                return
            if len(self.buf) > keep:
                yield bytes(self.buf[:-keep])
                del self.buf[:-keep]
            if not self.fill():
                raise Malformed("the body ends inside a part (no closing boundary)")


def parts(read: Callable[[int], bytes], boundary: bytes, *, max_parts: int) -> Iterator[Part]:
    """Each part of the body that ``read(n)`` returns, in order.

    Parameters
    ----------
    read : callable
        ``read(n)`` returns up to ``n`` bytes of the body, ``b""`` at its end.
    boundary : bytes
    max_parts : int
        More parts than this is ``Malformed``.
    """
    reader = _Reader(read, boundary)
    reader.skip_to_delimiter(limit=MAX_HEADER)
    count = 0
    while reader.line_end():
        count += 1
        if count > max_parts:
            raise Malformed(f"the body holds more than {max_parts} parts")
        part = Part(reader.headers(), reader.body())
        yield part
        part.drain()
