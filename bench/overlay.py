"""How fast the workspace's overlay follows the threshold slider, in a real
headless Chromium (Debian's), on the benchmark's 512×512×N CT.

    python bench/overlay.py [N] [--seconds S]

Starts ``ephemesh serve`` (one worker), opens the upload page (a browser
session), sends the series as a zip to ``POST /api/v1/scans`` with that
session, opens the workspace page and, once the three views are drawn:

* drags the threshold slider with the mouse for S seconds (Playwright's
  mouse, so the browser's own input events) and counts the overlay redraws
  of the three 512-pixel views: **updates per second** (target ≥ 20; the
  driver's round trips bound how often the mouse moves);
* moves the slider from the page once per animation frame for 2 s and
  counts the updates the same way (what a display shows);
* times one redraw of the three overlays in the page (the ceiling).

It also gives the time from the scan's creation to the first view drawn.
The figures go to stdout; bench/results.md keeps them.
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converter.sample import write_sample_series  # noqa: E402
from tests.web.served import Served  # noqa: E402
from tests.web.test_chromium import ARGS, CHROMIUM  # noqa: E402


def _zip(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, path.name)
    return buf.getvalue()


def main(argv):
    slices = int(argv[0]) if argv and argv[0].isdigit() else 300
    seconds = float(argv[argv.index("--seconds") + 1]) if "--seconds" in argv else 3.0
    import requests
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_sample_series(tmp / "ct", slices=slices, size=512)
        payload = _zip(tmp / "ct")
        served = Served(tmp / "svc", workers=1).start()
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                errors = []
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(served.url + "/")
                token = page.get_attribute("meta[name=csrf-token]", "content")
                # the page's session (its cookie and CSRF token), sent from here: a
                # browser's own upload would de-identify 300 files in the page first
                cookies = {c["name"]: c["value"] for c in page.context.cookies()}
                t0 = time.perf_counter()
                resp = requests.post(served.url + "/api/v1/scans", cookies=cookies,
                                     headers={"X-CSRFToken": token, "Accept": "application/json"},
                                     files={"files": ("ct.zip", payload, "application/zip")},
                                     timeout=300)
                assert resp.status_code == 201, resp.text
                # the session the scan belongs to (made by that request) back to the browser
                page.context.add_cookies([{"name": k, "value": v, "url": served.url}
                                          for k, v in resp.cookies.items()])
                uploaded = time.perf_counter()
                scan_url = f"{served.url}/api/v1/scans/{resp.json()['id']}"
                cookies.update(resp.cookies.items())
                while requests.get(scan_url, cookies=cookies,
                                   timeout=30).json()["status"] == "reading":
                    time.sleep(0.05)
                listed = time.perf_counter()
                page.goto(f"{served.url}/scans/{resp.json()['id']}")
                try:
                    page.wait_for_selector('#workspace[data-views="shown"]', timeout=300_000)
                except Exception:
                    print("no views:", page.text_content("#scan-status"),
                          page.text_content("#scan-error"), errors, served.log()[-3000:])
                    raise
                shown = time.perf_counter()

                slider = page.locator("#threshold").bounding_box()
                y = slider["y"] + slider["height"] / 2
                page.mouse.move(slider["x"] + 2, y)
                page.mouse.down()
                before = page.evaluate("() => window.ephemeshWorkspace.draws")
                start = time.perf_counter()
                moves, k = 0, 0
                while time.perf_counter() - start < seconds:
                    k = (k + 7) % 200
                    page.mouse.move(slider["x"] + 2 + slider["width"] * (0.2 + 0.6 * k / 200), y)
                    moves += 1
                page.wait_for_timeout(50)
                elapsed = time.perf_counter() - start
                draws = page.evaluate("() => window.ephemeshWorkspace.draws") - before
                page.mouse.up()
                # the slider moved by the page itself once per frame (as fast as a
                # display shows it): overlay updates per second
                framed = page.evaluate("""() => new Promise(done => {
                  const s = window.ephemeshWorkspace, el = document.getElementById('threshold');
                  const lo = Number(el.min), hi = Number(el.max), first = s.draws;
                  const t = performance.now(); let k = 0;
                  const tick = () => {
                    if (performance.now() - t > 2000) {
                      setTimeout(() => done({draws: s.draws - first, moves: k,
                                             seconds: (performance.now() - t) / 1000}), 50);
                      return;
                    }
                    k++; el.value = String(lo + (hi - lo) * (0.3 + 0.4 * ((k * 7) % 100) / 100));
                    el.dispatchEvent(new Event('input', {bubbles: true}));
                    requestAnimationFrame(tick);
                  };
                  requestAnimationFrame(tick);
                })""")
                # one redraw of the three overlays, timed in the page (the ceiling)
                ceiling_ms = page.evaluate("""() => {
                  const s = window.ephemeshWorkspace, views = [...document.querySelectorAll('figure.view')];
                  const t = performance.now(); let n = 0;
                  while (performance.now() - t < 1000) { s.threshold = -500 + (n % 100) * 10; window.ephemeshRedraw(); n++; }
                  return (performance.now() - t) / n;
                }""")
                browser.close()
        finally:
            served.stop()
    # three views redrawn per update
    updates = draws / 3 / elapsed
    print(f"series: 512×512×{slices}, zip {len(payload) / 1e6:.1f} MB")
    print(f"scan created (upload + answer): {uploaded - t0:.2f} s; series listed (read once "
          f"by a worker) {listed - uploaded:.2f} s after; the page opened then drew its three "
          f"views in {shown - listed:.2f} s")
    print(f"slider dragged {elapsed:.1f} s, {moves} mouse moves: {updates:.1f} overlay updates/s "
          f"(three views each; target >= 20)")
    print(f"slider moved in the page once per frame for {framed['seconds']:.1f} s "
          f"({framed['moves']} moves): {framed['draws'] / 3 / framed['seconds']:.1f} overlay updates/s")
    print(f"one update of the three overlays in the page: {ceiling_ms:.1f} ms "
          f"(ceiling {1000 / ceiling_ms:.0f} updates/s)")


if __name__ == "__main__":
    main(sys.argv[1:])
