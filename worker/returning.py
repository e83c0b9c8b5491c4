"""Sending a model back to the PACS it came from (``EPHEMESH_RETURN_TO``).

``send(instance, destination)`` stores one Encapsulated STL instance at the
destination: by C-STORE (``dicom://AE@host:port``) or by STOW-RS (an http(s)
URL of a ``…/studies`` resource; user and password in the URL become Basic
authentication).  It raises ``ReturnFailed`` with a safe message (the
destination and the status, never a value of the instance) when the peer
refuses or cannot be reached.  ``send_with_retries`` is what a job calls.

pynetdicom's own log would print the association and, at debug level, the
dataset: its logger is kept at ERROR and does not propagate.
"""

from __future__ import annotations

import base64
import io
import logging
import time
import urllib.error
import urllib.request
import uuid
from urllib.parse import urlsplit, urlunsplit

from converter.encapsulated import ENCAPSULATED_STL_STORAGE

from .config import Destination

log = logging.getLogger("ephemesh.worker")
ATTEMPTS = 3
BACKOFF_S = 1.0
TIMEOUT_S = 30


class ReturnFailed(RuntimeError):
    """The instance could not be stored at the destination (safe message)."""


def quiet_pynetdicom() -> None:
    """pynetdicom logs associations and, at debug level, datasets: keep it quiet."""
    pnd = logging.getLogger("pynetdicom")
    pnd.setLevel(logging.ERROR)
    pnd.propagate = False
    if not pnd.handlers:
        pnd.addHandler(logging.NullHandler())


def send(instance: bytes, destination: Destination, *, calling_ae="EPHEMESH") -> None:
    """Store ``instance`` (a Part-10 file) at ``destination``; raise ``ReturnFailed``."""
    if destination.scheme == "dicom":
        _c_store(instance, destination, calling_ae)
    else:
        _stow(instance, destination)


def send_with_retries(instance: bytes, destination: Destination, *, calling_ae="EPHEMESH",
                      attempts=ATTEMPTS, backoff=BACKOFF_S) -> int:
    """``send`` up to ``attempts`` times (waiting ``backoff``, doubled each
    time, between them); returns the attempts made, or raises the last
    ``ReturnFailed``."""
    for attempt in range(1, attempts + 1):
        try:
            send(instance, destination, calling_ae=calling_ae)
            return attempt
        except ReturnFailed as exc:
            log.warning("returning a model to %s failed (try %d of %d): %s",
                        destination, attempt, attempts, exc)
            if attempt == attempts:
                raise
            time.sleep(backoff * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def _c_store(instance: bytes, dest: Destination, calling_ae: str) -> None:
    from pydicom import dcmread
    from pynetdicom import AE

    quiet_pynetdicom()
    ds = dcmread(io.BytesIO(instance))
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT_S
    ae.add_requested_context(ENCAPSULATED_STL_STORAGE, ds.file_meta.TransferSyntaxUID)
    try:
        assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
    except OSError as exc:
        raise ReturnFailed(f"{dest} cannot be reached ({type(exc).__name__})") from None
    if not assoc.is_established:
        raise ReturnFailed(f"{dest} refused the association")
    try:
        status = assoc.send_c_store(ds)
    finally:
        if assoc.is_established:
            assoc.release()
    code = getattr(status, "Status", None)
    if code is None:
        raise ReturnFailed(f"{dest} did not answer the C-STORE")
    if code != 0x0000 and (code >> 12) != 0xB:  # success, or a warning
        raise ReturnFailed(f"{dest} refused the instance (status 0x{code:04X})")


def _stow(instance: bytes, dest: Destination) -> None:
    p = urlsplit(dest.url)
    url = urlunsplit((p.scheme, p.hostname + (f":{p.port}" if p.port else ""), p.path,
                      p.query, ""))
    boundary = uuid.uuid4().hex
    body = b"".join([f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
                     instance, f"\r\n--{boundary}--\r\n".encode()])
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; '
                               f'boundary={boundary}',
               "Accept": "application/dicom+json"}
    if p.username is not None:
        token = f"{p.username}:{p.password or ''}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        raise ReturnFailed(f"{dest} cannot be reached ({type(exc).__name__})") from None
    if status != 200:
        raise ReturnFailed(f"{dest} answered HTTP {status}")
