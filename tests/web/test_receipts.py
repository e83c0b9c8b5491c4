"""Signed deletion receipts: a real job's receipts verify (with the key they
carry and with the one the server publishes), any field or the signature
changed fails and is named, the salted digest is the one the documentation
says, they hold no canary, and the browser's job page links them."""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json

import pytest

from converter.exits import Exit
from tests import dicomgen as G
from tests.helpers import csrf_token, wait_for
from web.cli import run as ephemesh
from worker import receipts
from worker.receipts import FIELDS, UploadDigest, upload_digest


def _post(client, auth, parts):
    data = {"files": [(io.BytesIO(p), "x.dcm") for p in parts]}
    return client.post("/api/v1/jobs", data=data, headers=auth, content_type="multipart/form-data")


def _done(client, auth, url):
    return wait_for(lambda: (j := client.get(url, headers=auth).json)["status"] in
                    ("done", "failed") and j, 90, "the job to finish")


@pytest.fixture
def deleted_job(client, auth, workers, series_files):
    """A job converted by a real worker, then deleted: (answer, receipts document)."""
    resp = _post(client, auth, [series_files[0], b"", *series_files[1:]])
    assert resp.status_code == 202, resp.json
    body = resp.json
    assert _done(client, auth, body["links"]["self"])["status"] == "done"
    assert client.delete(body["links"]["self"], headers=auth).status_code == 204
    got = client.get(body["links"]["receipt"], headers=auth)
    assert got.status_code == 200, got.json
    assert got.headers["Content-Disposition"] == f"attachment; filename=receipt-{body['id']}.json"
    return body, got.json


def test_a_deleted_jobs_receipts_say_what_went_and_verify(deleted_job, client, auth, tmp_path,
                                                          series_files, capsys):
    answer, document = deleted_job
    assert document["job"] == answer["id"]
    by_kind = {r["kind"]: r for r in document["receipts"]}
    assert set(by_kind) == {"input", "result"}
    upload, result = by_kind["input"], by_kind["result"]
    assert list(upload) == list(FIELDS)
    assert upload["id"] == result["id"] == answer["id"]
    assert upload["reason"] == "converted" and result["reason"] == "user-request"
    assert not upload["late"] and not result["late"]
    assert upload["bytes"] > sum(map(len, series_files)) and result["bytes"] > 84
    assert upload["received"] == result["received"] <= upload["deleted"] <= result["deleted"]
    assert upload["converted"] == result["converted"] and upload["converted"] is not None
    # the digest is the documented one: the salt, then each part's SHA-256, in order
    salt = answer["receipt_salt"]
    parts = [series_files[0], b"", *series_files[1:]]
    documented = hashlib.sha256(bytes.fromhex(salt) + b"".join(
        hashlib.sha256(p).digest() for p in parts)).hexdigest()
    assert upload["received_sha256"] == result["received_sha256"] == documented
    assert upload_digest(salt, parts) == documented
    assert upload_digest("00" * 16, parts) != documented  # without the salt, no match
    # offline, with the key it carries, and with the key the server publishes
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(document))
    assert ephemesh(["receipt", "verify", str(path)]) == Exit.DONE
    out = capsys.readouterr().out
    key = client.get("/.well-known/ephemesh-receipt-key")
    assert key.status_code == 200 and key.data.startswith(b"-----BEGIN PUBLIC KEY-----")
    fingerprint = key.headers["X-Ephemesh-Key-Fingerprint"]
    assert fingerprint in out and out.count("valid: ") == 2
    (tmp_path / "server.pem").write_bytes(key.data)
    assert ephemesh(["receipt", "verify", str(path), "--key", str(tmp_path / "server.pem")]) \
        == Exit.DONE
    single = tmp_path / "one.json"
    single.write_text(json.dumps(upload))
    assert ephemesh(["receipt", "verify", str(single)]) == Exit.DONE
    # the same rows give the same receipts (Ed25519 is deterministic)
    assert client.get(answer["links"]["receipt"], headers=auth).json == document


#: for each field, a well-formed other value (the signature fails) and a malformed one
CHANGES = {
    "receipt": ("ephemesh-deletion-receipt/2", 1),
    "id": ("A" * 22, "no/such id"),
    "kind": ("result", "redis-job"),
    "bytes": (1, -5),
    "received_sha256": ("0" * 64, "XYZ"),
    "received": ("2001-01-01T00:00:00.000Z", "yesterday"),
    "converted": ("2001-01-01T00:00:01.000Z", 12),
    "deleted": ("2099-01-01T00:00:00.000Z", "2099-01-01"),
    "reason": ("expired", "tidied"),
    "late": (True, "no"),
    "public_key": (base64.b64encode(bytes(32)).decode(), "!!"),
    "signature": (base64.b64encode(bytes(64)).decode(), "short"),
}


def _verify_one(tmp_path, receipt, capsys, *extra):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(receipt))
    code = ephemesh(["receipt", "verify", str(path), *extra])
    return code, capsys.readouterr().err.strip()


def test_any_field_or_the_signature_changed_fails_and_is_named(deleted_job, tmp_path, capsys):
    original = deleted_job[1]["receipts"][0]
    assert set(CHANGES) == set(FIELDS)
    for field, (other, malformed) in CHANGES.items():
        for value in (other, malformed):
            if value == original[field]:
                continue
            changed = dict(original, **{field: value})
            code, err = _verify_one(tmp_path, changed, capsys)
            assert code == Exit.INVALID, (field, value)
            assert err.startswith("ephemesh: error: ") and err.count("\n") == 0, err
            if value is malformed:
                assert f"'{field}'" in err, (field, err)
            else:
                assert "signature" in err or f"'{field}'" in err, (field, err)
    for broken in ({k: v for k, v in original.items() if k != "bytes"},
                   dict(original, extra="x")):
        code, err = _verify_one(tmp_path, broken, capsys)
        assert code == Exit.INVALID and ("'bytes'" in err or "'extra'" in err), err


def test_a_receipt_signed_by_another_key_fails_with_the_servers_key(deleted_job, client,
                                                                    tmp_path, capsys):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    original = deleted_job[1]["receipts"][0]
    forged = receipts.sign({k: v for k, v in original.items()
                            if k not in ("public_key", "signature")},
                           Ed25519PrivateKey.generate())
    (tmp_path / "server.pem").write_bytes(client.get("/.well-known/ephemesh-receipt-key").data)
    code, err = _verify_one(tmp_path, forged, capsys, "--key", str(tmp_path / "server.pem"))
    assert code == Exit.INVALID and "another key" in err
    assert _verify_one(tmp_path, forged, capsys)[0] == Exit.DONE  # valid, but not the server's
    (tmp_path / "junk.json").write_text("{not json")
    assert ephemesh(["receipt", "verify", str(tmp_path / "junk.json")]) == Exit.INVALID


def test_receipts_hold_no_canary_and_no_one_elses(client, auth, workers, app, tmp_path):
    canary = "ZQXRECEIPT"
    folder = G.make_series_dir(tmp_path / canary, "sphere", size=(12, 20, 20),
                               patient_name=canary + "^PN", patient_id=canary + "ID",
                               series_description=canary, private_value=canary,
                               study_uid="2.25.9071", series_uid="2.25.9072",
                               sop_uid_prefix="2.25.9073")
    parts = [p.read_bytes() for p in sorted(folder.iterdir())]
    resp = client.post("/api/v1/jobs", data={"files": [(io.BytesIO(p), f"{canary}-{i}.dcm")
                                                       for i, p in enumerate(parts)]},
                       headers=auth, content_type="multipart/form-data")
    job = resp.json
    assert _done(client, auth, job["links"]["self"])["status"] == "done"
    text = client.get(job["links"]["receipt"], headers=auth).get_data(as_text=True)
    assert '"kind":"input"' in text.replace(" ", "")
    for planted in (canary, "2.25.907", canary.lower()):
        assert planted not in text
    other = app.extensions["ephemesh.service"].records.create_key("other")[1]
    assert client.get(job["links"]["receipt"],
                      headers={"Authorization": f"Bearer {other}"}).status_code == 404


def test_a_batchs_jobs_carry_the_digest_of_the_batch_upload(client, auth, workers,
                                                            two_series_zip):
    resp = client.post("/api/v1/batches", data={"files": [(io.BytesIO(two_series_zip), "b.zip")]},
                       headers=auth, content_type="multipart/form-data")
    assert resp.status_code == 202, resp.json
    batch = resp.json
    digest = upload_digest(batch["receipt_salt"], [two_series_zip])
    view = wait_for(lambda: (b := client.get(batch["links"]["self"], headers=auth).json)
                    ["jobs"] and all(j["status"] in ("done", "failed") for j in b["jobs"]) and b,
                    120, "the batch's jobs")
    assert len(view["jobs"]) == 2
    for job in view["jobs"]:
        got = client.get(job["links"]["receipt"], headers=auth).json
        upload = next(r for r in got["receipts"] if r["kind"] == "input")
        assert upload["received_sha256"] == digest and receipts.verify(upload) == []


def test_nothing_deleted_yet_is_409(client, auth, series_files):
    """No worker: the upload waits in the queue, nothing has a receipt yet."""
    job = _post(client, auth, series_files).json
    resp = client.get(job["links"]["receipt"], headers=auth)
    assert resp.status_code == 409 and resp.json["code"] == "not_ready"


def test_the_job_page_links_the_receipt_after_deletion(client, workers, series_files):
    token = csrf_token(client)
    resp = client.post("/jobs", data={"csrf_token": token,
                                      "files": [(io.BytesIO(p), "x.dcm") for p in series_files]},
                       headers={"Accept": "application/json"}, content_type="multipart/form-data")
    assert resp.status_code == 201 and len(resp.json["receipt_salt"]) == 32
    url = resp.json["url"]
    assert 'id="receipt"' not in client.get(url).get_data(as_text=True)  # nothing deleted yet
    wait_for(lambda: 'id="download"' in client.get(url).get_data(as_text=True), 90,
             "the model")
    client.post(url + "/delete", data={"csrf_token": csrf_token(client, url)})
    page = client.get(url).get_data(as_text=True)
    assert 'id="receipt"' in page and f'href="{url}/receipt"' in page
    got = client.get(url + "/receipt")
    assert got.status_code == 200 and {r["kind"] for r in got.json["receipts"]} \
        == {"input", "result"}
    assert all(receipts.verify(r) == [] for r in got.json["receipts"])
    assert client.application.test_client().get(url + "/receipt").status_code == 404


def test_the_digest_is_the_same_fed_chunk_by_chunk():
    salt = receipts.new_salt()
    parts = [b"a" * 5000, b"", b"zip bytes" * 333]
    streamed = UploadDigest(salt)
    for part in parts:
        streamed.part()
        for at in range(0, len(part), 7):
            streamed.update(part[at:at + 7])
    assert streamed.hexdigest() == upload_digest(salt, parts)
    assert upload_digest(salt, parts[::-1]) != upload_digest(salt, parts)


def test_the_signing_key_is_kept_0600_and_reused(app, make_app):
    import os
    import stat

    path = app.config["EPHEMESH_RECEIPT_KEY_FILE"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    first = receipts.public_raw(app.extensions["ephemesh.receipt_key"])
    second = make_app().extensions["ephemesh.receipt_key"]
    assert receipts.public_raw(second) == first
    signed = receipts.sign(copy.deepcopy({"receipt": receipts.FORMAT, "id": "x" * 22,
                                          "kind": "input", "bytes": 1, "received_sha256": None,
                                          "received": "2030-01-01T00:00:00.000Z",
                                          "converted": None,
                                          "deleted": "2030-01-01T00:00:01.000Z",
                                          "reason": "expired", "late": False}), second)
    assert receipts.verify(signed, first) == []
