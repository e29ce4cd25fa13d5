"""RFC 2136 dynamic updates with TSIG, over TCP: the conditional shift as one update message.

A shift is a single UPDATE whose prerequisite section says "every record RRset equals what was
read, and the epoch TXT equals what was read (or is absent)" and whose update section replaces
them all. The server applies prerequisites and updates atomically, so two racing shifts cannot
both win: the loser gets NXRRSET/YXRRSET, reads the zone back and raises DnsConflict with it.

Every request (reads too) is signed with the configured TSIG key, has a deadline, and is retried
on timeout or a lost connection with bounded, doubling backoff. Updates and the read-backs that
decide a conflict go to the first configured server (the primary) only: a secondary would refuse
an update or answer stale data. Plain reads fall back to the other servers, one try each, only
when the primary cannot be reached. Every error names the server that actually answered.

A write whose answers were all lost is read back once at the primary: finding our own op token
means it was applied (success), anything else keeps it DnsUnavailable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace

import dns.asyncquery
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.update
from pydantic import SecretStr

from actions.dns.errors import DnsAuthError, DnsConfigError, DnsConflict, DnsError, DnsUnavailable
from actions.dns.state import (
    DnsState,
    RecordState,
    conflict,
    derive_op,
    is_applied,
    new_op,
    parse_epoch,
    planned_state,
    resumed_state,
    site_of,
)
from engine.config.dns import DnsConfig, RecordConfig, Rfc2136Config, canonical_value, split_server

_CONFLICT = {dns.rcode.NXRRSET, dns.rcode.YXRRSET, dns.rcode.NXDOMAIN, dns.rcode.YXDOMAIN}
_TSIG_ERRORS = (dns.tsig.PeerError, dns.tsig.BadSignature, dns.tsig.BadTime)
_MAX_BACKOFF = 2.0


def find_rrset(response: dns.message.Message, name: str, rdtype: str) -> dns.rrset.RRset | None:
    """The answer RRset owned by ``name`` with type ``rdtype``, if any."""
    qname = dns.name.from_text(name)
    wanted = dns.rdatatype.from_text(rdtype)
    for rrset in response.answer:
        if rrset.name == qname and rrset.rdtype == wanted:
            return rrset
    return None


class _TsigKey:
    """The TSIG key, built when a message is signed: no repr of the provider shows the secret."""

    __slots__ = ("_algorithm", "_name", "_secret")

    def __init__(self, name: dns.name.Name, algorithm: dns.name.Name, secret: SecretStr) -> None:
        self._name, self._algorithm, self._secret = name, algorithm, secret

    def key(self) -> dns.tsig.Key:
        return dns.tsig.Key(self._name, self._secret.get_secret_value(), self._algorithm)

    def __repr__(self) -> str:
        return f"<TSIG key {self._name.to_text()} ({self._algorithm.to_text()}), secret hidden>"


class _ServerRefused(DnsConfigError):
    """A server answered REFUSED/NOTAUTH to a query: it does not serve the zone (or not to this key)."""


Server = tuple[str, int]


class Rfc2136Provider:
    """Reads and shifts a service's records on a server that speaks RFC 2136 with TSIG."""

    def __init__(self, config: DnsConfig, service: str,
                 *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, sign_queries: bool = True) -> None:
        if not isinstance(config.provider, Rfc2136Config):
            raise TypeError("Rfc2136Provider needs an rfc2136 provider config")
        self._config = config
        self._p: Rfc2136Config = config.provider
        self._sleep = sleep
        self._sign_queries = sign_queries  # False: a read-only use without the TSIG secret (dns show)
        self._service = service
        self._salt = new_op()
        self._zone = dns.name.from_text(self._p.zone)
        self._keyname = dns.name.from_text(self._p.tsig.name)
        self._algorithm = dns.name.from_text(self._p.tsig.algorithm)
        self._tsig = _TsigKey(self._keyname, self._algorithm, self._p.tsig.secret)
        self._servers = [split_server(s, self._p.port) for s in self._p.servers]
        self.epoch_name = config.epoch_fqdn(service)
        self._configs = {config.fqdn(r.name): r for r in config.records}

    def __repr__(self) -> str:
        return (f"Rfc2136Provider(zone={self._p.zone!r}, servers={self._p.servers!r}, "
                f"key={self._p.tsig.name!r})")

    @property
    def primary(self) -> Server:
        return self._servers[0]

    async def aclose(self) -> None:
        return None

    def _sign(self, message: dns.message.Message) -> dns.message.Message:
        message.use_tsig(self._tsig.key(), keyname=self._keyname, algorithm=self._algorithm)
        return message

    def _key_words(self) -> str:
        return f"TSIG key '{self._p.tsig.name}' ({self._p.tsig.algorithm}) for zone {self._p.zone}"

    async def _exchange(self, build: Callable[[], dns.message.Message], what: str, server: Server,
                        *, attempts: int | None = None) -> dns.message.Message:
        """Send a freshly built (and signed) message to ``server``; retry timeouts and lost connections."""
        host, port = server
        tries = self._p.attempts if attempts is None else attempts
        delay = self._p.backoff
        last = ""
        for attempt in range(tries):
            try:
                async with asyncio.timeout(self._p.timeout + 0.5):
                    return await dns.asyncquery.tcp(build(), host, port=port, timeout=self._p.timeout)
            except _TSIG_ERRORS as exc:
                reason = str(exc) or type(exc).__name__
                raise DnsAuthError(f"{host}:{port} rejected {self._key_words()}: {reason}") from None
            except (dns.exception.Timeout, TimeoutError):
                last = f"timeout after {self._p.timeout:g}s from {host}:{port}"
            except ConnectionRefusedError:
                last = f"connect refused by {host}:{port}"
            except (OSError, EOFError, dns.exception.FormError) as exc:
                last = f"{type(exc).__name__} from {host}:{port}"
            if attempt + 1 < tries:
                await self._sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
        raise DnsUnavailable(f"{what}: no answer after {tries} tr{'y' if tries == 1 else 'ies'} ({last})")

    async def _query(self, name: str, rdtype: str, server: Server, attempts: int | None) -> dns.message.Message:
        def build() -> dns.message.Message:
            query = dns.message.make_query(name, rdtype)
            return self._sign(query) if self._sign_queries else query

        response = await self._exchange(build,
                                        f"query {name.rstrip('.')} {rdtype}", server, attempts=attempts)
        rcode = response.rcode()
        host, port = server
        if rcode in (dns.rcode.REFUSED, dns.rcode.NOTAUTH):
            raise _ServerRefused(f"{host}:{port} does not serve zone {self._p.zone} "
                                 f"({dns.rcode.to_text(rcode)} for {name.rstrip('.')})")
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise DnsUnavailable(f"query {name.rstrip('.')} {rdtype}: {host}:{port} answered "
                                 f"{dns.rcode.to_text(rcode)}")
        return response

    def _record(self, fqdn: str, config: RecordConfig, response: dns.message.Message) -> RecordState:
        rrset = find_rrset(response, fqdn, config.type)
        if rrset is None:
            cname = find_rrset(response, fqdn, "CNAME") if config.type != "CNAME" else None
            if cname is not None:
                raise DnsConfigError(f"{fqdn.rstrip('.')} is a CNAME (to {cname[0].to_text()}), "
                                     f"expected {config.type}")
            raise DnsConfigError(f"record missing: no {config.type} record at {fqdn.rstrip('.')} "
                                 f"in zone {self._p.zone}")
        values = tuple(sorted(canonical_value(config.type, rdata.to_text()) for rdata in rrset))
        return RecordState(fqdn, config.type, int(rrset.ttl), values, site_of(values, config.targets))

    async def _read_from(self, server: Server, records: Sequence[RecordConfig] | None,
                         attempts: int | None = None) -> DnsState:
        """Query every record and the epoch TXT at ``server`` (signed, concurrently)."""
        chosen = list(records or self._config.records)
        names = [self._config.fqdn(r.name) for r in chosen]
        queries = [self._query(n, r.type, server, attempts) for n, r in zip(names, chosen, strict=True)]
        results = await asyncio.gather(*queries, self._query(self.epoch_name, "TXT", server, attempts),
                                       return_exceptions=True)
        for result in results:  # every query has finished (each has a deadline); report the first error
            if isinstance(result, BaseException):
                raise result
        responses = [r for r in results if isinstance(r, dns.message.Message)]
        states = tuple(self._record(n, r, resp) for n, r, resp in zip(names, chosen, responses, strict=False))
        txt = find_rrset(responses[-1], self.epoch_name, "TXT")
        if txt is not None and len(txt) != 1:
            raise DnsConfigError(f"epoch record {self.epoch_name.rstrip('.')} has {len(txt)} TXT values, "
                                 f"expected one")
        if txt is None:
            epoch = parse_epoch(None, self.epoch_name)
        else:
            rdata = txt[0]
            text = b"".join(rdata.strings).decode(errors="replace")
            epoch = parse_epoch(text, self.epoch_name)
            epoch = replace(epoch, ref=rdata.to_text())
        return DnsState(self._p.zone, states, epoch, self.epoch_name)

    async def read(self, records: Sequence[RecordConfig] | None = None) -> DnsState:
        """The state at the primary; only if the primary cannot be reached, at the next servers (one try each)."""
        try:
            return await self._read_from(self.primary, records)
        except DnsUnavailable as unreachable:
            if len(self._servers) == 1:
                raise
            notes = [f"{self.primary[0]}:{self.primary[1]}: {unreachable}"]
        for server in self._servers[1:]:
            try:
                return await self._read_from(server, records, attempts=1)
            except (DnsUnavailable, DnsAuthError, _ServerRefused) as exc:
                notes.append(f"{server[0]}:{server[1]}: {exc}")
        raise DnsUnavailable("no server could be read: " + "; ".join(notes))

    def _conditional(self, expected: DnsState) -> dns.update.UpdateMessage:
        """A signed UPDATE whose prerequisites are ``expected``: every record's values and the epoch TXT."""
        key = self._tsig.key()
        update = dns.update.UpdateMessage(self._zone, keyring=key, keyname=self._keyname,
                                          keyalgorithm=self._algorithm)
        for record in expected.records:
            update.present(dns.name.from_text(record.name),
                           dns.rdataset.from_text_list("IN", record.rtype, 0, list(record.values)))
        epoch_name = dns.name.from_text(expected.epoch_name)
        if expected.epoch.text is None:
            update.absent(epoch_name, "TXT")
        else:
            ref = expected.epoch.ref or _quote(expected.epoch.text)
            update.present(epoch_name, dns.rdataset.from_text_list("IN", "TXT", 0, [ref]))
        return update

    def _update(self, expected: DnsState, planned: DnsState) -> dns.update.UpdateMessage:
        update = self._conditional(expected)
        for record in planned.records:
            update.replace(dns.name.from_text(record.name), record.ttl, record.rtype, *record.values)
        epoch_ttl = min(r.ttl for r in planned.records)
        update.replace(dns.name.from_text(expected.epoch_name), epoch_ttl, "TXT", _quote(planned.epoch.text or ""))
        return update

    def _conflict(self, expected: DnsState, current: DnsState) -> DnsConflict:
        return conflict(self._p.zone, expected, current)

    async def shift(self, expected: DnsState, target_site: str, new_epoch: int,
                    *, op: str | None = None) -> DnsState:
        """One atomic, conditional UPDATE from ``expected`` to ``target_site`` at ``new_epoch``, at the primary."""
        op = op or derive_op(self._salt, self._service, new_epoch, target_site)
        chosen = [self._configs[r.name] for r in expected.records]
        resumed = resumed_state(expected, self._configs, target_site, new_epoch, op)
        if resumed is not None:  # the caller already read our own write: confirm it is still there
            current = await self._read_from(self.primary, chosen)
            if is_applied(current, resumed):
                return current
            raise self._conflict(expected, current)
        planned = planned_state(expected, self._configs, target_site, new_epoch, op)
        try:
            response = await self._exchange(lambda: self._update(expected, planned),
                                            f"update of zone {self._p.zone} at "
                                            f"{self.primary[0]}:{self.primary[1]}", self.primary)
        except DnsUnavailable as lost:  # maybe applied with every reply lost: one read-back decides
            try:
                current = await self._read_from(self.primary, chosen, attempts=1)
            except DnsError:
                raise lost from None
            if is_applied(current, planned):
                return current
            raise
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            return planned
        host, port = self.primary
        if rcode in _CONFLICT:
            current = await self._read_from(self.primary, chosen)
            if is_applied(current, planned):  # our own update, applied before a reply that was lost
                return current
            raise self._conflict(expected, current)
        if rcode in (dns.rcode.REFUSED, dns.rcode.NOTAUTH):
            raise DnsAuthError(f"{host}:{port} refused the update signed with {self._key_words()} "
                               f"({dns.rcode.to_text(rcode)})")
        raise DnsError(f"{host}:{port} answered {dns.rcode.to_text(rcode)} to the update of zone "
                       f"{self._p.zone}")

    async def retime(self, expected: DnsState, ttls: Mapping[str, int]) -> DnsState:
        """Change only the TTLs of ``expected``'s records (``ttls``: absolute name -> seconds), conditionally:
        the same prerequisites as a shift, the same values, the epoch untouched (a switchover lowers the TTL
        ahead of the move). Raises DnsConflict when the zone is not ``expected``."""
        records = tuple(replace(r, ttl=int(ttls.get(r.name, r.ttl))) for r in expected.records)
        planned = replace(expected, records=records)

        def build() -> dns.message.Message:
            update = self._conditional(expected)
            for record in planned.records:
                update.replace(dns.name.from_text(record.name), record.ttl, record.rtype, *record.values)
            return update

        host, port = self.primary
        response = await self._exchange(build, f"TTL change in zone {self._p.zone} at {host}:{port}", self.primary)
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            return planned
        if rcode in (dns.rcode.REFUSED, dns.rcode.NOTAUTH):
            raise DnsAuthError(f"{host}:{port} refused the update signed with {self._key_words()} "
                               f"({dns.rcode.to_text(rcode)})")
        if rcode in _CONFLICT:
            current = await self._read_from(self.primary, [self._configs[r.name] for r in expected.records])
            if [(r.name, r.values, r.ttl) for r in current.records] == [(r.name, r.values, r.ttl)
                                                                       for r in planned.records]:
                return current  # ours, applied before a reply that was lost
            raise self._conflict(expected, current)
        raise DnsError(f"{host}:{port} answered {dns.rcode.to_text(rcode)} to the TTL change in zone {self._p.zone}")

    async def validate(self, expected: DnsState, target_site: str, new_epoch: int) -> str:
        """Prove that the shift would be accepted, without making it (a shadow drill).

        A signed UPDATE with the same compare-and-set prerequisites as :meth:`shift` and an empty
        update section: the server checks the TSIG signature, then the prerequisites (atomically,
        as for the real shift), then has nothing to change. NOERROR proves the key and that the
        zone is what was read; NXRRSET/YXRRSET is a conflict. The update policy is consulted per
        changed record, so the grant for the records themselves is not proven (BIND:
        ``update-policy``).
        """
        host, port = self.primary
        response = await self._exchange(lambda: self._conditional(expected),
                                        f"validation of zone {self._p.zone} at {host}:{port}", self.primary)
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            return (f"{host}:{port} accepted {self._key_words()} and the compare-and-set prerequisites of a "
                    f"shift to {target_site} at epoch {new_epoch} (nothing changed)")
        if rcode in (dns.rcode.REFUSED, dns.rcode.NOTAUTH):
            raise DnsAuthError(f"{host}:{port} refused the update signed with {self._key_words()} "
                               f"({dns.rcode.to_text(rcode)})")
        if rcode in _CONFLICT:
            raise self._conflict(expected, await self._read_from(self.primary, None))
        raise DnsError(f"{host}:{port} answered {dns.rcode.to_text(rcode)} to the validation of zone "
                       f"{self._p.zone}")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
