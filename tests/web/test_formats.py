"""Output formats through the service: a job's result is downloaded with its
format's name and media type (real RQ workers), the API and the upload page
offer the formats from the converter's declaration."""

from __future__ import annotations

import io
import zipfile

import trimesh

from converter.formats import FORMATS
from tests.web.test_api import _post_job, _wait


def test_3mf_obj_and_bad_structures_through_the_api(client, auth, workers, series_zip,
                                                     tmp_path):
    made = _post_job(client, auth, [series_zip], format="3mf", frame="print",
                     structure=["bone=300", "soft=-100:300"])  # repeated, as on the CLI
    obj = _post_job(client, auth, [series_zip], format="obj", preset="bone")
    assert made.status_code == obj.status_code == 202, (made.json, obj.json)

    job = _wait(client, auth, made.json["links"]["self"])
    assert job["status"] == "done", job
    assert [p["name"] for p in job["report"]["parts"]] == ["bone", "soft"]
    result = client.get(made.json["links"]["result"], headers=auth)
    assert result.status_code == 200 and result.mimetype == "model/3mf"
    assert result.headers["Content-Disposition"] == "attachment; filename=model.3mf"
    path = tmp_path / "model.3mf"
    path.write_bytes(result.data)
    scene = trimesh.load(path)
    assert scene.units == "millimeter" and sorted(scene.geometry) == ["bone", "soft"]
    assert scene.bounds[0][2] == 0.0  # the print frame rests on z = 0
    assert client.get(made.json["links"]["result"] + "?format=dicom",
                      headers=auth).status_code == 409  # Encapsulated STL: STL only

    job = _wait(client, auth, obj.json["links"]["self"])
    assert job["status"] == "done", job
    result = client.get(obj.json["links"]["result"], headers=auth)
    assert result.mimetype == "application/zip"
    assert result.headers["Content-Disposition"] == "attachment; filename=model.zip"
    with zipfile.ZipFile(io.BytesIO(result.data)) as zf:
        assert zf.namelist() == ["model.obj", "model.mtl"]

    for fields, code in ((dict(structure="a=5:1"), "invalid_structure"),
                         (dict(format="step"), "invalid_format"),
                         (dict(max_bytes="lots"), "invalid_max_bytes"),
                         (dict(frame="upside-down"), "invalid_frame")):
        bad = _post_job(client, auth, [series_zip], **fields)
        assert bad.status_code == 400 and bad.json["code"] == code, bad.json


def test_the_openapi_document_and_the_upload_page_offer_the_formats(client):
    paths = client.get("/api/v1/openapi.json").json["paths"]
    fields = paths["/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"][
        "properties"]
    assert fields["format"]["enum"] == list(FORMATS)
    assert "print" in fields["frame"]["enum"]
    assert fields["structure"]["type"] == "string" and "NAME=LOW" not in fields["structure"]
    assert fields["max_bytes"]["type"] == "integer"
    result = paths["/jobs/{job_id}/result"]["get"]["responses"]["200"]["content"]
    assert {"model/stl", "model/3mf", "application/zip"} <= set(result)
    page = client.get("/").get_data(as_text=True)
    assert '<select id="format" name="format"' in page
    for fmt in FORMATS.values():
        assert f'<option value="{fmt.name}">{fmt.label}</option>' in page
    assert '<option value="print">' in page
