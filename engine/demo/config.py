"""The demo's configs: one YAML per voter, rendered from one commented template.

``config/demo.yaml`` in the repository is exactly :func:`render` of the gcp engine with
:data:`EXAMPLE` (fixed loopback ports; a test keeps the two equal), so the file a reader studies
is the file the demo runs, with the ports it picked. Secrets stay out of the files: each pair of
voters' key is ``${FAILOVER_PEER_KEY_<SITE>_<SITE>}`` (:func:`key_variable`) and the TSIG secret
``${TSIG_SECRET}``, which the demo passes in each voter's environment. The witness gets the same
sites, probes and policy but nothing to act on (no DNS, no database), like ``config/witness.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ZONE = "example.test"
KEY_NAME = "demo-key"
ALGORITHM = "hmac-sha256"
TARGETS = {"gcp": "192.0.2.10", "azure": "198.51.100.10"}  # documentation addresses: only DNS answers change
RECORD, EPOCH_RECORD, TTL = "app", "_failover-epoch.app", 5
VOTERS = (("engine-gcp", "gcp", "engine"), ("engine-azure", "azure", "engine"), ("witness", "witness", "witness"))
FAILBACK_HEALTHY_FOR = 3.0
THRESHOLD = 3


@dataclass(frozen=True)
class Layout:
    """Where every part listens, and where the journals go."""

    sites: dict[str, str]  # site -> base URL of its sample site
    voters: dict[str, int]  # voter id -> API port
    dns: str  # host:port of the authoritative server (updates and verification)
    database: dict[str, int] | None  # site -> PostgreSQL port, or None without PostgreSQL
    journal_dir: str
    tokens: tuple[tuple[str, str, str], ...] = field(default=())  # (name, role, sha256)


EXAMPLE = Layout(sites={"gcp": "http://127.0.0.1:18081", "azure": "http://127.0.0.1:18082"},
                 voters={"engine-gcp": 18080, "engine-azure": 18090, "witness": 18100},
                 dns="127.0.0.1:15353", database={"gcp": 15432, "azure": 15433},
                 journal_dir="/tmp/failover-demo")

HEADER = """\
# The gcp engine of `failover-engine demo`: two clouds on one machine, everything on 127.0.0.1.
# The demo writes one file like this per voter (engine-gcp, engine-azure, witness) with the ports it picked;
# this copy has fixed ports. Secrets come from the environment (the demo makes random ones):
#   FAILOVER_PEER_KEY_GCP_AZURE=... FAILOVER_PEER_KEY_GCP_WITNESS=... TSIG_SECRET=...
#     failover-engine check-config config/demo.yaml
# Timings are cut for a demo: probes every second, down after 3 failures, a decision tick of 500 ms.
"""

API_COMMENT = """\
# The demo generates an operator and a viewer token at random and lists their hashes here (the viewer token
# opens the status page: any user name, the token as password):
# api:
#   tokens:
#     - {name: demo-operator, role: operator, sha256: <64 hex digits>}
#     - {name: demo-viewer, role: viewer, sha256: <64 hex digits>}
"""


def _line(text: str, comment: str, width: int = 32) -> str:
    return f"{text.ljust(width)}# {comment}"


def _policy() -> str:
    lines = [
        _line(f"      failure_threshold: {THRESHOLD}", "failed probes in a row: DOWN (about 3 s at one probe a second)",
              36),
        "      success_threshold: 2",
        _line("      rpo: 10s", "refuse automatic failover when the standby lags more than this", 36),
        "      cooldown: 10m",
        _line(f"      failback_healthy_for: {FAILBACK_HEALTHY_FOR:g}s",
              "failback (by hand, through the API) needs gcp up this long", 36),
        _line(f"      switchover_ttl: {TTL}s", "the records' TTL already: the failback switchover waits out no TTL",
              36),
        _line("      rto_slo: 2m", "check-config adds up the worst case of the numbers below against this", 36),
        _line("      lease: 6s", "self-fencing lease: the engine in gcp fences its DB before it runs out", 36),
        _line("      steps:", "the failover steps traffic waits for: local servers answer fast", 36),
        "        precheck: {timeout: 5s, attempts: 2}",
        "        promote_attempts: 2",
        "        shift_dns: {timeout: 5s, attempts: 2}",
    ]
    return "\n".join(lines) + "\n"


def key_variable(a: str, b: str) -> str:
    """The environment variable holding the key voters ``a`` and ``b`` alone share (same name on both)."""
    order = [vid for vid, _site, _role in VOTERS]
    first, second = sorted((a, b), key=order.index)
    sites = {vid: site for vid, site, _role in VOTERS}
    return f"FAILOVER_PEER_KEY_{sites[first].upper()}_{sites[second].upper()}"


def key_variables() -> list[str]:
    """One variable per pair of voters."""
    ids = [vid for vid, _site, _role in VOTERS]
    return [key_variable(a, b) for i, a in enumerate(ids) for b in ids[i + 1:]]


def _peers(layout: Layout, me: str) -> str:
    lines = [f'  - {{id: {vid}, site: {site}, role: {role}, url: "http://127.0.0.1:{layout.voters[vid]}",\n'
             f'     key: "${{{key_variable(me, vid)}}}"}}' for vid, site, role in VOTERS if vid != me]
    return "\n".join(lines)


def _api(layout: Layout) -> str:
    if not layout.tokens:
        return API_COMMENT
    tokens = "\n".join(f"    - {{name: {name}, role: {role}, sha256: {sha}}}" for name, role, sha in layout.tokens)
    return f"api:\n  tokens:\n{tokens}\n"


def _probe(url: str) -> str:
    return (f"          - {{type: http, name: health, url: \"{url}/health\", interval: 1s, timeout: 800ms,\n"
            f"             json: {{path: status, equals: ok}}}}\n")


def _dns(layout: Layout) -> str:
    return f"""\
    dns:                            # RFC 2136 updates with TSIG: BIND when installed, else the demo's own server
      provider: {{type: rfc2136, servers: ["{layout.dns}"], zone: {ZONE}, timeout: 1s, attempts: 3, backoff: 100ms,
                 tsig: {{name: {KEY_NAME}, algorithm: {ALGORITHM}, secret: "${{TSIG_SECRET}}"}}}}
      records:                      # documentation addresses: what moves is the answer, not the traffic
        - {{name: {RECORD}, type: A, ttl: {TTL}s, targets: {{gcp: [{TARGETS['gcp']}], azure: [{TARGETS['azure']}]}}}}
      epoch_record: {EPOCH_RECORD}   # "epoch=N site=S op=ID", compare-and-set with the records
      verify: {{nameservers: ["{layout.dns}"], deadline: 5s, interval: 100ms, query_timeout: 500ms}}
"""


def _database(layout: Layout) -> str:
    assert layout.database is not None
    sites = "\n".join(f"        {site}: {{host: 127.0.0.1, port: {port}, dbname: shop, user: postgres, "
                      f"sslmode: disable, connect_timeout: 2s}}" for site, port in layout.database.items())
    return f"""\
    database:                       # only when PostgreSQL 15 is installed: gcp publishes, azure subscribes
      sites:
{sites}
      publication: failover_pub
      subscription: failover_sub
      heartbeat: {{interval: 500ms}}  # written on the primary, read on the standby: the lag in seconds
      lag_probe: {{interval: 1s, timeout: 800ms, statement_timeout: 500ms, max_lag: 5s}}
      fencing: {{enabled: true, timeout: 3s}}   # at failover: the old primary read-only, its sessions ended
      promotion: {{timeout: 10s, statement_timeout: 5s}}   # subscription off, sequences advanced, writable
      reconcile:                    # counts and row hashes of both sides (after each move; hourly otherwise)
        schedule: 1h
        statement_timeout: 10s
        tables: [{{name: accounts}}, {{name: orders}}]
        metrics: [{{name: balance, query: "SELECT coalesce(sum(balance), 0) FROM accounts"}}]
"""


def render(layout: Layout, voter: str) -> str:
    """The YAML config of ``voter`` (an id of :data:`VOTERS`) for ``layout``."""
    site, role = next((s, r) for v, s, r in VOTERS if v == voter)
    acts = role == "engine"
    parts = [HEADER, f"""\
instance:
  id: {voter}
  site: {site}
{_line(f"  role: {role}", "engine: probes, votes and may act; witness: probes and votes")}
  listen: "127.0.0.1:{layout.voters[voter]}"
  tick: 500ms                   # the decision loop; a signal that changes decides at once anyway

peers:                          # the other voters: automatic failover needs 2 of these 3
{_peers(layout, voter)}

peering:                        # each verdict is signed with the key of its link (key above, 16+ characters)
  replay_window: 10s

journal:
  path: {layout.journal_dir}/{voter}.db

logging: {{level: info, format: json}}

""", _api(layout), f"""
services:
  shop:
    active: gcp                     # the home site
    policy:
{_policy()}    sites:
      gcp:
        probes:
{_probe(layout.sites['gcp'])}      azure:
        probes:
{_probe(layout.sites['azure'])}"""]
    if acts:
        parts.append(_dns(layout))
        if layout.database is not None:
            parts.append(_database(layout))
    return "".join(parts)
