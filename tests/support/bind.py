"""A real BIND ``named`` for tests: fresh directory, generated zone and TSIG key, free loopback port.

:func:`start_named` writes ``named.conf``, the key file and the zone into a new temporary directory
(so no ``.jnl`` journal from an earlier run can be replayed), starts ``named -g`` on a free port and
waits until it answers the zone's SOA. :meth:`NamedServer.stop` terminates it and removes the
directory. Under ``CI=true`` a missing ``named`` is a failure, elsewhere a skip. A server can
listen on ``::1`` instead (``host="::1"``), and nameserver glue may be AAAA or absent.
:func:`start_resolver` starts a recursive ``named`` (cache off) that forwards a primary's zone to
it and serves extra zones itself: a real, distinct resolver for verification tests. Both take a
``wrap`` command prefix (e.g. ``["ip", "netns", "exec", ns]``) to run ``named`` elsewhere, such as in
a network namespace (``tests/support/netns.py``); then ``port`` defaults to 53 and ``host`` must be
reachable from here, since readiness is checked by querying it.

Fixtures:

- ``bind_server``: one primary per test module serving :data:`ZONE` with the records of
  :data:`BASELINE`; updates need the TSIG key ``failover-key``.
- ``bind_zone``: the same server with the baseline records written back before each test, so tests
  of one module never see each other's changes.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsigkeyring
import dns.update
import pytest

from engine.config.dns import DnsConfig
from engine.demo.bind import terminate
from tests.support import require_binary

ZONE = "example.test"
KEY_NAME = "failover-key"
ALGORITHM = "hmac-sha256"

#: The records every test starts from: (relative name, type, ttl, values).
BASELINE: tuple[tuple[str, str, int, tuple[str, ...]], ...] = (
    ("app", "A", 60, ("192.0.2.10",)),
    ("api", "AAAA", 60, ("2001:db8::10",)),
    ("web", "CNAME", 60, ("gcp.example.net.",)),
    ("multi", "A", 60, ("192.0.2.21", "192.0.2.22")),
    ("_failover-epoch.app", "TXT", 60, ('"epoch=1 site=gcp"',)),
    ("alias", "CNAME", 60, ("app.example.test.",)),
)

_HINT = "install BIND: apt-get install -y bind9 bind9-utils"


@dataclass
class NamedServer:
    """One running ``named`` and what a client needs to talk to it."""

    directory: Path
    host: str
    port: int
    zone: str
    key_name: str
    algorithm: str
    secret: str = field(repr=False)
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def keyring(self) -> dict[dns.name.Name, dns.tsig.Key]:
        return dns.tsigkeyring.from_text({f"{self.key_name}.": (self.algorithm, self.secret)})

    def query(self, name: str, rdtype: str) -> list[str]:
        """The values of ``name``/``rdtype`` as this server answers them now (sorted text)."""
        qname = name if name.endswith(".") else f"{name}.{self.zone}."
        response = dns.query.tcp(dns.message.make_query(qname, rdtype), self.host, port=self.port, timeout=2)
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.from_text(rdtype) and rrset.name.to_text() == qname:
                return sorted(rdata.to_text() for rdata in rrset)
        return []

    def snapshot(self) -> dict[str, list[str]]:
        """Every baseline name and type with its current values: what "nothing changed" compares."""
        return {f"{name}/{rdtype}": self.query(name, rdtype) for name, rdtype, _ttl, _v in BASELINE}

    def write(self, records: tuple[tuple[str, str, int, tuple[str, ...]], ...]) -> None:
        """Unconditionally replace the given RRsets (a signed update), e.g. to restore the baseline."""
        update = dns.update.UpdateMessage(f"{self.zone}.", keyring=self.keyring(),
                                          keyname=dns.name.from_text(self.key_name))
        for name, rdtype, ttl, values in records:
            update.delete(name)
            update.add(name, ttl, rdtype, *values)
        response = dns.query.tcp(update, self.host, port=self.port, timeout=2)
        if response.rcode() != dns.rcode.NOERROR:
            raise RuntimeError(f"restoring the zone failed: {dns.rcode.to_text(response.rcode())}")

    def remove(self, *names: str) -> None:
        """Delete every record at ``names`` (relative to the zone), e.g. ones a test created."""
        update = dns.update.UpdateMessage(f"{self.zone}.", keyring=self.keyring(),
                                          keyname=dns.name.from_text(self.key_name))
        for name in names:
            update.delete(name)
        response = dns.query.tcp(update, self.host, port=self.port, timeout=2)
        if response.rcode() != dns.rcode.NOERROR:
            raise RuntimeError(f"removing {names} failed: {dns.rcode.to_text(response.rcode())}")

    def delete_values(self, name: str, rdtype: str, *values: str) -> None:
        """Delete single records, e.g. one NS at the apex (a whole apex NS RRset cannot be deleted)."""
        update = dns.update.UpdateMessage(f"{self.zone}.", keyring=self.keyring(),
                                          keyname=dns.name.from_text(self.key_name))
        for value in values:
            update.delete(name, rdtype, value)
        response = dns.query.tcp(update, self.host, port=self.port, timeout=2)
        if response.rcode() != dns.rcode.NOERROR:
            raise RuntimeError(f"deleting {name} {rdtype} failed: {dns.rcode.to_text(response.rcode())}")

    def stop(self) -> None:
        terminate(self.process)
        shutil.rmtree(self.directory, ignore_errors=True)


def free_udp_tcp_port(hosts: tuple[str, ...]) -> int:
    """A port free for both TCP and UDP on every one of ``hosts`` (IPv4 or IPv6 addresses)."""
    def family(host: str) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in host else socket.AF_INET

    for _ in range(50):
        with socket.socket(family(hosts[0]), socket.SOCK_STREAM) as probe:
            probe.bind((hosts[0], 0))
            port = int(probe.getsockname()[1])
        try:
            for host in hosts:
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(family(host), kind) as sock:
                        sock.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port for named")


def zone_text(zone: str, records: tuple[tuple[str, str, int, tuple[str, ...]], ...],
              nameservers: tuple[tuple[str, str], ...]) -> str:
    """The zone file. A nameserver label ending in a dot is outside the zone: an NS record, no glue;
    an address with a colon is glue of type AAAA, an empty address no glue at all."""
    lines = ["$TTL 60", f"@ IN SOA {nameservers[0][0]}.{zone}. hostmaster.{zone}. ( 1 60 60 3600 60 )"]
    lines += [f"@ IN NS {label if label.endswith('.') else f'{label}.{zone}.'}" for label, _addr in nameservers]
    lines += [f"{label} IN {'AAAA' if ':' in addr else 'A'} {addr}" for label, addr in nameservers
              if addr and not label.endswith(".")]
    for name, rdtype, ttl, values in records:
        lines += [f"{name} {ttl} IN {rdtype} {value}" for value in values]
    return "\n".join(lines) + "\n"


def start_named(*, zone: str = ZONE,
                records: tuple[tuple[str, str, int, tuple[str, ...]], ...] = BASELINE,
                host: str = "127.0.0.1", port: int | None = None,
                nameservers: tuple[tuple[str, str], ...] = (("ns1", "127.0.0.1"),),
                algorithm: str = ALGORITHM, secret: str | None = None,
                allow_update: bool = True, notify: tuple[tuple[str, int], ...] = (),
                primary: NamedServer | None = None, wrap: Sequence[str] = ()) -> NamedServer:
    """Start a fresh ``named`` serving ``zone``; fails or skips when BIND is not installed.

    ``notify`` lists (address, port) of secondaries to NOTIFY after each change; with
    ``primary`` the server is a secondary that transfers the zone from that primary. ``wrap``
    prefixes the ``named`` command (then ``port`` defaults to 53: a free port here says nothing there).
    """
    named = require_binary("named", hint=_HINT, extra_dirs=("/usr/sbin",))
    directory = Path(tempfile.mkdtemp(prefix="named-"))
    secret = secret or base64.b64encode(secrets.token_bytes(32)).decode()
    port = port or (53 if wrap else free_udp_tcp_port((host,)))
    (directory / "tsig.key").write_text(
        f'key "{KEY_NAME}" {{ algorithm {algorithm}; secret "{secret}"; }};\n')
    (directory / f"{zone}.zone").write_text(zone_text(zone, records, nameservers))
    if primary is not None:
        zone_clause = (f'type secondary; file "{zone}.zone"; '
                       f"primaries {{ {primary.host} port {primary.port}; }};")
        (directory / f"{zone}.zone").unlink()
    else:
        zone_clause = f'type primary; file "{zone}.zone"; allow-transfer {{ any; }};'
        if allow_update:
            zone_clause += f' allow-update {{ key "{KEY_NAME}"; }};'
        if notify:
            zone_clause += f" also-notify {{ {' '.join(f'{a} port {p};' for a, p in notify)} }};"
    listen = (f"listen-on {{ none; }};\n    listen-on-v6 port {port} {{ {host}; }};" if ":" in host
              else f"listen-on port {port} {{ {host}; }};\n    listen-on-v6 {{ none; }};")
    (directory / "named.conf").write_text(f"""
include "{directory}/tsig.key";
options {{
    directory "{directory}";
    pid-file "{directory}/named.pid";
    session-keyfile "{directory}/session.key";
    {listen}
    recursion no;
    dnssec-validation no;
    allow-query {{ any; }};
    notify {"explicit" if notify else "no"};
    notify-delay 0;
    allow-notify {{ any; }};
}};
controls {{ }};
zone "{zone}" {{ {zone_clause} }};
""")
    return _run(named, directory, host, port, zone, algorithm, secret, wrap=wrap)


def start_resolver(forward_to: NamedServer, *, zones: dict[str, str] | None = None,
                   host: str = "127.0.0.1", port: int | None = None, wrap: Sequence[str] = ()) -> NamedServer:
    """A recursive ``named`` that forwards ``forward_to``'s zone to it and serves ``zones`` itself.

    ``zones`` maps a zone name to its records (zone file lines after the SOA/NS, e.g.
    ``"ns IN AAAA ::1"``); the cache is off so every answer is fresh. No TSIG key is needed.
    ``wrap`` and ``port`` as for :func:`start_named`.
    """
    named = require_binary("named", hint=_HINT, extra_dirs=("/usr/sbin",))
    directory = Path(tempfile.mkdtemp(prefix="named-resolver-"))
    port = port or (53 if wrap else free_udp_tcp_port((host,)))
    clauses = [f'zone "{forward_to.zone}" {{ type forward; forward only; '
               f"forwarders {{ {forward_to.host} port {forward_to.port}; }}; }};"]
    for name, body in (zones or {}).items():
        (directory / f"{name}.zone").write_text(
            f"$TTL 60\n@ IN SOA ns.{name}. hostmaster.{name}. ( 1 60 60 3600 60 )\n@ IN NS ns.{name}.\n{body}\n")
        clauses.append(f'zone "{name}" {{ type primary; file "{name}.zone"; }};')
    (directory / "tsig.key").write_text("")
    clause_text = "\n".join(clauses)
    (directory / "named.conf").write_text(f"""
options {{
    directory "{directory}";
    pid-file "{directory}/named.pid";
    session-keyfile "{directory}/session.key";
    listen-on port {port} {{ {host}; }};
    listen-on-v6 {{ none; }};
    recursion yes;
    allow-recursion {{ any; }};
    allow-query {{ any; }};
    dnssec-validation no;
    max-cache-ttl 0;
    max-ncache-ttl 0;
    notify no;
}};
controls {{ }};
{clause_text}
""")
    return _run(named, directory, host, port, forward_to.zone, ALGORITHM, "", soa_zone=forward_to.zone,
                wrap=wrap)


def _run(named: str, directory: Path, host: str, port: int, zone: str, algorithm: str, secret: str,
         *, soa_zone: str | None = None, wrap: Sequence[str] = ()) -> NamedServer:
    """Start ``named`` on ``directory/named.conf`` and wait until it answers the SOA of ``zone``."""
    log_path = directory / "named.log"
    with log_path.open("wb") as log_file:  # the child keeps its own descriptor
        process = subprocess.Popen([*wrap, named, "-g", "-c", str(directory / "named.conf")],
                                   stdout=subprocess.DEVNULL, stderr=log_file)
    server = NamedServer(directory, host, port, zone, KEY_NAME, algorithm, secret, process)
    deadline = time.monotonic() + 10
    query = dns.message.make_query(f"{soa_zone or zone}.", "SOA")
    while True:
        if process.poll() is not None:
            err = log_path.read_text(errors="replace")
            shutil.rmtree(directory, ignore_errors=True)
            raise RuntimeError(f"named exited with {process.returncode}:\n{err[-2000:]}")
        with contextlib.suppress(OSError, dns.exception.Timeout, EOFError):
            if dns.query.tcp(query, host, port=port, timeout=0.2).answer:
                break
        if time.monotonic() > deadline:
            err = log_path.read_text(errors="replace")
            server.stop()
            raise RuntimeError(f"named did not answer within 10 s:\n{err[-2000:]}")
        time.sleep(0.01)  # polling a starting server, not a unit test
    return server


@pytest.fixture(scope="module")
def bind_server() -> Iterator[NamedServer]:
    """One fresh primary for the test module."""
    server = start_named()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bind_zone(bind_server: NamedServer) -> NamedServer:
    """The module's server with the baseline records restored before the test."""
    bind_server.write(BASELINE)
    return bind_server


def dns_config_for(server: NamedServer, **overrides: Any) -> DnsConfig:
    """A service DNS config for ``server``: app (A), api (AAAA), web (CNAME), epoch beside app."""
    data: dict[str, Any] = {
        "provider": {"type": "rfc2136", "servers": [server.address], "zone": server.zone,
                     "tsig": {"name": server.key_name, "algorithm": server.algorithm,
                              "secret": server.secret},
                     "timeout": "1s", "attempts": 2, "backoff": "10ms"},
        "records": [
            {"name": "app", "type": "A", "targets": {"gcp": ["192.0.2.10"], "azure": ["198.51.100.10"]}},
            {"name": "api", "type": "AAAA", "ttl": "30s",
             "targets": {"gcp": ["2001:db8::10"], "azure": ["2001:db8:1::10"]}},
            {"name": "web", "type": "CNAME",
             "targets": {"gcp": ["gcp.example.net"], "azure": ["azure.example.net"]}},
        ],
        "epoch_record": "_failover-epoch.app",
        "verify": {"nameservers": [server.address], "deadline": "2s", "interval": "20ms",
                   "query_timeout": "500ms"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return DnsConfig.model_validate(data)
