"""A job's status changed: said on a Redis channel of its own, so a request
waiting on it (``GET /api/v1/jobs/{id}?wait=S``) answers at once instead of
at its next look at the records.

The message is the job's opaque id on the channel ``CHANNEL_PREFIX + id``;
pub/sub keeps nothing.  Both sides are best effort: an announcement that
cannot be sent (Redis away) is dropped, and a waiter always looks at the
records every ``web.waiting.POLL_S`` as well (the sweeper and "delete now"
change jobs without announcing).
"""

from __future__ import annotations

import time

from redis.exceptions import RedisError

CHANNEL_PREFIX = "ephemesh:job-changed:"


def announce(ctx, job_id: str) -> None:
    """Say that ``job_id``'s status changed (its row is written already)."""
    try:
        ctx.redis.publish(CHANNEL_PREFIX + job_id, b"1")
    except RedisError:
        pass


class Listener:
    """The announcements for one job, from before ``__enter__`` returns.

    ``wait(timeout)`` returns True when one came within ``timeout`` seconds
    (or at once if one came since the last call), False otherwise, and on
    any Redis trouble sleeps out the timeout (the caller's look covers it).
    """

    def __init__(self, connection, job_id: str):
        self.connection, self.channel = connection, CHANNEL_PREFIX + job_id
        self.pubsub = None

    def __enter__(self):
        try:
            self.pubsub = self.connection.pubsub(ignore_subscribe_messages=True)
            self.pubsub.subscribe(self.channel)
        except RedisError:
            self._close()
        return self

    def wait(self, timeout: float) -> bool:
        if self.pubsub is None:
            time.sleep(timeout)
            return False
        end = time.monotonic() + timeout
        try:
            while (left := end - time.monotonic()) > 0:
                message = self.pubsub.get_message(timeout=left)
                if message is not None and message.get("type") == "message":
                    return True
        except RedisError:
            self._close()
            time.sleep(max(0.0, end - time.monotonic()))
        return False

    def _close(self):
        if self.pubsub is not None:
            try:
                self.pubsub.close()
            except RedisError:
                pass
        self.pubsub = None

    def __exit__(self, *exc):
        self._close()
        return False
