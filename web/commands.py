"""The web layer's commands: ``ephemesh serve``, ``ephemesh admin`` and
``ephemesh subject`` (data-subject requests, ``web/subjects.py``).

``register(subparsers)`` adds them to the ``ephemesh`` dispatcher
(``web/cli.py``).  A handler raises ``CommandFailed``
(``converter/exits.py``); the dispatcher prints the one line and exits with
its code.  The dispatcher imports this module for every command, so Flask,
waitress, Redis, SQLAlchemy, the runtime and the settings (the web's take 6
ms, for ``secrets``) are imported inside the handlers.
"""

from __future__ import annotations

import getpass
import logging
import os
import signal
import sys
import threading

from converter.exits import CommandFailed, Exit


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
    s.add_argument("--keep-on-stop", action="store_true",
                   help="leave uploads and results in the store when stopping (another host's "
                        "sweeper deletes them on time); by default every one is deleted, and "
                        "recorded with reason 'shutdown'")
    s.set_defaults(handler=run_serve)

    a = subparsers.add_parser("admin", help="administrator accounts for the /admin pages")
    sub = a.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="add an account (or set a new password); asks for it")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input")
    sub.add_parser("list", help="list the accounts")
    rm = sub.add_parser("remove", help="remove an account (its sessions end at once)")
    rm.add_argument("name")
    a.set_defaults(handler=run_admin)

    d = subparsers.add_parser(
        "subject", help="data-subject requests: what is kept about an address, or erase it",
        description="The access log holds addresses; the audit log, rate-limit counters and "
        "locks hold their monthly pseudonyms (linkable while the month's key exists). 'export' "
        "prints every record about an address as JSON; 'erase' deletes them (audit rows are "
        "redacted, their hashes kept) and writes an audit row that holds no address.")
    ds = d.add_subparsers(dest="subject_command", required=True, metavar="ACTION")
    for name, text in (("export", "print every record about the address (JSON)"),
                       ("erase", "delete every record about the address")):
        one = ds.add_parser(name, help=text)
        one.add_argument("--address", required=True, metavar="A", help="an IPv4 or IPv6 address")
    d.set_defaults(handler=run_subject)


_stopping = threading.Event()


def _on_stop_signal(signum, frame):
    # KeyboardInterrupt is what waitress's loop lets through (wherever in the
    # loop it lands) and then stops on, as on Ctrl-C
    _stopping.set()
    raise KeyboardInterrupt


def _dead_part(runtime) -> str | None:
    """What of the runtime has exited by itself, worded for one line, or None."""
    for proc in runtime.children:
        if proc.poll() is not None:
            name = ("the sweeper's clock (cron)" if "cron" in proc.args
                    else "the conversion workers")
            return f"{name} exited (code {proc.returncode})"
    if runtime.redis is not None and runtime.redis.proc is not None \
            and runtime.redis.proc.poll() is not None:
        return f"the private Redis exited (code {runtime.redis.proc.returncode})"
    return None


def _watch(runtime, failures: list, period: float = 1.0) -> threading.Thread:
    """A part that dies stops everything (and ``serve`` exits non-zero, so
    a service manager starts it again): without the workers nothing is
    converted, without cron nothing is deleted on time, without Redis
    nothing works."""
    def run():
        while not _stopping.wait(period):
            dead = _dead_part(runtime)
            if dead and not _stopping.is_set():
                failures.append(dead)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    thread = threading.Thread(target=run, name="ephemesh-watch", daemon=True)
    thread.start()
    return thread


def _check_settings():
    """The worker's and the web's settings, checked before anything starts."""
    from worker.config import ConfigError, Settings

    from . import config as web_config

    try:
        settings = Settings.from_env()
        web_config.check(os.environ)
    except (ConfigError, ValueError) as exc:
        raise CommandFailed(str(exc), Exit.USAGE) from None
    return settings


def _prepare_data_dir(settings) -> None:
    from worker.private import private_dir

    try:
        private_dir(settings.data_dir)
    except OSError as exc:
        raise CommandFailed(f"cannot create {exc.filename or settings.data_dir}: "
                            f"{exc.strerror or exc}") from None


def _database_name(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # a URL too broken to parse is named by its setting
        return "EPHEMESH_DATABASE_URL"


def _create_tables(settings) -> None:
    """Open the database once, before the workers and cron start: an empty one
    is made at the newest schema revision (the one-box case; several processes
    creating tables at once race on a fresh SQLite file), an old one refused
    (``ephemesh db upgrade``)."""
    from worker.records import Records
    from worker.schema import SchemaOutdated

    try:
        Records(settings.database_url).close()
    except SchemaOutdated:
        raise
    except Exception as exc:  # any driver's error; one line, no traceback
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise CommandFailed(f"cannot open the database {_database_name(settings.database_url)}"
                            + (f": {reason[0]}" if reason else "")) from None


def _check_redis(url: str) -> None:
    import redis

    try:
        conn = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
        try:
            conn.ping()
        finally:
            conn.close()
    except (redis.exceptions.RedisError, OSError, ValueError) as exc:
        raise CommandFailed(f"cannot reach Redis at {url} (EPHEMESH_REDIS_URL): {exc}") from None


def run_serve(args) -> None:
    from worker import logs
    from worker.config import ConfigError
    from worker.runtime import Runtime, RuntimeFailure

    from . import config as web_config
    from . import create_app
    from . import server as web_server

    try:
        logs.configure()
    except ConfigError as exc:
        raise CommandFailed(str(exc), Exit.USAGE) from None
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    if not 0 < args.port < 65536:
        raise CommandFailed("--port must be from 1 to 65535", Exit.USAGE)
    if args.workers < 0:
        raise CommandFailed("--workers must be 0 (one per core) or more", Exit.USAGE)
    if args.threads < 1:
        raise CommandFailed("--threads must be 1 or more", Exit.USAGE)
    previous = {sig: signal.signal(sig, _on_stop_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    _stopping.clear()
    runtime = server = settings_used = scp = None
    sockets, failures = [], []
    try:
        # everything that can be refused is checked before anything starts
        settings = _check_settings()
        if args.no_workers and not settings.redis_url:
            raise CommandFailed("--no-workers needs EPHEMESH_REDIS_URL (the shared Redis)",
                                Exit.USAGE)
        try:
            sockets = web_server.listen(args.host, args.port)
        except OSError as exc:
            raise CommandFailed(f"cannot listen on {args.host}:{args.port}: "
                                f"{exc.strerror or exc}") from None
        _prepare_data_dir(settings)
        _create_tables(settings)
        if settings.redis_url:
            _check_redis(settings.redis_url)
        web_server.use_spool_for_temporary_files(web_config.spool_dir(settings, os.environ))
        runtime = Runtime(settings)
        if not args.no_workers:
            runtime.start(workers=args.workers)
            _watch(runtime, failures)
        settings = settings_used = runtime.settings
        os.environ.update(settings.as_env())
        app = create_app({"EPHEMESH_SETTINGS": settings})
        server = web_server.make_server(app, sockets, threads=args.threads)
        if settings.scp_port:  # the C-STORE receiver beside the web server
            from worker.commands import start_scp

            scp = start_scp(settings, host=args.host)
        port = sockets[0].getsockname()[1]
        host = f"[{args.host}]" if ":" in args.host else args.host
        # once everything is checked and started (a refusal stays one line)
        missing = web_config.missing_controller(os.environ)
        if missing:
            print(f"ephemesh: warning: {' and '.join(missing)} not set: the privacy page cannot "
                  "say who is responsible for the data or how to reach them", file=sys.stderr,
                  flush=True)
        print(f"ephemesh: serving on http://{host}:{port}/ "
              "(Ctrl-C to stop)", file=sys.stderr, flush=True)
        server.run()  # returns on Ctrl-C (waitress catches KeyboardInterrupt itself)
    except KeyboardInterrupt:
        pass
    except (RuntimeFailure, ValueError) as exc:
        raise CommandFailed(str(exc)) from None
    except OSError as exc:
        raise CommandFailed(f"{exc.strerror or exc}"
                            + (f": {exc.filename}" if exc.filename else "")) from None
    finally:
        _stopping.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if server is not None:
            print("ephemesh: stopping", file=sys.stderr, flush=True)
            server.close()
        else:
            for sock in sockets:
                sock.close()
        if scp is not None:
            scp.stop()
        if runtime is not None:
            runtime.stop_children()
        if settings_used is not None and not args.keep_on_stop:
            _delete_on_stop(settings_used)
        if runtime is not None:
            runtime.stop()
    if failures:
        raise CommandFailed(f"{failures[0]}; everything was stopped (start ephemesh serve again)")


def _delete_on_stop(settings) -> None:
    """Every upload and result this service holds goes now, each recorded
    (``shutdown``): a stopped service leaves no scan behind, on any medium."""
    from worker.context import Context
    from worker.retention import delete_everything

    ctx = Context(settings)
    try:
        gone = delete_everything(ctx)
    except Exception as exc:  # the records or the store away: the deadlines still hold
        print(f"ephemesh: warning: could not delete what the store holds on stop "
              f"({type(exc).__name__}); the sweeper deletes it by its deadline",
              file=sys.stderr, flush=True)
        return
    finally:
        ctx.close()
    print("ephemesh: deleted on stop (ledger reason 'shutdown'): "
          + ", ".join(f"{n} {kind}" for kind, n in gone.items()), file=sys.stderr, flush=True)


def _read_password(args) -> str | None:
    if args.password_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    first = getpass.getpass("Password (10 characters or more): ")
    again = getpass.getpass("Once more: ")
    if first != again:
        return None
    return first


def run_admin(args) -> None:
    from worker.config import ConfigError, Settings
    from worker.records import Records

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise CommandFailed(str(exc), Exit.USAGE) from None
    _prepare_data_dir(settings)
    _create_tables(settings)
    records = Records(settings.database_url)
    try:
        if args.admin_command == "list":
            for row in records.list_admins():
                print(row["name"])
            return
        if args.admin_command == "remove":
            if not records.remove_admin(args.name.strip()):
                raise CommandFailed(f"there is no admin account {args.name.strip()[:80]!r}; "
                                    "nothing changed (ephemesh admin list)")
            print(f"admin {args.name.strip()} removed; their sessions have ended")
            return
        password = _read_password(args)
        if password is None:
            raise CommandFailed("the two passwords differ; nothing changed", Exit.USAGE)
        try:
            records.add_admin(args.name, password)
        except ValueError as exc:
            raise CommandFailed(str(exc), Exit.USAGE) from None
        print(f"admin {args.name.strip()} can now log in at /admin/login")
    finally:
        records.close()


def run_subject(args) -> None:
    import json

    import redis as redis_lib

    from worker.context import Context

    from . import subjects

    try:
        subjects.parse_address(args.address)
    except subjects.NotAnAddress as exc:
        raise CommandFailed(str(exc), Exit.USAGE) from None
    settings = _check_settings()
    _prepare_data_dir(settings)
    _create_tables(settings)
    ctx = Context(settings)
    try:
        try:
            ctx.redis.ping()
        except redis_lib.exceptions.RedisError:
            raise CommandFailed(f"cannot reach Redis at {settings.effective_redis_url}: the "
                                "pseudonym keys live there (set EPHEMESH_REDIS_URL, or run "
                                "this beside 'ephemesh serve')") from None
        if args.subject_command == "export":
            found = subjects.export(ctx.records, ctx.redis, args.address, "cli")
            print(json.dumps(found, indent=1))
        else:
            done = subjects.erase(ctx.records, ctx.redis, args.address, "cli")
            print(f"erased: {done['access_rows']} access-log rows, {done['audit_rows']} audit "
                  f"rows redacted, {done['redis_keys']} rate-limit and lock keys")
    finally:
        ctx.close()
