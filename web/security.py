"""Response headers, where upload bytes spool, and who the client is.

* Every response: a Content-Security-Policy with no inline script or style,
  ``Referrer-Policy: no-referrer``, ``X-Content-Type-Options: nosniff``, no
  framing; every response but the app's own static files: ``Cache-Control:
  no-store``.
* Upload parts larger than 500 kB spool to unnamed temporary files in the
  spool directory (put it on a tmpfs), never to the system's ``/tmp``.
* Client addresses are pseudonymised (HMAC under the secret key and the
  month) wherever they are used as a key: the rate limiter, the login lock,
  the audit log.  Only the access log holds the address itself (it is
  deleted after ``EPHEMESH_ACCESS_LOG_DAYS``).
"""

from __future__ import annotations

import hashlib
import hmac
import tempfile
import time

from flask import Request, current_app, request

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")

STATIC_ENDPOINTS = ("static", "browser.vendor")


class SpoolingRequest(Request):
    """A request whose large upload parts spool under ``EPHEMESH_SPOOL_DIR``."""

    def _get_file_stream(self, total_content_length, content_type, filename=None,
                         content_length=None):
        spool = current_app.config.get("EPHEMESH_SPOOL_DIR")
        return tempfile.SpooledTemporaryFile(max_size=500 * 1024, mode="rb+", dir=spool)


def add_headers(response):
    headers = response.headers
    headers["Content-Security-Policy"] = CSP
    headers["Referrer-Policy"] = "no-referrer"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    headers["Cross-Origin-Resource-Policy"] = "same-origin"
    headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=(), interest-cohort=()"
    if request.endpoint not in STATIC_ENDPOINTS:
        headers["Cache-Control"] = "no-store"
        headers.pop("Expires", None)
        headers.pop("ETag", None)
        headers.pop("Last-Modified", None)
    if request.is_secure:
        headers["Strict-Transport-Security"] = "max-age=31536000"
    return response


def tidy_limit_headers(response):
    """``Retry-After`` only where it means "try again then" (429, 503):
    flask-limiter adds it to every response, and on a 202 it would tell a
    client to wait a minute before looking at its job."""
    if response.status_code not in (429, 503):
        response.headers.pop("Retry-After", None)
    return response


def client_address() -> str:
    return request.remote_addr or "unknown"


def pseudonym(value: str, *, secret: str | None = None) -> str:
    """HMAC-SHA256 of ``value`` under the secret key and the month (16 hex)."""
    secret = secret or current_app.config["SECRET_KEY"]
    month = time.strftime("%Y-%m", time.gmtime())
    return hmac.new(f"{secret}|{month}".encode(), value.encode(), hashlib.sha256).hexdigest()[:16]


def address_pseudonym() -> str:
    return pseudonym(client_address())
