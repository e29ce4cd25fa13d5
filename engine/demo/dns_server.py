"""A small authoritative DNS server for the demo when BIND is not installed: one zone, RFC 2136 with TSIG.

It serves one zone from memory over UDP and TCP on one loopback port, so the engine's RFC 2136
provider (``actions/dns/rfc2136.py``) and its verifier (``actions/dns/verify.py``) work against it
exactly as against BIND:

- **Queries** are answered authoritatively (AA): the RRset asked for, a CNAME at the name (followed
  inside the zone), every RRset for ``ANY``, NXDOMAIN or NODATA with the SOA in the authority
  section, REFUSED outside the zone. Over UDP an answer larger than the client's buffer is sent
  truncated (TC), so the client retries over TCP.
- **TSIG**: a signed message is verified with the zone's keyring (``dns.message.from_wire``) and
  answered signed. An unknown key or a bad signature or time is answered NOTAUTH with the TSIG error
  (BADKEY, BADSIG, BADTIME) in an unsigned TSIG record, as RFC 8945 asks; dnspython clients raise
  ``PeerBadKey``/``PeerBadSignature`` on it.
- **Updates** (RFC 2136) must be signed with a known key (else REFUSED). The zone section must name
  this zone (else NOTAUTH). Prerequisites are checked in order, each answering its own rcode:
  RRset exists, value independent (class ANY: NXRRSET), value dependent (class IN, the whole RRset
  equal: NXRRSET), RRset does not exist (class NONE: YXRRSET), name in use (ANY/ANY: NXDOMAIN), name
  not in use (NONE/ANY: YXDOMAIN). Then the update section is checked as a whole (FORMERR, NOTZONE)
  before anything changes, and applied in order: add RRs (class IN; a CNAME and other data never
  share a name), delete an RRset (ANY/type), every RRset at a name (ANY/ANY), single RRs (NONE).
  The apex SOA and NS survive deletes. Any change bumps the SOA serial. The whole update runs
  without yielding to the event loop, so two updates never interleave: the compare-and-set of the
  engine's epoch holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import Iterable, Sequence
from typing import Any, cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.rrset
import dns.tsig
import dns.tsigkeyring
import dns.update

Record = tuple[str, str, int, Sequence[str]]  # (name relative to the zone, type, ttl, values)

IN = dns.rdataclass.IN
CLASS_ANY = dns.rdataclass.ANY
CLASS_NONE = dns.rdataclass.NONE
TYPE_ANY = dns.rdatatype.ANY
SOA, NS, CNAME = dns.rdatatype.SOA, dns.rdatatype.NS, dns.rdatatype.CNAME


class _Refuse(Exception):
    """Stop processing an update with this rcode."""

    def __init__(self, rcode: dns.rcode.Rcode) -> None:
        super().__init__(dns.rcode.to_text(rcode))
        self.rcode = rcode


class Zone:
    """The zone's RRsets by (owner, type); every name absolute."""

    def __init__(self, origin: str, records: Iterable[Record], *, nameserver: tuple[str, str] = ("ns1", "127.0.0.1"),
                 serial: int = 1) -> None:
        self.origin = dns.name.from_text(origin)
        self.rrsets: dict[tuple[dns.name.Name, int], dns.rdataset.Rdataset] = {}
        ns = self.absolute(nameserver[0])
        self.put(self.origin, "SOA", 60, [f"{ns} hostmaster.{self.origin} {serial} 60 60 3600 60"])
        self.put(self.origin, "NS", 60, [ns.to_text()])
        if ns.is_subdomain(self.origin):
            self.put(ns, "A", 60, [nameserver[1]])
        for name, rdtype, ttl, values in records:
            self.put(self.absolute(name), rdtype, ttl, values)

    def absolute(self, name: str) -> dns.name.Name:
        return dns.name.from_text(name, origin=self.origin)

    def put(self, name: dns.name.Name, rdtype: str, ttl: int, values: Sequence[str]) -> None:
        rdataset = dns.rdataset.from_text_list(IN, rdtype, ttl, list(values), origin=self.origin, relativize=False)
        self.rrsets[(name, rdataset.rdtype)] = rdataset

    def get(self, name: dns.name.Name, rdtype: int) -> dns.rdataset.Rdataset | None:
        return self.rrsets.get((name, rdtype))

    def at(self, name: dns.name.Name) -> dict[int, dns.rdataset.Rdataset]:
        return {rdtype: ds for (owner, rdtype), ds in self.rrsets.items() if owner == name}

    def in_use(self, name: dns.name.Name) -> bool:
        return any(owner == name for owner, _ in self.rrsets)

    def has_below(self, name: dns.name.Name) -> bool:
        """An empty non-terminal: no data here, but names below it exist (NODATA, not NXDOMAIN)."""
        return any(owner != name and owner.is_subdomain(name) for owner, _ in self.rrsets)

    @property
    def serial(self) -> int:
        soa = self.rrsets[(self.origin, SOA)]
        return int(next(iter(soa)).serial)

    def bump_serial(self) -> None:
        soa = self.rrsets[(self.origin, SOA)]
        old = next(iter(soa))
        self.rrsets[(self.origin, SOA)] = dns.rdataset.from_rdata(
            soa.ttl, old.replace(serial=(self.serial + 1) % 2**32))

    # -- changes (RFC 2136 section 3.4.2) ------------------------------------------------------------
    def add(self, rrset: dns.rrset.RRset) -> bool:
        name, rdtype = rrset.name, rrset.rdtype
        here = self.at(name)
        if (rdtype == CNAME and any(t != CNAME for t in here)) or (rdtype != CNAME and CNAME in here):
            return False  # a CNAME and other data never share a name: the update RR is ignored
        if rdtype == SOA:
            new = next(iter(rrset))
            if name != self.origin or not 0 < (int(new.serial) - self.serial) % 2**32 < 2**31:
                return False
            self.rrsets[(name, SOA)] = dns.rdataset.from_rdata(rrset.ttl, new)
            return True
        existing = self.rrsets.get((name, rdtype))
        if rdtype == CNAME or existing is None:
            merged = dns.rdataset.from_rdata_list(rrset.ttl, list(rrset))
        else:
            merged = dns.rdataset.from_rdata_list(rrset.ttl, [*existing, *(r for r in rrset if r not in existing)])
        if existing is not None and existing == merged and existing.ttl == merged.ttl:
            return False
        self.rrsets[(name, rdtype)] = merged
        return True

    def delete_rrset(self, name: dns.name.Name, rdtype: int) -> bool:
        if name == self.origin and rdtype in (SOA, NS):
            return False
        return self.rrsets.pop((name, rdtype), None) is not None

    def delete_name(self, name: dns.name.Name) -> bool:
        doomed = [key for key in self.rrsets if key[0] == name and not (name == self.origin and key[1] in (SOA, NS))]
        for key in doomed:
            del self.rrsets[key]
        return bool(doomed)

    def delete_rdatas(self, name: dns.name.Name, rdtype: int, rdatas: Iterable[dns.rdata.Rdata]) -> bool:
        existing = self.rrsets.get((name, rdtype))
        if existing is None or (name == self.origin and rdtype == SOA):
            return False
        kept = [r for r in existing if r not in set(rdatas)]
        if len(kept) == len(existing):
            return False
        if not kept:
            if name == self.origin and rdtype == NS:
                return False  # the last NS of the apex stays
            del self.rrsets[(name, rdtype)]
        else:
            self.rrsets[(name, rdtype)] = dns.rdataset.from_rdata_list(existing.ttl, kept)
        return True


def _rrset(name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> dns.rrset.RRset:
    return dns.rrset.from_rdata_list(name, rdataset.ttl, list(rdataset))


class Authority:
    """Answers queries and applies updates for one zone (no I/O: :class:`BuiltinDns` is the transport)."""

    def __init__(self, zone: Zone, keys: dict[str, tuple[str, str]]) -> None:
        self.zone = zone
        self.keyring = dns.tsigkeyring.from_text(keys)  # {key name: (algorithm, base64 secret)}
        self.updates: list[tuple[float, str]] = []  # (time, rcode) of every signed update: what the demo saw

    # -- one message in, one message out -----------------------------------------------------------
    def handle(self, wire: bytes, max_size: int | None = None) -> bytes | None:
        """The reply to ``wire`` (``max_size``: a UDP client's buffer; None over TCP), or None to stay silent."""
        try:
            message = dns.message.from_wire(wire, keyring=self.keyring)
        except dns.message.UnknownTSIGKey:
            return self._tsig_error(wire, dns.rcode.BADKEY)
        except (dns.tsig.BadKey, dns.tsig.BadAlgorithm):
            return self._tsig_error(wire, dns.rcode.BADKEY)
        except dns.tsig.BadSignature:
            return self._tsig_error(wire, dns.rcode.BADSIG)
        except dns.tsig.BadTime:
            return self._tsig_error(wire, dns.rcode.BADTIME)
        except (dns.exception.DNSException, ValueError, struct.error):
            return self._form_error(wire)
        if message.flags & dns.flags.QR:
            return None  # a response sent to a server: never answer it
        opcode = message.opcode()
        if opcode == dns.opcode.QUERY:
            response = self.answer(message)
        elif opcode == dns.opcode.UPDATE:
            response = dns.message.make_response(message)
            response.set_rcode(self.update(message) if message.had_tsig else dns.rcode.REFUSED)
        else:
            response = dns.message.make_response(message)
            response.set_rcode(dns.rcode.NOTIMP)
        return self._wire(message, response, max_size)

    @staticmethod
    def _wire(query: dns.message.Message, response: dns.message.Message, max_size: int | None) -> bytes:
        if max_size is None:
            return response.to_wire()
        limit = max(512, query.payload) if query.edns >= 0 else 512
        try:
            return response.to_wire(max_size=min(limit, max_size))
        except dns.exception.TooBig:
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.TC | (response.flags & dns.flags.AA)
            return truncated.to_wire()

    @staticmethod
    def _form_error(wire: bytes) -> bytes | None:
        if len(wire) < 12 or wire[2] & 0x80:
            return None
        flags = 0x8000 | (wire[2] & 0x78) << 8 | dns.rcode.FORMERR  # QR, the opcode, FORMERR
        return wire[:2] + struct.pack("!HHHHH", flags, 0, 0, 0, 0)

    @staticmethod
    def _tsig_error(wire: bytes, error: int) -> bytes | None:
        """NOTAUTH with an unsigned TSIG record carrying ``error`` (RFC 8945 section 5.3.2)."""
        try:
            query = dns.message.from_wire(wire, keyring=False)
        except dns.exception.DNSException:
            return Authority._form_error(wire)
        if query.tsig is None or query.keyname is None:
            return Authority._form_error(wire)
        response = dns.message.make_response(query)  # not signed: the query's keyring was never set
        response.set_rcode(dns.rcode.NOTAUTH)
        signed = next(iter(query.tsig))
        rdata = dns.rdtypes.ANY.TSIG.TSIG(  # type: ignore[no-untyped-call]
            CLASS_ANY, dns.rdatatype.TSIG, signed.algorithm, int(time.time()), signed.fudge, b"", query.id, error, b"")
        body = rdata.to_wire()
        assert body is not None
        out = bytearray(response.to_wire())
        (additional,) = struct.unpack("!H", out[10:12])
        out[10:12] = struct.pack("!H", additional + 1)
        out += query.keyname.to_wire() or b""
        out += struct.pack("!HHIH", dns.rdatatype.TSIG, CLASS_ANY, 0, len(body)) + body
        return bytes(out)

    # -- queries -------------------------------------------------------------------------------------
    def answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        zone = self.zone
        if question.rdclass not in (IN, CLASS_ANY) or not question.name.is_subdomain(zone.origin):
            response.set_rcode(dns.rcode.REFUSED)
            return response
        if question.rdtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
            response.set_rcode(dns.rcode.NOTIMP)
            return response
        response.flags |= dns.flags.AA
        name, qtype = question.name, question.rdtype
        for _ in range(8):  # follow CNAMEs inside the zone, a few at most
            here = zone.at(name)
            if not here:
                if name == question.name and not zone.has_below(name):
                    response.set_rcode(dns.rcode.NXDOMAIN)
                break
            if qtype == TYPE_ANY:
                response.answer += [_rrset(name, ds) for ds in here.values()]
                break
            if qtype in here:
                response.answer.append(_rrset(name, here[qtype]))
                break
            if CNAME not in here:
                break
            response.answer.append(_rrset(name, here[CNAME]))
            name = next(iter(here[CNAME])).target
            if not name.is_subdomain(zone.origin):
                break
        if not response.answer or response.rcode() == dns.rcode.NXDOMAIN:
            soa = zone.get(zone.origin, SOA)
            assert soa is not None
            response.authority.append(_rrset(zone.origin, soa))
        self._glue(response)
        return response

    def _glue(self, response: dns.message.Message) -> None:
        for rrset in list(response.answer):
            if rrset.rdtype != NS:
                continue
            for rdata in rrset:
                for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                    glue = self.zone.get(rdata.target, rdtype)
                    if glue is not None:
                        response.additional.append(_rrset(rdata.target, glue))

    # -- updates (RFC 2136 section 3) --------------------------------------------------------------
    def update(self, message: Any) -> dns.rcode.Rcode:
        """Check the zone, the prerequisites and the update section; apply it; return the rcode."""
        try:
            rcode = self._update(message)
        except _Refuse as refused:
            rcode = refused.rcode
        self.updates.append((time.time(), dns.rcode.to_text(rcode)))
        return rcode

    def _update(self, message: Any) -> dns.rcode.Rcode:
        zone = self.zone
        if len(message.zone) != 1 or message.zone[0].rdtype != SOA:
            raise _Refuse(dns.rcode.FORMERR)
        if message.zone[0].name != zone.origin:
            raise _Refuse(dns.rcode.NOTAUTH)
        for rrset in message.prerequisite:
            self._prerequisite(rrset)
        for rrset in message.update:
            self._prescan(rrset)
        changed = False
        for rrset in message.update:
            changed = self._apply(rrset) or changed
        if changed:
            zone.bump_serial()
        return dns.rcode.NOERROR

    def _prerequisite(self, rrset: dns.rrset.RRset) -> None:
        zone = self.zone
        if rrset.ttl != 0:
            raise _Refuse(dns.rcode.FORMERR)
        if not rrset.name.is_subdomain(zone.origin):
            raise _Refuse(dns.rcode.NOTZONE)
        existing = zone.get(rrset.name, rrset.rdtype)
        if rrset.deleting == CLASS_ANY:  # exists: the name (type ANY) or the RRset, whatever its values
            if len(rrset):
                raise _Refuse(dns.rcode.FORMERR)
            if rrset.rdtype == TYPE_ANY:
                if not zone.in_use(rrset.name):
                    raise _Refuse(dns.rcode.NXDOMAIN)
            elif existing is None:
                raise _Refuse(dns.rcode.NXRRSET)
        elif rrset.deleting == CLASS_NONE:  # does not exist: the name (type ANY) or the RRset
            if len(rrset):
                raise _Refuse(dns.rcode.FORMERR)
            if rrset.rdtype == TYPE_ANY:
                if zone.in_use(rrset.name):
                    raise _Refuse(dns.rcode.YXDOMAIN)
            elif existing is not None:
                raise _Refuse(dns.rcode.YXRRSET)
        elif rrset.rdclass == IN and not dns.rdatatype.is_metatype(rrset.rdtype):
            if existing is None or set(existing) != set(rrset):  # value dependent: the whole RRset, exactly
                raise _Refuse(dns.rcode.NXRRSET)
        else:
            raise _Refuse(dns.rcode.FORMERR)

    def _prescan(self, rrset: dns.rrset.RRset) -> None:
        if not rrset.name.is_subdomain(self.zone.origin):
            raise _Refuse(dns.rcode.NOTZONE)
        meta = dns.rdatatype.is_metatype(rrset.rdtype)
        if rrset.deleting is None:
            bad = rrset.rdclass != IN or meta or not len(rrset)
        elif rrset.deleting == CLASS_ANY:
            bad = bool(len(rrset)) or rrset.ttl != 0 or (meta and rrset.rdtype != TYPE_ANY)
        else:
            bad = rrset.ttl != 0 or meta or not len(rrset)
        if bad:
            raise _Refuse(dns.rcode.FORMERR)

    def _apply(self, rrset: dns.rrset.RRset) -> bool:
        zone = self.zone
        if rrset.deleting is None:
            return zone.add(rrset)
        if rrset.deleting == CLASS_ANY:
            if rrset.rdtype == TYPE_ANY:
                return zone.delete_name(rrset.name)
            return zone.delete_rrset(rrset.name, rrset.rdtype)
        return zone.delete_rdatas(rrset.name, rrset.rdtype, rrset)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, authority: Authority) -> None:
        self.authority = authority
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        reply = self.authority.handle(data, max_size=65535)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


class BuiltinDns:
    """The authority served on ``host``: one port for UDP and TCP (the kernel picks it when ``port`` is 0)."""

    kind = "built-in DNS server (dnspython)"

    def __init__(self, zone: Zone, *, key_name: str, algorithm: str, secret: str, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.authority = Authority(zone, {key_name: (algorithm, secret)})
        self.zone_name = zone.origin.to_text(omit_final_dot=True)
        self.key_name, self.algorithm, self.secret = key_name, algorithm, secret
        self.host, self.port = host, port
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> BuiltinDns:
        loop = asyncio.get_running_loop()
        for _ in range(50):  # the kernel picks a UDP port; the TCP side must get the same one
            transport, _protocol = await loop.create_datagram_endpoint(
                lambda: _Udp(self.authority), local_addr=(self.host, self.port))
            port = int(transport.get_extra_info("sockname")[1])
            try:
                self._tcp = await asyncio.start_server(self._serve, self.host, port)
            except OSError:
                transport.close()
                if self.port:
                    raise
                continue
            self._udp, self.port = transport, port
            return self
        raise OSError("no port free for both UDP and TCP on " + self.host)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while True:
                size = await reader.readexactly(2)
                reply = self.authority.handle(await reader.readexactly(int.from_bytes(size, "big")))
                if reply is None:
                    break
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._connections.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for writer in list(self._connections):
                writer.close()
            await self._tcp.wait_closed()
            self._tcp = None
