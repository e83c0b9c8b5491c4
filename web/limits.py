"""Rate limits (flask-limiter on the service's Redis) and failure locks.

Limits are counted per client address (as a pseudonym, never the address)
on every route, per API key on ``/api``, and per uploader on the routes that
take uploads.  ``FailureLock`` counts failed logins and failed API keys in
Redis and locks an account or an address for a while once there are too
many; every key it writes expires by itself.
"""

from __future__ import annotations

import hashlib

from flask import request
from flask_limiter import Limiter
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .scans import VIEW_ENDPOINTS
from .security import STATIC_ENDPOINTS, address_pseudonym, pseudonym


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
    limiter.limit(cfg["EPHEMESH_KEY_RATE_LIMIT"], key_func=key_identity)(app.blueprints["api"])
    # the workspace's views (scrolling through slices) count per address only
    limiter.limit(cfg["EPHEMESH_KEY_RATE_LIMIT"], key_func=key_identity,
                  exempt_when=lambda: request.endpoint in VIEW_ENDPOINTS)(app.blueprints["scans"])
    upload = limiter.shared_limit(cfg["EPHEMESH_UPLOAD_RATE_LIMIT"], scope="upload",
                                  key_func=key_identity)
    for endpoint in ("browser.create_job", "api.create_job", "api.create_batch",
                     "scans.create_scan"):
        app.view_functions[endpoint] = upload(app.view_functions[endpoint])
    login = limiter.limit(cfg["EPHEMESH_LOGIN_RATE_LIMIT"], methods=["POST"])
    app.view_functions["admin.login"] = login(app.view_functions["admin.login"])
    for endpoint in STATIC_ENDPOINTS:
        app.view_functions[endpoint] = limiter.exempt(app.view_functions[endpoint])


class FailureLock:
    """Too many failures for a subject (an account, an address) lock it.

    With ``fail_open`` an unreachable Redis counts nothing and locks nothing
    (API keys: 256 random bits, and the in-process rate limit still counts);
    without it, the Redis error goes up (admin logins: 503)."""

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

    def clear(self, subject) -> None:
        self.redis.delete(self._key(subject))
