"""When Redis (the queue, the rate limiter's counters, the locks) goes away
and comes back: pages that need no queue keep working, what needs it is
refused as 503 with Retry-After (problem+json on the API, a page in the
browser), never a 500; everything works again once Redis is back."""

import io

from tests.helpers import csrf_token


def _post(client, auth, files):
    return client.post("/api/v1/jobs", data={"files": [(io.BytesIO(f), "x") for f in files]},
                       headers=auth, content_type="multipart/form-data")


def test_a_redis_restart_is_503_then_service_again(app, auth, redis_server, series_files):
    client = app.test_client()
    job = _post(client, auth, series_files).json  # queued (no worker)
    token = csrf_token(client)
    redis_server.stop()
    try:
        assert client.get("/privacy").status_code == 200
        assert client.get("/").status_code == 200
        view = client.get(job["links"]["self"], headers=auth)
        assert view.status_code == 200 and view.json["status"] == "queued"
        refused = _post(client, auth, series_files)
        assert refused.status_code == 503
        assert refused.mimetype == "application/problem+json"
        assert refused.json["code"] == "unavailable"
        assert int(refused.headers["Retry-After"]) > 0
        page = client.post("/jobs", data={"csrf_token": token, "files": [
            (io.BytesIO(f), "x") for f in series_files]}, content_type="multipart/form-data")
        assert page.status_code == 503 and page.mimetype == "text/html"
        assert "try again in a minute" in page.get_data(as_text=True)
    finally:
        redis_server.start()
    assert _post(client, auth, series_files).status_code == 202
    assert client.get(job["links"]["self"], headers=auth).status_code == 200
