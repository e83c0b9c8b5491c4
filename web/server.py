"""waitress, set up for ``ephemesh serve``.

* **Where bytes land.** waitress keeps a request body in memory up to
  512 kB and beyond that in a temporary file, and does the same with a
  response the client reads slowly; both come from ``tempfile`` in the
  system's temporary directory (``/tmp``, usually a disk) before Flask sees
  a byte.  ``serve`` points this process's temporary directory (and its
  children's ``TMPDIR``) at the spool directory, next to the store, so an
  upload and a model only ever sit in the store and the spool directory —
  put both on a tmpfs.
* **Refusals.** waitress answers some requests itself, without calling the
  app: a body over the cap (413; the cap is the app's
  ``MAX_CONTENT_LENGTH``, so an oversized upload is refused before it is
  read), a malformed request (400), headers too large (431), a transfer
  coding it does not know (501).  Those answers are made here like the
  app's own refusals: ``application/problem+json`` with a stable ``code``
  on the API (or when the client asks for JSON), the error page otherwise,
  with the same security headers.  They never reach the app, so they have
  no access-log row.
* **Port.** The listening socket is bound before anything else starts, so
  a port in use is one line and nothing to stop.
* **Slow clients.** A connection may not hold one of the server's
  ``EPHEMESH_CONNECTION_LIMIT`` slots by trickling: the request line and
  headers must have arrived ``EPHEMESH_CLIENT_TIMEOUT`` seconds after the
  request's first byte (or after the connection opened), and while a body
  comes in, or a response goes out, each period of that length must move
  at least ``EPHEMESH_MIN_BODY_RATE`` bytes a second (the rest of the body
  when that is less).  A connection that does not is closed without an
  answer (``cut_slow_clients``, run from waitress's own maintenance pass
  every second, in its event loop: no thread, no proxy).  While the app
  works on a request nothing is cut; an idle keep-alive connection closes
  after waitress's 120 s.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import tempfile
import time
from urllib.parse import urlsplit

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ErrorTask
from werkzeug.http import HTTP_STATUS_CODES

from . import problems, security

log = logging.getLogger("ephemesh.web")

MB = 1024 * 1024
#: bytes of a request line kept to word waitress's refusals (its path)
HEAD_KEPT = 2048

#: waitress's own refusals → (code, detail); 413 is worded from the app's cap
WAITRESS_CODES = {
    400: ("bad_request", "The request could not be understood."),
    413: ("too_large", None),
    431: ("headers_too_large", "The request's headers are too large."),
    500: ("internal_error", "Something went wrong on our side; nothing was kept."),
    501: ("not_implemented", "The request uses a transfer coding this server does not accept."),
}


def refusal(app, status: int, path: str, accept: str) -> tuple[str, list, bytes]:
    """``(status line, headers, body)`` of the app's refusal for a request
    that waitress refused by itself (the app's problem+json or error page)."""
    code, detail = WAITRESS_CODES.get(status, ("http_error", "The request was refused."))
    if status == 413:
        detail = f"The upload is larger than {app.config['MAX_CONTENT_LENGTH'] // MB} MB."
    headers = {"Accept": accept} if accept else {}
    with app.test_request_context(path or "/", headers=headers):
        resp = problems.respond(status, code, detail)
        security.add_headers(resp)
        body = resp.get_data()
        out = [(k, v) for k, v in resp.headers.items()
               if k.lower() not in ("content-length", "set-cookie", "vary")]
    return f"{status} {HTTP_STATUS_CODES.get(status, 'Error')}", out, body


def requested_path(head: bytes) -> str | None:
    """The path of a request line (``head``: its first bytes, maybe cut
    short), or None when there is none to read."""
    parts = head.split(b"\n", 1)[0].split()
    if len(parts) < 2:
        return None
    path = urlsplit(parts[1].decode("latin-1")).path
    return path[:2048] if path.startswith("/") else None


class AppErrorTask(ErrorTask):
    """waitress's error answer, made by the app (see ``refusal``)."""

    def execute(self):
        app = self.channel.server.flask_app  # .application is waitress's wrapper
        status = getattr(self.request.error, "code", 500)
        try:
            # the path as sent: waitress parses an oversized or malformed
            # request as "GET /", and its refusal on /api would be a page
            path = requested_path(getattr(self.channel, "first_line", b"")) or (
                self.request.path if isinstance(getattr(self.request, "path", None), str)
                else "/")
            accept = self.request.headers.get("ACCEPT", "")
            line, headers, body = refusal(app, status, path, accept)
        except Exception:  # fall back to waitress's plain text
            log.error("could not render waitress's %s refusal", status)
            super().execute()
            return
        self.status = line
        self.response_headers.extend(headers)
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class AppChannel(HTTPChannel):
    """waitress's channel with the app's refusals and what ``cut_slow_clients``
    needs: when the request being read began, whether any request was read,
    and the bytes moved in the current period."""

    error_task_class = AppErrorTask

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.request_started = self.creation_time
        self.first_line = b""  # the request line as sent (its first bytes), for refusals
        self.served_any = False
        self.period_start = None  # body or response: start of the current period
        self.period_bytes = 0
        self.period_outbuf = 0

    def received(self, data):
        if self.request is None:
            self.request_started = time.time()  # a new request's first byte
            self.first_line = b""
        if len(self.first_line) < HEAD_KEPT and b"\n" not in self.first_line:
            self.first_line += data[:HEAD_KEPT - len(self.first_line)]
        elif self.request.headers_finished:
            self.period_bytes += len(data)
        done = super().received(data)
        request = self.request
        if request is None or request.completed:
            self.served_any = self.served_any or request is None
            self.period_start = None
        elif request.headers_finished and self.period_start is None:
            self.period_start, self.period_bytes = time.time(), 0
        return done

    def send_continue(self):
        # waitress would say "100 Continue" to a request it has just refused
        # (a body over the cap), and the client would start sending it
        if self.request is not None and self.request.error is not None:
            self.request.expect_continue = False
            return
        super().send_continue()


def _too_slow(channel, now: float, timeout: float, rate: int) -> bool:
    """Whether ``channel`` (an ``AppChannel``) trickles (see the module's text)."""
    if channel.requests or channel.will_close:
        return False  # the app works on a request, or it closes anyway
    request = channel.request
    if request is None:
        if channel.total_outbufs_len and rate:  # a response the client reads
            if channel.period_start is None:
                channel.period_start, channel.period_outbuf = now, channel.total_outbufs_len
                return False
            if now - channel.period_start < timeout:
                return False
            moved = channel.period_outbuf - channel.total_outbufs_len
            if moved < min(rate * timeout, channel.period_outbuf):
                return True
            channel.period_start, channel.period_outbuf = now, channel.total_outbufs_len
            return False
        channel.period_start = None
        # a fresh connection must send its request in time; between requests
        # waitress's idle timeout applies
        return not channel.served_any and now - channel.creation_time > timeout
    if not request.headers_finished:
        return now - channel.request_started > timeout
    if not rate or channel.period_start is None or now - channel.period_start < timeout:
        return False
    need = rate * timeout
    remain = getattr(request.body_rcv, "remain", None)  # a Content-Length body's rest
    if remain is not None:
        need = min(need, remain + channel.period_bytes)
    if channel.period_bytes < need:
        return True
    channel.period_start, channel.period_bytes = now, 0
    return False


def cut_slow_clients(server, now: float, timeout: float, rate: int) -> int:
    """Close the connections of ``server`` that trickle; returns how many."""
    cut = 0
    for channel in list(server.active_channels.values()):
        if isinstance(channel, AppChannel) and _too_slow(channel, now, timeout, rate):
            channel.will_close = True  # waitress closes it on its next pass
            cut += 1
    if cut:
        log.info("closed %d slow connection(s)", cut)
    return cut


def allow_open_files(connections: int) -> int:
    """Raise this process's open-file limit so ``connections`` sockets fit (as
    far as the hard limit allows); returns the connection limit that fits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + 256  # the database, Redis, the store, the spool
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    if soft == resource.RLIM_INFINITY:
        return connections
    return max(1, min(connections, soft - 256))


def listen(host: str, port: int) -> list[socket.socket]:
    """Bound, listening sockets for ``host:port`` (every address it names);
    raises OSError (port in use, no such address)."""
    infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0,
                               socket.AI_PASSIVE)
    sockets, seen = [], set()
    both = {info[0] for info in infos} >= {socket.AF_INET, socket.AF_INET6}
    try:
        for family, kind, proto, _name, address in infos:
            if address in seen:
                continue
            seen.add(address)
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and both:  # each family on its own socket
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(1024)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def use_spool_for_temporary_files(spool_dir) -> None:
    """This process's temporary files (waitress's request and response
    buffers) and its future children's go to ``spool_dir``."""
    spool = str(spool_dir)
    os.makedirs(spool, mode=0o700, exist_ok=True)
    os.chmod(spool, 0o700)
    tempfile.tempdir = spool
    os.environ["TMPDIR"] = spool


#: bytes asked of a connection's socket per read
RECV_BYTES = 1 << 20


def make_server(app, sockets, *, threads: int):
    """The waitress server for ``app`` on the bound ``sockets``: the body cap
    is the app's ``MAX_CONTENT_LENGTH``; refusals are the app's; slow
    clients are cut (``cut_slow_clients``)."""
    cfg = app.config
    connections = allow_open_files(cfg["EPHEMESH_CONNECTION_LIMIT"])
    if connections < cfg["EPHEMESH_CONNECTION_LIMIT"]:
        log.warning("only %d connections fit under the open-file limit", connections)
    server = create_server(
        app, sockets=sockets, threads=threads, ident="ephemesh",
        connection_limit=connections,
        cleanup_interval=1,  # the slow-client checks run in this pass
        channel_timeout=120,
        # a body is read RECV_BYTES at a time (waitress's 8 KiB made a 150 MB
        # upload 18 000 turns of its loop)
        recv_bytes=RECV_BYTES,
        # waitress refuses a Content-Length >= this before reading the body
        max_request_body_size=app.config["MAX_CONTENT_LENGTH"] + 1,
        # with no proxy declared, X-Forwarded-* are a client's lies: dropped;
        # behind EPHEMESH_TRUSTED_PROXIES hops the app's ProxyFix reads them
        # (dropping them here would make every client the proxy's address:
        # one rate limit and one lock for everybody)
        clear_untrusted_proxy_headers=not app.config["EPHEMESH_TRUSTED_PROXIES"])
    # one server, or one per socket (several addresses) sharing a map
    candidates = [server, *getattr(server, "map", {}).values()]
    timeout, rate = cfg["EPHEMESH_CLIENT_TIMEOUT"], cfg["EPHEMESH_MIN_BODY_RATE"]
    for candidate in candidates:
        if isinstance(candidate, BaseWSGIServer):
            candidate.channel_class = AppChannel
            candidate.flask_app = app
            candidate.maintenance = _with_slow_client_checks(candidate, timeout, rate)
    return server


def _with_slow_client_checks(server, timeout: float, rate: int):
    idle_check = server.maintenance  # waitress's own: idle connections

    def maintenance(now):
        idle_check(now)
        cut_slow_clients(server, now, timeout, rate)

    return maintenance
