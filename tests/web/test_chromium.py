"""A real headless Chromium (Debian's, never downloaded) against
``ephemesh serve``: upload a generated series through the page, watch the
progress bar reach 100 %, see the preview canvas draw, download the STL,
press "delete now", and find the result gone (410)."""

import io
import secrets
import time

import pytest
from PIL import Image

from tests import dicomgen as G
from tests.web.served import Served

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def service(tmp_path):
    served = Served(tmp_path / "svc", workers=1, slow_by="0.6").start()
    yield served
    assert served.stop() == 0, served.log()


def _watch(page, errors):
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))


def test_upload_progress_preview_download_delete(browser, service, tmp_path, artifacts_dir):
    series = G.make_series_dir(tmp_path / "Doe_Jane_scan", "sphere", size=(28, 40, 40))
    context = browser.new_context(accept_downloads=True, viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors = []
    _watch(page, errors)
    page.goto(service.url + "/")
    page.set_input_files("#folder", str(series))
    assert "28 files chosen" in page.text_content("#chosen")
    page.select_option("#preset", "bone")
    page.fill("#smooth", "5")
    page.click("#submit")
    page.wait_for_url("**/jobs/*", timeout=30_000)
    job_url = page.url

    seen = []
    end = time.monotonic() + 90
    while time.monotonic() < end:
        try:
            value = page.evaluate("() => { const b = document.getElementById('progress');"
                                  " return b ? b.value : (document.getElementById('download') ? -1 : null) }")
        except Exception:  # the page is reloading
            value = None
        if value == -1:
            break
        if value is not None:
            seen.append(value)
        time.sleep(0.05)
    assert any(0 < v < 100 for v in seen), seen
    assert max(seen) == 100, seen
    page.wait_for_selector('#preview[data-drawn="yes"]', timeout=30_000)
    triangles = int(page.get_attribute("#preview", "data-triangles"))
    assert triangles > 500
    # drawn from the job's reduced mesh, not the STL (which only the download fetches)
    assert page.get_attribute("#preview", "data-source") == "preview"
    shot = Image.open(io.BytesIO(page.locator("#preview").screenshot())).convert("RGB")
    colours = shot.getcolors(maxcolors=1 << 20)
    assert len(colours) > 50, "the canvas looks blank"
    background = max(colours)[1]
    drawn = sum(n for n, c in colours if sum(abs(a - b) for a, b in zip(c, background, strict=True)) > 30)
    assert drawn > 0.02 * shot.width * shot.height, "too little of the model is visible"
    page.click('[data-view="left"]')
    assert "triangles" in page.text_content("#preview-status")
    page.screenshot(path=str(artifacts_dir / "job-page.png"), full_page=True)

    with page.expect_download() as info:
        page.click("#download")
    path = info.value.path()
    data = open(path, "rb").read()
    assert data[:27] == b"ephemesh SPACE=LPS UNITS=mm"
    assert len(data) == 84 + 50 * triangles

    page.click("#delete")
    page.wait_for_selector("text=The upload and the model are gone")
    resp = page.request.get(job_url + "/model.stl")
    assert resp.status == 410
    assert errors == [], errors
    context.close()


def test_pages_fit_a_phone_and_work_by_keyboard(browser, service):
    context = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True)
    page = context.new_page()
    errors = []
    _watch(page, errors)
    for path in ("/", "/privacy", "/admin/login"):
        page.goto(service.url + path)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - "
                                 "document.documentElement.clientWidth")
        assert overflow <= 0, (path, overflow)
    page.goto(service.url + "/")
    focused = []
    for _ in range(12):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("() => document.activeElement.id || document.activeElement.tagName"))
    for control in ("folder", "files", "preset", "smooth", "submit"):
        assert control in focused or control == "submit", (control, focused)
    # a refusal shows up on the page, announced
    page.set_input_files("#files", files=[{"name": "note.txt", "mimeType": "text/plain",
                                           "buffer": b"not a scan at all" * 20}])
    page.click("#submit")
    page.wait_for_selector("#upload-error:not([hidden])")
    assert "None of the files is a DICOM file" in page.text_content("#upload-error")
    assert page.get_attribute("#upload-error", "role") == "alert"
    assert errors == [] or all("400" in e for e in errors), errors
    # the admin pages, logged in, with a new key shown and rows in every table
    from worker.config import Settings
    from worker.records import Records
    records = Records(Settings.from_env({"EPHEMESH_DATA_DIR": str(service.root / "data")}
                                        ).database_url)
    records.add_admin("ada", "correct horse battery")
    records.record_deletion("input", "job-x-000001", 1234, time.time() - 60,
                            time.time() + 3540, "converted")
    records.close()
    page.goto(service.url + "/admin/login")
    page.fill("#name", "ada")
    page.fill("#password", "correct horse battery")
    page.click("button.primary")
    page.wait_for_url("**/admin/")
    page.goto(service.url + "/admin/keys")
    page.fill("#key-name", "a rather long name for a key of the lab's scripts")
    page.click("text=Create a key")
    page.wait_for_selector("#new-key")
    for path in (None, "/admin/", "/admin/audit"):
        if path:
            page.goto(service.url + path)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - "
                                 "document.documentElement.clientWidth")
        assert overflow <= 0, (path or "/admin/keys", overflow)
    context.close()


@pytest.fixture
def queue_only(tmp_path, redis_url):
    """The web alone (no workers): a job stays in the queue."""
    served = Served(tmp_path / "web", EPHEMESH_REDIS_URL=redis_url, EPHEMESH_MAX_UPLOAD_MB=1)
    served.args.append("--no-workers")
    served.start()
    yield served
    assert served.stop() == 0, served.log()


def test_polling_backs_off_in_the_queue_and_stops_for_good(browser, queue_only, tmp_path):
    """Each status poll is an access-log row: a job waiting in the queue is
    asked less and less often (not every 0.6 s), and once it is deleted
    ("Cancel and delete", offered while it waits) nothing more is asked."""
    series = G.make_series_dir(tmp_path / "s", "sphere", size=(12, 20, 20))
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors, polls, posts = [], [], []
    _watch(page, errors)
    page.on("request", lambda r: polls.append(time.monotonic()) if r.url.endswith("/status")
            else posts.append(r.url) if r.method == "POST" else None)
    page.goto(queue_only.url + "/")
    page.set_input_files("#folder", str(series))
    page.click("#submit")
    page.wait_for_url("**/jobs/*", timeout=30_000)
    assert "Waiting in the queue" in page.text_content("#progress-text")
    page.wait_for_timeout(12_000)  # (time.sleep would hold back Playwright's events)
    assert 3 <= len(polls) <= 9, len(polls)
    gaps = [b - a for a, b in zip(polls, polls[1:], strict=False)]
    assert gaps[-1] > 2 * gaps[0], gaps
    page.click("#delete")
    page.wait_for_selector("text=The upload and the model are gone")
    asked = len(polls)
    page.wait_for_timeout(3000)
    assert len(polls) == asked
    # more than the server takes is said before a byte is sent
    page.goto(queue_only.url + "/")
    posts.clear()
    page.set_input_files("#files", files=[{"name": "big.zip", "mimeType": "application/zip",
                                           "buffer": b"PK\x03\x04" + b"\0" * (2 << 20)}])
    page.wait_for_selector("#upload-error:not([hidden])")
    assert "at most 1.0 MB" in page.text_content("#upload-error")
    page.click("#submit")
    page.wait_for_timeout(500)
    assert posts == [] and "at most 1.0 MB" in page.text_content("#upload-error")
    assert errors == [], errors
    context.close()


def test_the_job_page_shows_the_model_gone_when_its_time_is_up(browser, tmp_path):
    """Retention compressed to 12 s: the done page counts down in seconds and,
    when the time is up, shows by itself that the model is gone (not a
    download that answers 410)."""
    served = Served(tmp_path / "short", workers=1, EPHEMESH_RETENTION_SECONDS=12,
                    EPHEMESH_SWEEP_SECONDS=1).start()
    try:
        series = G.make_series_dir(tmp_path / "s", "sphere", size=(12, 20, 20))
        context = browser.new_context(viewport={"width": 1000, "height": 800})
        page = context.new_page()
        errors = []
        _watch(page, errors)
        page.goto(served.url + "/")
        page.set_input_files("#folder", str(series))
        page.click("#submit")
        page.wait_for_selector("#download", timeout=30_000)
        assert "seconds" in page.text_content("#time-left")
        page.wait_for_selector("text=The upload and the model are gone", timeout=30_000)
        assert page.query_selector("#download") is None
        assert page.request.get(page.url + "/model.stl").status == 410
        assert [e for e in errors if "404" not in e and "410" not in e] == [], errors
        context.close()
    finally:
        assert served.stop() == 0, served.log()


CANARY = "ZQXBROWSER"


def _canary_series(root, kind, uid_digits):
    """A series whose names, ids, descriptions, UIDs and file names carry the canary."""
    header = {"PatientName": f"{CANARY}PN^JANE", "PatientID": f"{CANARY}ID",
              "AccessionNumber": f"{CANARY}AN", "InstitutionName": f"{CANARY}IN",
              "StudyDescription": f"{CANARY}SD", "SeriesDescription": f"{CANARY}SE",
              "ReferringPhysicianName": f"{CANARY}RP", "PatientBirthDate": "19471113",
              "StudyInstanceUID": f"2.25.{uid_digits}1", "SeriesInstanceUID": f"2.25.{uid_digits}2"}
    folder = root / f"{CANARY}FOLDER-{kind}"
    if kind == "plain":
        G.make_series_dir(folder, "sphere", size=(16, 28, 28), private_value=f"{CANARY}PV",
                          extra=header)
    else:
        from tests import hostile as H
        H.write_kind(folder, kind, n=6, **header)
    for n, path in enumerate(sorted(folder.iterdir())):
        path.rename(folder / f"{CANARY}FN{n:03d}.dcm")
    return folder


def test_names_never_leave_the_browser(browser, tmp_path):
    """Every file is de-identified in the page before it is sent: through a
    recording relay, none of the canaries (names, ids, descriptions, UIDs, file
    and folder names, a zip's member names) is in any byte the browser sent,
    a file that is not DICOM is named on the page and not sent, and the model
    made from what was sent is the very one made from the original files —
    for a native, a JPEG 2000 and an RLE series."""
    from converter import ConvertOptions, convert
    from tests.helpers import zip_bytes
    from tests.web.served import Relay

    served = Served(tmp_path / "svc", workers=1).start()
    relay = Relay(served.port).start()
    digits = "".join(str(secrets.randbelow(10)) for _ in range(18)) + "7"
    try:
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        page = context.new_page()
        errors = []
        _watch(page, errors)
        for kind in ("plain", "jpeg2000", "rle"):
            folder = _canary_series(tmp_path / "in", kind, digits)
            page.goto(relay.url + "/")
            if kind == "rle":  # as a zip whose member names carry the canary
                archive = tmp_path / f"{CANARY}ZIP.zip"
                archive.write_bytes(zip_bytes({f"{CANARY}MEMBER/{p.name}": p.read_bytes()
                                               for p in sorted(folder.iterdir())}))
                page.set_input_files("#files", str(archive))
            else:
                if kind == "plain":
                    (folder / f"{CANARY}NOTES.txt").write_text(f"{CANARY} notes, not DICOM")
                page.set_input_files("#folder", str(folder))
            page.wait_for_selector("#outgoing-summary:has-text('will be sent')", timeout=30_000)
            images = sum(1 for p in folder.iterdir() if p.suffix == ".dcm")
            assert page.text_content("#outgoing-summary").startswith(f"{images} files will be "
                                                                      "sent: names, ids and dates"
                                                                      " removed before upload")
            rows = page.query_selector_all("#outgoing-series tbody tr")
            assert len(rows) == 1 and f"{images}" in rows[0].text_content()
            if kind == "plain":  # named here, in the page only
                assert f"{CANARY}NOTES.txt" in page.text_content("#not-sent-list")
            page.select_option("#preset", "bone")
            page.fill("#smooth", "0")
            page.click("#submit")
            page.wait_for_url("**/jobs/*", timeout=30_000)
            page.wait_for_selector("#download", timeout=90_000)
            stl = page.request.get(page.url + "/model.stl").body()
            originals = [p for p in sorted(folder.iterdir()) if p.suffix == ".dcm"]
            expected = convert(originals, ConvertOptions(preset="bone", smooth=0, workers=1))
            assert stl == expected.stl, f"{kind}: the model differs from the originals'"
        assert errors == [], errors
        context.close()
    finally:
        sent = relay.stop()
        assert served.stop() == 0, served.log()
    assert b"POST /jobs" in sent and len(sent) > 20_000
    for canary in (CANARY.encode(), digits.encode(), b"19471113"):
        assert canary not in sent and canary.lower() not in sent, canary


#: the width each option's text needs in the tissue select, and the room it has
_SELECT_ROOM = """() => {
  const s = document.getElementById('preset');
  const cs = getComputedStyle(s);
  const ctx = document.createElement('canvas').getContext('2d');
  ctx.font = `${cs.fontStyle} ${cs.fontWeight} ${cs.fontSize} ${cs.fontFamily}`;
  const room = s.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight) - 20;
  const box = s.getBoundingClientRect();
  return {right: box.right, width: window.innerWidth,
          options: [...s.options].map(o => [o.text, Math.ceil(ctx.measureText(o.text).width), room])};
}"""


def test_on_a_phone_the_tissue_choice_fits_and_nothing_says_drag(browser, service):
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                has_touch=True, device_scale_factor=2)
    page = phone.new_page()
    page.goto(service.url + "/")
    room = page.evaluate(_SELECT_ROOM)
    assert room["right"] <= room["width"], room
    assert [o for o in room["options"] if o[1] > o[2]] == [], room["options"]  # none cut off
    # a touch screen cannot drag files in: the drop zone says to choose them
    assert "drag" not in page.inner_text("#dropzone").lower()
    phone.close()
    desk = browser.new_context(viewport={"width": 1200, "height": 900})
    page = desk.new_page()
    page.goto(service.url + "/")
    assert "drag them here" in page.inner_text("#dropzone")
    desk.close()
