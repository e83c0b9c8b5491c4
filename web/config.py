"""The web layer's settings, read from the environment (``EPHEMESH_*``).

The worker's ``Settings`` say where things live and how long they are kept;
these say how much one request may carry and how often it may come.

=================================  =========================================
``EPHEMESH_SECRET_KEY``            signs the session cookie (and CSRF
                                   tokens); default: a random key kept in
                                   ``DATA_DIR/secret-key`` (mode 0600).
                                   Set the same value on every web host.
                                   (Address pseudonyms use a random key per
                                   month kept in Redis: web/security.py.)
``EPHEMESH_RECEIPT_KEY_FILE``      the Ed25519 private key (PEM, PKCS8) that
                                   signs deletion receipts; default
                                   ``DATA_DIR/receipt-key.pem``, made (mode
                                   0600) on first start.  Every web host
                                   must use the same key file: its public
                                   half is served at
                                   ``/.well-known/ephemesh-receipt-key``
``EPHEMESH_MAX_UPLOAD_MB``         request body cap (default 1024)
``EPHEMESH_MAX_FILES``             files per upload, zip members included
                                   (default 5000)
``EPHEMESH_MAX_ZIP_ENTRIES``       entries per zip (default 10000)
``EPHEMESH_MAX_UNPACKED_MB``       bytes unpacked from zips per upload
                                   (default 4096)
``EPHEMESH_MAX_ZIP_RATIO``         unpacked bytes per archive byte (default 100)
``EPHEMESH_MAX_IN_FLIGHT_MB``      upload bytes this server takes in at once,
                                   across all its requests: each upload's
                                   length, then what it unpacks, until it is
                                   queued (default 4096, at least
                                   ``EPHEMESH_MAX_UPLOAD_MB``); when full,
                                   503 ``busy`` with ``Retry-After``
``EPHEMESH_MAX_UPLOADS_PER_ADDRESS`` uploads one address may have running at
                                   once (default 4); more: 429
                                   ``too_many_uploads`` with ``Retry-After``
``EPHEMESH_RATE_LIMIT``            per address, every route (default 600/minute)
``EPHEMESH_KEY_RATE_LIMIT``        per API key on /api (default 120/minute)
``EPHEMESH_UPLOAD_RATE_LIMIT``     uploads per address or key (default 30/minute)
``EPHEMESH_LOGIN_RATE_LIMIT``     admin login posts per address (default 20/minute)
``EPHEMESH_LOGIN_MAX_FAILURES``    failed admin logins from one address for
                                   one account before that pair is locked,
                                   and on an account (from anywhere) before
                                   it is slowed down (default 5;
                                   ``limits.LoginThrottle``)
``EPHEMESH_API_MAX_AUTH_FAILURES`` bad API keys from one address before its
                                   bad keys get 429 (default 20; valid keys
                                   are checked first and still work)
``EPHEMESH_LOCKOUT_SECONDS``       how long a lock lasts (default 900)
``EPHEMESH_SECURE_COOKIES``        1: cookies only over HTTPS (set it behind
                                   TLS; over plain HTTP the browser then
                                   sends no cookie back and forms fail)
``EPHEMESH_TRUSTED_PROXIES``       reverse proxies in front (X-Forwarded-For hops)
``EPHEMESH_CLIENT_TIMEOUT``        seconds a client has to send a request's
                                   line and headers, and the period over
                                   which ``EPHEMESH_MIN_BODY_RATE`` is
                                   measured (default 20; web/server.py)
``EPHEMESH_MIN_BODY_RATE``         bytes a second a request body (or a
                                   response being read) must move in every
                                   such period, else the connection is
                                   closed (default 1024; 0: no minimum)
``EPHEMESH_CONNECTION_LIMIT``      open connections waitress accepts at once
                                   (default 1000; the open-file limit is
                                   raised to fit)
``EPHEMESH_CONTROLLER``            who is responsible for the data (name and
                                   address), shown on the privacy page;
                                   unset: ``serve`` warns once at start
``EPHEMESH_CONTACT``               how to reach them (e-mail or web address):
                                   where data-subject requests go
``EPHEMESH_PROCESSORS``            processors, separated by ``;`` (e.g.
                                   ``Hoster GmbH, hosting, DE; Mailer SA,
                                   e-mail, FR``)
``EPHEMESH_MIN_AGE``               the minimum age of users (years); when
                                   set, the privacy page says so
``EPHEMESH_SPOOL_DIR``             where large upload parts spool (unnamed
                                   files) and, under ``serve``, every
                                   temporary file (waitress's body buffers);
                                   default ``STORE/.spool`` (``DATA_DIR/spool``
                                   with the Redis store): put it on a tmpfs
=================================  =========================================
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

MB = 1024 * 1024


def _int(env, name, default, lo=1):
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number") from None
    if value < lo:
        raise ValueError(f"{name} must be at least {lo}")
    return value


def secret_key(env, data_dir: Path) -> str:
    """The configured secret, else one kept (0600) in the data directory."""
    if env.get("EPHEMESH_SECRET_KEY"):
        return env["EPHEMESH_SECRET_KEY"]
    path = Path(data_dir) / "secret-key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


def receipt_key_file(env, data_dir: Path) -> Path:
    """Where the key that signs deletion receipts is (``worker.receipts.load_key``)."""
    if env.get("EPHEMESH_RECEIPT_KEY_FILE"):
        return Path(env["EPHEMESH_RECEIPT_KEY_FILE"]).absolute()
    return Path(data_dir) / "receipt-key.pem"


def _numbers(env) -> dict:
    """The numeric settings, checked (ValueError names the bad one)."""
    max_files = _int(env, "EPHEMESH_MAX_FILES", 5000)
    max_upload = _int(env, "EPHEMESH_MAX_UPLOAD_MB", 1024)
    in_flight = _int(env, "EPHEMESH_MAX_IN_FLIGHT_MB", max(4096, max_upload))
    if in_flight < max_upload:
        raise ValueError(f"EPHEMESH_MAX_IN_FLIGHT_MB must be at least EPHEMESH_MAX_UPLOAD_MB "
                         f"({max_upload}), got {in_flight}")
    return {
        "MAX_CONTENT_LENGTH": max_upload * MB,
        # every file is one part; a few more for the option fields
        "MAX_FORM_PARTS": max_files + 32,
        # Werkzeug applies this to its parser's buffer on *every* part, file
        # parts too: it must exceed the 64 KiB read size plus a boundary, or a
        # file part whose 64 KiB chunk ends near a line break is refused as
        # too large (option fields are checked for length in web/options.py)
        "MAX_FORM_MEMORY_SIZE": 500_000,
        "EPHEMESH_MAX_FILES": max_files,
        "EPHEMESH_MAX_ZIP_ENTRIES": _int(env, "EPHEMESH_MAX_ZIP_ENTRIES", 10000),
        "EPHEMESH_MAX_UNPACKED": _int(env, "EPHEMESH_MAX_UNPACKED_MB", 4096) * MB,
        "EPHEMESH_MAX_ZIP_RATIO": _int(env, "EPHEMESH_MAX_ZIP_RATIO", 100),
        "EPHEMESH_MAX_IN_FLIGHT": in_flight * MB,
        "EPHEMESH_MAX_UPLOADS_PER_ADDRESS": _int(env, "EPHEMESH_MAX_UPLOADS_PER_ADDRESS", 4),
        "EPHEMESH_LOGIN_MAX_FAILURES": _int(env, "EPHEMESH_LOGIN_MAX_FAILURES", 5),
        "EPHEMESH_LOCKOUT_SECONDS": _int(env, "EPHEMESH_LOCKOUT_SECONDS", 900),
        "EPHEMESH_API_MAX_AUTH_FAILURES": _int(env, "EPHEMESH_API_MAX_AUTH_FAILURES", 20),
        "EPHEMESH_TRUSTED_PROXIES": _int(env, "EPHEMESH_TRUSTED_PROXIES", 0, lo=0),
        "EPHEMESH_CLIENT_TIMEOUT": _int(env, "EPHEMESH_CLIENT_TIMEOUT", 20),
        "EPHEMESH_MIN_BODY_RATE": _int(env, "EPHEMESH_MIN_BODY_RATE", 1024, lo=0),
        "EPHEMESH_CONNECTION_LIMIT": _int(env, "EPHEMESH_CONNECTION_LIMIT", 1000),
    }


def _flag(env, name) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be 1 or 0 (true or false), got {env.get(name)!r}")


def _rate(env, name, default) -> str:
    value = env.get(name) or default
    try:
        from limits import parse_many  # 0.1 s to import, and `ephemesh` imports this module

        if not parse_many(value):
            raise ValueError
    except ValueError:
        raise ValueError(f"{name} must be a rate such as 30/minute, got {value!r}") from None
    return value


def _rates(env) -> dict:
    return {
        "EPHEMESH_RATE_LIMIT": _rate(env, "EPHEMESH_RATE_LIMIT", "600/minute"),
        "EPHEMESH_KEY_RATE_LIMIT": _rate(env, "EPHEMESH_KEY_RATE_LIMIT", "120/minute"),
        "EPHEMESH_UPLOAD_RATE_LIMIT": _rate(env, "EPHEMESH_UPLOAD_RATE_LIMIT", "30/minute"),
        "EPHEMESH_LOGIN_RATE_LIMIT": _rate(env, "EPHEMESH_LOGIN_RATE_LIMIT", "20/minute"),
    }


def _privacy(env) -> dict:
    """Who runs the service, as the privacy page says it."""
    raw_age = (env.get("EPHEMESH_MIN_AGE") or "").strip()
    age = None
    if raw_age:
        if not raw_age.isdigit() or not 1 <= int(raw_age) <= 99:
            raise ValueError(f"EPHEMESH_MIN_AGE must be an age in years from 1 to 99, "
                             f"got {raw_age!r}")
        age = int(raw_age)
    processors = [p.strip() for p in (env.get("EPHEMESH_PROCESSORS") or "").split(";")]
    return {"EPHEMESH_CONTROLLER": (env.get("EPHEMESH_CONTROLLER") or "").strip(),
            "EPHEMESH_CONTACT": (env.get("EPHEMESH_CONTACT") or "").strip(),
            "EPHEMESH_PROCESSORS": [p for p in processors if p],
            "EPHEMESH_MIN_AGE": age}


def missing_controller(env=None) -> list[str]:
    """The controller settings that are not set (``serve`` warns about them)."""
    privacy = _privacy(os.environ if env is None else env)
    return [name for name in ("EPHEMESH_CONTROLLER", "EPHEMESH_CONTACT") if not privacy[name]]


def check(env=None) -> None:
    """Raise ValueError (naming the setting) when a web setting is invalid."""
    env = os.environ if env is None else env
    _numbers(env)
    _rates(env)
    _privacy(env)
    _flag(env, "EPHEMESH_SECURE_COOKIES")


def spool_dir(settings, env=None) -> Path:
    """Where upload parts (and, under ``serve``, every temporary file) go."""
    env = os.environ if env is None else env
    if env.get("EPHEMESH_SPOOL_DIR"):
        return Path(env["EPHEMESH_SPOOL_DIR"]).absolute()
    if settings.store != "redis":
        return Path(settings.store) / ".spool"
    return Path(settings.data_dir) / "spool"


def from_env(settings, env=None) -> dict:
    """Flask config for ``settings`` (the worker's) and the environment."""
    env = os.environ if env is None else env
    return {
        "SECRET_KEY": secret_key(env, settings.data_dir),
        **_numbers(env),
        **_rates(env),
        **_privacy(env),
        "EPHEMESH_SPOOL_DIR": str(spool_dir(settings, env)),
        "EPHEMESH_RECEIPT_KEY_FILE": str(receipt_key_file(env, settings.data_dir)),
        "SESSION_COOKIE_NAME": "ephemesh",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": _flag(env, "EPHEMESH_SECURE_COOKIES"),
        "PERMANENT_SESSION_LIFETIME": 8 * 3600,
        "WTF_CSRF_TIME_LIMIT": 8 * 3600,
        "WTF_CSRF_SSL_STRICT": False,  # no Referer is sent (Referrer-Policy: no-referrer)
        "RATELIMIT_ENABLED": True,
        "JSON_SORT_KEYS": False,
    }
