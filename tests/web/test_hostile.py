"""Hostile input against a served instance: ``ephemesh serve`` with its real
Redis and a real RQ worker, measured from outside with psutil.

Decoder bombs (JPEG, JPEG-LS, JPEG 2000 codestreams declaring 2× and 1000×
the header's size), 10⁶ declared frames, JPEG-LS that aborts GDCM and RLE
that makes pylibjpeg-rle panic each end their job ``corrupt_pixel_data``
within seconds; zip bombs, one and eight at once, are refused at the door.
Throughout, a sampler watches every process of the service: the web
process stays within ``WEB_GROWTH_MB`` of its size at start, every work
horse (with its decoding processes) within ``JOB_MB`` of its worker, the
uploads being taken in within the server's budget; afterwards the same
worker converts a good series, nothing is left in the store or the spool,
and the log holds no traceback.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from tests import hostile as H
from tests.helpers import wait_for
from tests.web.served import Served, ephemesh_script

MB = 1024 * 1024
#: the memory each conversion may take beyond its worker's (EPHEMESH_JOB_MEMORY_MB)
JOB_MB = 768
#: how much the web process may grow over its size once started
WEB_GROWTH_MB = 200
#: the server's budget of upload bytes in flight, and what one upload may unpack
IN_FLIGHT_MB = 128
UNPACKED_MB = 48
#: a hostile job ends within this many seconds of its upload
JOB_SECONDS = 20


class Sampler:
    """Resident sizes of the service's processes every 20 ms, and the bytes
    in the store's writers' folders (uploads being taken in)."""

    def __init__(self, served: Served, store: Path):
        self.web = psutil.Process(served.proc.pid)
        self.store = store
        self.web_start = self.web.memory_info().rss
        self.web_peak = self.web_start
        self.horse_peak = 0  # a horse and its decoding processes, summed
        self.worker_rss = 0  # the worker a horse is forked from
        self.writing_peak = 0
        self.horses = 0
        self._seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def workers(self) -> list[psutil.Process]:
        """The RQ worker processes (children of ``ephemesh worker``)."""
        out = []
        for child in self.web.children():
            try:
                if "worker" in child.cmdline():
                    out.extend(child.children())
            except psutil.Error:
                continue
        return out

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self):
        while not self._stop.wait(0.02):
            try:
                self.web_peak = max(self.web_peak, self.web.memory_info().rss)
            except psutil.Error:
                return
            for worker in self.workers():
                try:
                    self.worker_rss = max(self.worker_rss, worker.memory_info().rss)
                    for horse in worker.children():
                        tree = [horse, *horse.children(recursive=True)]
                        rss = sum(p.memory_info().rss for p in tree)
                        self.horse_peak = max(self.horse_peak, rss)
                        if horse.pid not in self._seen:
                            self._seen.add(horse.pid)
                            self.horses += 1
                except psutil.Error:
                    continue
            self.writing_peak = max(self.writing_peak, _writing_bytes(self.store))

    def figures(self) -> dict:
        return {"web_start_mb": round(self.web_start / MB),
                "web_peak_mb": round(self.web_peak / MB),
                "worker_mb": round(self.worker_rss / MB),
                "horse_peak_mb": round(self.horse_peak / MB),
                "horses_seen": self.horses,
                "uploads_in_flight_peak_mb": round(self.writing_peak / MB)}


def _writing_bytes(store: Path) -> int:
    """Bytes in the store's writers' folders (``.w.…``: uploads being taken in)."""
    total = 0
    try:
        for folder in (store / "input").iterdir():
            if folder.name.startswith(".w."):
                total += sum(f.stat().st_size for f in folder.iterdir())
    except OSError:  # a folder committed or removed meanwhile
        pass
    return total


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    store = Path("/dev/shm") / f"ephemesh-hostile-{uuid.uuid4().hex[:8]}"  # as deployed: a tmpfs
    served = Served(root, workers=1, EPHEMESH_STORE=store, EPHEMESH_JOB_MEMORY_MB=JOB_MB,
                    EPHEMESH_MAX_IN_FLIGHT_MB=IN_FLIGHT_MB, EPHEMESH_MAX_UPLOAD_MB=64,
                    EPHEMESH_MAX_UNPACKED_MB=UNPACKED_MB, EPHEMESH_MAX_UPLOADS_PER_ADDRESS=8,
                    EPHEMESH_UPLOAD_RATE_LIMIT="1000/minute", EPHEMESH_KEY_RATE_LIMIT="5000/minute",
                    EPHEMESH_RATE_LIMIT="5000/minute", EPHEMESH_RETENTION_SECONDS=600).start()
    try:
        made = subprocess.run([ephemesh_script(), "keys", "create", "hostile"], env=served.env,
                              cwd=root, capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        served.key = made.stdout.strip().splitlines()[-1]
        served.store = store
        sampler = Sampler(served, store)
        wait_for(sampler.workers, 60, "the RQ worker to start")
        served.sampler = sampler.start()
        yield served
    finally:
        sampler = getattr(served, "sampler", None)
        if sampler:
            sampler.stop()
        code = served.stop()
        import shutil

        shutil.rmtree(store, ignore_errors=True)
        assert code == 0, served.log()[-3000:]


def _multipart(files: list[bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for i, data in enumerate(files):
        out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
                  f"filename=\"{i}.dcm\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                  .encode())
        out.write(data)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def _call(service, method, path, files=None, timeout=60):
    body, ctype = _multipart(files) if files is not None else (None, None)
    req = urllib.request.Request(service.url + path, data=body, method=method,
                                 headers={"Authorization": f"Bearer {service.key}",
                                          **({"Content-Type": ctype} if ctype else {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _job(service, files) -> tuple[dict, float]:
    """Upload ``files``, wait for the job to end: (its view, seconds taken)."""
    t = time.monotonic()
    status, _, body = _call(service, "POST", "/api/v1/jobs", files)
    assert status == 202, body[:500]
    job_id = json.loads(body)["id"]
    while time.monotonic() - t < JOB_SECONDS + 40:
        _, _, body = _call(service, "GET", f"/api/v1/jobs/{job_id}")
        view = json.loads(body)
        if view["status"] in ("done", "failed"):
            return view, time.monotonic() - t
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end: {view}")


def _files(paths) -> list[bytes]:
    return [Path(p).read_bytes() for p in sorted(paths)]


CASES = {
    **{f"{kind} {factor}x": (lambda d, k=kind, f=factor: H.bomb(d, k, f))
       for kind in ("jpeg", "jpeg-ls", "jpeg2000") for factor in (2, 1000)},
    "1e6 frames": lambda d: [H.many_frames(d / "a.dcm"), H.many_frames(d / "b.dcm")],
    "gdcm abort": H.gdcm_abort,
    "rle panic": H.rle_panic,
}


def test_hostile_series_end_corrupt_pixel_data_within_seconds_in_bounded_memory(
        service, tmp_path):
    sampler = service.sampler
    workers = [w.pid for w in sampler.workers()]
    taken = {}
    for name, make in CASES.items():
        folder = tmp_path / name.replace(" ", "-")
        folder.mkdir()
        view, seconds = _job(service, _files(make(folder)))
        assert view["status"] == "failed", (name, view)
        assert view["error"]["code"] == "corrupt_pixel_data", (name, view["error"])
        assert seconds < JOB_SECONDS, (name, seconds)
        taken[name] = round(seconds, 1)
    # the same worker goes on with an honest series
    good = _files(H.write_kind(tmp_path / "good", "jpeg2000", n=4))
    view, _ = _job(service, good)
    assert view["status"] == "done", view["error"]
    assert [w.pid for w in sampler.workers()] == workers
    figures = sampler.figures()
    print("hostile jobs:", json.dumps(taken), json.dumps(figures))
    assert sampler.horses >= len(CASES)
    assert sampler.horse_peak <= (JOB_MB * MB + sampler.worker_rss), figures
    assert sampler.web_peak <= sampler.web_start + WEB_GROWTH_MB * MB, figures
    assert _call(service, "DELETE", f"/api/v1/jobs/{view['id']}")[0] == 204


def _zip_bomb(member_mb: int, members: int, dicom_head: bytes = b"") -> bytes:
    """``members`` entries of ``member_mb`` MiB: zeros (ratio ~1000), or with
    ``dicom_head`` a DICOM file's start and a little noise per MiB (ratio ~80,
    under the ratio limit: members that are stored as they come)."""
    noise = os.urandom(12 * 1024)
    block = noise + b"\0" * (MB - len(noise)) if dicom_head else b"\0" * MB
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(members):
            with zf.open(f"{i:04d}.dcm", "w") as fh:
                fh.write(dicom_head)
                for _ in range(member_mb):
                    fh.write(block)
    return buf.getvalue()


def test_zip_bombs_one_and_eight_at_once_are_refused_at_the_door(service, tmp_path):
    sampler = service.sampler
    head = _files(H.write_kind(tmp_path / "head", "rle", n=2))[0][:2048]
    zeros = _zip_bomb(8, 32)  # 256 MiB of zeros in ~250 kB
    t = time.monotonic()
    status, _, body = _call(service, "POST", "/api/v1/jobs", [zeros])
    assert (status, json.loads(body)["code"]) == (400, "zip_ratio"), body[:300]
    assert time.monotonic() - t < 10
    stored = _zip_bomb(1, 64, dicom_head=head)  # 64 MiB of "DICOM" at ratio ~80
    assert len(stored) * 100 > 64 * MB  # under the ratio limit: only the unpacked cap stops it
    status, _, body = _call(service, "POST", "/api/v1/jobs", [stored])
    assert (status, json.loads(body)["code"]) == (400, "zip_too_large"), body[:300]

    def post(_):
        status, headers, body = _call(service, "POST", "/api/v1/jobs", [stored], timeout=120)
        return status, headers, json.loads(body)

    t = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(8)))
    seconds = time.monotonic() - t
    codes = sorted((status, body["code"]) for status, _, body in answers)
    print("eight zip bombs:", codes, f"{seconds:.1f} s", json.dumps(sampler.figures()))
    assert all(c in ((400, "zip_too_large"), (503, "busy")) for c in codes), codes
    assert all(int(h["Retry-After"]) > 0 for s, h, _ in answers if s == 503)
    assert seconds < 60
    figures = sampler.figures()
    assert sampler.web_peak <= sampler.web_start + WEB_GROWTH_MB * MB, figures
    # the store never held more of them at once than the server's budget
    assert sampler.writing_peak <= IN_FLIGHT_MB * MB, figures


def test_afterwards_nothing_is_left_and_the_log_is_clean(service):
    """Runs last: every upload of the suite has gone, refused or converted."""
    def leftovers():
        kept = []
        for kind in ("input", "result"):
            folder = service.store / kind
            kept += [p.name for p in folder.iterdir()] if folder.exists() else []
        spool = service.store / ".spool"
        kept += [p.name for p in spool.iterdir()] if spool.exists() else []
        return kept

    end = time.monotonic() + 20
    while leftovers() and time.monotonic() < end:
        time.sleep(0.2)
    assert leftovers() == []
    log = service.log()
    assert "Traceback" not in log and "PanicException" not in log, log[-3000:]
