"""One place that opens what a process needs: Redis, the store, the records."""

from __future__ import annotations

import functools

import redis

from .config import Settings
from .private import private_dir
from .records import Records
from .store import open_store


class Context:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings.from_env()
        private_dir(self.settings.data_dir)

    @functools.cached_property
    def redis(self):
        return redis.Redis.from_url(self.settings.effective_redis_url)

    @functools.cached_property
    def store(self):
        return open_store(self.settings, self.redis if self.settings.store == "redis" else None)

    @functools.cached_property
    def records(self):
        return Records(self.settings.database_url)

    def close(self):
        if "records" in self.__dict__:
            self.records.close()
        if "redis" in self.__dict__:
            self.redis.close()
