"""What the privacy page says, read from the running configuration, never
typed into the template: who is responsible (``EPHEMESH_CONTROLLER``,
``EPHEMESH_CONTACT``), the processors, the age notice, the cookie the app
sets (from Flask's session settings), how long each kind of record is kept
(from the settings), where uploads are (the store's medium: memory or disk),
the key that signs deletion receipts, and when the sweeper last ran.
"""

from __future__ import annotations

from limits import parse_many

from worker import receipts
from worker.records import ACCESS_METHODS
from worker.store import medium

from . import security, sessions


def duration(seconds: float) -> str:
    """``30 minutes``, ``1 hour``, ``14 days``: the largest whole unit."""
    seconds = int(round(seconds))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def _window(rate: str) -> str:
    """How long a rate-limit counter lives: the longest window of ``rate``."""
    return duration(max(item.get_expiry() for item in parse_many(rate)))


def cookies(config) -> list[dict]:
    """The cookies the app sets: Flask's session cookie, the only one."""
    flags = [name for name, on in (("HttpOnly", config["SESSION_COOKIE_HTTPONLY"]),
                                   ("Secure", config["SESSION_COOKIE_SECURE"])) if on]
    if config.get("SESSION_COOKIE_SAMESITE"):
        flags.append(f"SameSite={config['SESSION_COOKIE_SAMESITE']}")
    return [{
        "name": config["SESSION_COOKIE_NAME"],
        "purpose": "essential: ties your jobs to this browser, so nobody else can see them, and "
                   "protects the forms against forgery (a token valid for "
                   f"{duration(config['WTF_CSRF_TIME_LIMIT'])}); for an administrator it holds "
                   "a random token of a login session kept on the server, which ends at logout, "
                   f"after {duration(sessions.IDLE_S)} without use and at most "
                   f"{duration(sessions.ABSOLUTE_S)} after the login",
        "lifetime": "until you close the browser (a session cookie)",
        "flags": ", ".join(flags),
    }]


def retention(settings, config) -> list[dict]:
    """Each kind of record, how long it is kept, and where."""
    kept = duration(settings.retention_seconds)
    days = duration(settings.access_log_days * 86400)
    return [
        {"id": "upload", "what": "Your upload (the DICOM files)", "where": "store",
         "kept": f"until its conversion ends, at most {kept} after the upload"},
        {"id": "scan", "what": "A scan you look at before converting (“Look first”): the "
         "upload, its decoded series and their list (descriptions, times)", "where": "store",
         "kept": f"until you press “Done, delete my scan”, at most {kept} after the upload"},
        {"id": "result", "what": "The STL model, its report and its 3D preview", "where": "store",
         "kept": f"{kept} after it is made, or until you press “Delete now” (or “Done” for a "
                 "scan's models)"},
        {"id": "queue", "what": "The job's state in the queue", "where": "Redis",
         "kept": f"at most {kept}"},
        {"id": "job", "what": "The job record (random id, times, status, error code)",
         "where": "database", "kept": f"{days} after the upload"},
        {"id": "log", "what": "Access log (IP address, time, method, kind of page, status, size)",
         "where": "database", "kept": days},
        {"id": "limits", "what": "Rate-limit counters (per address pseudonym)", "where": "Redis",
         "kept": _window(config["EPHEMESH_RATE_LIMIT"])},
        {"id": "locks", "what": "Locks after repeated failed logins or API keys",
         "where": "Redis", "kept": duration(config["EPHEMESH_LOCKOUT_SECONDS"])},
        {"id": "admin-sessions", "what": "Administrators' login sessions (the account's "
         "number and the login's time; no address)", "where": "Redis",
         "kept": f"until logout, {duration(sessions.IDLE_S)} without use, at most "
                 f"{duration(sessions.ABSOLUTE_S)}"},
        {"id": "pseudonym-keys", "what": "The monthly keys of the address pseudonyms",
         "where": "Redis", "kept": duration(security.SALT_TTL_S)},
        {"id": "audit", "what": "Audit log (uploads, deletions, logins; addresses as pseudonyms)",
         "where": "database", "kept": "kept; a pseudonym cannot be linked to any address once "
         f"its month's key is gone ({duration(security.SALT_TTL_S)})"},
        {"id": "ledger", "what": "Deletion ledger and receipts (random ids, sizes, times)",
         "where": "database", "kept": "kept, as the record that everything was deleted in time"},
        {"id": "usage", "what": "API usage per key (requests and bytes)", "where": "database",
         "kept": "kept while the key exists"},
    ]


def storage(service, config) -> dict:
    """Where uploads are: the store's medium (a Redis store is memory) and the
    spool's (where large upload parts wait while a request is read)."""
    return {"uploads": service.store.medium(), "redis_store": service.settings.store == "redis",
            "spool": medium(config["EPHEMESH_SPOOL_DIR"])}


def facts(app) -> dict:
    config = app.config
    service = app.extensions["ephemesh.service"]
    settings = app.extensions["ephemesh.settings"]
    key = app.extensions["ephemesh.receipt_key"]
    try:
        last_sweep = service.records.last_sweep()
    except Exception:  # the database unreachable for a moment: the page still answers
        last_sweep = None
    return {
        "controller": config["EPHEMESH_CONTROLLER"],
        "contact": config["EPHEMESH_CONTACT"],
        "processors": config["EPHEMESH_PROCESSORS"],
        "min_age": config["EPHEMESH_MIN_AGE"],
        "cookies": cookies(config),
        "methods": [*ACCESS_METHODS, "OTHER"],
        "retention": retention(settings, config),
        "storage": storage(service, config),
        "receipt_key": receipts.fingerprint(receipts.public_raw(key)),
        "last_sweep": last_sweep,
        "sweep_every": duration(settings.sweep_seconds),
    }
