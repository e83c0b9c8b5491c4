"""Helpers the test modules share (fixtures live in the conftest files).

Settings for a test installation, a private redis-server, a cable to it
that can be pulled, waiting for a real process, the RQ worker processes of a
pool, what the directory store holds, a page's CSRF token, zips.
"""

from __future__ import annotations

import io
import re
import socket
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import psutil

from worker.config import Settings
from worker.runtime import redis_server_binary
from worker.states import STORED

ROOT = Path(__file__).resolve().parent.parent


def make_settings(root: Path, redis_url: str, *, store="directory", database_url=None,
                  retention=3600, sweep=60, access_days=30, job_memory_mb=0,
                  job_threads=0) -> Settings:
    """Settings of one test installation under ``root`` (data, store) on ``redis_url``."""
    env = {
        "EPHEMESH_DATA_DIR": str(root / "data"),
        "EPHEMESH_REDIS_URL": redis_url,
        "EPHEMESH_STORE": "redis" if store == "redis" else str(root / "store"),
        "EPHEMESH_RETENTION_SECONDS": str(retention),
        "EPHEMESH_SWEEP_SECONDS": str(sweep),
        "EPHEMESH_ACCESS_LOG_DAYS": str(access_days),
        "EPHEMESH_JOB_MEMORY_MB": str(job_memory_mb),
        "EPHEMESH_JOB_THREADS": str(job_threads),
    }
    if database_url:
        env["EPHEMESH_DATABASE_URL"] = database_url
    return Settings.from_env(env)


def wait_for(predicate, timeout=60, what="a condition"):
    """Poll ``predicate`` every 0.1 s; return its first true value, or fail
    after ``timeout`` seconds naming ``what`` was awaited."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisProcess:
    """A private redis-server on a free loopback port; ``restart()`` loses
    everything (no persistence)."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, 10, "the private redis-server to start")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class Cable:
    """A TCP relay to a server on this machine whose cable can be pulled, as a
    host's link goes down: while it is out nothing moves either way on any
    connection, old or new (no error, no refusal: the bytes wait, as TCP
    retransmits), and once it is back they move again — those of the
    connections made while it was out first, the older ones ``late_by``
    seconds later (a request sent before the cut, whose client gave up and
    tried again, reaches the server after the new try)."""

    def __init__(self, port: int):
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.gates: list[threading.Event] = []  # one per connection: set while bytes move
        self.sockets: list[socket.socket] = []
        self.out = False
        self.trigger: tuple | None = None  # (request bytes, for_s, late_by)
        self.plugger: threading.Thread | None = None
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def pull(self, for_s: float, late_by: float = 0.0) -> None:
        """Out now, back ``for_s`` seconds later (``wait()`` for it)."""
        with self.lock:
            self._pull(for_s, late_by)

    def pull_on(self, trigger: bytes, for_s: float, late_by: float = 0.0) -> None:
        """Out just as a request holding ``trigger`` goes by (it waits too)."""
        with self.lock:
            self.trigger = (trigger, for_s, late_by)

    def wait(self, timeout: float = 60) -> None:
        """Until the cable is back and every byte it held has moved on."""
        wait_for(lambda: self.plugger is not None, timeout, "the cable to be pulled")
        self.plugger.join(timeout)

    def close(self) -> None:
        self.listener.close()
        with self.lock:
            for gate in self.gates:
                gate.set()
            for sock in self.sockets:
                sock.close()

    def _pull(self, for_s, late_by):  # with the lock held
        self.out, self.trigger = True, None
        before = list(self.gates)
        for gate in before:
            gate.clear()
        self.plugger = threading.Thread(target=self._plug, args=(for_s, late_by, before),
                                        daemon=True)
        self.plugger.start()

    def _plug(self, for_s, late_by, before):
        time.sleep(for_s)
        with self.lock:
            self.out = False
            for gate in self.gates:
                if gate not in before:
                    gate.set()
        time.sleep(late_by)
        with self.lock:
            for gate in before:
                gate.set()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                return
            gate = threading.Event()
            with self.lock:
                if not self.out:
                    gate.set()
                self.gates.append(gate)
                self.sockets += [client, upstream]
            for src, dst, ask in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(src, dst, gate, ask),
                                 daemon=True).start()

    def _pump(self, src, dst, gate, ask):
        try:
            while True:
                data = src.recv(1 << 16)
                if ask and data:
                    with self.lock:
                        if self.trigger is not None and self.trigger[0] in data:
                            self._pull(*self.trigger[1:])
                gate.wait()
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
        except OSError:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def worker_pids(pool_proc) -> list[int]:
    """PIDs of the RQ worker processes under an ``ephemesh worker`` pool."""
    try:
        return [c.pid for c in psutil.Process(pool_proc.pid).children()]
    except psutil.NoSuchProcess:
        return []


def store_objects(settings) -> list[Path]:
    """Everything in the directory store (input and result objects, leftovers)."""
    root = Path(settings.store)
    return [p for kind in STORED if (root / kind).exists() for p in (root / kind).iterdir()]


def csrf_token(client, path="/") -> str:
    html = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def dciodvfy_errors(tmp_path: Path, instance: bytes) -> list[str]:
    """The error lines of dicom3tools' ``dciodvfy`` on ``instance``; fails
    when it does not recognise the IOD at all."""
    import shutil

    dciodvfy = shutil.which("dciodvfy")
    assert dciodvfy, "dciodvfy (Debian's dicom3tools) is missing: run scripts/setup.sh --test"
    path = tmp_path / f"checked-{time.monotonic_ns()}.dcm"
    path.write_bytes(instance)
    out = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
    report = out.stdout + out.stderr
    assert "EncapsulatedSTL" in report, report
    return [line for line in report.splitlines() if line.startswith("Error")]


def served_redis_text(root: Path) -> str:
    """Every key and value of a served instance's private Redis (under
    ``root/data``), as text for a canary search."""
    import redis

    conn = redis.Redis(unix_socket_path=str(root / "data" / "redis.sock"))
    text = []
    for k in conn.scan_iter(count=1000):
        text.append(k.decode(errors="replace"))
        dumped = conn.dump(k)
        if dumped:
            text.append(dumped.decode("latin-1"))
    conn.close()
    return "\n".join(text)


def raw_request(port: int, data: bytes) -> tuple[int, dict, bytes]:
    """Send ``data`` as it is to ``127.0.0.1:port``; the answer's status,
    headers (lower-case names) and body, read until the server closes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(data)
    out = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
    except OSError:
        pass
    sock.close()
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return int(lines[0].split()[1]), headers, body
