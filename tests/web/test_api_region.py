"""The region options through the API, converted by a real RQ worker: the
form fields are the converter's options (crop, seed, keep_parts,
remove_table, hollow, assume_geometry, spacing), checked at the door and
carried by the job to ``ConvertOptions``."""

import io

import numpy as np
import pytest

from tests import dicomgen as G
from tests.helpers import store_objects, wait_for
from web.openapi import option_schema

SMALL = 4 / 3 * np.pi * 4**3  # G.two_spheres()'s small sphere


@pytest.fixture(scope="module")
def two_spheres(tmp_path_factory) -> list[bytes]:
    folder = tmp_path_factory.mktemp("api-two")
    G.write_phantom_series(folder, G.two_spheres(), G.make_geometry(size=(30, 44, 44)))
    return [p.read_bytes() for p in sorted(folder.iterdir())]


def _post(client, auth, files, **fields):
    data = {"files": [(io.BytesIO(f), "x.dcm") for f in files], **fields}
    return client.post("/api/v1/jobs", data=data, headers=auth, content_type="multipart/form-data")


def _ended(client, auth, url):
    return wait_for(lambda: (lambda j: j if j["status"] in ("done", "failed") else None)(
        client.get(url, headers=auth).json), 90, f"{url} to end")


def test_a_job_with_crop_and_seed_keeps_that_part(client, auth, workers, two_spheres, settings):
    fields = {"threshold": str(G.MID_HU), "crop": "-30,-30,-30,30,30,0", "seed": "16.4, 0, 0"}
    resp = _post(client, auth, two_spheres, **fields)
    assert resp.status_code == 202, resp.json
    job = _ended(client, auth, resp.json["links"]["self"])
    assert job["status"] == "done", job
    report = job["report"]
    assert report["options"]["crop"] == [-30, -30, -30, 30, 30, 0]
    assert report["options"]["seed"] == [16.4, 0, 0]
    assert report["region"]["parts_found"] == 2 and report["region"]["parts_kept"] == 1
    assert report["components"] == 1 and report["watertight"]
    (lo, hi) = report["bbox_mm"]
    assert lo[0] > 7 and hi[2] <= 1  # the small sphere, cut at z = 0
    assert 0.3 * SMALL < report["volume_mm3"] < 0.6 * SMALL
    result = client.get(resp.json["links"]["result"], headers=auth)
    assert len(result.data) == 84 + 50 * report["triangles"]

    # a seed in the background: the job fails with the converter's code
    resp = _post(client, auth, two_spheres, threshold=str(G.MID_HU), seed="0,15,0")
    job = _ended(client, auth, resp.json["links"]["self"])
    assert job["status"] == "failed" and job["error"]["code"] == "seed_in_background"
    for url in (resp.json["links"]["self"],):
        client.delete(url, headers=auth)


@pytest.mark.parametrize("fields, code", [
    ({"crop": "1,2,3"}, "invalid_crop"),
    ({"crop": "0,0,0,0,5,5"}, "invalid_crop"),
    ({"seed": "north"}, "invalid_seed"),
    ({"keep_parts": "0"}, "invalid_keep_parts"),
    ({"keep_parts": "2", "largest": "true"}, "invalid_option"),
    ({"hollow": "-1"}, "invalid_hollow"),
    ({"remove_table": "perhaps"}, "invalid_remove_table"),
    ({"spacing": "1,1,1"}, "invalid_spacing"),
])
def test_bad_region_fields_are_refused_before_anything_is_stored(client, auth, two_spheres,
                                                                 settings, fields, code):
    resp = _post(client, auth, two_spheres[:2], **fields)
    assert resp.status_code == 400 and resp.mimetype == "application/problem+json"
    assert resp.json["code"] == code, resp.json
    assert store_objects(settings) == []


def test_the_openapi_document_declares_the_region_fields(client):
    doc = client.get("/api/v1/openapi.json").json
    body = doc["paths"]["/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]
    props = body["schema"]["properties"]
    for name in ("crop", "seed", "keep_parts", "remove_table", "hollow", "assume_geometry",
                 "spacing"):
        assert props[name] == option_schema(name)
    assert props["crop"]["type"] == "string" and "pattern" in props["crop"]
    assert "not with largest" in props["keep_parts"]["description"]


def test_the_upload_page_offers_table_removal_and_hollowing(client, two_spheres, workers):
    from converter.options import OPTIONS
    from tests.helpers import csrf_token

    html = client.get("/").get_data(as_text=True)
    assert 'name="remove_table"' in html
    assert f'max="{OPTIONS["hollow"].maximum}"' in html and 'name="hollow"' in html
    data = {"csrf_token": csrf_token(client), "threshold": str(G.MID_HU), "preset": "threshold",
            "hollow": "2", "remove_table": "1",
            "files": [(io.BytesIO(f), "x.dcm") for f in two_spheres]}
    resp = client.post("/jobs", data=data, content_type="multipart/form-data")
    assert resp.status_code in (302, 303), resp.get_data(as_text=True)[:300]
    status = resp.headers["Location"] + "/status"
    job = wait_for(lambda: (lambda j: j if j["status"] in ("done", "failed") else None)(
        client.get(status, headers={"Accept": "application/json"}).json), 90, "the job")
    assert job["status"] == "done", job
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    # both options reached the converter (the spheres are too small to be a body)
    assert "hollow, a 2.0 mm wall" in page and "remove_table found no body" in page
