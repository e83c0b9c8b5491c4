"""Rate limits (flask-limiter on the service's Redis) and failure locks.

Limits are counted per client address (as a pseudonym, never the address)
on every route, per API key on ``/api``, and per uploader on the routes that
take uploads.  ``FailureLock`` counts failed API keys per address in Redis
and blocks the address for a while once there are too many (the API checks
a key before the block, so a valid key still works).  ``LoginThrottle``
counts failed admin logins so that they cannot be turned against the
owner: per (account, address) a lock, per account a growing wait that
applies only to addresses that already failed on it.  Every key they write
is made of pseudonyms and expires by itself.
"""

from __future__ import annotations

import hashlib
import math

from flask import request
from flask_limiter import Limiter
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import ops
from .scans import VIEW_ENDPOINTS
from .security import STATIC_ENDPOINTS, address_pseudonym, address_subject, pseudonym


def storage_uri(redis_url: str) -> str:
    """flask-limiter's name for the same Redis (``unix://`` becomes ``redis+unix://``)."""
    if redis_url.startswith("unix://"):
        return "redis+unix://" + redis_url[len("unix://"):]
    return redis_url


def key_identity() -> str:
    """The API key presented (a hash of it), else the address pseudonym."""
    auth = request.headers.get("Authorization", "")
    if auth:
        return "k" + hashlib.sha256(auth.encode()).hexdigest()[:24]
    return "a" + address_pseudonym()


def make_limiter(app, redis_url: str) -> Limiter:
    cfg = app.config
    limiter = Limiter(
        address_pseudonym,
        app=app,
        storage_uri=storage_uri(redis_url),
        default_limits=[cfg["EPHEMESH_RATE_LIMIT"]],
        key_prefix="ephemesh:limit",
        headers_enabled=True,
        strategy="fixed-window",
        enabled=cfg.get("RATELIMIT_ENABLED", True),
        # Redis down (restarting): count in this process until it is back,
        # rather than failing every request, pages that need no Redis included
        in_memory_fallback_enabled=True,
        swallow_errors=True,
    )
    return limiter


def apply_limits(app, limiter: Limiter) -> None:
    """Per-key limits on the API, per-uploader limits on the upload routes."""
    cfg = app.config
    for keyed in ("api", "dicomweb"):
        limiter.limit(cfg["EPHEMESH_KEY_RATE_LIMIT"], key_func=key_identity)(app.blueprints[keyed])
    # the workspace's views (scrolling through slices) count per address only
    limiter.limit(cfg["EPHEMESH_KEY_RATE_LIMIT"], key_func=key_identity,
                  exempt_when=lambda: request.endpoint in VIEW_ENDPOINTS)(app.blueprints["scans"])
    upload = limiter.shared_limit(cfg["EPHEMESH_UPLOAD_RATE_LIMIT"], scope="upload",
                                  key_func=key_identity)
    for endpoint in ("browser.create_job", "api.create_job", "api.create_batch",
                     "scans.create_scan", "dicomweb.store", "dicomweb.store_study"):
        app.view_functions[endpoint] = upload(app.view_functions[endpoint])
    login = limiter.limit(cfg["EPHEMESH_LOGIN_RATE_LIMIT"], methods=["POST"])
    app.view_functions["admin.login"] = login(app.view_functions["admin.login"])
    for endpoint in (*STATIC_ENDPOINTS, *ops.ENDPOINTS):
        app.view_functions[endpoint] = limiter.exempt(app.view_functions[endpoint])


class FailureLock:
    """Too many failures for a subject (an address sending bad API keys) lock it.

    With ``fail_open`` an unreachable Redis counts nothing and locks nothing
    (API keys: 256 random bits, and the in-process rate limit still counts);
    without it, the Redis error goes up."""

    def __init__(self, redis, scope: str, max_failures: int, seconds: int,
                 fail_open: bool = False):
        self.redis, self.scope = redis, scope
        self.max_failures, self.seconds = max_failures, seconds
        self.fail_open = fail_open

    def _guard(self, call, default):
        try:
            return call()
        except (RedisConnectionError, RedisTimeoutError):
            if not self.fail_open:
                raise
            return default

    def _key(self, subject: str) -> str:
        return f"ephemesh:lock:{self.scope}:{pseudonym(subject)}"

    def locked(self, *subjects) -> bool:
        keys = [self._key(s) for s in subjects]
        values = self._guard(lambda: self.redis.mget(keys), []) if keys else []
        return any(int(v or 0) >= self.max_failures for v in values)

    def retry_after(self, *subjects) -> int:
        """Seconds until every locked subject is free again (at least 1)."""
        ttls = [self._guard(lambda s=s: self.redis.ttl(self._key(s)), 0) for s in subjects]
        return max([t for t in ttls if t and t > 0] + [1])

    def fail(self, *subjects) -> bool:
        """Count one failure for each subject; True when one is now locked."""
        pipe = self.redis.pipeline()
        for s in subjects:
            key = self._key(s)
            pipe.incr(key)
            pipe.expire(key, self.seconds)
        counts = self._guard(pipe.execute, [])[::2]
        return any(c >= self.max_failures for c in counts)


class LoginThrottle:
    """Failed admin logins, counted so that an attacker cannot lock the owner out.

    * Per **(account, address)**: ``max_failures`` failures lock that address
      for that account for ``seconds`` (another address, or another
      account from the same address, is not affected).
    * Per **account** (failures from every address): past ``max_failures``,
      each further failure makes the account wait ``2**(n - max_failures)``
      seconds (at most ``MAX_WAIT_S``) before it checks another password
      *from an address that has failed on it*.  An address with no failure
      on the account is always checked: the owner's right password gets in
      while someone elsewhere guesses.

    Keys: ``ephemesh:lock:login:<account>:<address>`` (the pair),
    ``ephemesh:lock:login:<account>`` (the account's count) and
    ``ephemesh:lock:login-wait:<account>``, each a monthly pseudonym
    (``security.pseudonym``), each expiring by itself.  Redis unreachable:
    the error goes up (503), never a login without the counts.
    """

    MAX_WAIT_S = 60
    PREFIX = "ephemesh:lock:login"

    def __init__(self, redis, max_failures: int, seconds: int):
        if max_failures < 1 or seconds < 1:
            raise ValueError("max_failures and seconds must be at least 1")
        self.redis, self.max_failures, self.seconds = redis, max_failures, seconds

    def _keys(self, account: str, address: str) -> tuple[str, str, str]:
        who = pseudonym(f"account:{account}")
        where = pseudonym(address_subject(address))
        return (f"{self.PREFIX}:{who}:{where}", f"{self.PREFIX}:{who}",
                f"{self.PREFIX}-wait:{who}")

    def wait(self, failures: int) -> float:
        """Seconds the account waits after its ``failures``-th failure (0 below the limit)."""
        if failures < self.max_failures:
            return 0.0
        return float(min(2 ** (failures - self.max_failures), self.MAX_WAIT_S))

    def refusal(self, account: str, address: str) -> tuple[str, int] | None:
        """``None`` when this password may be checked now, else ``(why, retry
        after in seconds)``: ``"locked"`` (this address failed too often on
        this account) or ``"wait"`` (the account is slowed down and this
        address has failed on it)."""
        pair, _count, wait = self._keys(account, address)
        pipe = self.redis.pipeline()
        pipe.get(pair)
        pipe.ttl(pair)
        pipe.pttl(wait)
        failed, pair_ttl, wait_ms = pipe.execute()
        failed = int(failed or 0)
        if failed >= self.max_failures:
            return "locked", max(int(pair_ttl), 1)
        if failed and wait_ms and wait_ms > 0:
            return "wait", max(math.ceil(wait_ms / 1000), 1)
        return None

    def fail(self, account: str, address: str) -> None:
        """Count a failed login of ``account`` from ``address``."""
        pair, count, wait = self._keys(account, address)
        pipe = self.redis.pipeline()
        for key in (pair, count):
            pipe.incr(key)
            pipe.expire(key, self.seconds)
        failures = pipe.execute()[2]
        delay = self.wait(failures)
        if delay:
            self.redis.set(wait, b"1", px=int(delay * 1000))

    def succeed(self, account: str, address: str) -> None:
        """A right password: that address's failures on the account are forgotten."""
        self.redis.delete(self._keys(account, address)[0])
