"""From the PACS and back: a job's model as an Encapsulated STL instance
(``GET /api/v1/jobs/{id}/result?format=dicom``), STOW-RS intake, the
C-STORE receiver and the return of the model, with real peers (Orthanc,
dicomweb-client, DCMTK's storescu) where they are named."""

from __future__ import annotations

import io
import os
import secrets
import subprocess
from dataclasses import dataclass

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from converter import ConvertOptions, convert, encapsulated
from tests import dicomgen as G
from tests.helpers import dciodvfy_errors, free_port, served_redis_text, wait_for
from tests.orthanc import Orthanc
from tests.web.served import Served, ephemesh_script
from worker.config import Settings
from worker.records import Records
from worker.returning import ReturnFailed


def _post_job(client, auth, files, **fields):
    data = {"files": [(io.BytesIO(f), f"x{i}.dcm") for i, f in enumerate(files)], **fields}
    return client.post("/api/v1/jobs", data=data, headers=auth, content_type="multipart/form-data")


def _done(client, auth, url, timeout=90):
    return wait_for(lambda: (lambda j: j if j["status"] in ("done", "failed") else None)(
        client.get(url, headers=auth).json), timeout, f"{url} to end")


def test_a_result_comes_as_encapsulated_stl_with_the_same_model(client, auth, workers,
                                                                 series_files, tmp_path):
    job = _post_job(client, auth, series_files, threshold="0").json
    view = _done(client, auth, job["links"]["self"])
    assert view["status"] == "done", view
    stl = client.get(job["links"]["result"], headers=auth)
    dicom = client.get(job["links"]["result"] + "?format=dicom", headers=auth)
    assert dicom.status_code == 200 and dicom.mimetype == "application/dicom"
    assert "model.dcm" in dicom.headers["Content-Disposition"]
    assert encapsulated.payload(dicom.data) == stl.data
    ds = pydicom.dcmread(io.BytesIO(dicom.data))
    source = pydicom.dcmread(io.BytesIO(series_files[0]), stop_before_pixels=True)
    # an upload's identity is not kept past its conversion: a new study, no patient
    assert ds.PatientID == "" and str(ds.PatientName) == ""
    assert ds.StudyInstanceUID != source.StudyInstanceUID
    assert "SourceInstanceSequence" not in ds
    assert dciodvfy_errors(tmp_path, dicom.data) == []


def test_an_unknown_result_format_is_a_problem(client, auth, series_files):
    job = _post_job(client, auth, series_files).json
    resp = client.get(job["links"]["result"] + "?format=obj-ish", headers=auth)
    assert resp.status_code == 400 and resp.json["code"] == "invalid_format"


# ---------------------------------------------------------------- served, with peers
@dataclass
class Pacs:
    """ephemesh served with its C-STORE receiver, Orthanc as the PACS that
    sends to it and takes the models back, an API key, canary-bearing series."""

    served: Served
    orthanc: Orthanc
    key: str
    series: list
    scp_port: int
    planted: dict

    @property
    def auth(self):
        return {"Authorization": f"Bearer {self.key}"}

    def api_stl(self, files) -> bytes:
        """The model of ``files`` through POST /api/v1/jobs (the reference)."""
        resp = requests.post(self.served.url + "/api/v1/jobs", headers=self.auth,
                             files=[("files", (f"f{i}.dcm", f)) for i, f in enumerate(files)])
        assert resp.status_code == 202, resp.text
        job = resp.json()
        view = self.wait(job["links"]["self"])
        assert view["status"] == "done", view
        return requests.get(self.served.url + job["links"]["result"], headers=self.auth).content

    def wait(self, url, timeout=120):
        if not url.startswith("http"):
            url = self.served.url + url
        return wait_for(lambda: (lambda j: j if j["status"] in ("done", "failed") else None)(
            requests.get(url, headers=self.auth, timeout=30).json()), timeout, f"{url} to end")

    def returned(self, count, timeout=120) -> list[bytes]:
        """The Encapsulated STL instances Orthanc holds, once it holds ``count``."""
        ids = wait_for(lambda: (lambda found: found if len(found) >= count else None)(
            self.orthanc.instances_of_modality("M3D")), timeout, f"{count} models in Orthanc")
        return [self.orthanc.file(i) for i in ids]


def _canary_series(tmp_path, tag, n=1):
    c = {"patient_name": f"CANARYPN{tag}^PACS", "patient_id": f"CANARYID{tag}",
         "study_uid": f"2.25.{90000 + n}{tag_digits(tag)}1",
         "series_uid": f"2.25.{90000 + n}{tag_digits(tag)}2",
         "sop_uid_prefix": f"2.25.{90000 + n}{tag_digits(tag)}3"}
    folder = G.make_series_dir(tmp_path / f"pacs-{n}", "sphere", size=(16, 24, 24), **c)
    return [p.read_bytes() for p in sorted(folder.iterdir())], c


def tag_digits(tag: str) -> str:
    return "".join(str(ord(ch) % 10) for ch in tag)


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pacs")
    scp_port = free_port()
    tag = secrets.token_hex(3).upper()
    series, planted = _canary_series(root, tag)
    orthanc_ae = "ORTHANC"
    orthanc = Orthanc(root / "orthanc", ae_title=orthanc_ae,
                      modalities={"ephemesh": ("EPHEMESH", "127.0.0.1", scp_port)})
    # the return address needs Orthanc's port before ephemesh starts
    served = Served(root / "svc", workers=1, EPHEMESH_SCP_PORT=scp_port,
                    EPHEMESH_SCP_PEERS=f"{orthanc_ae}@127.0.0.1",
                    EPHEMESH_SCP_IDLE_SECONDS=5,
                    EPHEMESH_RETURN_TO=f"dicom://{orthanc_ae}@127.0.0.1:{orthanc.dicom_port}")
    served.start()
    try:
        records = Records(Settings.from_env({"EPHEMESH_DATA_DIR": str(served.root / "data")})
                          .database_url)
        key = records.create_key("pacs")[1]
        records.close()
        orthanc.dicomweb = {"ephemesh": {"Url": f"{served.url}/dicomweb/",
                                         "HttpHeaders": {"Authorization": f"Bearer {key}"}}}
        orthanc.start()
        yield Pacs(served, orthanc, key, series, scp_port, planted)
    finally:
        orthanc.stop()
        served.stop()


def test_orthanc_sends_by_c_store_and_gets_the_model_back(pacs, tmp_path):
    orthanc_series = pacs.orthanc.upload(pacs.series)
    pacs.orthanc.send_by_c_store("ephemesh", orthanc_series)
    instance = pacs.returned(1)[0]
    assert encapsulated.payload(instance) == pacs.api_stl(pacs.series)
    ds = pydicom.dcmread(io.BytesIO(instance))
    assert str(ds.PatientName) == pacs.planted["patient_name"]  # filed with its patient
    assert ds.StudyInstanceUID == pacs.planted["study_uid"]
    assert dciodvfy_errors(tmp_path, instance) == []


def test_orthanc_sends_by_stow_rs_and_gets_the_model_back(pacs):
    before = len(pacs.orthanc.instances_of_modality("M3D"))
    orthanc_series = pacs.orthanc.upload(pacs.series)
    pacs.orthanc.send_by_stow("ephemesh", orthanc_series)
    instance = pacs.returned(before + 1)[-1]
    assert encapsulated.payload(instance) == pacs.api_stl(pacs.series)


def _client(pacs) -> DICOMwebClient:
    return DICOMwebClient(url=pacs.served.url + "/dicomweb", headers=pacs.auth)


def test_dicomweb_client_stores_a_series_and_the_answer_is_ps3_18(pacs):
    datasets = [pydicom.dcmread(io.BytesIO(f)) for f in pacs.series]
    answer = _client(pacs).store_instances(datasets, additional_params={"threshold": "0"})
    refs = answer.ReferencedSOPSequence
    assert {r.ReferencedSOPInstanceUID for r in refs} == {d.SOPInstanceUID for d in datasets}
    assert all(r.ReferencedSOPClassUID == datasets[0].SOPClassUID for r in refs)
    assert "FailedSOPSequence" not in answer
    jobs = [item.RetrieveURL for item in answer[0x00091001].value]
    assert len(jobs) == 1  # one series, one job
    assert pacs.wait(jobs[0])["status"] == "done"


def test_a_mixed_request_is_202_with_the_bad_parts_failed(pacs, tmp_path):
    good = pacs.series
    other, _ = _canary_series(tmp_path, "ZZ", n=2)
    secondary = pydicom.dcmread(io.BytesIO(other[0]))
    secondary.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture: not a volume
    buf = io.BytesIO()
    secondary.save_as(buf)
    parts = [*good, b"this is not DICOM", buf.getvalue(), other[1]]
    boundary = "b0undary"
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p
                    + b"\r\n" for p in parts) + f"--{boundary}--\r\n".encode()
    study = pydicom.dcmread(io.BytesIO(good[0]), stop_before_pixels=True).StudyInstanceUID
    resp = requests.post(f"{pacs.served.url}/dicomweb/studies/{study}", data=body,
                         headers={**pacs.auth, "Accept": "application/dicom+json",
                                  "Content-Type": f'multipart/related; type="application/dicom"'
                                                  f"; boundary={boundary}"})
    assert resp.status_code == 202, resp.text
    answer = pydicom.Dataset.from_json(resp.json())
    assert len(answer.ReferencedSOPSequence) == len(good)
    reasons = sorted(f.FailureReason for f in answer.FailedSOPSequence)
    assert reasons == sorted([0x0122, 0xA900])  # the wrong class; the other study
    assert [f.FailureReason for f in answer.OtherFailuresSequence] == [0xC000]
    assert "Link" in resp.headers


@pytest.mark.parametrize("content_type, status, code", [
    ("application/dicom", 415, "unsupported_media_type"),
    ('multipart/related; type="application/dicom+json"; boundary=x', 415,
     "unsupported_media_type"),
    ('multipart/related; type="application/dicom"', 400, "bad_multipart"),
    ('multipart/related; type="application/dicom"; boundary=x', 400, "bad_multipart"),
])
def test_a_bad_body_is_a_problem_with_its_code(pacs, content_type, status, code):
    resp = requests.post(pacs.served.url + "/dicomweb/studies", data=b"no parts at all",
                         headers={**pacs.auth, "Content-Type": content_type})
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert resp.json()["code"] == code


def test_stow_needs_a_key_and_nothing_refused_is_kept(pacs):
    resp = requests.post(pacs.served.url + "/dicomweb/studies", data=b"x",
                         headers={"Content-Type": 'multipart/related; type="application/dicom"'
                                                  "; boundary=x"})
    assert resp.status_code == 401 and resp.json()["code"] == "missing_key"
    everyone = _client(pacs)
    with pytest.raises(requests.HTTPError) as caught:  # nothing stored: 409
        everyone.store_instances([_not_an_image(pacs)])
    assert caught.value.response.status_code == 409


def _not_an_image(pacs):
    ds = pydicom.dcmread(io.BytesIO(pacs.series[0]))
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    return ds


def test_no_canary_reaches_a_lasting_record_while_the_model_carries_the_patient(pacs):
    # after the other tests of the module: every planted value went through
    # C-STORE, STOW-RS and the return; none is in the log, the database or Redis
    assert pacs.returned(1)  # the returned instance carries them (tested above)
    db = (pacs.served.root / "data" / "ephemesh.db").read_bytes().decode("latin-1")
    redis_text = served_redis_text(pacs.served.root)
    for value in pacs.planted.values():
        for sink, text in (("log", pacs.served.log()), ("database", db), ("redis", redis_text)):
            assert value not in text, (sink, value)


def test_a_model_goes_back_by_stow_rs_too(pacs, tmp_path):
    # EPHEMESH_RETURN_TO may be a STOW-RS URL: the same sending, to Orthanc's DICOMweb
    from worker.config import parse_destination
    from worker.returning import send_with_retries

    files, planted = _canary_series(tmp_path, "RS", n=3)
    result = convert(files, ConvertOptions(threshold=0))
    instance = encapsulated.encapsulate(result.stl, encapsulated.source_of(result.stack))
    before = len(pacs.orthanc.instances_of_modality("M3D"))
    destination = parse_destination(f"http://user:pw@127.0.0.1:{pacs.orthanc.http_port}"
                                    "/dicom-web/studies")
    assert send_with_retries(instance, destination, attempts=1) == 1
    back = pacs.returned(before + 1)
    assert any(encapsulated.payload(b) == result.stl for b in back)
    wrong = parse_destination(f"http://127.0.0.1:{free_port()}/dicom-web/studies")
    with pytest.raises(ReturnFailed, match="cannot be reached"):
        send_with_retries(instance, wrong, attempts=2, backoff=0.01)


def test_a_keys_default_options_convert_a_stow_request_that_names_none(pacs, tmp_path):
    env = {**os.environ, "EPHEMESH_DATA_DIR": str(pacs.served.root / "data")}
    made = subprocess.run([ephemesh_script(), "keys", "create", "pacs-bone", "--option",
                           "threshold=123", "--option", "smooth=0"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    listed = subprocess.run([ephemesh_script(), "keys", "list"], capture_output=True,
                            text=True, env=env, timeout=60).stdout
    assert "defaults threshold=123.0,smooth=0" in listed
    datasets = [pydicom.dcmread(io.BytesIO(f)) for f in pacs.series]
    client = DICOMwebClient(url=pacs.served.url + "/dicomweb",
                            headers={"Authorization": f"Bearer {key}"})
    answer = client.store_instances(datasets)
    job = answer[0x00091001].value[0].RetrieveURL
    view = wait_for(lambda: (lambda j: j if j["status"] in ("done", "failed") else None)(
        requests.get(pacs.served.url + job, headers={"Authorization": f"Bearer {key}"},
                     timeout=30).json()), 120, "the job")
    assert view["report"]["threshold"]["value"] == 123.0
    bad = subprocess.run([ephemesh_script(), "keys", "create", "x", "--option", "colour=red"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
