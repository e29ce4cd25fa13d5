"""`failover-engine db init` and `failover-engine reconcile`: the database commands an operator runs.

- ``db init --config FILE SERVICE``: create the heartbeat table on both sites, the publication
  (primary) and the subscription (standby) when absent, or print the exact SQL and the missing
  privilege; add the heartbeat to the publication, refresh the subscription (idempotent).
- ``reconcile --config FILE SERVICE``: compare the two databases now and print the differences.
- ``reconcile --check``: verify tables, keys and columns on both sides without comparing rows.
- ``db reinit-subscription --config FILE SERVICE --site S [--dry-run]``: re-create the standby's
  subscription and slot with ``copy_data`` after the slot was dropped (:mod:`actions.database.reinit`);
  prints every statement it ran (or would run), refuses when it would lose data.

``--primary SITE`` says which site is the primary (default: the service's ``active`` site). Exit
codes of ``reconcile``: 0 no differences, 1 differences (or rows still in flight), 2 error (bad
config or arguments, a site unreachable, a table refused, an internal error) — never 0 unless every
table was compared. ``reconcile --check``: 0 ready, 1 a table would be refused, 2 error. ``db init``:
0 done, 1 a step failed, 2 bad config.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from engine.cli.common import load_or_report, run_async
from engine.cli.journal_view import journal_view

if TYPE_CHECKING:  # loaded with the config by the commands that need it (quick --help)
    from engine.config.database import DatabaseConfig


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``db init`` and ``reconcile``."""
    db = sub.add_parser("db", help="database set-up commands")
    db_sub = db.add_subparsers(dest="db_command", metavar="DB_COMMAND")
    init = db_sub.add_parser("init", help="create the heartbeat table and add it to the publication")
    _common(init)
    init.set_defaults(func=run_init)
    reinit = db_sub.add_parser(
        "reinit-subscription", help="re-create a standby's subscription whose slot was dropped (a full copy)",
        description="Re-create SITE's subscription and its slot on the primary with copy_data: the old "
                    "subscription is dropped and the published tables on SITE are emptied first. Refused, "
                    "changing nothing, when SITE is the active site, when the slot still works, or when SITE "
                    "holds rows the primary lacks. See runbooks/replication-slot-retention.md.")
    reinit.add_argument("--config", required=True, help="the engine's YAML config")
    reinit.add_argument("service", help="the service whose database to use")
    reinit.add_argument("--site", required=True, help="the standby site whose subscription to re-create")
    reinit.add_argument("--dry-run", action="store_true", help="print the SQL it would run; change nothing")
    reinit.add_argument("--json", action="store_true", help="print the result as JSON")
    reinit.set_defaults(func=run_reinit)
    db.set_defaults(func=lambda _args: _usage(db))

    rec = sub.add_parser("reconcile", help="compare the two databases of a service and print the differences")
    _common(rec)
    rec.add_argument("--no-watermark", action="store_true",
                     help="report rows newer than the replication watermark too (after a failover)")
    rec.add_argument("--json", action="store_true", help="print the result as JSON")
    rec.add_argument("--check", action="store_true",
                     help="only verify tables, keys and columns on both sides (no rows compared)")
    rec.set_defaults(func=run_reconcile)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the engine's YAML config")
    parser.add_argument("service", help="the service whose database to use")
    parser.add_argument("--primary", help="the site that is primary now (default: the service's active site)")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _database(args: argparse.Namespace) -> tuple[DatabaseConfig, str] | None:
    config = load_or_report(args.config)
    if config is None:
        return None
    service = config.services.get(args.service)
    if service is None:
        print(f"unknown service {args.service!r} (known: {', '.join(sorted(config.services)) or 'none'})",
              file=sys.stderr)
        return None
    if service.database is None:
        print(f"service {args.service!r} has no database section", file=sys.stderr)
        return None
    primary = args.primary or service.active
    if primary not in service.database.sites:
        print(f"--primary {primary!r} is not a database site ({', '.join(sorted(service.database.sites))})",
              file=sys.stderr)
        return None
    return service.database, primary


def run_init(args: argparse.Namespace) -> int:
    from actions.database.heartbeat import init_database
    from actions.database.replication_setup import setup_replication

    found = _database(args)
    if found is None:
        return 2
    try:
        steps = run_async(setup_replication(*found))
        for step in steps:
            print(f"{step.name}: {step.status}: {step.detail}")
        if any(step.status == "failed" for step in steps):
            return 1
        result = run_async(init_database(*found))
    except Exception as exc:  # an internal error is never success
        print(f"db init failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(result.sentence)
    return 0 if result.ok else 1


def run_reinit(args: argparse.Namespace) -> int:
    from actions.database.reinit import reinit_subscription

    config = load_or_report(args.config)
    if config is None:
        return 2
    service = config.services.get(args.service)
    if service is None or service.database is None:
        print(f"service {args.service!r} " + ("is unknown" if service is None else "has no database section"),
              file=sys.stderr)
        return 2
    if args.site not in service.database.sites:
        print(f"--site {args.site!r} is not a database site ({', '.join(sorted(service.database.sites))})",
              file=sys.stderr)
        return 2
    known = journal_view(config.journal.path, args.service)
    active = str(known.get("active") or service.active)
    result = run_async(reinit_subscription(service.database, args.site, active, dry_run=args.dry_run))
    if args.json:
        print(json.dumps({"ok": result.ok, "sentence": result.sentence, "refusals": list(result.plan.refusals),
                          "plan": [{"site": s, "sql": q} for s, q in result.plan.statements],
                          "done": list(result.done), "active": active}))
    else:
        print(f"{args.service}: active site {active} ({'the engine journal' if known else 'the config'})")
        for site, statement in result.plan.statements:
            print(f"  {'would run' if args.dry_run else 'ran' if f'{site}: {statement}' in result.done else 'planned'}"
                  f" on {site}: {statement};")
        print(result.sentence)
    return 0 if result.ok else 1


def run_reconcile(args: argparse.Namespace) -> int:
    from actions.reconcile import reconcile
    from actions.reconcile.preflight import preflight

    found = _database(args)
    if found is None:
        return 2
    database, primary = found
    try:
        if args.check:
            checked = run_async(preflight(database, service=args.service, primary=primary))
            print(checked.render())
            return checked.exit_code
        result = run_async(reconcile(database, service=args.service, primary=primary, now=time.time(),
                                       watermark=None if args.no_watermark else "auto"))
    except Exception as exc:  # an internal error is never "no differences"
        print(f"reconciliation failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.render())
    return result.exit_code
