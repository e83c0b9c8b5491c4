"""The worker side's commands: ``worker``, ``cron``, ``sweep``, ``keys``, ``report``.

``register(subparsers)`` adds them to the ``ephemesh`` dispatcher
(``web/cli.py``); ``python -m worker.commands`` runs them alone (how
``Runtime`` starts its children).  Handlers return an exit code; errors are
one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _fail(message: str, code: int = EXIT_FAIL) -> int:
    print(f"ephemesh: error: {message}", file=sys.stderr)
    return code


def _settings():
    from .config import ConfigError, Settings  # noqa: PLC0415

    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise SystemExit(_fail(str(exc), EXIT_USAGE)) from None


def register(subparsers) -> None:
    w = subparsers.add_parser("worker", help="run RQ worker processes",
                              description="Run conversion workers (RQ) until Ctrl-C or SIGTERM.")
    w.add_argument("-n", "--workers", type=int, default=0, metavar="N",
                   help="worker processes (default: one per core)")
    w.add_argument("--burst", action="store_true", help="quit when the queues are empty")
    w.set_defaults(handler=run_worker)

    c = subparsers.add_parser("cron", help="run the sweeper's clock",
                              description="Enqueue a sweep every EPHEMESH_SWEEP_SECONDS (RQ "
                                          "cron); sweep here when no worker does.")
    c.set_defaults(handler=run_cron)

    s = subparsers.add_parser("sweep", help="delete everything past its deadline, now",
                              description="Run the sweeper once and print what it deleted.")
    s.set_defaults(handler=run_sweep)

    k = subparsers.add_parser("keys", help="create, list or revoke API keys",
                              description="Manage API keys (only a hash of each is stored).")
    ks = k.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    kc = ks.add_parser("create", help="create a key; it is printed once, on the last line")
    kc.add_argument("name", help="who or what the key is for")
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


def run_worker(args) -> int:
    from .rqworker import run_pool  # noqa: PLC0415

    if args.workers < 0:
        return _fail("--workers must be 0 (one per core) or more", EXIT_USAGE)
    settings = _settings()
    if not settings.redis_url and not settings.redis_socket.exists():
        return _fail("no Redis: set EPHEMESH_REDIS_URL, or run 'ephemesh serve' which starts one")
    import os  # noqa: PLC0415

    run_pool(settings, args.workers or os.cpu_count() or 1, burst=args.burst)
    return EXIT_OK


def run_cron(args) -> int:
    from . import cron  # noqa: PLC0415

    cron.run(_settings())
    return EXIT_OK


def run_sweep(args) -> int:
    from .context import Context  # noqa: PLC0415
    from .sweeper import sweep  # noqa: PLC0415

    ctx = Context(_settings())
    try:
        result = sweep(ctx)
    finally:
        ctx.close()
    for kind, swept in result.items():
        note = " (failed; see the log)" if swept.failed else ""
        late = f", {swept.late} late" if swept.late else ""
        print(f"{kind}: {swept.deleted} deleted, {swept.bytes} bytes{late}{note}")
    return EXIT_FAIL if any(s.failed for s in result.values()) else EXIT_OK


def run_keys(args) -> int:
    from .records import Records  # noqa: PLC0415
    from .report import format_time  # noqa: PLC0415

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    records = Records(settings.database_url)
    try:
        if args.keys_command == "create":
            try:
                key_id, plaintext = records.create_key(args.name)
            except ValueError as exc:
                return _fail(str(exc), EXIT_USAGE)
            print(f"created key {key_id} ({args.name.strip()}); it is shown only now:")
            print(plaintext)
        elif args.keys_command == "list":
            rows = records.list_keys()
            if not rows:
                print("no keys")
            for row in rows:
                state = f"revoked {format_time(row['revoked'])}" if row["revoked"] else "active"
                print(f"{row['prefix']}  {row['name']}  created {format_time(row['created'])}  "
                      f"last used {format_time(row['last_used'])}  {state}")
        elif not records.revoke_key(args.prefix):
            return _fail("no active key has that prefix", EXIT_FAIL)
        else:
            print("revoked")
    finally:
        records.close()
    return EXIT_OK


def run_report(args) -> int:
    from .records import Records  # noqa: PLC0415
    from .report import parse_since, render  # noqa: PLC0415

    try:
        since = parse_since(args.since)
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    records = Records(settings.database_url)
    try:
        rows = records.ledger(since) if args.rows else records.purge_summary(since)
    finally:
        records.close()
    sys.stdout.write(render(rows, args.format, rows_kind="ledger" if args.rows else "summary"))
    return EXIT_OK


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ephemesh")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
