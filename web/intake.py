"""Flask's request body → ``worker.intake.Intake``, as the bytes arrive.

The multipart body is read from the request stream in 64 KiB pieces and
decoded by Werkzeug's sans-IO decoder; every part named ``files`` goes to
the intake as it comes (into the store, or a zip to the spool), whatever
its file name and that name's encoding (never read: Werkzeug's own parser
drops the whole form on a file name that is not UTF-8); other parts are
the form's fields.  Nothing of the body is held whole, and Werkzeug's form
parser never runs on an upload route (``request.form`` stays empty: use
``Received.form``).

Before a byte is read the upload is admitted by the server's budget of
bytes in flight and its address's count of uploads (``web/inflight.py``).
The browser's upload routes skip the global CSRF check (which would
parse the whole form first): its token comes in the ``X-CSRFToken``
header, or as the ``csrf_token`` field before the first file part (where
the page's form puts it), and is checked before any file byte is taken.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from flask import current_app, request
from flask_wtf.csrf import CSRFError, validate_csrf
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData
from wtforms import ValidationError

from worker.intake import Intake, Limits, Refusal, Upload
from worker.states import Kind

from .problems import Refused
from .security import client_address

#: bytes read from the request stream at a time
READ = 64 * 1024
#: the form field every file goes in
FILES = "files"
CSRF_FIELD = "csrf_token"


@dataclass
class Received:
    """An upload taken in: the intake (hand it to the service) and the form's fields."""

    intake: Intake
    form: MultiDict
    upload: Upload


class _Decoder(MultipartDecoder):
    """Werkzeug's decoder, reading part headers whatever their encoding."""

    def _parse_headers(self, data):
        # Werkzeug decodes each header line as strict UTF-8 and its parser gives
        # up on the whole form otherwise; a file name is never used here
        return super()._parse_headers(bytes(data).decode("utf-8", "replace").encode("utf-8"))


def limits() -> Limits:
    return Limits.from_config(current_app.config)


@contextmanager
def receive(digest=None, *, kind=Kind.INPUT, csrf: bool = False, strict: bool = True):
    """Take in this request's upload; yields ``Received``.

    ``kind``: what the service will make of it (``input``: a job's or
    batch's, options first; ``scan``: a workspace's).  ``csrf``: check the
    browser's token (header, or a field before the files).  ``strict``:
    refuse file parts named other than ``files`` (else they are skipped).

    Raises ``Refused`` (415 not multipart; 429, 503 or 413 when not admitted;
    the intake's refusals), ``CSRFError``, or Werkzeug's 413 (too many
    parts, a field too large).  Whatever is raised — here or in the block —
    before the service commits the intake removes every byte of it.
    """
    if request.mimetype != "multipart/form-data":
        raise Refused("unsupported_media_type",
                      "Send multipart/form-data with one or more 'files' parts.", 415)
    boundary = request.mimetype_params.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise Refused("bad_request", "The multipart body has no usable boundary.")
    app = current_app
    csrf = csrf and _csrf_enabled()
    token = request.headers.get("X-CSRFToken") if csrf else None
    if token is not None:
        _check_csrf(token)
    with app.extensions["ephemesh.inflight"].admit(client_address(),
                                                   request.content_length) as ticket:
        intake = app.extensions["ephemesh.service"].receive(
            limits(), kind=kind, digest=digest, spool_dir=app.config["EPHEMESH_SPOOL_DIR"],
            take=ticket.take)
        try:
            form = _read(intake, boundary, strict=strict, checked=token is not None or not csrf)
            upload = intake.finish()
            yield Received(intake, form, upload)
        except Refusal as exc:
            intake.abort()
            raise Refused(exc.code, exc.message, exc.status) from None
        finally:
            intake.abort()  # nothing once the service has committed it


def _read(intake: Intake, boundary: str, *, strict: bool, checked: bool) -> MultiDict:
    """Decode the body, feeding ``files`` parts to ``intake``; returns the fields."""
    cfg = current_app.config
    max_field = cfg["MAX_FORM_MEMORY_SIZE"]
    decoder = _Decoder(boundary.encode("latin-1", "replace"), max_field,
                       max_parts=cfg["MAX_FORM_PARTS"])
    fields: list[tuple[str, str]] = []
    part = None  # "file", "skip", or a field's name
    value, size = [], 0
    stream = request.stream
    while True:
        data = stream.read(READ)
        event = _receive(decoder, data or None)
        while not isinstance(event, (NeedData, Epilogue)):
            if isinstance(event, (Field, File)):
                if event.name == FILES:
                    if not checked:  # the token came before the files, or never
                        _check_csrf(dict(fields).get(CSRF_FIELD))
                        checked = True
                    part = "file"
                    intake.begin()
                elif isinstance(event, File):
                    if strict:
                        raise Refused("unknown_field", "Files go in parts named 'files'.")
                    part = "skip"
                else:
                    part, value, size = event.name, [], 0
            elif isinstance(event, Data):
                if part == "file":
                    intake.feed(event.data)
                    if not event.more_data:
                        intake.end()
                elif part != "skip":
                    size += len(event.data)
                    if size > max_field:
                        raise RequestEntityTooLarge()
                    value.append(event.data)
                    if not event.more_data:
                        fields.append((part, b"".join(value).decode("utf-8", "replace")))
            event = _next(decoder)
        if isinstance(event, Epilogue) or not data:
            break
    if not checked:
        _check_csrf(dict(fields).get(CSRF_FIELD))
    return MultiDict(fields)


def _receive(decoder, data):
    try:
        decoder.receive_data(data)
    except ValueError:
        raise Refused("bad_request", "The multipart body could not be read.") from None
    return _next(decoder)


def _next(decoder):
    try:
        return decoder.next_event()
    except ValueError:  # malformed: no Content-Disposition, cut short
        raise Refused("bad_request", "The multipart body could not be read.") from None


def _csrf_enabled() -> bool:
    cfg = current_app.config
    return cfg.get("WTF_CSRF_ENABLED", True) and cfg.get("WTF_CSRF_CHECK_DEFAULT", True)


def _check_csrf(token) -> None:
    """What Flask-WTF's ``protect`` checks, for a token found before the files."""
    try:
        validate_csrf(token)
    except ValidationError as exc:
        raise CSRFError(exc.args[0]) from None
