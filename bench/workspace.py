"""The scan workspace's speed on the benchmark's 512×512×N CT (issue 13's targets).

    .venv/bin/python bench/workspace.py [--slices 300] [--runs 40]

A private redis-server, one real RQ worker (``ephemesh worker``), the app
through Flask's test client (no network: what is timed is the server's
work).  Measured:

* first slice: from the moment ``POST /api/v1/scans`` has answered (the
  upload is complete) until the first slice PNG is in hand — the worker
  lists and decodes the series once, then the web maps the volume and
  renders; the client polls the scan every 20 ms;
* a slice PNG with the threshold overlay, warm: median over ``--runs``
  requests across the three planes (the volume already mapped);
* the same as raw values (``&format=values``);
* the estimate (``…/estimate?preset=bone``), median of 5.

Prints a Markdown table (append it to ``bench/results.md``).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from converter.sample import write_sample_series
from tests.helpers import RedisProcess, make_settings
from web import create_app
from worker.runtime import Runtime

TARGETS = {"first slice": 1.0, "slice PNG with overlay (warm)": 0.050, "estimate": 1.0}


def _zip(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.iterdir()):
            zf.writestr(path.name, path.read_bytes())
    return buf.getvalue()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ephemesh-bench-ws-", dir="/dev/shm"
                                 if os.path.isdir("/dev/shm") else None))
    series = root / "series"
    write_sample_series(series, slices=args.slices, size=args.size)
    blob = _zip(series)
    redis = RedisProcess(root / "redis")
    redis.start()
    settings = make_settings(root, redis.url, retention=900)
    app = create_app({"TESTING": True, "EPHEMESH_SETTINGS": settings, "SECRET_KEY": "bench",
                      "RATELIMIT_ENABLED": False, "MAX_CONTENT_LENGTH": 1 << 30})
    key = app.extensions["ephemesh.service"].records.create_key("bench")[1]
    auth = {"Authorization": f"Bearer {key}"}
    client = app.test_client()
    with open(root / "workers.log", "ab") as log:
        runtime = Runtime(settings).start(workers=1, cron=False, stderr=log)
    try:
        from redis import Redis
        from rq import Worker

        conn = Redis.from_url(redis.url)
        while not [w for w in Worker.all(connection=conn) if w.get_state() == "idle"]:
            time.sleep(0.1)  # the worker is up and listening (its imports are done)
        time.sleep(1)
        resp = client.post("/api/v1/scans", data={"files": [(io.BytesIO(blob), "s.zip")]},
                           headers=auth, content_type="multipart/form-data")
        t0 = time.perf_counter()
        url = resp.json["links"]["self"]
        while (scan := client.get(url, headers=auth).json)["status"] == "reading":
            time.sleep(0.02)
        assert scan["status"] == "ready", scan
        ready_s = time.perf_counter() - t0
        links = scan["series"][0]["links"]
        first = client.get(links["slice"] + "?plane=axial&threshold=300", headers=auth)
        first_s = time.perf_counter() - t0
        assert first.status_code == 200
        geo = client.get(links["volume"], headers=auth).json["planes"]

        def timed(query):
            t = time.perf_counter()
            r = client.get(links["slice"] + query, headers=auth)
            assert r.status_code == 200
            return time.perf_counter() - t

        png, raw = [], []
        planes = list(geo)
        for i in range(args.runs):
            plane = planes[i % 3]
            index = (i * 37) % geo[plane]["count"]
            png.append(timed(f"?plane={plane}&index={index}&threshold=300"))
            raw.append(timed(f"?plane={plane}&index={index}&format=values"))
        estimates = []
        for _ in range(5):
            t = time.perf_counter()
            est = client.get(links["estimate"] + "?preset=bone", headers=auth)
            estimates.append(time.perf_counter() - t)
            assert est.status_code == 200, est.json
        full = est.json["triangles"]
    finally:
        runtime.stop(grace=10)
        app.extensions["ephemesh.service"].close()
        redis.stop()
        shutil.rmtree(root, ignore_errors=True)  # the series, the store: ~450 MB of memory
    rows = [("first slice", first_s, "after the upload completed: read once, decoded, mapped, "
             f"rendered (the scan said ready after {ready_s:.2f} s)"),
            ("slice PNG with overlay (warm)", statistics.median(png),
             f"median of {len(png)}, three planes; max {max(png) * 1000:.0f} ms"),
            ("slice values, int16 (warm)", statistics.median(raw), f"median of {len(raw)}"),
            ("estimate", statistics.median(estimates),
             f"median of 5, preset bone: {full} triangles estimated")]
    load = os.getloadavg()[0]
    print(f"Workspace, {args.size}×{args.size}×{args.slices} CT, load average {load:.2f}:\n")
    print("| measure | seconds | target | |\n|---|---:|---:|---|")
    for name, value, note in rows:
        target = TARGETS.get(name)
        mark = "" if target is None else (f"≤ {target:g} s " + ("met" if value <= target
                                                                 else "**missed**"))
        print(f"| {name} | {value:.4f} | {mark} | {note} |")


if __name__ == "__main__":
    main()
