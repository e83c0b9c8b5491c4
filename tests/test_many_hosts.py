"""Many hosts on one machine, in network namespaces this test makes (``ip
netns``, veth pairs on a bridge in a namespace of their own; nothing on the
machine's own interfaces): Redis and a throwaway PostgreSQL cluster in
``db``, two worker hosts (``ephemesh worker --health-port``) and a web host
(``ephemesh serve --no-workers`` and ``ephemesh cron``), each with its own
data directory — no shared directory, the Redis store, PostgreSQL records.

50 jobs go through the API; mid-run one worker host's link goes down and
comes back.  Every job ends ``done`` or with a stable error code, none ends
twice, every upload is gone (none late), the ledger has one row per upload,
the web's ``/readyz`` stays ready and the cut-off worker's goes unready and
ready again.  Skipped, saying why, only where network namespaces cannot be
made (not root, no ``ip netns``)."""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests import dicomgen as G
from tests.helpers import ROOT, zip_bytes
from worker.runtime import redis_server_binary

JOBS = 50
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no ip(8) command"
    probe = f"emprobe{secrets.token_hex(3)}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@contextmanager
def inside(ns: str):
    """Run the block's sockets in namespace ``ns`` (this thread only: setns)."""
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    there = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(there, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        yield
    finally:
        if _libc.setns(here, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns back")
        os.close(here)
        os.close(there)


class Network:
    """A bridge in namespace ``sw`` and one namespace per host, 10.N.0.x/24."""

    def __init__(self):
        self.tag = secrets.token_hex(2)
        self.net = f"10.{100 + secrets.randbelow(100)}.{secrets.randbelow(250)}"
        self.sw = f"em{self.tag}sw"
        self.hosts: dict[str, str] = {}
        self.made: list[str] = []

    def ns(self, host):
        return f"em{self.tag}{host}"

    def start(self):
        _ip("netns", "add", self.sw)
        self.made.append(self.sw)
        _ip("-n", self.sw, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.sw, "link", "set", "br0", "up")
        return self

    def add(self, host: str) -> str:
        ns, n = self.ns(host), len(self.hosts) + 1
        address = f"{self.net}.{n}"
        _ip("netns", "add", ns)
        self.made.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", f"em{self.tag}{n}a", "type", "veth", "peer", "name", f"em{self.tag}{n}b")
        _ip("link", "set", f"em{self.tag}{n}a", "netns", ns)
        _ip("link", "set", f"em{self.tag}{n}b", "netns", self.sw)
        _ip("-n", ns, "link", "set", f"em{self.tag}{n}a", "name", "eth0")
        _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", self.sw, "link", "set", f"em{self.tag}{n}b", "master", "br0")
        _ip("-n", self.sw, "link", "set", f"em{self.tag}{n}b", "up")
        self.hosts[host] = address
        return address

    def link(self, host: str, up: bool) -> None:
        """The host's cable at the switch, plugged or pulled."""
        n = list(self.hosts).index(host) + 1
        _ip("-n", self.sw, "link", "set", f"em{self.tag}{n}b", "up" if up else "down")

    def stop(self):
        for ns in reversed(self.made):
            _ip("netns", "del", ns, check=False)


def _get(url, timeout=5.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return None, b""


def _post_job(url, key, body: bytes):
    boundary = "emb" + secrets.token_hex(8)
    data = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
            f"filename=\"s.zip\"\r\nContent-Type: application/zip\r\n\r\n").encode() + body + \
        f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={
        "Authorization": f"Bearer {key}", "Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _until(predicate, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def network():
    why = _netns_unavailable()
    if why:
        pytest.skip(f"the many-host test needs network namespaces: {why}")
    assert _postgres_bin() is not None, "no PostgreSQL initdb: run scripts/setup.sh --test"
    net = Network().start()
    yield net
    net.stop()


def test_many_hosts_in_network_namespaces(network, tmp_path):
    net, procs = network, []
    db, w1, w2, web = (net.add(h) for h in ("db", "w1", "w2", "web"))
    # PostgreSQL's files: a directory the postgres user can reach (pytest's is root's, 0700)
    pg_dir = Path(tempfile.mkdtemp(prefix="ephemesh-netns-pg-"))
    shutil.chown(pg_dir, "postgres")
    as_pg = ["runuser", "-u", "postgres", "--"]
    pg = _postgres_bin()

    def run_in(host, argv, log, **env):
        full = {**{k: v for k, v in os.environ.items() if not k.startswith("EPHEMESH_")}, **env}
        out = open(tmp_path / f"{log}.log", "ab")
        procs.append((subprocess.Popen(["ip", "netns", "exec", net.ns(host), *argv], env=full,
                                       cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True), out))
        return procs[-1][0]

    key_env = {}
    try:
        # --- the db host: Redis (persistence off) and a fresh PostgreSQL cluster
        run_in("db", [redis_server_binary(), "--bind", db, "--port", "6379", "--save", "",
                      "--appendonly", "no", "--protected-mode", "no", "--dir", str(tmp_path)],
               "redis")
        subprocess.run([*as_pg, str(pg / "initdb"), "-D", str(pg_dir), "-U", "postgres",
                        "--auth=trust", "-N"], check=True, capture_output=True, timeout=60)
        with open(pg_dir / "pg_hba.conf", "a") as hba:  # the other hosts, on this test's net only
            hba.write(f"host all all {net.net}.0/24 trust\n")
        subprocess.run(["ip", "netns", "exec", net.ns("db"), *as_pg, str(pg / "pg_ctl"), "-D",
                        str(pg_dir), "-l", str(pg_dir / "log"), "-w", "-t", "30", "-o",
                        f"-c listen_addresses={db} -p 5432 -k {pg_dir} -c fsync=off", "start"],
                       check=True, capture_output=True, timeout=60)
        made_db = subprocess.run(["ip", "netns", "exec", net.ns("db"), *as_pg,
                                  str(pg / "createdb"), "-h", db, "-U", "postgres", "ephemesh"],
                                 timeout=30, capture_output=True, text=True)
        assert made_db.returncode == 0, made_db.stderr
        common = {
            "EPHEMESH_REDIS_URL": f"redis://{db}:6379/0",
            "EPHEMESH_DATABASE_URL": f"postgresql+psycopg://postgres@{db}:5432/ephemesh",
            "EPHEMESH_STORE": "redis", "EPHEMESH_SWEEP_SECONDS": "2",
            "EPHEMESH_RETENTION_SECONDS": "900", "EPHEMESH_SECRET_KEY": "many-hosts",
            "EPHEMESH_JOB_THREADS": "1", "EPHEMESH_JOB_MEMORY_MB": "1024",
            "EPHEMESH_LOG_FORMAT": "json",
            # 50 uploads from one client in seconds: above the default upload limit
            "EPHEMESH_UPLOAD_RATE_LIMIT": "600/minute", "EPHEMESH_KEY_RATE_LIMIT": "6000/minute",
        }

        def host_env(host):  # its own data directory: nothing shared but Redis and PostgreSQL
            return {**common, "EPHEMESH_DATA_DIR": str(tmp_path / host)}

        cli = [sys.executable, "-m", "web.cli"]
        migrate = subprocess.run(["ip", "netns", "exec", net.ns("web"), *cli, "db", "upgrade"],
                                 cwd=ROOT, env={**os.environ, **host_env("web")},
                                 capture_output=True, text=True, timeout=60)
        assert migrate.returncode == 0, migrate.stderr
        made = subprocess.run(["ip", "netns", "exec", net.ns("web"), *cli, "keys", "create",
                               "hosts"], cwd=ROOT, env={**os.environ, **host_env("web")},
                              capture_output=True, text=True, timeout=60)
        key = made.stdout.strip().splitlines()[-1]
        key_env["key"] = key
        for host in ("w1", "w2"):
            run_in(host, [*cli, "worker", "-n", "1", "--health-port", "9100"], host,
                   **host_env(host))
        run_in("web", [*cli, "serve", "--no-workers", "--keep-on-stop", "--host", web,
                       "--port", "8000"], "web", **host_env("web"))
        run_in("web", [*cli, "cron"], "cron", **host_env("web"))

        base = f"http://{web}:8000"
        folder = G.make_series_dir(tmp_path / "series", "sphere", size=(12, 20, 20))
        upload = zip_bytes({p.name: p.read_bytes() for p in sorted(folder.iterdir())})
        with inside(net.ns("web")):
            _until(lambda: _get(base + "/readyz")[0] == 200, 60, "the web host to be ready")
            for addr in (w1, w2):
                _until(lambda a=addr: _get(f"http://{a}:9100/readyz")[0] == 200, 60,
                       "the worker hosts to be ready")
            jobs = [_post_job(base + "/api/v1/jobs", key, upload) for _ in range(JOBS)]
            web_ready = []

            def ended():  # one request for all of them (GET /api/v1/jobs), not one each
                web_ready.append(_get(base + "/readyz")[0])
                views = _listing(base, key) or []
                done = [v for v in views if v["status"] in ("done", "failed")]
                return views if len(done) >= len(jobs) else None

            # mid-run: w1's cable is pulled, then plugged back
            _until(lambda: (lambda v: v and len([j for j in v if j["status"] == "done"]) >= 8)(
                _listing(base, key)), 90, "a few jobs done")
        net.link("w1", up=False)
        with inside(net.ns("w1")):
            cut = _until(lambda: (lambda r: r[0] == 503 and r)(_get("http://127.0.0.1:9100/readyz")),
                         20, "the cut-off worker to turn unready")
        cut_body = json.loads(cut[1])
        with inside(net.ns("web")):
            web_ready.append(_get(base + "/readyz")[0])
            time.sleep(4)
            web_ready.append(_get(base + "/readyz")[0])
        net.link("w1", up=True)
        with inside(net.ns("w1")):
            _until(lambda: _get("http://127.0.0.1:9100/readyz")[0] == 200, 30,
                   "the worker to be ready again")
        with inside(net.ns("web")):
            views = _until(ended, 150, "every job to end")
            metrics = _get(base + "/metrics")[1].decode()
        assert "redis" in cut_body["failing"]
        assert set(web_ready) == {200}, web_ready

        # --- every job ended once, done or with a stable code
        ids = {j["id"] for j in jobs}
        by_id = {v["id"]: v for v in views if v["id"] in ids}
        assert set(by_id) == ids
        codes = {v["error"]["code"] for v in by_id.values() if v["status"] == "failed"}
        # a job whose worker lost Redis mid-conversion goes on (its progress dropped) and
        # one writing its result to the Redis store waits for the link; but one whose work
        # horse starts while cut off cannot open the records (PostgreSQL, over the same
        # link) or read its upload, and ends internal_error
        assert codes <= {"worker_crashed", "timeout", "input_missing", "expired",
                         "internal_error"}, codes
        assert sum(v["status"] == "done" for v in by_id.values()) >= JOBS - 5
        from prometheus_client.parser import text_string_to_metric_families

        ended_total = sum(s.value for f in text_string_to_metric_families(metrics)
                          if f.name == "ephemesh_jobs" for s in f.samples
                          if s.name == "ephemesh_jobs_total")
        assert ended_total == JOBS  # none ended twice

        # --- every upload gone, none late, one ledger row each (read on the db host);
        # the cut-off worker's upload may be the sweeper's to take: a few sweeps' time
        with inside(net.ns("web")):
            import psycopg
            import redis

            for _ in range(30):
                with psycopg.connect(f"postgresql://postgres@{db}:5432/ephemesh") as c:
                    rows = c.execute("SELECT object_id, reason, late, deleted, deadline FROM "
                                     "purge_ledger WHERE kind = 'input'").fetchall()
                r = redis.Redis.from_url(common["EPHEMESH_REDIS_URL"])
                inputs_left = [k for k in r.scan_iter("ephemesh:store:input:*")]
                r.close()
                if len({row[0] for row in rows if row[0] in ids}) == JOBS and not inputs_left:
                    break
                time.sleep(1)
        uploads = [row for row in rows if row[0] in ids]
        assert len(uploads) == JOBS and len({row[0] for row in uploads}) == JOBS
        assert not [row for row in uploads if row[2] or row[3] > row[4]]
        assert inputs_left == []
    finally:
        for proc, _out in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
        for proc, out in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(5)
            out.close()
        subprocess.run(["ip", "netns", "exec", net.ns("db"), *as_pg, str(pg / "pg_ctl"), "-D",
                        str(pg_dir), "-m", "immediate", "stop"], capture_output=True, timeout=30)
        shutil.rmtree(pg_dir, ignore_errors=True)


def _listing(base, key):
    req = urllib.request.Request(base + f"/api/v1/jobs?limit={JOBS}",
                                 headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = json.loads(resp.read())
    except OSError:
        return None
    return body.get("jobs") if isinstance(body, dict) else body
