"""deploy/nginx/ephemesh.conf for real: Debian's nginx with the example (only
its ports, paths and certificate templated) in front of a served ephemesh:
a normal upload goes through, nginx's own refusals on the API are
problem+json, one address holds at most 32 requests at once, and clients
trickling their headers or their body are cut by nginx's timeouts.  About
25 s."""

import http.client
import json
import os
import select
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.helpers import ROOT, free_port
from tests.web.served import Served, ephemesh_script

EXAMPLE = ROOT / "deploy" / "nginx" / "ephemesh.conf"


def _nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


NGINX = _nginx()
pytestmark = pytest.mark.skipif(
    NGINX is None, reason="no nginx binary: scripts/setup.sh --test installs Debian's nginx-light")


def _certificate(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def templated(text: str, **values) -> str:
    """The example with its ports, paths and certificate replaced (each must be there)."""
    swaps = {"server 127.0.0.1:8000;": f"server 127.0.0.1:{values['upstream']};",
             "listen 443 ssl http2;": f"listen 127.0.0.1:{values['https']} ssl http2;",
             "listen 80;": f"listen 127.0.0.1:{values['http']};",
             "/etc/ssl/ephemesh/fullchain.pem": str(values["cert"]),
             "/etc/ssl/ephemesh/privkey.pem": str(values["key"]),
             "/dev/shm/nginx-ephemesh-body": str(values["body"])}
    for old, new in swaps.items():
        assert old in text, f"the example no longer says {old!r}"
        text = text.replace(old, new)
    return text


class Nginx:
    def __init__(self, root: Path, upstream: int):
        self.root, self.port = root, free_port()
        root.mkdir(parents=True, exist_ok=True)
        cert, key = _certificate(root)
        body = root / "body"
        site = templated(EXAMPLE.read_text(), upstream=upstream, https=self.port,
                         http=free_port(), cert=cert, key=key, body=body)
        (root / "ephemesh.conf").write_text(site)
        user = "user root;" if os.geteuid() == 0 else ""
        temp = " ".join(f"{kind}_temp_path {root / kind};"
                        for kind in ("proxy", "fastcgi", "uwsgi", "scgi"))
        (root / "nginx.conf").write_text(
            f"daemon off; worker_processes 1; pid {root / 'nginx.pid'}; {user}\n"
            f"error_log {root / 'error.log'} info;\n"
            "events { worker_connections 256; }\n"
            f"http {{ {temp} include {root / 'ephemesh.conf'}; }}\n")
        self.args = [NGINX, "-p", f"{root}/", "-c", str(root / "nginx.conf"),
                     "-e", str(root / "error.log")]
        self.proc = None

    def start(self):
        check = subprocess.run([*self.args, "-t"], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        end = time.monotonic() + 15
        while time.monotonic() < end:
            assert self.proc.poll() is None, self.log()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"nginx did not listen: {self.log()}")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        path = self.root / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _multipart(files: list[bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = bytearray()
    for i, data in enumerate(files):
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
                f"filename=\"{i}.dcm\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def _request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=_tls())
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def _cut(sock) -> bool:
    try:
        return sock.recv(4096) == b""
    except (OSError, ssl.SSLError):
        return True


def test_the_nginx_example_passes_uploads_and_cuts_tricklers(tmp_path, series_files, redis_url):
    served = Served(tmp_path / "svc", EPHEMESH_TRUSTED_PROXIES=1, EPHEMESH_REDIS_URL=redis_url)
    served.args.append("--no-workers")  # the upload is queued; nothing here converts it
    served.start()
    nginx = None
    try:
        made = subprocess.run([ephemesh_script(), "keys", "create", "nginx-test"],
                              env=served.env, cwd=served.root, capture_output=True, text=True,
                              timeout=60)
        assert made.returncode == 0, made.stderr
        auth = {"Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"}
        nginx = Nginx(tmp_path / "nginx", served.port).start()

        # tricklers: one sends its headers a byte every 2 s, one its body a byte every 9 s
        started = time.monotonic()
        tls = _tls()
        header = tls.wrap_socket(socket.create_connection(("127.0.0.1", nginx.port)))
        header_line = b"GET /privacy HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 50
        body = tls.wrap_socket(socket.create_connection(("127.0.0.1", nginx.port)))
        body.sendall(b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/octet-stream\r\nContent-Length: 1000\r\n\r\nz")
        tricklers = {header: ("header", 2.0, iter(header_line)),
                     body: ("body", 9.0, iter(b"z" * 999))}
        next_send = {header: 0.0, body: 9.0}

        # meanwhile a normal upload goes through
        form, content_type = _multipart(series_files)
        status, _h, answer = _request(nginx.port, "POST", "/api/v1/jobs", form,
                                      {**auth, "Content-Type": content_type})
        assert status == 202, answer
        job = json.loads(answer)
        status, _h, answer = _request(nginx.port, "GET", job["links"]["self"], None, auth)
        assert status == 200 and json.loads(answer)["id"] == job["id"]
        # nginx's own refusal of an oversized body: problem+json, before the body
        status, headers, answer = _request(nginx.port, "POST", "/api/v1/jobs", None, {
            **auth, "Content-Type": content_type, "Content-Length": str(2 * 1024 ** 3)})
        assert status == 413 and headers["Content-Type"] == "application/problem+json"
        assert json.loads(answer)["code"] == "too_large"

        # limit_conn: 32 requests at once from one address (the body trickler
        # is one), the next is refused as problem+json
        post = (b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: "
                b"application/octet-stream\r\nContent-Length: 1000\r\n\r\n")
        holders = []
        for _ in range(31):
            holder = tls.wrap_socket(socket.create_connection(("127.0.0.1", nginx.port)))
            holder.sendall(post)
            holders.append(holder)
        time.sleep(1)  # nginx has read their headers
        status, headers, answer = _request(nginx.port, "POST", "/api/v1/jobs", b"z" * 10,
                                           {**auth, "Content-Type": "application/octet-stream"})
        assert status == 429 and headers["Content-Type"] == "application/problem+json", answer
        assert json.loads(answer)["code"] == "rate_limited" and headers["Retry-After"] == "10"
        for holder in holders:
            holder.close()

        cut = {}
        while len(cut) < len(tricklers) and time.monotonic() - started < 25:
            now = time.monotonic() - started
            for s, (kind, every, rest) in tricklers.items():
                if s not in cut and now >= next_send[s]:
                    try:
                        s.send(bytes([next(rest)]))
                    except OSError:
                        cut[s] = (kind, now)
                    next_send[s] = now + every
            ready, _, _ = select.select([s for s in tricklers if s not in cut], [], [], 0.2)
            for s in ready:
                if _cut(s):
                    cut[s] = (tricklers[s][0], time.monotonic() - started)
        seen = {kind: round(t, 1) for kind, t in cut.values()}
        print(f"\nnginx cut the header trickler after {seen.get('header')} s and the body "
              f"trickler after {seen.get('body')} s")
        # client_header_timeout 10s; client_body_timeout 8s (the next byte comes after 9 s)
        assert 9 <= seen.get("header", 0) <= 14, seen
        assert 7 <= seen.get("body", 0) <= 12, seen
        for s in tricklers:
            s.close()
    finally:
        if nginx is not None:
            nginx.stop()
        assert served.stop() == 0, served.log()
    assert "Traceback" not in served.log()
