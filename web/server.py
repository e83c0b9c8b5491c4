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
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ErrorTask
from werkzeug.http import HTTP_STATUS_CODES

from . import problems, security

log = logging.getLogger("ephemesh.web")

MB = 1024 * 1024

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


class AppErrorTask(ErrorTask):
    """waitress's error answer, made by the app (see ``refusal``)."""

    def execute(self):
        app = self.channel.server.flask_app  # .application is waitress's wrapper
        status = getattr(self.request.error, "code", 500)
        try:
            path = self.request.path if isinstance(getattr(self.request, "path", None), str) \
                else "/"
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
    error_task_class = AppErrorTask

    def send_continue(self):
        # waitress would say "100 Continue" to a request it has just refused
        # (a body over the cap), and the client would start sending it
        if self.request is not None and self.request.error is not None:
            self.request.expect_continue = False
            return
        super().send_continue()


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


def make_server(app, sockets, *, threads: int):
    """The waitress server for ``app`` on the bound ``sockets``: the body cap
    is the app's ``MAX_CONTENT_LENGTH``; refusals are the app's."""
    server = create_server(
        app, sockets=sockets, threads=threads, ident="ephemesh",
        # waitress refuses a Content-Length >= this before reading the body
        max_request_body_size=app.config["MAX_CONTENT_LENGTH"] + 1,
        # with no proxy declared, X-Forwarded-* are a client's lies: dropped;
        # behind EPHEMESH_TRUSTED_PROXIES hops the app's ProxyFix reads them
        # (dropping them here would make every client the proxy's address:
        # one rate limit and one lock for everybody)
        clear_untrusted_proxy_headers=not app.config["EPHEMESH_TRUSTED_PROXIES"])
    # one server, or one per socket (several addresses) sharing a map
    candidates = [server, *getattr(server, "map", {}).values()]
    for candidate in candidates:
        if isinstance(candidate, BaseWSGIServer):
            candidate.channel_class = AppChannel
            candidate.flask_app = app
    return server
