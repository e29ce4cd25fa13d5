"""Azure DNS through azure-mgmt-dns (extra ``[azure-dns]``) and azure-identity, imported lazily.

Azure DNS has no transaction over several record sets, but every record set carries an ETag and a
write honours ``If-Match`` (412 when the set changed since it was read) and ``If-None-Match: *``
(412 when it exists). A shift is therefore a short sequence of conditional writes, fenced by the
epoch record:

1. the epoch TXT record set is rewritten to ``epoch=N+1`` under ``If-Match`` on the ETag read with
   ``expected`` (or ``If-None-Match: *`` for the first epoch). A rival, or anyone who changed it,
   makes this 412: nothing changed, DnsConflict. Once it succeeds no other executor can win epoch N+1;
2. each record set is rewritten under ``If-Match`` on its own ETag from ``expected``. A hand edit of
   one of them since the read makes its write 412: the writes already made are undone (each under
   ``If-Match`` on the ETag our write returned, the epoch record last), then DnsConflict. If an undo
   itself is refused the zone is left partly changed and the error says so, naming what to check.

A reader between steps 1 and 2 sees epoch N+1 beside the old records: every runbook step checks the
epoch before acting, so it stands down; the verifier waits until the records answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from actions.dns.azure_common import NOT_FOUND, arm_call, call_options, client_options, credential
from actions.dns.cas import CasProvider, ConditionFailed
from actions.dns.errors import DnsConfigError, DnsError
from actions.dns.state import DnsState, RecordState, parse_epoch, site_of
from engine.config.dns import DnsConfig, RecordConfig, canonical_value
from engine.config.dns_providers import AzureDnsConfig


def _values(rtype: str, record: Any) -> list[str]:
    if rtype == "A":
        return [a.ipv4_address for a in record.a_records or []]
    if rtype == "AAAA":
        return [a.ipv6_address for a in record.aaaa_records or []]
    if rtype == "CNAME":
        return [record.cname_record.cname] if record.cname_record else []
    return ["".join(t.value or []) for t in record.txt_records or []]


def _record_set(rtype: str, ttl: int, values: Sequence[str], metadata: dict[str, str] | None = None) -> Any:
    from azure.mgmt.dns import models

    fields: dict[str, Any] = {"ttl": ttl, "metadata": metadata}
    if rtype == "A":
        fields["a_records"] = [models.ARecord(ipv4_address=v) for v in values]
    elif rtype == "AAAA":
        fields["aaaa_records"] = [models.AaaaRecord(ipv6_address=v) for v in values]
    elif rtype == "CNAME":
        fields["cname_record"] = models.CnameRecord(cname=values[0])
    else:
        fields["txt_records"] = [models.TxtRecord(value=[v]) for v in values]
    return models.RecordSet(**fields)


class AzureDnsProvider(CasProvider[AzureDnsConfig]):
    """Reads and shifts a service's records in one Azure DNS zone."""

    kind = "Azure DNS"

    def __init__(self, config: DnsConfig, service: str, *, credential: Any = None) -> None:
        super().__init__(config, service, AzureDnsConfig)
        self._credential = credential
        self._own_credential = credential is None

    def __repr__(self) -> str:
        return f"AzureDnsProvider(resource_group={self._p.resource_group!r}, zone={self.zone!r})"

    def _sdk(self) -> Any:
        if self._client is None:
            from azure.mgmt.dns.aio import DnsManagementClient

            if self._credential is None:
                self._credential = credential(self._p)
            self._client = DnsManagementClient(self._credential, self._p.subscription_id, **client_options(self._p))
        return self._client

    def _relative(self, fqdn: str) -> str:
        name = fqdn.rstrip(".")
        return "@" if name == self.zone else name.removesuffix("." + self.zone)

    async def _get(self, fqdn: str, rtype: str) -> Any:
        sets = self._sdk().record_sets
        return await arm_call(self._p, f"read {fqdn.rstrip('.')} {rtype}", lambda: sets.get(
            self._p.resource_group, self.zone, self._relative(fqdn), rtype, **call_options(self._p)))

    async def _record(self, fqdn: str, config: RecordConfig) -> RecordState:
        found = await self._get(fqdn, config.type)
        if found is NOT_FOUND:
            raise DnsConfigError(f"record missing: no {config.type} record set at {fqdn.rstrip('.')} in zone "
                                 f"{self.zone} (resource group {self._p.resource_group})")
        values = tuple(sorted(canonical_value(config.type, v) for v in _values(config.type, found)))
        return RecordState(fqdn, config.type, int(found.ttl or 0), values, site_of(values, config.targets),
                           refs=(found.etag,))

    async def read(self, records: Sequence[RecordConfig] | None = None) -> DnsState:
        """Every record set and the epoch TXT record set, read concurrently (each with its ETag)."""
        chosen = list(records or self._config.records)
        names = [self._config.fqdn(r.name) for r in chosen]
        results = await asyncio.gather(*(self._record(n, c) for n, c in zip(names, chosen, strict=True)),
                                       self._get(self.epoch_name, "TXT"), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        states = tuple(r for r in results[:-1] if isinstance(r, RecordState))
        txt: Any = results[-1]
        if txt is NOT_FOUND:
            return DnsState(self.zone, states, parse_epoch(None, self.epoch_name), self.epoch_name)
        texts = _values("TXT", txt)
        if len(texts) != 1:
            raise DnsConfigError(f"epoch record {self.epoch_name.rstrip('.')} has {len(texts)} TXT values, "
                                 f"expected one")
        epoch = replace(parse_epoch(texts[0], self.epoch_name), ref=txt.etag)
        return DnsState(self.zone, states, epoch, self.epoch_name)

    async def _put(self, fqdn: str, rtype: str, ttl: int, values: Sequence[str], *,
                   if_match: str | None = None, if_none_match: str | None = None) -> str:
        """One conditional write; the new ETag."""
        sets = self._sdk().record_sets
        body = _record_set(rtype, ttl, values, {"failover_engine": "true"})
        done = await arm_call(self._p, f"write of {fqdn.rstrip('.')} {rtype}", lambda: sets.create_or_update(
            self._p.resource_group, self.zone, self._relative(fqdn), rtype, body, if_match=if_match,
            if_none_match=if_none_match, **call_options(self._p)))
        return str(getattr(done, "etag", "") or "")

    async def _write(self, expected: DnsState, planned: DnsState) -> None:
        if any(not r.refs for r in expected.records) or (expected.epoch.text is not None and not expected.epoch.ref):
            expected = await self._fresh(expected)  # a state built by hand: take the ETags from a read
        epoch_ttl = min(r.ttl for r in planned.records)
        epoch_etag = await self._put(self.epoch_name, "TXT", epoch_ttl, [planned.epoch.text or ""],
                                     if_match=expected.epoch.ref,
                                     if_none_match="*" if expected.epoch.ref is None else None)
        undo: list[tuple[RecordState, str]] = []
        for old, new in zip(expected.records, planned.records, strict=True):
            try:
                etag = await self._put(new.name, new.rtype, new.ttl, new.values, if_match=old.refs[0])
            except (ConditionFailed, DnsError) as failed:
                await self._undo(expected, undo, epoch_etag, failed)
                raise
            undo.append((old, etag))

    async def _undo(self, expected: DnsState, done: list[tuple[RecordState, str]], epoch_etag: str,
                    failed: Exception) -> None:
        """Put back what this shift wrote (records, then the epoch record), each under our own ETag."""
        try:
            for old, etag in reversed(done):
                await self._put(old.name, old.rtype, old.ttl, old.values, if_match=etag)
            if expected.epoch.ref is None:
                sets = self._sdk().record_sets
                await arm_call(self._p, "undo of the epoch record", lambda: sets.delete(
                    self._p.resource_group, self.zone, self._relative(self.epoch_name), "TXT", if_match=epoch_etag,
                    **call_options(self._p)))
            else:
                await self._put(self.epoch_name, "TXT", min(r.ttl for r in expected.records),
                                [expected.epoch.text or ""], if_match=epoch_etag)
        except (ConditionFailed, DnsError) as undo_failed:
            raise DnsError(f"zone {self.zone} is PARTLY changed: a record set changed during the shift ({failed}) "
                           f"and undoing the shift's own writes failed ({undo_failed}); check the epoch record "
                           f"{self.epoch_name.rstrip('.')} and the records by hand") from None

    async def _prove_access(self) -> str:
        zones = self._sdk().zones
        zone = await arm_call(self._p, "read of the zone", lambda: zones.get(
            self._p.resource_group, self.zone, **call_options(self._p)))
        if zone is NOT_FOUND:
            raise DnsConfigError(f"unknown zone: resource group {self._p.resource_group} has no zone {self.zone}")
        return f"credentials read zone {self.zone} in resource group {self._p.resource_group}"

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._own_credential and self._credential is not None:
            await self._credential.close()
            self._credential = None
