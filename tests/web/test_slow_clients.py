"""Slow clients (web/server.py): connections trickling a byte every few
seconds are cut by the header deadline and the minimum body rate, while a
normal client is served meanwhile and an honest slow upload goes through.
A served instance on loopback, bounded loops, about 15 s."""

import select
import socket
import time
import urllib.request

from tests.web.served import Served

TIMEOUT_S = 3  # EPHEMESH_CLIENT_TIMEOUT
RATE = 100  # EPHEMESH_MIN_BODY_RATE, bytes a second
HEADER_TRICKLERS = 50
BODY_TRICKLERS = 10


def _closed(sock) -> bool:
    """The server closed ``sock`` (readable with nothing, or reset)."""
    try:
        return sock.recv(4096) == b""
    except (ConnectionResetError, BlockingIOError):
        return True


def test_trickling_connections_are_cut_while_a_normal_client_is_served(tmp_path, redis_url):
    served = Served(tmp_path / "svc", EPHEMESH_CLIENT_TIMEOUT=TIMEOUT_S,
                    EPHEMESH_MIN_BODY_RATE=RATE, EPHEMESH_REDIS_URL=redis_url)
    served.args.append("--no-workers")  # the web alone: nothing here converts
    served.start()
    addr = ("127.0.0.1", served.port)
    try:
        started = time.monotonic()
        socks = {}
        for _ in range(HEADER_TRICKLERS):  # never finish their headers
            s = socket.create_connection(addr)
            s.sendall(b"G")
            socks[s] = ("header", b"ET /privacy HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100)
        for _ in range(BODY_TRICKLERS):  # headers at once, then a byte every 2 s
            s = socket.create_connection(addr)
            s.sendall(b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: "
                      b"application/octet-stream\r\nContent-Length: 5000\r\n\r\n")
            socks[s] = ("body", b"z" * 5000)
        # an honest slow upload: 400 bytes a second for 6 s, above the minimum
        honest = socket.create_connection(addr)
        honest.sendall(b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: "
                       b"application/octet-stream\r\nContent-Length: 2400\r\n\r\n")
        honest_sent, honest_answer = 0, b""
        cut, normal = {}, []
        tick = 0
        while time.monotonic() - started < 15 and (len(cut) < len(socks) or not honest_answer):
            now = time.monotonic() - started
            if tick % 20 == 0:  # every 2 s, one more byte on each trickler still open
                for s, (kind, rest) in socks.items():
                    if s in cut:
                        continue
                    try:
                        s.send(rest[tick // 20:tick // 20 + 1])
                    except OSError:
                        cut[s] = (kind, now)
            if tick % 5 == 0 and honest_sent < 2400:
                honest.sendall(b"y" * 200)
                honest_sent += 200
            if tick in (15, 45):  # a normal client, while the tricklers hold their slots
                t0 = time.monotonic()
                with urllib.request.urlopen(served.url + "/privacy", timeout=5) as resp:
                    assert resp.status == 200
                normal.append(time.monotonic() - t0)
            open_socks = [s for s in socks if s not in cut]
            ready, _, _ = select.select(open_socks + [honest], [], [], 0.1)
            for s in ready:
                if s is honest:
                    honest_answer += honest.recv(65536)
                elif _closed(s):
                    cut[s] = (socks[s][0], time.monotonic() - started)
            tick += 1
        header_cuts = sorted(t for kind, t in cut.values() if kind == "header")
        body_cuts = sorted(t for kind, t in cut.values() if kind == "body")
        def span(times):
            return f"{times[0]:.1f}–{times[-1]:.1f} s" if times else "never"

        report = (f"\n{len(header_cuts)} header tricklers cut after {span(header_cuts)}, "
                  f"{len(body_cuts)} body tricklers after {span(body_cuts)}; normal requests "
                  f"took {', '.join(f'{t * 1000:.0f} ms' for t in normal)}; the honest upload "
                  f"got {honest_answer[:12]!r} after sending {honest_sent} bytes")
        print(report)
        assert len(header_cuts) == HEADER_TRICKLERS and len(body_cuts) == BODY_TRICKLERS, report
        # not before the deadline, and soon after it (checks run every second)
        assert TIMEOUT_S - 0.5 <= header_cuts[0] and header_cuts[-1] <= TIMEOUT_S + 5, report
        assert TIMEOUT_S - 0.5 <= body_cuts[0] and body_cuts[-1] <= 2 * TIMEOUT_S + 5, report
        assert len(normal) == 2 and max(normal) < 3, report
        # the honest slow upload was read to its end and answered (no key: 401)
        assert honest_answer.startswith(b"HTTP/1.1 401"), report
        for s in socks:
            s.close()
        honest.close()
    finally:
        assert served.stop() == 0, served.log()
    log = served.log()
    assert "closed" in log and "slow connection" in log
    assert "Traceback" not in log, log[log.find("Traceback") - 300:][:3000]


def test_the_connection_limit_is_raised_and_fits_the_open_files(app):
    import resource

    from web import server as web_server

    sockets = web_server.listen("127.0.0.1", 0)
    server = web_server.make_server(app, sockets, threads=1)
    try:
        limit = server.adj.connection_limit
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert limit == min(1000, soft - 256) and limit > 100  # waitress's default: 100
        assert soft >= min(1256, hard)
    finally:
        server.close()
