"""Fixtures for the worker side: settings on a private Redis, a store, a
database (SQLite or the real PostgreSQL), and real RQ worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tests import dicomgen as G
from tests.waiting import wait_for  # noqa: F401 - used by the test modules
from worker.config import Settings
from worker.context import Context
from worker.service import Service

ROOT = Path(__file__).resolve().parents[2]


def make_settings(tmp_path, redis_url, *, store="directory", database_url=None, retention=3600,
                  sweep=60, access_days=30, job_memory_mb=0, job_threads=0) -> Settings:
    data = tmp_path / "data"
    env = {
        "EPHEMESH_DATA_DIR": str(data),
        "EPHEMESH_REDIS_URL": redis_url,
        "EPHEMESH_STORE": "redis" if store == "redis" else str(tmp_path / "store"),
        "EPHEMESH_RETENTION_SECONDS": str(retention),
        "EPHEMESH_SWEEP_SECONDS": str(sweep),
        "EPHEMESH_ACCESS_LOG_DAYS": str(access_days),
        "EPHEMESH_JOB_MEMORY_MB": str(job_memory_mb),
        "EPHEMESH_JOB_THREADS": str(job_threads),
    }
    if database_url:
        env["EPHEMESH_DATABASE_URL"] = database_url
    return Settings.from_env(env)


class Env:
    """One ephemesh installation for a test: settings, service, worker processes."""

    def __init__(self, settings: Settings, logdir: Path):
        self.settings = settings
        self.logdir = logdir
        self.service = Service(settings)
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    @property
    def ctx(self) -> Context:
        return self.service.ctx

    def child_env(self, **extra) -> dict:
        env = dict(os.environ, **self.settings.as_env(), **extra)
        env.pop("EPHEMESH_TEST_STAGE_DELAY", None)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def start(self, *args, **extra) -> subprocess.Popen:
        """Run ``python -m worker.commands ARGS`` with this env; stderr to a log."""
        log = self.logdir / f"proc-{len(self.logs)}.log"
        self.logs.append(log)
        proc = subprocess.Popen([sys.executable, "-m", "worker.commands", *args],
                                env=self.child_env(**extra), cwd=ROOT,
                                stdout=open(log, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def start_workers(self, n=1, **extra) -> subprocess.Popen:
        proc = self.start("worker", "-n", str(n), **extra)
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


def worker_pids(pool_proc) -> list[int]:
    """PIDs of the RQ worker processes under an ``ephemesh worker`` pool."""
    import psutil  # noqa: PLC0415

    try:
        return [c.pid for c in psutil.Process(pool_proc.pid).children()]
    except psutil.NoSuchProcess:
        return []




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


def settings_with(settings, **changes) -> Settings:
    return replace(settings, **changes)
