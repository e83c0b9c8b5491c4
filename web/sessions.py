"""Administrators' sessions, kept on the server (Redis), so they can end.

The signed session cookie holds only a random token (``admin_session``);
the session is the Redis key ``ephemesh:admin-session:<SHA-256 of the
token>`` (nobody reading Redis can use a key to log in; no name and no
address in it), whose value holds the account's id, when the login was
and a fingerprint of the account's password hash.  It lasts ``IDLE_S``
without a request and at most ``ABSOLUTE_S`` after the login: the key's
TTL is the sooner of the two deadlines, renewed on each request.

A session ends:

* at logout (the key is deleted, so a copy of the cookie is worthless);
* when the account's password changes (``ephemesh admin add NAME`` again:
  a new hash, so the fingerprint no longer matches) or the account is
  removed (``ephemesh admin remove NAME``): checked against the records on
  every request, so it holds on every web host at once and needs no Redis
  from the command line; the key is deleted on that request.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time

#: a session with no request for this long has ended
IDLE_S = 3600
#: a session ends this long after its login, whatever happens
ABSOLUTE_S = 8 * 3600
PREFIX = "ephemesh:admin-session:"


def _key(token: str) -> str:
    return PREFIX + hashlib.sha256(token.encode()).hexdigest()[:32]


def fingerprint(password_hash: str) -> str:
    """Changes with every new password hash (argon2 salts each one)."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


class AdminSessions:
    """Start, look up and end admin sessions in ``redis`` for the accounts in
    ``records`` (``worker.records.Records``)."""

    def __init__(self, redis, records):
        self.redis, self.records = redis, records

    def start(self, name: str, now: float | None = None) -> str:
        """A new session for the account ``name``; returns its token (for the cookie)."""
        account = self.records.admin_account(name)
        if account is None:
            raise ValueError("no such admin account")
        now = time.time() if now is None else now
        token = secrets.token_urlsafe(32)
        value = {"admin": account["id"], "since": now,
                 "password": fingerprint(account["password_hash"])}
        self.redis.set(_key(token), json.dumps(value), ex=IDLE_S)
        return token

    def current(self, token: str | None, now: float | None = None) -> str | None:
        """The account name of the live session ``token``, else None (and a
        session found ended is deleted).  Each call renews the idle deadline."""
        if not token or not isinstance(token, str):
            return None
        key = _key(token)
        raw = self.redis.get(key)
        if raw is None:
            return None
        now = time.time() if now is None else now
        try:
            value = json.loads(raw)
            left = value["since"] + ABSOLUTE_S - now
            account = self.records.admin_account_by_id(int(value["admin"]))
            same = account is not None and \
                fingerprint(account["password_hash"]) == value["password"]
        except (ValueError, KeyError, TypeError):
            left, same = 0, False
        if left <= 0 or not same:
            self.redis.delete(key)
            return None
        self.redis.expire(key, int(min(IDLE_S, left)) or 1)
        return account["name"]

    def end(self, token: str | None) -> None:
        if token and isinstance(token, str):
            self.redis.delete(_key(token))
