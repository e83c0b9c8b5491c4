"""The web layer's commands: ``ephemesh serve`` and ``ephemesh admin``.

Handlers return an exit code; errors are one line, never a traceback.
"""

from __future__ import annotations

import getpass
import logging
import os
import signal
import sys

MB = 1024 * 1024


def register(subparsers) -> None:
    s = subparsers.add_parser(
        "serve", help="run the whole service on this machine (web, workers, cron, Redis)",
        description="Run the web app through waitress, the RQ workers, the sweeper's clock and, "
        "when EPHEMESH_REDIS_URL is not set, a private Redis. Ctrl-C or SIGTERM stops it all.")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    s.add_argument("--workers", type=int, default=0, metavar="N",
                   help="conversion worker processes (default: one per core)")
    s.add_argument("--threads", type=int, default=8, help="web server threads (default 8)")
    s.add_argument("--no-workers", action="store_true",
                   help="web only: workers and cron run elsewhere (many hosts)")
    s.set_defaults(handler=run_serve)

    a = subparsers.add_parser("admin", help="administrator accounts for the /admin pages")
    sub = a.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="add an account (or set a new password); asks for it")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input")
    sub.add_parser("list", help="list the accounts")
    a.set_defaults(handler=run_admin)


def _fail(message: str, code: int = 1) -> int:
    print(f"ephemesh: {message}", file=sys.stderr)
    return code


def _on_sigterm(signum, frame):  # noqa: ARG001
    # KeyboardInterrupt is what waitress's loop lets through (wherever in the
    # loop it lands) and then stops on, as on Ctrl-C
    raise KeyboardInterrupt


def run_serve(args) -> int:
    from worker.config import ConfigError, Settings  # noqa: PLC0415
    from worker.runtime import Runtime, RuntimeFailure  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    if not 0 < args.port < 65536:
        return _fail("--port must be from 1 to 65535", 2)
    if args.workers < 0:
        return _fail("--workers must be 0 (one per core) or more", 2)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    runtime = server = None
    try:
        settings = Settings.from_env()
        _create_tables(settings)
        runtime = Runtime(settings)
        if args.no_workers:
            if not settings.redis_url:
                return _fail("--no-workers needs EPHEMESH_REDIS_URL (the shared Redis)", 2)
        else:
            runtime.start(workers=args.workers)
        settings = runtime.settings
        os.environ.update(settings.as_env())

        import waitress  # noqa: PLC0415

        from . import create_app  # noqa: PLC0415

        app = create_app({"EPHEMESH_SETTINGS": settings})
        server = waitress.create_server(
            app, host=args.host, port=args.port, threads=args.threads, ident="ephemesh",
            max_request_body_size=app.config["MAX_CONTENT_LENGTH"] + MB,
            clear_untrusted_proxy_headers=True)
        print(f"ephemesh: serving on http://{args.host}:{server.effective_port}/ "
              "(Ctrl-C to stop)", file=sys.stderr, flush=True)
        server.run()  # returns on Ctrl-C (waitress catches KeyboardInterrupt itself)
    except KeyboardInterrupt:
        pass
    except (ConfigError, RuntimeFailure, ValueError) as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server is not None:
            print("ephemesh: stopping", file=sys.stderr, flush=True)
            server.close()
        if runtime is not None:
            runtime.stop()
    return 0


def _create_tables(settings) -> None:
    """Create the database tables once, before the workers and cron start
    (several processes creating them at once race on a fresh SQLite file)."""
    from worker.records import Records  # noqa: PLC0415

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    Records(settings.database_url).close()


def _read_password(args) -> str | None:
    if args.password_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    first = getpass.getpass("Password (10 characters or more): ")
    again = getpass.getpass("Once more: ")
    if first != again:
        return None
    return first


def run_admin(args) -> int:
    from worker.config import ConfigError, Settings  # noqa: PLC0415
    from worker.records import Records  # noqa: PLC0415

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        return _fail(str(exc))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    records = Records(settings.database_url)
    try:
        if args.admin_command == "list":
            for row in records.list_admins():
                print(row["name"])
            return 0
        password = _read_password(args)
        if password is None:
            return _fail("the two passwords differ; nothing changed", 2)
        try:
            records.add_admin(args.name, password)
        except ValueError as exc:
            return _fail(str(exc), 2)
        print(f"admin {args.name.strip()} can now log in at /admin/login")
        return 0
    finally:
        records.close()
