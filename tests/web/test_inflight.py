"""What the server takes in at once (web/inflight.py, web/intake.py): a budget
of upload bytes in flight across its threads (503 ``busy``), a cap of
uploads per address (429 ``too_many_uploads``), and file parts taken by
field name whatever their file name's encoding."""

from __future__ import annotations

import io
import threading

import pytest

from tests.helpers import store_objects, wait_for, zip_bytes

MB = 1024 * 1024
BOUNDARY = b"zz"


def multipart(files: list[bytes], filename: bytes = b"a.dcm", **fields) -> bytes:
    out = b""
    for name, value in fields.items():
        out += (b"--zz\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n"
                % (name.encode(), value.encode()))
    for data in files:
        out += (b"--zz\r\nContent-Disposition: form-data; name=\"files\"; filename=\"%s\"\r\n"
                b"Content-Type: application/octet-stream\r\n\r\n" % filename) + data + b"\r\n"
    return out + b"--zz--\r\n"


class Held(io.RawIOBase):
    """A request body that stops after ``at`` bytes until ``go`` is set: an
    upload in the middle of being taken in."""

    def __init__(self, body: bytes, at: int):
        self.body, self.at, self.pos = body, at, 0
        self.reached, self.go = threading.Event(), threading.Event()

    def readable(self):
        return True

    def seekable(self):  # the test client measures the body
        return True

    def tell(self):
        return self.pos

    def seek(self, pos, whence=0):
        self.pos = len(self.body) if whence == 2 else pos
        return self.pos

    def readinto(self, buf):
        if self.pos >= self.at and not self.go.is_set():
            self.reached.set()
            assert self.go.wait(30), "the held upload was never let go"
        end = len(self.body) if self.go.is_set() else self.at
        n = min(len(buf), end - self.pos)
        buf[:n] = self.body[self.pos:self.pos + n]
        self.pos += n
        return n


def post(app, body, auth, address="10.1.1.1", stream=None):
    return app.test_client().post(
        "/api/v1/jobs", input_stream=stream or io.BytesIO(body), content_type="multipart/form-data; boundary=zz", headers=auth,
        environ_base={"REMOTE_ADDR": address})


def hold(app, body, auth, address="10.1.1.1"):
    """Start an upload in a thread and return once it is inside the intake."""
    stream = Held(body, len(body) // 2)
    answer = {}
    thread = threading.Thread(
        target=lambda: answer.setdefault("resp", post(app, body, auth, address, stream)))
    thread.start()
    assert stream.reached.wait(30)
    return stream, thread, answer


@pytest.fixture
def body(series_files) -> bytes:
    return multipart(series_files)


def test_an_address_with_too_many_uploads_running_is_429(make_app, auth, body, settings):
    app = make_app(EPHEMESH_MAX_UPLOADS_PER_ADDRESS=1)
    inflight = app.extensions["ephemesh.inflight"]
    stream, thread, answer = hold(app, body, auth)
    try:
        assert inflight.uploads("10.1.1.1") == 1
        refused = post(app, body, auth)
        assert refused.status_code == 429 and refused.json["code"] == "too_many_uploads"
        assert refused.mimetype == "application/problem+json"
        assert int(refused.headers["Retry-After"]) > 0
        assert post(app, body, auth, address="10.2.2.2").status_code == 202  # another address
    finally:
        stream.go.set()
        thread.join(30)
    assert answer["resp"].status_code == 202, answer["resp"].json
    assert inflight.uploads("10.1.1.1") == 0 and inflight.used == 0
    assert post(app, body, auth).status_code == 202  # the slot is free again


def test_a_full_budget_is_503_busy_and_nothing_of_the_refusal_stays(make_app, auth, body,
                                                                    settings, series_files):
    app = make_app(EPHEMESH_MAX_IN_FLIGHT=len(body) + len(body) // 2)
    inflight = app.extensions["ephemesh.inflight"]
    stream, thread, answer = hold(app, body, auth)
    try:
        wait_for(lambda: inflight.used >= len(body), 10, "the held upload's reservation")
        busy = post(app, body, auth, address="10.2.2.2")
        assert busy.status_code == 503 and busy.json["code"] == "busy"
        assert int(busy.headers["Retry-After"]) > 0
    finally:
        stream.go.set()
        thread.join(30)
    assert answer["resp"].status_code == 202
    assert inflight.used == 0
    # an upload that unpacks past the whole budget by itself: too large, and nothing kept
    ids = {p.name for p in store_objects(settings)}
    archive = zip_bytes({f"{i}.dcm": series_files[0] + b"\0" * MB for i in range(4)})
    alone = post(app, multipart([archive]), auth)
    assert alone.status_code == 413 and alone.json["code"] == "too_large", alone.json
    assert {p.name for p in store_objects(settings)} == ids
    assert inflight.used == 0


def test_file_parts_are_taken_whatever_their_names_encoding(client, auth, series_files):
    for name in (b"caf\xe9.dcm", b"\xff\xfe\x00bad", "スキャン.dcm".encode("shift_jis")):
        resp = client.post("/api/v1/jobs", data=multipart(series_files, filename=name),
                           headers=auth, content_type="multipart/form-data; boundary=zz")
        assert resp.status_code == 202, resp.json


def test_the_browser_form_token_must_come_before_the_files(client, series_files, settings):
    from tests.helpers import csrf_token

    token = csrf_token(client)
    late = multipart(series_files[:2]).replace(
        b"--zz--\r\n", b"--zz\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n"
        + token.encode() + b"\r\n--zz--\r\n")
    resp = client.post("/jobs", data=late, content_type="multipart/form-data; boundary=zz")
    assert resp.status_code == 400 and "csrf" in resp.get_data(as_text=True).lower()
    assert store_objects(settings) == []
    first = multipart(series_files, csrf_token=token)
    resp = client.post("/jobs", data=first, content_type="multipart/form-data; boundary=zz")
    assert resp.status_code == 303, resp.get_data(as_text=True)[:300]
