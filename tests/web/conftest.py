"""Fixtures for the web layer: an app on the private test Redis, clients,
API keys, real RQ worker processes, generated DICOM uploads."""

from __future__ import annotations

import pytest

from tests import dicomgen as G
from tests.helpers import make_settings, zip_bytes
from web import create_app
from web.security import forget_salts
from worker.config import Settings
from worker.runtime import Runtime


@pytest.fixture
def settings(tmp_path, redis_url) -> Settings:
    return make_settings(tmp_path, redis_url, retention=900)


@pytest.fixture
def make_app(settings):
    made = []

    def make(**config):
        # the Redis was emptied for this test: a month's pseudonym key cached
        # from an earlier test would be made anew in Redis once its cache
        # time ran out, mid-test, and change every pseudonym (locks, limits)
        forget_salts()
        app = create_app({"TESTING": True, "EPHEMESH_SETTINGS": settings,
                          "SECRET_KEY": "test-secret-key", **config})
        made.append(app)
        return app

    yield make
    for app in made:
        app.extensions["ephemesh.service"].close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def records(app):
    return app.extensions["ephemesh.service"].records


@pytest.fixture
def api_key(records) -> str:
    return records.create_key("tests")[1]


@pytest.fixture
def auth(api_key) -> dict:
    return {"Authorization": f"Bearer {api_key}"}


@pytest.fixture
def workers(settings, tmp_path):
    """One real RQ worker process (no cron) for this test's settings."""
    with open(tmp_path / "workers.log", "ab") as log:
        runtime = Runtime(settings).start(workers=1, cron=False, stderr=log)
    runtime.log_path = tmp_path / "workers.log"
    yield runtime
    runtime.stop(grace=10)


@pytest.fixture(scope="session")
def series_files(tmp_path_factory) -> list[bytes]:
    """A small CT series (a sphere) as file bytes."""
    folder = G.make_series_dir(tmp_path_factory.mktemp("web-series"), "sphere", size=(20, 28, 28))
    return [p.read_bytes() for p in sorted(folder.iterdir())]


@pytest.fixture(scope="session")
def series_zip(series_files) -> bytes:
    return zip_bytes({f"slice{i:03d}.dcm": d for i, d in enumerate(series_files)})


@pytest.fixture(scope="session")
def two_series_zip(tmp_path_factory) -> bytes:
    root = tmp_path_factory.mktemp("web-two")
    G.make_series_dir(root / "a", "sphere", size=(20, 28, 28), series_number=1)
    G.make_series_dir(root / "b", "box", size=(16, 28, 28), series_number=2)
    return zip_bytes({f"{p.parent.name}/{p.name}": p.read_bytes()
                      for p in sorted(root.rglob("*.dcm"))})

