"""`failover-engine dns show --config FILE SERVICE`: the records of a service as the provider has them.

Prints a table (name, type, TTL, current values, the site they point to) and the epoch stored
beside them, then whether the records drifted (:func:`actions.dns.drift.drift`): compared with the
active site, epoch and epoch-record text in the engine's journal (``journal.path`` of the config,
read-only) when it can be read, else with themselves and the config (one configured site, the same
site named by the epoch record, the configured TTLs). ``--json`` prints the same as one JSON
object. Exit codes: 0 shown, as expected; 1 a drift (what differs is printed) or the provider failed
(auth, unavailable, records not as configured); 2 bad config or arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from engine.cli.common import load_or_report, run_async
from engine.cli.journal_view import journal_view

if TYPE_CHECKING:
    from actions.dns.state import DnsState


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``dns show``."""
    dns = sub.add_parser("dns", help="DNS records of a service")
    dns_sub = dns.add_subparsers(dest="dns_command", metavar="DNS_COMMAND")
    show = dns_sub.add_parser("show", help="print the current records, epoch and the site they point to")
    show.add_argument("--config", required=True, help="the engine's YAML config")
    show.add_argument("service", help="the service whose records to show")
    show.add_argument("--json", action="store_true", help="print the result as JSON")
    show.set_defaults(func=run_show)
    dns.set_defaults(func=lambda _args: _usage(dns))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def run_show(args: argparse.Namespace) -> int:
    config = load_or_report(args.config, unset_ok=True)  # reading needs neither the TSIG nor a peer key
    if config is None:
        return 2
    service = config.services.get(args.service)
    if service is None:
        print(f"unknown service {args.service!r} (known: {', '.join(sorted(config.services)) or 'none'})",
              file=sys.stderr)
        return 2
    dns_config = service.dns
    if dns_config is None:
        print(f"service {args.service!r} has no dns section", file=sys.stderr)
        return 2
    from actions.dns.errors import DnsError
    from actions.dns.provider import build_provider

    async def read() -> DnsState:
        provider = build_provider(dns_config, args.service, read_only=True)
        try:
            return await provider.read()
        finally:
            await provider.aclose()

    try:
        state = run_async(read())
    except DnsError as exc:
        print(f"dns show {args.service}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    from actions.dns.drift import drift

    known = journal_view(config.journal.path, args.service)
    configs = {dns_config.fqdn(r.name): r for r in dns_config.records}
    found = drift(state, configs, active=known.get("active"), epoch=known.get("epoch"), seen=known.get("seen"))
    against = (f"the engine's journal (active {known['active']}, epoch {known['epoch']})" if known
               else "the records themselves and the config (the engine's journal could not be read)")
    if args.json:
        print(json.dumps({**as_dict(args.service, state), "drift": found.to_dict() if found else None,
                          "compared_with": against}))
    else:
        print(render(args.service, state))
        if found:
            print(f"DRIFT against {against}:")
            print("\n".join(f"  - {line}" for line in found.differences))
        else:
            print(f"no drift against {against}")
    return 1 if found else 0


def as_dict(service: str, state: DnsState) -> dict[str, Any]:
    return {
        "service": service, "zone": state.zone, "site": state.site,
        "epoch": {"number": state.epoch.number, "site": state.epoch.site, "op": state.epoch.op,
                  "record": state.epoch_name.rstrip(".")},
        "records": [{"name": r.name.rstrip("."), "type": r.rtype, "ttl": r.ttl, "values": list(r.values),
                     "site": r.site} for r in state.records],
    }


def render(service: str, state: DnsState) -> str:
    """A readable table plus the epoch line."""
    rows = [("NAME", "TYPE", "TTL", "VALUES", "POINTS TO")]
    rows += [(r.name.rstrip("."), r.rtype, str(r.ttl), ", ".join(r.values), r.site) for r in state.records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    epoch = state.epoch
    if epoch.text is None:
        epoch_line = f"epoch: 0 (no record at {state.epoch_name.rstrip('.')} yet)"
    else:
        epoch_line = (f"epoch: {epoch.number} (site {epoch.site or '?'}, op {epoch.op or '-'}, "
                      f"record {state.epoch_name.rstrip('.')})")
    return "\n".join([f"service {service}: zone {state.zone}, points to {state.site}", *lines, epoch_line])
