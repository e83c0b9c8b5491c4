"""``ephemesh serve`` as a child process for the tests that need the whole
service: web through waitress, workers, cron and a private Redis.  With
``slow_by`` it is the slow ephemesh of ``tests/slow.py`` (its conversions
sleep after each progress report).  ``Relay`` records what a browser sends."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil

from tests import slow
from tests.helpers import ROOT, free_port


def ephemesh_script() -> str:
    """The ``ephemesh`` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "ephemesh"
    assert script.exists(), f"{script} is missing: run scripts/setup.sh"
    return str(script)


class Served:
    def __init__(self, root: Path, workers: int = 1, slow_by=None, **env):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "serve.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("EPHEMESH_")}
        self.env.update({"EPHEMESH_DATA_DIR": str(root / "data"),
                         "EPHEMESH_SECRET_KEY": "served-test-secret",
                         **{k: str(v) for k, v in env.items()}})
        # the installed console script, run from outside the checkout: what a
        # user runs (a stale editable install shows up here, not in a user's hands)
        command = [ephemesh_script()]
        if slow_by:
            command = slow.command(slow_by)
            self.env["PYTHONPATH"] = str(ROOT)  # for `tests.slow`, from outside the checkout
        self.args = [*command, "serve", "--port", str(self.port), "--workers", str(workers)]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> Served:
        self.root.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # open while the service runs
        self.proc = subprocess.Popen(self.args, env=self.env, cwd=self.root, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"ephemesh serve exited: {self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/privacy", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"ephemesh serve did not answer: {self.log()}")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as systemd would; SIGKILL the group only if it hangs."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            # the private Redis runs in a session of its own: known by pid, not group
            children = psutil.Process(self.proc.pid).children(recursive=True)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                for child in children:
                    try:
                        child.kill()
                    except psutil.Error:
                        pass
        self._log.close()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Relay:
    """A TCP relay in front of a served instance that keeps every byte a
    client sends through it (the recording proxy of the browser tests: point
    the browser at ``url``, then search ``sent``)."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.sent = bytearray()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []

    def start(self) -> Relay:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self):
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            self._open += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source, sink, record):
        try:
            while data := source.recv(65536):
                if record:
                    with self._lock:
                        self.sent += data
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> bytes:
        """Close everything; return every byte clients sent."""
        if self._listener is not None:
            self._listener.close()
        for s in self._open:
            try:
                s.close()
            except OSError:
                pass
        with self._lock:
            return bytes(self.sent)
