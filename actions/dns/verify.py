"""Proof that a shift reached the world: ask every authoritative server directly until all agree.

After a shift, :class:`Verifier` queries each authoritative nameserver of the zone (configured,
or discovered through the zone's NS records) and the optional resolvers, round after round, until
every one answers the new values for every record or the deadline passes. It records, per
server, how long the new answer took to appear. Missing the deadline is a result, not an error:
the message names who still answers the old site ("ns2.example.test (10.0.0.2:53) still answers
gcp after 120s").

Discovery (no ``verify.nameservers`` configured): the zone's NS names are asked of the primary
update server (RFC 2136) or the system resolver (Cloudflare). Each name's addresses (A *and*
AAAA) are then found like this, and queried on this port:

- a name *inside* the zone (``ns1.example.com`` for ``example.com``): its glue, from the same
  server as the NS records, on that server's port. In production that is 53; a lab or test zone
  served on another port is served there by all of its in-zone nameservers.
- a name *outside* the zone (``ns.provider.net``): resolved through the configured resolvers, else
  the system resolver, within ``query_timeout``; queried on port 53, the only port an NS record
  implies.

``verify.port`` applies only to configured nameservers written without a port. A nameserver whose
address cannot be found is never skipped silently: it is a check that fails with the reason, so
the verification is not ok and its message names it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import dns.asyncquery
import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.rrset

from actions.dns.errors import DnsConfigError, DnsUnavailable
from actions.dns.state import UNKNOWN, DnsState, site_of
from engine.config.base import format_duration
from engine.config.dns import DnsConfig, canonical_value, split_server
from engine.core.clock import Clock, SystemClock

ServerKind = Literal["authoritative", "resolver"]


@dataclass(frozen=True)
class Server:
    """Where to ask: a label for humans, an address and whether it is authoritative."""

    label: str
    host: str
    port: int
    kind: ServerKind = "authoritative"
    problem: str | None = None  # why it cannot be asked (e.g. its address could not be resolved)


@dataclass(frozen=True)
class ServerCheck:
    """One server's outcome: seconds until it answered the target (None: never), and its last answer."""

    server: Server
    seconds: float | None
    answer: str

    @property
    def ok(self) -> bool:
        return self.seconds is not None


@dataclass(frozen=True)
class Verification:
    """Every server's outcome and one sentence about the whole."""

    ok: bool
    site: str
    elapsed: float
    checks: tuple[ServerCheck, ...]
    message: str

    @property
    def lagging(self) -> tuple[ServerCheck, ...]:
        return tuple(c for c in self.checks if not c.ok)


def _answer_values(response: dns.message.Message, name: str, rdtype: str) -> tuple[str, ...] | None:
    qname = dns.name.from_text(name)
    wanted = dns.rdatatype.from_text(rdtype)
    for rrset in response.answer:
        if rrset.name == qname and rrset.rdtype == wanted:
            return tuple(sorted(canonical_value(rdtype, rdata.to_text()) for rdata in rrset))
    return None


class Verifier:
    """Polls a zone's authoritative servers (and resolvers) until they answer a shifted state."""

    def __init__(self, config: DnsConfig, *, discover_from: tuple[str, int] | None = None,
                 clock: Clock | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._config = config
        self._v = config.verify
        self._discover_from = discover_from
        self._clock: Clock = clock or SystemClock()
        self._sleep = sleep
        self._servers: list[Server] | None = None
        self._targets = {config.fqdn(r.name): r.targets for r in config.records}

    async def servers(self) -> list[Server]:
        """Configured nameservers, else the zone's NS records; then the resolvers. Cached."""
        if self._servers is None:
            if self._v.nameservers:
                found = [Server(s, *split_server(s, self._v.port)) for s in self._v.nameservers]
            else:
                found = await self._discover()
            found += [Server(f"resolver {s}", *split_server(s, 53), kind="resolver")
                      for s in self._v.resolvers]
            self._servers = found
        return list(self._servers)

    async def _ask(self, name: str, rdtype: str) -> list[dns.rrset.RRset]:
        """NS records and in-zone glue: from the discovery server, else the system resolver."""
        if self._discover_from is None:
            return await self._resolve(name, rdtype, self._system_resolver())
        host, port = self._discover_from
        response = await dns.asyncquery.tcp(dns.message.make_query(name, rdtype), host, port=port,
                                            timeout=self._v.query_timeout)
        return list(response.answer)

    def _system_resolver(self) -> dns.asyncresolver.Resolver:
        resolver = dns.asyncresolver.Resolver()
        resolver.lifetime = self._v.query_timeout
        return resolver

    def _out_of_zone_resolver(self) -> dns.asyncresolver.Resolver:
        """The configured resolvers (their own ports), else the system resolver; bounded by query_timeout."""
        if not self._v.resolvers:
            return self._system_resolver()
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port)
                                for host, port in (split_server(s, 53) for s in self._v.resolvers)]
        resolver.lifetime = self._v.query_timeout
        return resolver

    @staticmethod
    async def _resolve(name: str, rdtype: str, resolver: dns.asyncresolver.Resolver) -> list[dns.rrset.RRset]:
        try:
            answer = await resolver.resolve(name, rdtype)
        except dns.resolver.NoAnswer:
            return []
        return [answer.rrset] if answer.rrset is not None else []

    async def _addresses(self, target: str, in_zone: bool) -> tuple[list[str], str]:
        """The A and AAAA addresses of an NS name, and why there are none (empty when found)."""
        reasons: list[str] = []
        addresses: list[str] = []
        resolver = None if in_zone and self._discover_from is not None else self._out_of_zone_resolver()
        for rdtype in ("A", "AAAA"):
            try:
                async with asyncio.timeout(self._v.query_timeout + 0.5):
                    if resolver is None:
                        rrsets = await self._ask(target, rdtype)
                    else:
                        rrsets = await self._resolve(target, rdtype, resolver)
            except (dns.exception.DNSException, OSError, EOFError, TimeoutError) as exc:
                reasons.append(f"{rdtype}: {type(exc).__name__}")
                continue
            wanted = dns.rdatatype.from_text(rdtype)
            addresses += [rdata.to_text() for rrset in rrsets if rrset.rdtype == wanted for rdata in rrset]
        if addresses:
            return addresses, ""
        return [], "; ".join(reasons) or "no A or AAAA record"

    async def _discover(self) -> list[Server]:
        zone = self._config.provider.zone + "."
        zone_name = dns.name.from_text(zone)
        try:
            async with asyncio.timeout(self._v.query_timeout * 2 + 0.5):
                ns_rrsets = await self._ask(zone, "NS")
        except (dns.exception.DNSException, OSError, EOFError, TimeoutError) as exc:
            raise DnsUnavailable(f"cannot discover the nameservers of {zone.rstrip('.')}: "
                                 f"{type(exc).__name__}") from None
        targets = sorted({rdata.to_text() for rrset in ns_rrsets
                          if rrset.rdtype == dns.rdatatype.NS for rdata in rrset})
        if not targets:
            raise DnsConfigError(f"zone {zone.rstrip('.')} lists no NS records")
        found = await asyncio.gather(*(
            self._addresses(t, dns.name.from_text(t).is_subdomain(zone_name)) for t in targets))
        servers = []
        for target, (addresses, reason) in zip(targets, found, strict=True):
            name = target.rstrip(".")
            in_zone = dns.name.from_text(target).is_subdomain(zone_name)
            port = self._discover_from[1] if in_zone and self._discover_from is not None else 53
            if not addresses:
                where = "the zone's own glue" if in_zone and self._discover_from else (
                    "the configured resolvers" if self._v.resolvers else "the system resolver")
                servers.append(Server(f"{name} (no address)", "", 0,
                                      problem=f"address unknown: {where} gave none ({reason})"))
            for address in addresses:
                shown = f"[{address}]" if ":" in address else address
                servers.append(Server(f"{name} ({shown}:{port})", address, port))
        return servers

    async def _ask_record(self, server: Server, name: str, rdtype: str) -> tuple[str, ...] | str:
        """The values ``server`` answers for ``name``/``rdtype`` (empty if none), or a failure phrase."""
        query = dns.message.make_query(name, rdtype)
        if server.kind == "authoritative":
            query.flags &= ~dns.flags.RD
        try:
            async with asyncio.timeout(self._v.query_timeout + 0.5):
                response, _tcp = await dns.asyncquery.udp_with_fallback(
                    query, server.host, port=server.port, timeout=self._v.query_timeout)
        except (dns.exception.DNSException, OSError, EOFError, TimeoutError):
            return "no answer"
        if response.rcode() != dns.rcode.NOERROR:
            return dns.rcode.to_text(response.rcode())
        return _answer_values(response, name, rdtype) or ()

    async def _probe(self, server: Server, state: DnsState) -> tuple[bool, str]:
        """Ask ``server`` for every record; (all match the state, a short description of its answer)."""
        answers = await asyncio.gather(*(self._ask_record(server, r.name, r.rtype) for r in state.records))
        seen: set[str] = set()
        all_match = True
        for record, values in zip(state.records, answers, strict=True):
            if isinstance(values, str):
                return False, values
            all_match = all_match and values == record.values
            config = self._targets.get(record.name)
            site = site_of(values, config) if config else UNKNOWN
            seen.add(site if site != UNKNOWN else ",".join(values) or "nothing")
        distinct = sorted(seen)
        return all_match, distinct[0] if len(distinct) == 1 else "mixed " + "/".join(distinct)

    async def verify(self, state: DnsState, *, deadline: float | None = None) -> Verification:
        """Poll until every server answers ``state`` or ``deadline`` seconds (default: config) pass.

        Each server's time is when its own answer arrived, not the end of the round. A server
        with a ``problem`` (no address) is not polled; it fails the verification at once.
        """
        limit = self._v.deadline if deadline is None else deadline
        servers = await self.servers()
        pollable = [s for s in servers if s.problem is None]
        start = self._clock.monotonic()
        done: dict[Server, float] = {}
        answers: dict[Server, str] = {s: s.problem for s in servers if s.problem is not None}

        async def timed(server: Server) -> tuple[bool, str, float]:
            ok, answer = await self._probe(server, state)
            return ok, answer, self._clock.monotonic() - start

        while True:
            pending = [s for s in pollable if s not in done]
            results = await asyncio.gather(*(timed(s) for s in pending))
            for server, (ok, answer, answered_at) in zip(pending, results, strict=True):
                answers[server] = answer
                if ok:
                    done[server] = answered_at
            elapsed = self._clock.monotonic() - start
            if len(done) == len(pollable) or elapsed >= limit:
                break
            await self._sleep(min(self._v.interval, limit - elapsed))
        elapsed = self._clock.monotonic() - start
        checks = tuple(ServerCheck(s, done.get(s), answers.get(s, "no answer")) for s in servers)
        return Verification(len(done) == len(servers), state.site, elapsed, checks,
                            _sentence(checks, state.site, limit))


def _sentence(checks: Sequence[ServerCheck], site: str, limit: float) -> str:
    lagging = [c for c in checks if not c.ok]
    if not lagging:
        slowest = max(checks, key=lambda c: c.seconds or 0.0)
        return (f"all {len(checks)} servers answer {site}; slowest {slowest.server.label} "
                f"after {slowest.seconds or 0.0:.3f}s")
    waited = format_duration(limit)
    return "; ".join(f"{c.server.label}: {c.server.problem}" if c.server.problem is not None
                     else f"{c.server.label} still answers {c.answer} after {waited}" for c in lagging)
