"""Core subcommands: ``run``, ``check-config``, ``schema``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from engine.cli.common import load_or_report

if TYPE_CHECKING:  # the config model is imported by the commands that load one (quick --help)
    from engine.config.model import EngineConfig


def register(sub: argparse._SubParsersAction[Any]) -> None:
    run = sub.add_parser("run", help="run the engine with an instance's config (the demo: `failover-engine demo`)")
    run.add_argument("--config", "-c", help="the instance's YAML config (required)")
    run.add_argument("--new-journal", action="store_true",
                     help="begin a new journal when the configured one is gone or cannot be read (recorded as an "
                          "event; the old file is kept aside). Without it such an engine refuses to start")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="two clouds on 127.0.0.1: break the primary, watch the failover, fail back",
                          description="Starts two sample sites, an authoritative DNS (BIND when installed, else a "
                                      "built-in one), a PostgreSQL 15 pair when installed, two engines and a witness, "
                                      "all on 127.0.0.1; breaks gcp and narrates the failover, fails back through "
                                      "the API and prints the timings. Exit 0 when the story completed.")
    demo.add_argument("--keep-running", action="store_true", help="leave everything up after the story until Ctrl-C")
    demo.add_argument("--seconds", type=float, help="leave everything up this many seconds after the story")
    demo.add_argument("--dns", choices=("auto", "bind", "builtin"), default="auto",
                      help="the authoritative DNS: BIND when installed (auto), or the built-in server")
    demo.add_argument("--no-database", action="store_true", help="run without PostgreSQL even when it is installed")
    demo.set_defaults(func=cmd_demo)

    check = sub.add_parser("check-config", help="validate a config file and list every problem")
    check.add_argument("file")
    check.add_argument("--connect", action="store_true",
                       help="also connect to each database pair and verify the reconciled tables, keys and columns")
    check.add_argument("--strict", action="store_true",
                       help="exit 1 when a service's worst-case RTO exceeds its policy.rto_slo (else a warning)")
    check.set_defaults(func=cmd_check_config)

    schema = sub.add_parser("schema", help="print the JSON Schema of the config file")
    schema.set_defaults(func=cmd_schema)

    doc = sub.add_parser("openapi", help="print the OpenAPI 3.1 document of the HTTP API")
    doc.set_defaults(func=cmd_openapi)

    hashed = sub.add_parser("hash-token", help="print the sha256 to put in api.tokens for a token read from stdin")
    hashed.set_defaults(func=cmd_hash_token)


def cmd_check_config(args: argparse.Namespace) -> int:
    """Every problem with its path and exit 2, or ok and the worst-case RTOs; never a traceback: a failure
    of the check itself (a bug meeting a file nobody foresaw) is reported as one more problem."""
    try:
        return _check_config(args)
    except Exception as exc:  # the promise is one line per problem, whatever broke
        print(f"{args.file}: 1 problem\n  the check itself failed on this file: {type(exc).__name__}: "
              f"{str(exc)[:200]}", file=sys.stderr)
        return 2


def _check_config(args: argparse.Namespace) -> int:
    config = load_or_report(args.file)
    if config is None:
        return 2
    signals = sum(sum(len(site.probes) for site in svc.sites.values()) + len(svc.dependencies)
                  + (1 if svc.database is not None else 0) for svc in config.services.values())
    print(f"{args.file}: ok ({config.instance.id} in {config.instance.site}, "
          f"{len(config.services)} service(s), {signals} signal(s), {len(config.peers)} peer(s))")
    from engine.core.exposure import listener_warnings

    for warning in listener_warnings(config.instance.listen, tokens=len(config.api.tokens),
                                     tls=config.instance.tls is not None):
        print(f"warning: {warning}")
    from actions.dns import propagation_worst_s
    from engine.core.rto import worst_case_rtos

    missed = 0
    for estimate in worst_case_rtos(config, dns_propagation=propagation_worst_s):  # the cost beside the SLO
        print(estimate.line())
        for note in estimate.notes:
            print(f"  {note}")
        over = estimate.over_slo_s
        if over is not None:
            missed += 1
            print(f"warning: service {estimate.service}: worst-case RTO {estimate.total_s:.2f} s exceeds its "
                  f"rto_slo {estimate.rto_slo_s:g} s by {over:.2f} s; dominated by {estimate.dominant()}",
                  file=sys.stderr)
    if missed and args.strict:
        print(f"{args.file}: {missed} service(s) above their rto_slo (--strict)", file=sys.stderr)
        return 1
    return _check_databases(config) if args.connect else 0


def _check_databases(config: EngineConfig) -> int:
    """``check-config --connect``: the reconciliation preflight of every service with a database."""
    import asyncio

    from actions.reconcile.preflight import preflight

    worst = 0
    for name, service in config.services.items():
        if service.database is not None:
            checked = asyncio.run(preflight(service.database, service=name, primary=service.active))
            print(checked.render())
            worst = max(worst, checked.exit_code)
    return worst


def cmd_schema(_args: argparse.Namespace) -> int:
    from engine.config.model import EngineConfig

    print(json.dumps(EngineConfig.model_json_schema(), indent=2))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from engine.runtime import logs
    from engine.runtime.daemon import Engine, StartupError

    if args.config is None:  # never start something else than what was asked for: the demo is its own command
        print("failover-engine run: give the instance's config with --config FILE (the built-in demo is "
              "`failover-engine demo`)", file=sys.stderr)
        return 2
    config = load_or_report(args.config)
    if config is None:
        return 2
    logs.configure(config.logging.level, config.logging.format)
    from engine.runtime.eventloop import LoopUnavailable, run

    try:
        run(Engine(config, new_journal=args.new_journal).run_forever(), config.instance.event_loop)
    except (StartupError, LoopUnavailable) as exc:
        print(f"{args.config}: cannot start: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.demo import run_demo

    return run_demo(args.seconds, keep_running=args.keep_running, dns=args.dns, database=not args.no_database)


def cmd_hash_token(_args: argparse.Namespace) -> int:
    from engine.http.auth import hash_token

    token = sys.stdin.readline().strip()
    if not token:
        print("give the token on standard input, e.g. printf %s \"$TOKEN\" | failover-engine hash-token",
              file=sys.stderr)
        return 2
    print(hash_token(token))
    return 0


def cmd_openapi(_args: argparse.Namespace) -> int:
    from engine.http.openapi import build

    print(json.dumps(build(), indent=2, sort_keys=True))
    return 0
