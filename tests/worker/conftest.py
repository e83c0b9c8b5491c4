"""Fixtures for the worker side: settings on a private Redis, a store, a
database (SQLite or the real PostgreSQL), and real RQ worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import dicomgen as G
from tests import slow
from tests.helpers import ROOT, make_settings, wait_for, worker_pids
from worker.config import Settings
from worker.context import Context
from worker.service import Service


class Env:
    """One ephemesh installation for a test: settings, service, worker processes."""

    def __init__(self, settings: Settings, logdir: Path):
        self.settings = settings
        self.logdir = logdir
        self.service = Service(settings)
        _ = self.service.records  # the schema, made here: 'ephemesh worker' refuses an empty one
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    @property
    def ctx(self) -> Context:
        return self.service.ctx

    def start(self, *args, slow_by=None, **extra) -> subprocess.Popen:
        """Run ``ephemesh ARGS`` (``web.cli``; with ``slow_by`` seconds, the
        slow one of ``tests/slow.py``) with this env; stderr to a log."""
        log = self.logdir / f"proc-{len(self.logs)}.log"
        self.logs.append(log)
        command = slow.command(slow_by) if slow_by else [sys.executable, "-m", "web.cli"]
        with open(log, "ab") as out:
            proc = subprocess.Popen([*command, *args], cwd=ROOT, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, **self.settings.as_env(),
                                         **{k: str(v) for k, v in extra.items()}})
        self.procs.append(proc)
        return proc

    def start_workers(self, n=1, *, slow_by=None, **extra) -> subprocess.Popen:
        self.service.records  # the database made (workers refuse an empty one)  # noqa: B018
        proc = self.start("worker", "-n", str(n), slow_by=slow_by, **extra)
        wait_for(lambda: len(worker_pids(proc)) >= n, 20, "worker processes to start")
        return proc

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.procs.clear()
        self.service.close()

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    # ------------------------------------------------------------ conveniences
    def wait_job(self, job_id, owner, statuses=("done", "failed"), timeout=60):
        return wait_for(lambda: _status_in(self.service.get_job(job_id, owner=owner), statuses),
                        timeout, f"job to reach {statuses}")


def _status_in(view, statuses):
    return view if view and view["status"] in statuses else None


@pytest.fixture
def env_factory(tmp_path, redis_url):
    made = []

    def make(**kw) -> Env:
        sub = tmp_path / f"env{len(made)}"
        sub.mkdir()
        env = Env(make_settings(sub, redis_url, **kw), sub)
        made.append(env)
        return env

    yield make
    for env in made:
        env.stop()


@pytest.fixture(params=["directory", "redis"])
def store_kind(request):
    return request.param


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'records.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def series_bytes(tmp_path_factory) -> list[bytes]:
    """A small CT series (a sphere) as file bytes."""
    folder = G.make_series_dir(tmp_path_factory.mktemp("series"), "sphere", size=(24, 32, 32))
    return [p.read_bytes() for p in sorted(folder.iterdir())]


@pytest.fixture(scope="session")
def two_series_bytes(tmp_path_factory) -> list[bytes]:
    """Two series (a sphere and a box) in one upload."""
    root = tmp_path_factory.mktemp("two")
    G.make_series_dir(root / "a", "sphere", size=(24, 32, 32), series_number=1)
    G.make_series_dir(root / "b", "box", size=(20, 32, 32), series_number=2)
    return [p.read_bytes() for p in sorted(root.rglob("*.dcm"))]

