"""The service against the CLI, and its throughput (issue 16's benchmarks).

    .venv/bin/python bench/service.py [--runs 3] [--clients 20] [--quick]

Everything real: ``ephemesh serve`` (waitress, RQ workers, cron, a private
Redis, the default in-memory store) in a data directory of its own, driven
over HTTP with an API key by curl (the upload, one ``-F files=@…`` part per
slice, and the download, ``-o`` to a file, as the README shows them) and
``requests`` (``?wait=``); the CLI is ``ephemesh convert`` in a fresh
process.  Data: the benchmark's CT (``converter.sample``, as
``bench/ctseries.py`` writes it), 512×512, 300 and 64 slices.

1. **Service minus CLI** on 300 slices, one worker, ``--runs`` times,
   median: upload → ``done`` → STL downloaded, minus ``ephemesh convert`` end
   to end.  Where the service's time goes: the POST (upload, intake, store,
   enqueue), the queue wait (the worker's pickup, from the server's
   ``ephemesh_queue_wait_seconds``), the job in the worker (store read,
   conversion, store write: ``ephemesh_conversion_seconds``) against the
   conversion's own time (the report's timings), the wait for the client to
   see ``done`` (``?wait=``), the download.
2. **Throughput** for 64 and 300 slices with 1 and 2 workers: ``--clients``
   concurrent clients each send ``--jobs`` jobs and wait with ``?wait=`` (no
   per-job polling); jobs per minute from the first POST to the last
   download, queue wait p50/p95 as the clients see it (202 → first status
   other than ``queued``), and the service's peak RSS (serve, its workers,
   cron and Redis, sampled every 0.1 s).

Prints Markdown (the figures for ``bench/results.md``); the machine's load
is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from converter.sample import write_sample_series  # noqa: E402

EPHEMESH = str(Path(sys.executable).parent / "ephemesh")
ENV = {  # one client machine sending many jobs: limits opened for the benchmark
    "EPHEMESH_UPLOAD_RATE_LIMIT": "100000/minute", "EPHEMESH_KEY_RATE_LIMIT": "100000/minute",
    "EPHEMESH_RATE_LIMIT": "100000/minute", "EPHEMESH_MAX_UPLOADS_PER_ADDRESS": "64",
    "EPHEMESH_SECRET_KEY": "bench", "EPHEMESH_MAX_IN_FLIGHT_MB": "8192",
}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    def __init__(self, root: Path, workers: int):
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("EPHEMESH_")}
        self.env.update(ENV, EPHEMESH_DATA_DIR=str(root / "data"))
        self.log = open(root / f"serve-{workers}.log", "ab")
        self.proc = subprocess.Popen([EPHEMESH, "serve", "--port", str(self.port), "--workers",
                                      str(workers)], env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + 120
        while time.monotonic() < end:
            try:
                if requests.get(self.url + "/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        else:
            raise SystemExit(f"ephemesh serve did not get ready; see {self.log.name}")
        made = subprocess.run([EPHEMESH, "keys", "create", "bench"], env=self.env,
                              capture_output=True, text=True, check=True)
        self.auth = {"Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"}
        self.peak_rss = 0
        self._sampling = True
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        me = psutil.Process(self.proc.pid)
        while self._sampling:
            try:
                procs = [me, *me.children(recursive=True)]
                rss = 0
                for p in procs:
                    try:
                        rss += p.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak_rss = max(self.peak_rss, rss)
            except psutil.Error:
                return
            time.sleep(0.1)

    def metric(self, name) -> float:
        text = requests.get(self.url + "/metrics", timeout=10).text
        return sum(s.value for f in text_string_to_metric_families(text)
                   for s in f.samples if s.name == name)

    def stop(self):
        self._sampling = False
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def one_job(svc: Service, files: list[Path], out: Path) -> dict:
    """One client's job, timed: POST, queued → other, done, download.  The
    client is curl, as the README shows it: ``-F files=@…`` (read from disk
    as sent) and ``-o`` (the model saved to a file, as the CLI saves it)."""
    auth = ["-H", f"Authorization: {svc.auth['Authorization']}"]
    form = [arg for path in files for arg in ("-F", f"files=@{path};type=application/dicom")]
    t0 = time.perf_counter()
    sent = subprocess.run(["curl", "-sS", "--fail-with-body", *auth, "-F", "preset=bone", *form,
                           svc.url + "/api/v1/jobs"], capture_output=True, check=False)
    if sent.returncode:
        raise SystemExit(f"the POST failed: {sent.stdout[:300]!r} {sent.stderr[:300]!r}")
    job = json.loads(sent.stdout)
    t_post = time.perf_counter()
    url, status, t_left_queue = svc.url + job["links"]["self"], "queued", None
    view = job
    while status not in ("done", "failed"):
        answer = requests.get(url, params={"wait": 30}, headers=svc.auth, timeout=180)
        view = answer.json()
        status = view["status"]
        if answer.headers.get("X-Wait") == "busy":  # every waiting slot taken: ask again soon
            time.sleep(1.0)
        if t_left_queue is None and status != "queued":
            t_left_queue = time.perf_counter()
    t_done = time.perf_counter()
    if status != "done":
        raise SystemExit(f"a job failed: {view.get('error')}")
    out.unlink(missing_ok=True)
    subprocess.run(["curl", "-sS", "--fail", *auth, "-o", str(out),
                    svc.url + job["links"]["result"]], check=True)
    t_end = time.perf_counter()
    timings = (view.get("report") or {}).get("timings_s") or {}
    return {"post": t_post - t0, "queued": (t_left_queue or t_done) - t_post,
            "done": t_done - t0, "download": t_end - t_done, "total": t_end - t0,
            "stl_bytes": out.stat().st_size, "convert": timings.get("total", 0.0),
            "start": t0, "end": t_end}


def cli_run(folder: Path, out: Path) -> float:
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    subprocess.run([EPHEMESH, "convert", str(folder), "-o", str(out), "--preset", "bone",
                    "--no-progress"], check=True, capture_output=True)
    return time.perf_counter() - t0


def series(work: Path, n: int) -> tuple[Path, list[Path]]:
    folder = work / f"ct{n}"
    if not folder.exists():
        write_sample_series(folder, slices=n, size=512)
    return folder, sorted(folder.iterdir())


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def overhead(work: Path, runs: int) -> list[str]:
    folder, files = series(work, 300)
    cli = [cli_run(folder, work / "cli.stl") for _ in range(runs)]
    svc = Service(work / "svc-a", workers=1)
    try:
        one_job(svc, files, work / "svc.stl")  # a first job warms the worker (its imports
        # are preloaded anyway)
        rows = []
        for _ in range(runs):
            wait0 = svc.metric("ephemesh_queue_wait_seconds_sum")
            conv0 = svc.metric("ephemesh_conversion_seconds_sum")
            row = one_job(svc, files, work / "svc.stl")
            row["pickup"] = svc.metric("ephemesh_queue_wait_seconds_sum") - wait0
            row["worker"] = svc.metric("ephemesh_conversion_seconds_sum") - conv0
            rows.append(row)
    finally:
        svc.stop()
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k not in ("start", "end")}
    c = statistics.median(cli)
    notice = med["done"] - med["post"] - med["pickup"] - med["worker"]
    return [
        f"### Service against CLI: 512×512×300, one worker, median of {runs}",
        "",
        "| | seconds |",
        "|---|---|",
        f"| `ephemesh convert` end to end (fresh process) | {c:.2f} |",
        f"| service: upload → done → STL downloaded | {med['total']:.2f} |",
        f"| **service minus CLI** (target ≤ 0.30) | **{med['total'] - c:+.2f}** |",
        f"| — POST: upload {sum(p.stat().st_size for p in files) / 2**20:.0f} MB, intake, store, enqueue | "
        f"{med['post']:.2f} |",
        f"| — queue wait (worker pickup, server side) | {med['pickup']:.3f} |",
        f"| — the job in the worker (store read, conversion, store write) | {med['worker']:.2f} |",
        f"|   of which the conversion (report timings) | {med['convert']:.2f} |",
        f"| — until the client sees `done` (`?wait=`) | {notice:.3f} |",
        f"| — STL download ({med['stl_bytes'] / 2**20:.0f} MB) | {med['download']:.2f} |",
        "",
    ]


def throughput(work: Path, slices: int, workers: int, clients: int, jobs: int) -> str:
    _, files = series(work, slices)
    svc = Service(work / f"svc-{slices}-{workers}", workers=workers)
    try:
        one_job(svc, files, work / "warm.stl")  # warm
        svc.peak_rss = 0
        with ThreadPoolExecutor(clients) as pool:
            rows = list(pool.map(lambda c: [one_job(svc, files, work / f"client-{c}.stl")
                                            for _ in range(jobs)], range(clients)))
        rows = [r for client in rows for r in client]
    finally:
        svc.stop()
    span = max(r["end"] for r in rows) - min(r["start"] for r in rows)
    waits = [r["queued"] for r in rows]
    return (f"| {slices} | {workers} | {clients} × {jobs} | {len(rows) / span * 60:.1f} | "
            f"{pct(waits, 0.5):.2f} | {pct(waits, 0.95):.2f} | "
            f"{statistics.median(r['total'] for r in rows):.2f} | {svc.peak_rss / 2**20:.0f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=1, help="jobs per client")
    ap.add_argument("--quick", action="store_true", help="64 slices only for the throughput")
    ap.add_argument("--big-clients", type=int, default=0,
                    help="concurrent clients for the 300-slice throughput (default --clients)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ephemesh-bench-service-"))
    load = os.getloadavg()
    started = time.time()
    try:
        lines = [f"## Service (bench/service.py), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
                 "", f"Machine: {os.cpu_count()} cores, "
                 f"{psutil.virtual_memory().total / 2**30:.0f} GiB; load average before "
                 f"{load[0]:.1f} (shared with other work: compare ratios).", ""]
        lines += overhead(work, args.runs)
        lines += ["### Throughput: concurrent clients each sending jobs and waiting with `?wait=`",
                  "",
                  "| slices | workers | clients × jobs | jobs/min | queue wait p50 s | p95 s | "
                  "job end to end median s | service peak RSS MiB |",
                  "|---|---|---|---|---|---|---|---|"]
        for slices in ((64,) if args.quick else (64, 300)):
            for workers in (1, 2):
                clients = args.big_clients or args.clients if slices == 300 else args.clients
                lines.append(throughput(work, slices, workers, clients, args.jobs))
                print(lines[-1], file=sys.stderr, flush=True)
        lines += ["", f"Run took {time.time() - started:.0f} s; load average after "
                  f"{os.getloadavg()[0]:.1f}.", ""]
        print("\n".join(lines))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
