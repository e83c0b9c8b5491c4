"""The worker side's commands: ``worker``, ``cron``, ``sweep``, ``scp``, ``keys``,
``report``, ``receipt``, ``audit``, ``db``.

``register(subparsers)`` adds them to the ``ephemesh`` dispatcher
(``web/cli.py``), which also runs them as ``Runtime``'s child processes.  A
handler raises ``CommandFailed`` (``converter/exits.py``); the dispatcher
prints the one line and exits with its code.  The dispatcher imports this
module for every command, ``convert`` included, so the settings, RQ,
SQLAlchemy and the report's renderer are imported inside the handlers that
use them (together 5 ms or more on ``ephemesh convert``'s start).
"""

from __future__ import annotations

import os
import sys

from converter.exits import CommandFailed, Exit


def _settings():
    from .config import ConfigError, Settings

    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise CommandFailed(str(exc), Exit.USAGE) from None


def register(subparsers) -> None:
    w = subparsers.add_parser("worker", help="run RQ worker processes",
                              description="Run conversion workers (RQ) until Ctrl-C or SIGTERM.")
    w.add_argument("-n", "--workers", type=int, default=0, metavar="N",
                   help="worker processes (default: one per core)")
    w.add_argument("--burst", action="store_true", help="quit when the queues are empty")
    w.add_argument("--health-port", type=int, metavar="N",
                   help="serve /livez, /readyz and /metrics on this port (all addresses; "
                        "for hosts that run only workers)")
    w.set_defaults(handler=run_worker)

    c = subparsers.add_parser("cron", help="run the sweeper's clock",
                              description="Enqueue a sweep every EPHEMESH_SWEEP_SECONDS (RQ "
                                          "cron); sweep here when no worker does.")
    c.set_defaults(handler=run_cron)

    s = subparsers.add_parser("sweep", help="delete everything past its deadline, now",
                              description="Run the sweeper once and print what it deleted.")
    s.set_defaults(handler=run_sweep)

    p = subparsers.add_parser(
        "scp", help="receive series from a PACS by DICOM C-STORE",
        description="Run a DICOM C-STORE receiver (and C-ECHO): each series a peer of "
        "EPHEMESH_SCP_PEERS sends becomes a job when its association ends (or after "
        "EPHEMESH_SCP_IDLE_SECONDS idle), and the model goes back to EPHEMESH_RETURN_TO as an "
        "Encapsulated STL instance. Runs until Ctrl-C or SIGTERM; 'ephemesh serve' runs it "
        "too when EPHEMESH_SCP_PORT is set.")
    p.add_argument("--port", type=int, default=0, metavar="PORT",
                   help="port to listen on (default: EPHEMESH_SCP_PORT, else 11112)")
    p.add_argument("--ae", default="", metavar="AE_TITLE",
                   help="this receiver's AE title (default: EPHEMESH_SCP_AE, else EPHEMESH)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.set_defaults(handler=run_scp)

    k = subparsers.add_parser("keys", help="create, list or revoke API keys",
                              description="Manage API keys (only a hash of each is stored).")
    ks = k.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    kc = ks.add_parser("create", help="create a key; it is printed once, on the last line")
    kc.add_argument("name", help="who or what the key is for")
    kc.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                    help="a default conversion option for the key's STOW-RS requests (e.g. "
                         "preset=bone; repeatable); a request's own query options win")
    ks.add_parser("list", help="list keys (prefixes only)")
    kr = ks.add_parser("revoke", help="revoke a key by its prefix")
    kr.add_argument("prefix", help="the key's prefix as shown by 'keys list'")
    k.set_defaults(handler=run_keys)

    r = subparsers.add_parser("report", help="reports for administrators",
                              description="Reports read from the records.")
    rs = r.add_subparsers(dest="report_command", required=True, metavar="REPORT")
    rp = rs.add_parser("purges", help="what was deleted, per day, kind and reason")
    rp.add_argument("--since", metavar="WHEN",
                    help="a date (2026-11-01), a time (2026-11-01T12:00) or an age (7d, 12h, 30m)")
    rp.add_argument("--format", choices=("table", "csv", "json"), default="table")
    rp.add_argument("--rows", action="store_true", help="every ledger row, not the daily summary")
    r.set_defaults(handler=run_report)

    vv = _actions(subparsers, "receipt", run_receipt, help="check a deletion receipt, offline",
                  description="Deletion receipts are signed by the server's Ed25519 key. "
                  "'verify' checks every field and the signature of a receipt file (one "
                  "receipt, or a job's receipts as the server gives them).",
                  ).add_parser("verify", help="check a receipt's fields and signature")
    vv.add_argument("file", metavar="FILE", help="the receipt (JSON)")
    vv.add_argument("--key", metavar="PUBLIC_KEY.pem",
                    help="the server's public key (from /.well-known/ephemesh-receipt-key); "
                         "without it the key in the receipt is used and its fingerprint printed")

    _actions(subparsers, "audit", run_audit, help="check the audit log's hash chain",
             description="Every audit row carries the hash of its content and of the chain "
             "before it. 'verify' finds a changed or removed row (rows erased on a data "
             "subject's request are reported as erased).",
             ).add_parser("verify", help="check every row's hash and the chain")


    d = _actions(subparsers, "db", run_db, help="the records database's schema",
                 description="The records' schema is versioned (Alembic revisions in "
                 "worker/migrations/versions). 'upgrade' brings the database "
                 "(EPHEMESH_DATABASE_URL) to this ephemesh's revision; 'current' says "
                 "where it is (exit 1 when not there). serve, worker and cron refuse a "
                 "database that is not.")
    d.add_parser("upgrade", help="bring the database to the newest revision")
    d.add_parser("current", help="print the database's revision")


def _actions(subparsers, name, handler, **texts):
    """``ephemesh NAME ACTION``: the command, its handler, and its actions to add."""
    command = subparsers.add_parser(name, **texts)
    command.set_defaults(handler=handler)
    return command.add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")


def run_worker(args) -> None:
    from .rqworker import run_pool

    if args.workers < 0:
        raise CommandFailed("--workers must be 0 (one per core) or more", Exit.USAGE)
    settings = _settings()
    if not settings.redis_url and not settings.redis_socket.exists():
        raise CommandFailed("no Redis: set EPHEMESH_REDIS_URL, or run 'ephemesh serve' which "
                            "starts one")
    if args.health_port is not None and not 0 < args.health_port < 65536:
        raise CommandFailed("--health-port must be from 1 to 65535", Exit.USAGE)
    _check_schema(settings)
    health = _health_server(settings, args.health_port) if args.health_port else None
    try:
        run_pool(settings, args.workers or os.cpu_count() or 1, burst=args.burst)
    finally:
        if health is not None:
            health.stop()


def _health_server(settings, port):
    from . import metrics
    from .context import Context
    from .health import HealthServer

    ctx = Context(settings)
    reg = metrics.registry(ctx)
    try:
        return HealthServer(ctx, port, metrics=lambda: metrics.exposition(reg)).start()
    except OSError as exc:
        raise CommandFailed(f"cannot listen on port {port} (--health-port): "
                            f"{exc.strerror or exc}") from None


def run_cron(args) -> None:
    from . import cron, logs

    settings = _settings()
    _check_schema(settings)
    logs.configure(settings.log_format)
    cron.run(settings)


def _open_engine(settings):
    from sqlalchemy import create_engine

    from .private import private_database, private_dir

    private_dir(settings.data_dir)
    private_database(settings.database_url)
    return create_engine(settings.database_url)


def _database_failure(settings, exc) -> CommandFailed:
    from sqlalchemy.engine import make_url

    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    name = make_url(settings.database_url).render_as_string(hide_password=True)
    return CommandFailed(f"cannot open the database {name}" + (f": {reason[0]}" if reason else ""))


def _check_schema(settings) -> None:
    """Refuse to run on a database not at the newest revision (an empty one
    too: a worker host never makes the schema; ``serve`` does on one box)."""
    from sqlalchemy.exc import SQLAlchemyError

    from . import schema

    engine = _open_engine(settings)
    try:
        schema.check(engine, create_empty=False)
    except SQLAlchemyError as exc:
        raise _database_failure(settings, exc) from None
    finally:
        engine.dispose()


def run_db(args) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from . import schema

    settings = _settings()
    engine = _open_engine(settings)
    try:
        if args.db_command == "upgrade":
            before = schema.state(engine)[1]
            schema.upgrade(engine)
            after = schema.state(engine)[1]
            print(f"records database at revision {after}"
                  + (" (it was already)" if before == after else f" (was {before or 'empty'})"))
            return
        found, rev = schema.state(engine)
        print(f"{rev or 'none'} ({'the newest' if found == 'current' else found})")
        if found != "current":
            schema.check(engine, create_empty=False)  # the one line saying what to do
    except SQLAlchemyError as exc:
        raise _database_failure(settings, exc) from None
    finally:
        engine.dispose()


def run_sweep(args) -> None:
    from .context import Context
    from .sweeper import sweep

    ctx = Context(_settings())
    try:
        result = sweep(ctx)
    finally:
        ctx.close()
    for kind, swept in result.items():
        note = " (failed; see the log)" if swept.failed else ""
        late = f", {swept.late} late" if swept.late else ""
        print(f"{kind}: {swept.deleted} deleted, {swept.bytes} bytes{late}{note}")
    failed = [str(kind) for kind, swept in result.items() if swept.failed]
    if failed:
        raise CommandFailed(f"the sweep of {', '.join(failed)} failed; see the log")


def start_scp(settings, *, port=0, ae="", host="0.0.0.0"):
    """Start the C-STORE receiver for ``settings`` in threads; return it (``.stop()``)."""
    from .config import _ae_title
    from .scp import SCP
    from .service import Service

    if not settings.scp_peers:
        raise CommandFailed("EPHEMESH_SCP_PEERS names no peer: set it to AE@address entries "
                            "(AE@* for any address) of the PACS that may send", Exit.USAGE)
    port = port or settings.scp_port or 11112
    if not 0 < port < 65536:
        raise CommandFailed("--port must be from 1 to 65535", Exit.USAGE)
    try:
        ae = _ae_title(ae, "--ae") if ae else settings.scp_ae
    except ValueError as exc:
        raise CommandFailed(str(exc), Exit.USAGE) from None
    try:
        return SCP(Service(settings), settings, port=port, ae_title=ae, peers=settings.scp_peers,
                   host=host).start()
    except OSError as exc:
        raise CommandFailed(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def run_scp(args) -> None:
    import logging
    import signal

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = _settings()
    scp = start_scp(settings, port=args.port, ae=args.ae, host=args.host)
    print(f"ephemesh: C-STORE receiver {scp.ae.ae_title} on port {scp.port} (Ctrl-C to stop)",
          file=sys.stderr, flush=True)
    stop = signal.signal(signal.SIGTERM, lambda *_: scp.request_stop())
    try:
        while not scp.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, stop)
        scp.stop()


def _records(settings):
    from .private import private_dir
    from .records import Records

    private_dir(settings.data_dir)
    return Records(settings.database_url)


def _key_options(given) -> dict:
    """``NAME=VALUE`` conversion options, checked as a job's are."""
    from converter import ConverterError, ConvertOptions
    from converter.options import JOB_OPTIONS

    options = {}
    for item in given:
        name, eq, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not eq or name not in JOB_OPTIONS or name == "series":
            raise CommandFailed(f"--option takes NAME=VALUE with NAME one of "
                                f"{', '.join(n for n in JOB_OPTIONS if n != 'series')}",
                                Exit.USAGE)
        options[name] = value.strip()
    try:
        checked = ConvertOptions(**options).validate()
    except (ConverterError, TypeError, ValueError) as exc:
        raise CommandFailed(getattr(exc, "message", str(exc)), Exit.USAGE) from None
    return {name: getattr(checked, name) for name in options}


def run_keys(args) -> None:
    import json

    from .report import format_time

    records = _records(_settings())
    try:
        if args.keys_command == "create":
            try:
                key_id, plaintext = records.create_key(args.name,
                                                       options=_key_options(args.option))
            except ValueError as exc:
                raise CommandFailed(str(exc), Exit.USAGE) from None
            print(f"created key {key_id} ({args.name.strip()}); it is shown only now:")
            print(plaintext)
        elif args.keys_command == "list":
            rows = records.list_keys()
            if not rows:
                print("no keys")
            for row in rows:
                state = f"revoked {format_time(row['revoked'])}" if row["revoked"] else "active"
                defaults = json.loads(row["options"]) if row.get("options") else {}
                shown = "  defaults " + ",".join(f"{k}={v}" for k, v in defaults.items()) \
                    if defaults else ""
                print(f"{row['prefix']}  {row['name']}  created {format_time(row['created'])}  "
                      f"last used {format_time(row['last_used'])}  {state}{shown}")
        elif not records.revoke_key(args.prefix):
            raise CommandFailed("no active key has that prefix")
        else:
            print("revoked")
    finally:
        records.close()


def run_report(args) -> None:
    from .report import parse_since, render

    try:
        since = parse_since(args.since)
    except ValueError as exc:
        raise CommandFailed(str(exc), Exit.USAGE) from None
    records = _records(_settings())
    try:
        rows = records.ledger(since) if args.rows else records.purge_summary(since)
    finally:
        records.close()
    sys.stdout.write(render(rows, args.format, rows_kind="ledger" if args.rows else "summary"))


def run_receipt(args) -> None:
    import base64
    import json

    from . import receipts

    try:
        with open(args.file, encoding="utf-8") as fh:
            document = json.load(fh)
    except OSError as exc:
        raise CommandFailed(f"cannot read {args.file}: {exc.strerror or exc}",
                            Exit.UNREADABLE) from None
    except (ValueError, UnicodeDecodeError):
        raise CommandFailed(f"{args.file} is not a receipt (not JSON)", Exit.INVALID) from None
    key = None
    if args.key:
        try:
            with open(args.key, "rb") as fh:
                key = receipts.raw_from_pem(fh.read())
        except OSError as exc:
            raise CommandFailed(f"cannot read {args.key}: {exc.strerror or exc}",
                                Exit.UNREADABLE) from None
        except (ValueError, TypeError):
            raise CommandFailed(f"{args.key} is not an Ed25519 public key (PEM)",
                                Exit.USAGE) from None
    many = isinstance(document, dict) and "receipts" in document and "receipt" not in document
    items = document.get("receipts") if many else [document]
    if not isinstance(items, list) or not items:
        raise CommandFailed(f"{args.file} holds no receipt", Exit.INVALID)
    for n, receipt in enumerate(items, 1):
        problems = receipts.verify(receipt, key)
        if problems:
            which = _which(receipt, n if many else None)
            raise CommandFailed(f"{which}: {'; '.join(problems)}", Exit.INVALID)
    for n, receipt in enumerate(items, 1):
        late = "late" if receipt["late"] else "on time"
        print(f"valid: {_which(receipt, n if many else None)}, {receipt['bytes']} bytes, received "
              f"{receipt['received']}, deleted {receipt['deleted']} ({receipt['reason']}, {late})")
    signer = ", ".join(sorted({receipts.fingerprint(base64.b64decode(r["public_key"]))
                               for r in items}))
    if key is not None:
        print(f"signed by the key in {args.key} ({signer})")
    else:
        print(f"signed by {signer}: compare it with the server's key at "
              "/.well-known/ephemesh-receipt-key (or give that key with --key)")


def _which(receipt, n) -> str:
    """How a receipt is named in a message: its kind and job, if it has them."""
    where = f"receipt {n}" if n else "the receipt"
    if isinstance(receipt, dict) and isinstance(receipt.get("id"), str) \
            and receipt.get("kind") in ("input", "result"):
        what = "upload" if receipt["kind"] == "input" else "result"
        return f"{where} (the {what} of job {receipt['id'][:64]})"
    return where


#: at most this many problems are named on the one line of a failed check
SHOWN_PROBLEMS = 5


def run_audit(args) -> None:
    records = _records(_settings())
    try:
        check = records.verify_audit()
    finally:
        records.close()
    if not check.intact:
        shown = check.problems[:SHOWN_PROBLEMS]
        more = len(check.problems) - len(shown)
        raise CommandFailed("the audit log was tampered with: " + "; ".join(shown)
                            + (f"; and {more} more" if more else ""), Exit.INVALID)
    notes = [f"{check.erased} erased on request"] if check.erased else []
    if check.unchained:
        notes.append(f"{check.unchained} from before the chain, not checked")
    extra = f" ({', '.join(notes)})" if notes else ""
    print(f"audit log: {check.rows} rows{extra}, chain intact; head {check.head}")
