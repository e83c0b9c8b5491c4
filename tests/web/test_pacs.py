"""From the PACS and back: a job's model as an Encapsulated STL instance
(``GET /api/v1/jobs/{id}/result?format=dicom``), STOW-RS intake, the
C-STORE receiver and the return of the model, with real peers (Orthanc,
dicomweb-client, DCMTK's storescu) where they are named."""

from __future__ import annotations

import io

import pydicom

from converter import encapsulated
from tests.helpers import dciodvfy_errors, wait_for


def _post_job(client, auth, files, **fields):
    data = {"files": [(io.BytesIO(f), f"x{i}.dcm") for i, f in enumerate(files)], **fields}
    return client.post("/api/v1/jobs", data=data, headers=auth, content_type="multipart/form-data")


def _done(client, auth, url, timeout=90):
    return wait_for(lambda: (lambda j: j if j["status"] in ("done", "failed") else None)(
        client.get(url, headers=auth).json), timeout, f"{url} to end")


def test_a_result_comes_as_encapsulated_stl_with_the_same_model(client, auth, workers,
                                                                 series_files, tmp_path):
    job = _post_job(client, auth, series_files, threshold="0").json
    assert _done(client, auth, job["links"]["self"])["status"] == "done"
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
