"""The app as a whole: security headers, cookies, readable errors, the
privacy page read from the running configuration, three.js served locally."""

import re
from pathlib import Path

from tests.helpers import make_settings
from web import create_app

WEB = Path(__file__).resolve().parents[2] / "web"


def test_every_page_sends_the_security_headers(client):
    for path in ("/", "/privacy", "/admin/login", "/api/v1/openapi.json", "/no-such-page"):
        resp = client.get(path)
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp, path
        assert "frame-ancestors 'none'" in csp
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Cache-Control"] == "no-store", path


def test_templates_have_no_inline_script_or_style():
    for path in (WEB / "templates").rglob("*.html"):
        text = path.read_text()
        for tag in re.findall(r"<script\b[^>]*>", text):
            assert "src=" in tag, f"inline script in {path.name}"
        assert "<style" not in text, path.name
        assert not re.search(r"\sstyle=", text), path.name
        assert not re.search(r"\son[a-z]+=", text), f"inline handler in {path.name}"


def test_the_only_cookie_is_the_essential_session(client):
    resp = client.get("/")
    cookies = resp.headers.getlist("Set-Cookie")
    assert len(cookies) == 1
    assert cookies[0].startswith("ephemesh=")
    assert "HttpOnly" in cookies[0] and "SameSite=Lax" in cookies[0]
    assert "Expires" not in cookies[0]  # gone when the browser closes


def test_unknown_pages_are_readable_not_tracebacks(client):
    resp = client.get("/jobs/nope")
    assert resp.status_code == 404
    assert resp.mimetype == "text/html"
    body = resp.get_data(as_text=True)
    assert "no such job" in body.lower() and "Traceback" not in body


def test_wrong_method_is_405_with_allow(client):
    resp = client.put("/api/v1/jobs")
    assert resp.status_code == 405
    assert resp.mimetype == "application/problem+json"
    assert resp.json["code"] == "method_not_allowed"


def test_privacy_page_reads_the_running_configuration(tmp_path, redis_url):
    from web import create_app

    settings = make_settings(tmp_path, redis_url, retention=1800, access_days=14)
    app = create_app({"TESTING": True, "EPHEMESH_SETTINGS": settings})
    try:
        html = app.test_client().get("/privacy").get_data(as_text=True)
    finally:
        app.extensions["ephemesh.service"].close()
    upload = re.search(r'id="fact-upload">(.*?)</td>', html, re.S).group(1)
    assert "30 minutes" in upload
    assert "14 days" in re.search(r'id="fact-log">(.*?)</td>', html, re.S).group(1)
    assert "60 minutes" not in html and "30 days" not in html


def _privacy_page(tmp_path, redis_url, monkeypatch, name, env, store_path=None, **settings_kw):
    for key in ("EPHEMESH_CONTROLLER", "EPHEMESH_CONTACT", "EPHEMESH_PROCESSORS",
                "EPHEMESH_MIN_AGE", "EPHEMESH_LOCKOUT_SECONDS", "EPHEMESH_RATE_LIMIT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        if key.startswith("EPHEMESH_"):
            monkeypatch.setenv(key, value)
    settings = make_settings(tmp_path / name, redis_url, **settings_kw)
    if store_path:
        import dataclasses

        settings = dataclasses.replace(settings, store=store_path)
    cookie = env.get("cookie", "ephemesh")
    app = create_app({"TESTING": True, "EPHEMESH_SETTINGS": settings,
                      "SESSION_COOKIE_NAME": cookie})
    try:
        return app, app.test_client().get("/privacy").get_data(as_text=True)
    finally:
        app.extensions["ephemesh.service"].close()


def _fact(html, ident):
    return re.sub(r"\s+", " ", re.search(rf'id="{ident}"[^>]*>(.*?)</(?:td|p|ul)>', html,
                                         re.S).group(1))


def _filesystem(path) -> str:
    """The file system type, as stat(1) names it (an oracle apart from the app's)."""
    import subprocess

    return subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_privacy_page_is_the_running_configuration(tmp_path, redis_url, monkeypatch):
    """Two configurations, two pages: the controller, contact, processors, age
    notice, cookie, retention of each kind, where uploads are and the last
    sweep all change with the settings."""
    import shutil
    import uuid

    shm = f"/dev/shm/ephemesh-test-{uuid.uuid4().hex[:8]}"
    one_env = {"EPHEMESH_CONTROLLER": "Ada Clinic, 1 Main Street, Springfield",
               "EPHEMESH_CONTACT": "privacy@ada.example",
               "EPHEMESH_PROCESSORS": "Hoster A, hosting, DE; Mailer B, e-mail, FR",
               "EPHEMESH_MIN_AGE": "16", "EPHEMESH_LOCKOUT_SECONDS": "600",
               "EPHEMESH_RATE_LIMIT": "100/hour"}
    app, one = _privacy_page(tmp_path, redis_url, monkeypatch, "one", one_env,
                             retention=1200, access_days=7)
    try:
        two_env = {"EPHEMESH_LOCKOUT_SECONDS": "120", "EPHEMESH_RATE_LIMIT": "50/second",
                   "cookie": "othercookie"}
        _, two = _privacy_page(tmp_path, redis_url, monkeypatch, "two", two_env, store_path=shm,
                               retention=2700, access_days=21)
    finally:
        shutil.rmtree(shm, ignore_errors=True)
    assert "Ada Clinic, 1 Main Street, Springfield" in _fact(one, "controller")
    assert "EPHEMESH_CONTROLLER" in _fact(two, "controller")
    assert 'href="mailto:privacy@ada.example"' in one and "EPHEMESH_CONTACT" in _fact(two, "contact")
    assert "privacy@ada.example" in _fact(one, "how")
    assert "<li>Hoster A, hosting, DE</li><li>Mailer B, e-mail, FR</li>" in one
    assert "hands your data to no one else" in _fact(two, "processors")
    assert "aged <strong>16</strong> or older" in one and 'id="age"' not in two
    assert "20 minutes" in _fact(one, "fact-upload") and "45 minutes" in _fact(two, "fact-upload")
    assert "20 minutes" in _fact(one, "fact-result") and "45 minutes" in _fact(two, "fact-result")
    assert _fact(one, "fact-log") == "7 days" and _fact(two, "fact-log") == "21 days"
    assert _fact(one, "fact-job") == "7 days after the upload"
    assert _fact(one, "fact-locks") == "10 minutes" and _fact(two, "fact-locks") == "2 minutes"
    assert _fact(one, "fact-limits") == "1 hour" and _fact(two, "fact-limits") == "1 second"
    assert "<code>ephemesh</code>" in one and "<code>othercookie</code>" in two
    assert "until you close the browser" in one and "HttpOnly" in one and "SameSite=Lax" in one
    # where uploads are: the store's file system, as stat(1) sees it
    disk = _filesystem(tmp_path / "one" / "store") != "tmpfs"
    assert ("<strong>on disk</strong>" in _fact(one, "storage")) == disk
    assert "<strong>in memory only</strong> (a tmpfs)" in _fact(two, "storage")
    assert "has not run yet" in _fact(two, "sweep") and "every 1 minute" in _fact(two, "sweep")
    app.extensions["ephemesh.service"].records.record_sweep(0, 0, now=1_900_000_000)
    app2 = create_app({"TESTING": True, "EPHEMESH_SETTINGS": app.extensions["ephemesh.settings"]})
    try:
        page = app2.test_client().get("/privacy").get_data(as_text=True)
    finally:
        app2.extensions["ephemesh.service"].close()
    assert "last ran at <time" in page and "2030-03-17 17:46:40 UTC" in page


def test_the_privacy_page_names_the_receipt_key_and_a_redis_store_is_memory(
        tmp_path, redis_url):
    from worker import receipts

    settings = make_settings(tmp_path, redis_url, store="redis")
    app = create_app({"TESTING": True, "EPHEMESH_SETTINGS": settings})
    try:
        html = app.test_client().get("/privacy").get_data(as_text=True)
        key = app.extensions["ephemesh.receipt_key"]
    finally:
        app.extensions["ephemesh.service"].close()
    assert receipts.fingerprint(receipts.public_raw(key)) in html
    assert "<strong>in memory only</strong> (in Redis)" in html


def test_three_js_is_served_by_the_app_with_its_imports_resolved(client):
    page = client.get("/static/preview.js").get_data(as_text=True)
    assert "/vendor/three/STLLoader.js" in page and "http" not in page
    for name in ("three.module.js", "three.core.js", "STLLoader.js", "OrbitControls.js"):
        resp = client.get(f"/vendor/three/{name}")
        assert resp.status_code == 200, name
        assert resp.mimetype == "text/javascript"
        text = resp.get_data(as_text=True)
        assert "from 'three'" not in text and 'from "three"' not in text
    assert client.get("/vendor/three/package.json").status_code == 404
    assert client.get("/vendor/three/..%2Fpackage.json").status_code == 404


def test_the_de_identifiers_libraries_and_profile_are_served_by_the_app(client):
    """dicom-parser and fflate from web/node_modules (npm ci), the profile from
    the converter's declaration, all cached like the app's static files."""
    from converter.deidentify import PROFILE_PATH

    page = client.get("/").get_data(as_text=True)
    assert "/vendor/dicom-parser/dicomParser.min.js" in page
    assert 'data-profile-url="/deidentify-profile.json"' in page
    for path in ("/vendor/dicom-parser/dicomParser.min.js", "/vendor/fflate/fflate.js"):
        resp = client.get(path)
        assert resp.status_code == 200 and resp.mimetype == "text/javascript", path
        assert "max-age=86400" in resp.headers["Cache-Control"]
    assert "export function unzipSync" in client.get("/vendor/fflate/fflate.js").get_data(True)
    profile = client.get("/deidentify-profile.json")
    assert profile.mimetype == "application/json" and profile.data == PROFILE_PATH.read_bytes()
    for script in ("upload.js", "outgoing.js", "deidentify.js"):
        text = client.get(f"/static/{script}").get_data(as_text=True)
        assert "http" not in text.replace("https://", ""), script  # nothing from other sites
    assert client.get("/vendor/fflate/package.json").status_code == 404


def test_pages_are_labelled_and_fit_a_phone(client):
    html = client.get("/").get_data(as_text=True)
    assert 'name="viewport"' in html
    ids = re.findall(r'<(?:input|select)[^>]*\bid="([^"]+)"', html)
    for ident in ids:
        assert f'for="{ident}"' in html, f"control {ident} has no label"
    assert 'aria-live="polite"' in html


def test_secure_cookies_are_configurable(make_app, settings):
    from web import config as web_config

    assert web_config.from_env(settings, {"EPHEMESH_SECURE_COOKIES": "1"})["SESSION_COOKIE_SECURE"]
    assert web_config.from_env(settings, {"EPHEMESH_SECURE_COOKIES": "On"})["SESSION_COOKIE_SECURE"]
    assert not web_config.from_env(settings, {})["SESSION_COOKIE_SECURE"]
    try:
        web_config.check({"EPHEMESH_SECURE_COOKIES": "perhaps"})
    except ValueError as exc:
        assert "EPHEMESH_SECURE_COOKIES" in str(exc)
    else:
        raise AssertionError("a nonsense flag was taken as 'no'")
    cookie = make_app(SESSION_COOKIE_SECURE=True).test_client().get("/").headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_the_api_sets_no_cookie(client, auth):
    for resp in (client.get("/api/v1/jobs/nope", headers=auth),
                 client.get("/api/v1/openapi.json"), client.get("/api/v1/jobs/nope")):
        assert "Set-Cookie" not in resp.headers
