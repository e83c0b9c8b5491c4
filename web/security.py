"""Response headers, where upload bytes spool, and who the client is.

* Every response: a Content-Security-Policy with no inline script or style,
  ``Referrer-Policy: no-referrer``, ``X-Content-Type-Options: nosniff``, no
  framing; every response but the app's own static files: ``Cache-Control:
  no-store``.
* Upload parts larger than 500 kB spool to unnamed temporary files in the
  spool directory (put it on a tmpfs), never to the system's ``/tmp``.
* Client addresses are pseudonymised wherever they are used as a key: the
  rate limiter, the login lock, the audit log.  The pseudonym is an HMAC
  under a random key for the month, kept only in Redis and expiring two
  months later (every web host shares it there): once it is gone, an audit
  row's pseudonym can no longer be linked to any address, not even by whoever
  holds the secret key.  Only the access log holds the address itself (it is
  deleted after ``EPHEMESH_ACCESS_LOG_DAYS``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import tempfile
import threading
import time

from flask import Request, current_app, g, request
from redis.exceptions import RedisError

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")

#: the app's own static files (cached, no access-log row, no rate limit)
STATIC_ENDPOINTS = ("static", "browser.vendor", "browser.deidentify_profile")


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
    client to wait a minute before looking at its job.  A refusal that knows
    its own wait (``g.retry_after``: a slowed login) says that one, not the
    rate limit's window, which it did not hit."""
    if response.status_code not in (429, 503):
        response.headers.pop("Retry-After", None)
    elif g.get("retry_after"):
        response.headers["Retry-After"] = str(g.retry_after)
    return response


def client_address() -> str:
    return request.remote_addr or "unknown"


#: how long a month's pseudonym key lives in Redis (then old pseudonyms are unlinkable)
SALT_TTL_S = 62 * 86400
#: a month's key is ``PSEUDONYM_KEY + "2026-05"`` in Redis
PSEUDONYM_KEY = "ephemesh:pseudonym-key:"
#: how long a web process reuses the month's key before asking Redis again
SALT_CACHE_S = 60
_salts: dict = {}
_salts_lock = threading.Lock()


def month_salt(redis, month: str) -> str:
    """The month's random pseudonym key: made once (by whichever host asks
    first) in Redis with a TTL, cached here for a minute.  Redis unreachable:
    the last one known, else one for this process alone."""
    now = time.monotonic()
    with _salts_lock:
        known = _salts.get(month)
        if known and known[1] > now:
            return known[0]
    key = PSEUDONYM_KEY + month
    try:
        redis.set(key, secrets.token_hex(32), nx=True, ex=SALT_TTL_S)
        value = redis.get(key)
        salt = value.decode() if value else None
    except RedisError:
        salt = None
    with _salts_lock:
        if salt is None:
            salt = known[0] if known else secrets.token_hex(32)
        _salts[month] = (salt, now + SALT_CACHE_S)
    return salt


def forget_salts() -> None:
    """Drop the cached keys (tests; a key deleted in Redis is then not reused)."""
    with _salts_lock:
        _salts.clear()


def month_keys(redis) -> dict[str, str]:
    """Every month whose pseudonym key still exists in Redis, with its key
    (a data-subject request links an address to those months' pseudonyms
    only: older ones are unlinkable)."""
    out = {}
    for key in redis.scan_iter(match=PSEUDONYM_KEY + "*", count=1000):
        month = key.decode()[len(PSEUDONYM_KEY):]
        value = redis.get(key)
        if value:
            out[month] = value.decode()
    return out


def pseudonym_under(salt: str, month: str, value: str) -> str:
    """HMAC-SHA256 of ``value`` under one month's key (16 hex)."""
    return hmac.new(f"{salt}|{month}".encode(), value.encode(), hashlib.sha256).hexdigest()[:16]


def pseudonym(value: str) -> str:
    """HMAC-SHA256 of ``value`` under the month's random key (16 hex)."""
    month = time.strftime("%Y-%m", time.gmtime())
    salt = month_salt(current_app.extensions["ephemesh.service"].redis, month)
    return pseudonym_under(salt, month, value)


def address_pseudonym() -> str:
    return pseudonym(client_address())


def address_subject(address: str) -> str:
    """An address as a lock's subject (``limits.FailureLock``), beside accounts."""
    return f"address:{address}"
