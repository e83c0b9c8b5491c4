"""The scan workspace in a real headless Chromium (Debian's) against
``ephemesh serve``: upload a generated two-part series with "Look first",
see the three slice views (lettered edges), move the threshold slider and
watch the overlay's pixels change, set a crop box, convert, convert again
with another threshold without uploading again, compare, download both,
press "Done" and find the upload and the models gone (410) and in the
purge ledger.  A screenshot of the workspace is kept as a test artefact."""

import os
import shutil
import time
from pathlib import Path

import pytest

from converter.options import WEB_OPTIONS
from tests import dicomgen as G
from tests.web.served import Served
from tests.web.test_chromium import _watch, browser  # noqa: F401 (the fixture)
from worker.config import Settings
from worker.records import Records

#: the overlay's painted pixels on a view (alpha above 0), counted in the page
PAINTED = """plane => {
  const c = document.querySelector(`figure.view[data-plane="${plane}"] canvas.overlay`);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0;
  return n;
}"""
#: how many grey levels the image canvas of a view shows
GREYS = """plane => {
  const c = document.querySelector(`figure.view[data-plane="${plane}"] canvas.image`);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const seen = new Set(); for (let i = 0; i < d.length; i += 4) seen.add(d[i]);
  return seen.size;
}"""


def set_threshold(page, value):
    page.eval_on_selector("#threshold", "(el, v) => { el.value = String(v); "
                          "el.dispatchEvent(new Event('input', {bubbles: true})); }", value)


@pytest.fixture
def served(tmp_path):
    service = Served(tmp_path / "svc", workers=1).start()
    yield service
    assert service.stop() == 0, service.log()


def _cards_done(page, n, timeout=60):
    page.wait_for_function(
        "n => document.querySelectorAll('.result-card[data-status=done] canvas[data-drawn]').length >= n",
        arg=n, timeout=timeout * 1000)


def test_look_first_convert_twice_compare_download_and_done(browser, served, tmp_path,  # noqa: F811
                                                             artifacts_dir):
    series = G.make_series_dir(tmp_path / "Doe_Jane_scan", "two_spheres", size=(28, 36, 48))
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 1100})
    page = context.new_page()
    errors = []
    _watch(page, errors)
    page.goto(served.url + "/")
    page.set_input_files("#folder", str(series))
    page.click("#look-first")
    page.wait_for_url("**/scans/*", timeout=30_000)
    scan_id = page.url.rsplit("/", 1)[1]
    page.wait_for_selector('#workspace[data-views="shown"]', timeout=30_000)

    # the series picker: the uploader sees the series' facts and its thumbnail
    card = page.text_content(".series-card")
    assert "28 slices" in card and "48 × 36" in card
    page.wait_for_function("() => document.querySelector('.series-card img').naturalWidth > 0")
    # three views, drawn, with the orientation letters on their edges
    edges = {plane: [page.text_content(f'figure[data-plane="{plane}"] .edge.{side}')
                     for side in ("top", "right", "bottom", "left")]
             for plane in ("axial", "coronal", "sagittal")}
    assert edges == {"axial": ["A", "L", "P", "R"], "coronal": ["S", "L", "I", "R"],
                     "sagittal": ["S", "P", "I", "A"]}, edges
    for plane in ("axial", "coronal", "sagittal"):
        assert page.evaluate(GREYS, plane) > 10, plane  # not a blank canvas
    # the histogram marks the presets and Otsu and gives the range
    caption = page.text_content("#histogram-caption")
    assert "Values from" in caption and "Otsu" in caption and "bone 300" in caption

    # the overlay follows the slider: lower threshold, more of the slice is the surface region
    set_threshold(page, 300)
    page.wait_for_function("() => window.ephemeshWorkspace.threshold === 300")
    page.wait_for_timeout(100)
    at_300 = page.evaluate(PAINTED, "axial")
    set_threshold(page, -900)
    page.wait_for_function("() => window.ephemeshWorkspace.threshold === -900")
    page.wait_for_timeout(100)
    at_minus_900 = page.evaluate(PAINTED, "axial")
    assert 0 < at_300 < at_minus_900, (at_300, at_minus_900)
    # scrolling: the wheel moves the slice
    before = page.get_attribute('figure[data-plane="axial"]', "data-index")
    page.hover('figure[data-plane="axial"] canvas.overlay')
    page.mouse.wheel(0, 120)
    page.wait_for_function(f"""() => document.querySelector('figure[data-plane="axial"]')
                                    .dataset.index !== '{before}'""")
    set_threshold(page, 300)

    # (the region options come with issue 14: on this server's converter or not)
    # a crop box drawn on the axial view: the big sphere only (the image's left is R)
    cropping = "crop" in WEB_OPTIONS
    assert page.is_visible("#tool-crop") == cropping
    if cropping:
        page.click("#tool-crop")
        box = page.locator('figure[data-plane="axial"] canvas.overlay').bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.03, box["y"] + box["height"] * 0.05)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.95, steps=5)
        page.mouse.up()
        crop = [float(v) for v in page.get_attribute("#workspace", "data-crop").split(",")]
        assert len(crop) == 6 and crop[0] < -20 and -2 < crop[3] < 3, crop  # x from the right edge to ~0
        assert "From (" in page.text_content("#crop-text")
    page.wait_for_function("() => /About [\\d,]+ triangles/.test(document.getElementById('estimate').textContent)",
                           timeout=30_000)

    page.click("#convert")
    _cards_done(page, 1)
    # again, another threshold, no crop: no new upload, a second model
    if cropping:
        page.click("#clear-crop")
    set_threshold(page, 100)
    page.click("#convert")
    _cards_done(page, 2)
    cards = page.locator(".result-card[data-status=done]")
    assert cards.count() == 2
    settings = [cards.nth(i).locator(".settings").text_content() for i in range(2)]
    assert any("300" in s for s in settings) and any("100" in s for s in settings), settings
    if cropping:  # the first model is the big sphere only
        assert any("cropped" in s for s in settings), settings
        pieces = sorted(int(cards.nth(i).locator("dl.report dd").nth(4).text_content())
                        for i in range(2))
        assert pieces == [1, 2], pieces

    # "keep the part under this point": a click on the small sphere (x = +12 mm, on the
    # image's right, L) is a seed there in patient mm, and the estimate drops to that part
    if "seed" in WEB_OPTIONS:
        page.wait_for_function("() => document.getElementById('estimate').dataset.ok === 'yes'")
        whole = int(page.get_attribute("#estimate", "data-triangles"))
        page.click("#tool-seed")
        box = page.locator('figure[data-plane="axial"] canvas.overlay').bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.5)
        seed = [float(v) for v in page.get_attribute("#workspace", "data-seed").split(",")]
        assert abs(seed[0] - 12) <= 1.5 and abs(seed[1]) <= 1.5, seed
        page.wait_for_function(
            "n => Number(document.getElementById('estimate').dataset.triangles) < n / 2",
            arg=whole, timeout=30_000)
        page.click("#clear-seed")
    # on a phone the workspace fits the screen
    page.set_viewport_size({"width": 390, "height": 844})
    overflow = page.evaluate("() => document.documentElement.scrollWidth - "
                             "document.documentElement.clientWidth")
    assert overflow <= 0, overflow
    page.set_viewport_size({"width": 1280, "height": 1100})

    # compare side by side
    for i in range(2):
        cards.nth(i).locator("input.compare").check()
    page.wait_for_selector("#compare:not([hidden])")
    assert page.locator("#compare table tr").first.locator("td").count() == 2

    # download both: the full models
    downloads = []
    for i in range(2):
        with page.expect_download() as got:
            page.locator(".result-card[data-status=done]").nth(i).locator("button.download").click()
        path = tmp_path / f"model-{i}.stl"
        got.value.save_as(path)
        downloads.append(path.read_bytes())
    assert all(d.startswith(b"ephemesh SPACE=LPS") for d in downloads)
    assert downloads[0] != downloads[1]
    # the previews are the reduced meshes, not the STLs
    for i in range(2):
        canvas = page.locator(".result-card[data-status=done]").nth(i).locator("canvas.preview")
        assert canvas.get_attribute("data-drawn") == "yes"
        assert int(canvas.get_attribute("data-bytes")) <= 0.2 * max(map(len, downloads))

    shot = tmp_path / "workspace.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("EPHEMESH_ARTEFACTS"):
        target = Path(os.environ["EPHEMESH_ARTEFACTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target / "workspace.png")
    shutil.copy(shot, artifacts_dir / "workspace.png")

    job_ids = [page.locator(".result-card").nth(i).get_attribute("data-job") for i in range(2)]
    # one model deleted on its own: gone at once, the other stays
    page.locator(f'.result-card[data-job="{job_ids[1]}"] button.delete').click()
    page.wait_for_selector(f'.result-card[data-job="{job_ids[1]}"][data-status="deleted"]')
    assert page.request.get(f"{served.url}/jobs/{job_ids[1]}/model.stl").status == 410
    assert page.request.get(f"{served.url}/jobs/{job_ids[0]}/model.stl").status == 200
    page.click("#done")
    page.wait_for_selector('#workspace[data-state="deleted"]')
    assert "gone" in page.text_content("#done-status")
    for job_id in job_ids:
        assert page.request.get(f"{served.url}/jobs/{job_id}/model.stl").status == 410
    assert page.request.get(
        f"{served.url}/api/v1/scans/{scan_id}/series/1/slice?plane=axial&index=0").status == 410
    # in the ledger: the upload, its decoded volumes and both models, on request
    records = Records(Settings.from_env({"EPHEMESH_DATA_DIR": str(served.root / "data")}
                                        ).database_url)
    try:
        deadline = time.monotonic() + 10
        while True:
            rows = [r for r in records.ledger() if r["object_id"] in (scan_id, *job_ids)]
            if len(rows) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        records.close()
    kinds = {(r["kind"], r["object_id"]) for r in rows if r["reason"] == "user-request"}
    assert ("scan", scan_id) in kinds, rows
    assert {("result", j) for j in job_ids} <= kinds, rows
    assert [e for e in errors if "404" not in e and "410" not in e] == [], errors
    context.close()
