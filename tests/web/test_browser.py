"""The browser pages through the Flask test client: upload with CSRF, the
job page in each state, choosing a series, download, delete now."""

import io
import json
import re

from converter import PRESETS
from converter.options import OPTIONS
from tests.helpers import csrf_token, store_objects, wait_for
from worker.states import WAITING


def _upload(client, parts, **fields):
    token = csrf_token(client)
    data = {"csrf_token": token, "files": [(io.BytesIO(p), "Doe^Jane.dcm") for p in parts],
            **fields}
    return client.post("/jobs", data=data, content_type="multipart/form-data")


def _status(client, job_id):
    return client.get(f"/jobs/{job_id}/status", headers={"Accept": "application/json"}).json


def test_upload_page_offers_folder_zip_presets_and_options(client):
    html = client.get("/").get_data(as_text=True)
    assert "webkitdirectory" in html and 'accept=".zip' in html
    for name in ("preset", "threshold", "smooth", "decimate", "largest"):
        assert f'name="{name}"' in html
    for preset in ("bone", "skin", "soft-tissue", "teeth", "airway", "auto"):
        assert f'value="{preset}"' in html
    assert 'name="csrf_token"' in html


def test_the_upload_pages_bounds_and_labels_are_the_converters(client):
    """The page's smoothing field takes what the converter takes (it once
    capped it at 100 while the converter allowed 500), and the presets carry
    their labels from the converter."""
    html = client.get("/").get_data(as_text=True)
    smooth = OPTIONS["smooth"]
    field = re.search(r'<input id="smooth"[^>]*>', html).group(0)
    assert f'min="{smooth.minimum}"' in field and f'max="{smooth.maximum}"' in field
    # the page's default is the API's and the command line's (it once sent 10 where they used 0)
    assert f'value="{smooth.default}"' in field
    for name, preset in PRESETS.items():
        assert f'<option value="{name}">{preset.label}</option>' in html


def test_the_job_page_takes_its_states_from_the_server(client, series_files):
    job_url = _upload(client, series_files).headers["Location"]
    html = client.get(job_url).get_data(as_text=True)
    waiting = re.search(r"data-waiting='([^']*)'", html).group(1)
    assert json.loads(waiting) == sorted(WAITING)
    stages = json.loads(re.search(r"data-stages='([^']*)'", html).group(1))
    assert stages["reading"] == "Reading the scan"
    # the converter's long steps within a stage have names on the bar too
    assert stages["smoothing"] and stages["decimating"] == "Reducing the triangles"


def test_upload_converts_and_the_job_page_shows_everything(client, workers, series_files,
                                                           settings):
    resp = _upload(client, series_files, preset="bone", smooth="3", decimate="0.5")
    assert resp.status_code == 303
    job_url = resp.headers["Location"]
    job_id = job_url.rsplit("/", 1)[1]
    page = client.get(job_url).get_data(as_text=True)
    assert "<progress" in page or "Your model is ready" in page
    wait_for(lambda: _status(client, job_id)["status"] == "done", 60, "the job")
    page = client.get(job_url).get_data(as_text=True)
    assert 'id="preview"' in page and "preview.js" in page
    assert "Download the STL" in page and "Delete now" in page
    assert re.search(r"Deleted automatically <span id=\"time-left\">in 1[45] minutes", page)
    assert re.search(r'id="r-triangles">[\d,]+<', page)
    assert "mm³" in page
    # what the README promises with every mesh: the manifold flag and the timings
    assert re.search(r'id="r-manifold">(yes|no)', page)
    assert re.search(r'id="r-timings">\d+\.\d\d s \(read [\d.]+ s, surface', page)
    stl = client.get(f"/jobs/{job_id}/model.stl")
    assert stl.status_code == 200 and stl.mimetype == "model/stl"
    assert stl.headers["Cache-Control"] == "no-store"
    assert stl.headers["Content-Disposition"] == "attachment; filename=model.stl"
    # delete now
    token = csrf_token(client, job_url)
    resp = client.post(f"/jobs/{job_id}/delete", data={"csrf_token": token})
    assert resp.status_code == 303
    assert "The upload and the model are gone" in client.get(job_url).get_data(as_text=True)
    gone = client.get(f"/jobs/{job_id}/model.stl")
    assert gone.status_code == 410 and "deleted" in gone.get_data(as_text=True)
    assert store_objects(settings) == []


def test_a_job_is_only_visible_to_its_browser_session(app, series_files):
    mine, theirs = app.test_client(), app.test_client()
    job_url = _upload(mine, series_files).headers["Location"]
    job_id = job_url.rsplit("/", 1)[1]
    assert mine.get(job_url).status_code == 200
    for url in (job_url, f"{job_url}/status", f"{job_url}/model.stl"):
        assert theirs.get(url).status_code == 404, url
    token = csrf_token(theirs)
    assert theirs.post(f"{job_url}/delete", data={"csrf_token": token}).status_code == 404
    assert _status(mine, job_id)["status"] == "queued"


def test_several_series_are_listed_and_one_is_picked(client, workers, two_series_zip):
    resp = _upload(client, [two_series_zip], preset="bone")
    job_url = resp.headers["Location"]
    job_id = job_url.rsplit("/", 1)[1]
    wait_for(lambda: _status(client, job_id)["status"] == "choosing", 60, "the series listing")
    page = client.get(job_url).get_data(as_text=True)
    assert "Several series were found" in page
    assert len(re.findall(r'type="radio" name="series"', page)) == 2
    assert "Series 1" in page and "Series 2" in page
    token = csrf_token(client, job_url)
    bad = client.post(f"{job_url}/series", data={"csrf_token": token, "series": "9"})
    assert bad.status_code == 400 and "from 1 to 2" in bad.get_data(as_text=True)
    resp = client.post(f"{job_url}/series", data={"csrf_token": token, "series": "2"})
    assert resp.status_code == 303
    done = wait_for(lambda: (lambda s: s if s["status"] in ("done", "failed") else None)(
        _status(client, job_id)), 60, "the chosen series")
    assert done["status"] == "done"
    page = client.get(job_url).get_data(as_text=True)
    assert "caller" not in page
    assert re.search(r'id="r-series">series 2 of 2: the one you picked<', page)


def test_refusals_are_readable_on_the_page(client, series_files):
    resp = _upload(client, [b"plain text, not a scan" * 10])
    assert resp.status_code == 400 and resp.mimetype == "text/html"
    body = resp.get_data(as_text=True)
    assert "None of the files is a DICOM file." in body and "not_dicom" in body
    resp = _upload(client, series_files, preset="threshold")
    assert resp.status_code == 400 and "Enter a threshold" in resp.get_data(as_text=True)
    # a script asking for JSON gets problem+json
    token = csrf_token(client)
    resp = client.post("/jobs", data={"csrf_token": token, "files": (io.BytesIO(b"x" * 200), "a")},
                       headers={"Accept": "application/json"}, content_type="multipart/form-data")
    assert resp.status_code == 400 and resp.json["code"] == "not_dicom"


def test_custom_threshold_is_used(client, workers, series_files):
    resp = _upload(client, series_files, preset="threshold", threshold="-200")
    job_id = resp.headers["Location"].rsplit("/", 1)[1]
    wait_for(lambda: _status(client, job_id)["status"] == "done", 60, "the job")
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "-200.0 HU" in page


def test_the_model_before_it_is_made_is_409_on_a_page(client, series_files):
    job_url = _upload(client, series_files).headers["Location"]
    resp = client.get(job_url + "/model.stl")
    assert resp.status_code == 409 and resp.mimetype == "text/html"
    assert "not finished yet" in resp.get_data(as_text=True)
    token = csrf_token(client, job_url)
    resp = client.post(job_url + "/series", data={"csrf_token": token, "series": "1"})
    assert resp.status_code == 400 and "not waiting" in resp.get_data(as_text=True)


def test_choosing_after_the_upload_went_is_410_not_500(client, workers, two_series_zip, app):
    """The sweeper can delete a waiting upload at its deadline a moment
    before the job is marked expired: choosing a series then says the upload
    is gone (410), not "something went wrong"."""
    from worker.sweeper import purge_inputs

    job_url = _upload(client, [two_series_zip]).headers["Location"]
    job_id = job_url.rsplit("/", 1)[1]
    wait_for(lambda: _status(client, job_id)["status"] == "choosing", 60, "the listing")
    service = app.extensions["ephemesh.service"]
    deadline = service.store.meta("input", job_id)["deadline"]
    purge_inputs(service.ctx, now=deadline)  # the sweep at the deadline, before expire_jobs
    token = csrf_token(client, job_url)
    resp = client.post(f"{job_url}/series", data={"csrf_token": token, "series": "1"})
    assert resp.status_code == 410 and "Upload it again" in resp.get_data(as_text=True)


def test_the_upload_page_lists_this_sessions_scans_and_jobs(app, series_files):
    """A closed tab can get back: the upload page links this browser's live
    jobs and scans (and nobody else's)."""
    mine, theirs = app.test_client(), app.test_client()
    job_url = _upload(mine, series_files).headers["Location"]
    token = csrf_token(mine)
    scan = mine.post("/api/v1/scans", headers={"X-CSRFToken": token},
                     data={"files": [(io.BytesIO(f), "x.dcm") for f in series_files]},
                     content_type="multipart/form-data")
    assert scan.status_code == 201, scan.json
    html = mine.get("/").get_data(as_text=True)
    section = html.split('id="this-session"')[1].split("</section>")[0]
    assert f'href="{job_url}"' in section
    assert f'href="/scans/{scan.json["id"]}"' in section
    assert "this-session" not in theirs.get("/").get_data(as_text=True)
    # the workspace page is this session's only
    page = mine.get(f"/scans/{scan.json['id']}")
    assert page.status_code == 200 and 'id="workspace"' in page.get_data(as_text=True)
    assert theirs.get(f"/scans/{scan.json['id']}").status_code == 404
    # once deleted they are no longer offered
    mine.post(f"{job_url}/delete", data={"csrf_token": token})
    mine.delete(f"/api/v1/scans/{scan.json['id']}", headers={"X-CSRFToken": token})
    assert "this-session" not in mine.get("/").get_data(as_text=True)
