"""Amazon Route 53 through boto3 (extra ``[route53]``), imported lazily.

A shift is ONE ``ChangeResourceRecordSets`` batch: a ``DELETE`` of every record set exactly as read
(name, type, TTL, values) and a ``CREATE`` of its planned successor, the epoch TXT record among them.
Route 53 applies a batch all or nothing, and a DELETE whose values do not match the live record set
fails the whole batch (``InvalidChangeBatch``); a CREATE of a set that exists fails it too. That is
the compare-and-set; ``UPSERT`` is never used because it would overwrite blindly. The batch's change
is then polled with ``GetChange`` until ``INSYNC`` (every Route 53 authoritative server has it).

A record may be a set of weighted record sets (``SetIdentifier`` = site, ``Weight``): :meth:`read` gives
it as the values of the sets with a weight (what Route 53 answers), a shift re-creates the sets with all
weight on the target, a retime keeps the weights, and :meth:`set_weights` moves every record's weights
in one batch of exact DELETEs + CREATEs beside the unchanged epoch record (docs/providers.md, "Weighted
failback"). Failover, latency, geolocation and alias sets are refused.

boto3 is blocking: every call runs in a worker thread. botocore's own retries (standard mode,
``attempts`` tries, on throttling, ``PriorRequestNotComplete`` and 5xx) bound each call, and its
connect/read timeouts are ``timeout``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from actions.dns.cas import CasProvider, ChangePending, ConditionFailed
from actions.dns.errors import DnsAuthError, DnsConfigError, DnsRefused, DnsUnavailable
from actions.dns.state import DnsState, RecordState, parse_epoch, site_of
from actions.dns.weights import Weights, agreed, check_shares, refused, unmoved, weights_of
from engine.config.dns import DnsConfig, RecordConfig, canonical_value
from engine.config.dns_providers import Route53Config

_AUTH = {"AccessDenied", "AccessDeniedException", "InvalidClientTokenId", "SignatureDoesNotMatch",
         "UnrecognizedClientException", "ExpiredToken", "InvalidSignatureException"}
_BUSY = {"Throttling", "ThrottlingException", "PriorRequestNotComplete", "ServiceUnavailable",
         "InternalFailure", "RequestTimeout"}


def _strip_quotes(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def build_client(p: Route53Config) -> Any:
    """The boto3 Route 53 client for ``p`` (keys from the config, else boto3's default chain)."""
    import boto3
    from botocore.config import Config

    keys: dict[str, str] = {}
    if p.access_key_id is not None and p.secret_access_key is not None:
        keys = {"aws_access_key_id": p.access_key_id.get_secret_value(),
                "aws_secret_access_key": p.secret_access_key.get_secret_value()}
    config = Config(connect_timeout=p.timeout, read_timeout=p.timeout,
                    retries={"max_attempts": p.attempts, "mode": "standard"})
    return boto3.session.Session().client("route53", region_name=p.region, endpoint_url=p.endpoint_url,
                                          config=config, **keys)


class Route53Provider(CasProvider[Route53Config]):
    """Reads and shifts a service's records in one Route 53 hosted zone."""

    kind = "Route 53"

    def __init__(self, config: DnsConfig, service: str, *, client: Any = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        super().__init__(config, service, Route53Config, client=client)
        self._sleep = sleep
        self._zone_id = self._p.hosted_zone_id.removeprefix("/hostedzone/")

    def __repr__(self) -> str:
        return f"Route53Provider(hosted_zone_id={self._zone_id!r}, zone={self.zone!r})"

    async def _call(self, what: str, method: str, **kwargs: Any) -> dict[str, Any]:
        """One API call in a worker thread, its errors mapped onto the DnsError tree."""
        from botocore import exceptions as bexc

        if self._client is None:
            self._client = await asyncio.to_thread(build_client, self._p)
        try:
            result = await asyncio.to_thread(getattr(self._client, method), **kwargs)
        except bexc.ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = str(error.get("Code", "")), str(error.get("Message", ""))[:300]
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code == "InvalidChangeBatch":
                raise ConditionFailed(message) from None
            if code in _AUTH or status in (401, 403):
                raise DnsAuthError(f"Route 53 refused the credentials for hosted zone {self._zone_id} "
                                   f"({code}) during {what}") from None
            if code == "NoSuchHostedZone":
                raise DnsConfigError(f"unknown hosted zone: Route 53 has no {self._zone_id} ({what})") from None
            if code in _BUSY or status >= 500 or status == 429:
                raise DnsUnavailable(f"{what}: Route 53 {code or status} after {self._p.attempts} "
                                     f"tr{'y' if self._p.attempts == 1 else 'ies'}") from None
            raise DnsRefused(f"Route 53 refused the {what} ({code}: {message})") from None
        except (bexc.EndpointConnectionError, bexc.ConnectTimeoutError, bexc.ReadTimeoutError,
                bexc.ConnectionClosedError) as exc:
            raise DnsUnavailable(f"{what}: Route 53 gave no answer ({type(exc).__name__})") from None
        except bexc.NoCredentialsError:
            raise DnsAuthError(f"no AWS credentials for hosted zone {self._zone_id}") from None
        return dict(result)

    async def _sets(self, name: str, rtype: str | None = None) -> list[dict[str, Any]]:
        """The record sets at exactly ``name`` (of ``rtype``): one listing starting there."""
        kwargs: dict[str, Any] = {"HostedZoneId": self._zone_id, "StartRecordName": name, "MaxItems": "20"}
        if rtype:
            kwargs["StartRecordType"] = rtype
        page = await self._call(f"read {name.rstrip('.')}", "list_resource_record_sets", **kwargs)
        return [s for s in page.get("ResourceRecordSets", [])
                if _unescape(s.get("Name", "")).lower() == name and (rtype is None or s.get("Type") == rtype)]

    def _record(self, fqdn: str, config: RecordConfig, found: list[dict[str, Any]]) -> RecordState:
        mine = [s for s in found if s.get("Type") == config.type]
        if not mine:
            cname = next((s for s in found if s.get("Type") == "CNAME"), None)
            if cname is not None and config.type != "CNAME":
                raise DnsConfigError(f"{fqdn.rstrip('.')} is a CNAME, expected {config.type}")
            raise DnsConfigError(f"record missing: no {config.type} record at {fqdn.rstrip('.')} in zone {self.zone}")
        if any("AliasTarget" in s or ("SetIdentifier" in s and "Weight" not in s) for s in mine):
            raise DnsConfigError(f"{fqdn.rstrip('.')} is a failover, latency, geolocation or alias record set: "
                                 f"the engine moves simple or weighted record sets only")
        if any("SetIdentifier" in s for s in mine):
            return self._weighted_record(fqdn, config, mine)
        rrset = mine[0]
        values = tuple(sorted(canonical_value(config.type, r["Value"]) for r in rrset.get("ResourceRecords", [])))
        return RecordState(fqdn, config.type, int(rrset.get("TTL", 0)), values, site_of(values, config.targets),
                           refs=(json.dumps(rrset),))

    def _weighted_record(self, fqdn: str, config: RecordConfig, sets: list[dict[str, Any]]) -> RecordState:
        """Weighted sets (SetIdentifier = site) as one record: the values of the sets with weight (Route 53
        answers only those; all of them when every weight is 0), each set exactly as read in ``refs``."""
        unknown = sorted({str(s.get("SetIdentifier")) for s in sets} - set(config.targets))
        if unknown or len(sets) != len({s["SetIdentifier"] for s in sets}):
            raise DnsConfigError(f"{fqdn.rstrip('.')} has weighted sets {unknown or 'twice'} that are not one "
                                 f"per site {sorted(config.targets)}")
        answering = [s for s in sets if int(s.get("Weight", 0)) > 0] or sets
        values = tuple(sorted({canonical_value(config.type, r["Value"]) for s in answering
                               for r in s.get("ResourceRecords", [])}))
        ttl = min(int(s.get("TTL", 0)) for s in sets)
        ordered = sorted(sets, key=lambda s: str(s["SetIdentifier"]))
        return RecordState(fqdn, config.type, ttl, values, site_of(values, config.targets),
                           refs=tuple(json.dumps(s) for s in ordered))

    async def read(self, records: Sequence[RecordConfig] | None = None) -> DnsState:
        """Every record and the epoch TXT record, listed concurrently."""
        chosen = list(records or self._config.records)
        names = [self._config.fqdn(r.name) for r in chosen]
        results = await asyncio.gather(*(self._sets(n) for n in names), self._sets(self.epoch_name, "TXT"),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        lists = [r for r in results if isinstance(r, list)]
        states = tuple(self._record(n, c, f) for n, c, f in zip(names, chosen, lists, strict=False))
        txt = lists[-1]
        if not txt:
            return DnsState(self.zone, states, parse_epoch(None, self.epoch_name), self.epoch_name)
        values = txt[0].get("ResourceRecords", [])
        if len(txt) > 1 or len(values) != 1:
            raise DnsConfigError(f"epoch record {self.epoch_name.rstrip('.')} must hold one TXT value")
        epoch = parse_epoch(_strip_quotes(values[0]["Value"]), self.epoch_name)
        return DnsState(self.zone, states, replace(epoch, ref=json.dumps(txt[0])), self.epoch_name)

    def _batch(self, expected: DnsState, planned: DnsState) -> list[dict[str, Any]]:
        deletes: list[dict[str, Any]] = []
        creates: list[dict[str, Any]] = []
        for old, new in zip(expected.records, planned.records, strict=True):
            sets = [json.loads(ref) for ref in old.refs]
            deletes += [{"Action": "DELETE", "ResourceRecordSet": s} for s in sets]
            if any("SetIdentifier" in s for s in sets):  # weighted: the sets stay weighted
                weights = ({str(s["SetIdentifier"]): int(s.get("Weight", 0)) for s in sets}
                           if new.values == old.values else {site: 100 if site == new.site else 0
                                                              for site in self._configs[new.name].targets})
                creates += [{"Action": "CREATE", "ResourceRecordSet": s}
                            for s in self._successors(new.name, sets, weights, new.ttl)]
            else:
                creates.append({"Action": "CREATE", "ResourceRecordSet": {
                    "Name": new.name, "Type": new.rtype, "TTL": new.ttl,
                    "ResourceRecords": [{"Value": v} for v in new.values]}})
        changes = deletes + creates
        if expected.epoch.ref is not None:
            old_epoch = json.loads(expected.epoch.ref)
            changes.append({"Action": "DELETE", "ResourceRecordSet": old_epoch})
            if planned.epoch == expected.epoch:
                changes.append({"Action": "CREATE", "ResourceRecordSet": old_epoch})  # a TTL change keeps it
        if planned.epoch != expected.epoch:
            changes.append({"Action": "CREATE", "ResourceRecordSet": {
                "Name": planned.epoch_name, "Type": "TXT", "TTL": min(r.ttl for r in planned.records),
                "ResourceRecords": [{"Value": f'"{planned.epoch.text}"'}]}})
        return changes

    def _successors(self, fqdn: str, sets: list[dict[str, Any]], weights: Mapping[str, int],
                    ttl: int) -> list[dict[str, Any]]:
        """The weighted sets that replace ``sets``: one per site that has a set or a weight, each keeping the
        other fields of its predecessor (a health check id), with the site's configured values."""
        config = self._configs[fqdn]
        by_site = {str(s["SetIdentifier"]): s for s in sets}
        sites = sorted(set(by_site) | {site for site, weight in weights.items() if weight > 0})
        return [{**by_site.get(site, {}), "Name": fqdn, "Type": config.type, "TTL": ttl, "SetIdentifier": site,
                 "Weight": int(weights.get(site, 0)), "ResourceRecords": [{"Value": v} for v in config.targets[site]]}
                for site in sites]

    async def _write(self, expected: DnsState, planned: DnsState) -> None:
        if any(not r.refs for r in expected.records) or (expected.epoch.text is not None and not expected.epoch.ref):
            expected = await self._fresh(expected)  # a state built by hand: take the exact sets from a read
        batch = {"Comment": f"failover-engine: {planned.describe()}"[:256], "Changes": self._batch(expected, planned)}
        answer = await self._call(f"change of zone {self.zone}", "change_resource_record_sets",
                                  HostedZoneId=self._zone_id, ChangeBatch=batch)
        await self._wait_insync(answer.get("ChangeInfo", {}))

    async def _wait_insync(self, info: dict[str, Any]) -> None:
        """Poll ``GetChange`` until ``INSYNC`` (bounded by ``change_timeout``)."""
        waited = 0.0
        while info.get("Status") != "INSYNC":
            if waited >= self._p.change_timeout:
                raise ChangePending(f"change {info.get('Id')} of zone {self.zone} still {info.get('Status')} "
                                    f"after {self._p.change_timeout:g}s")
            await self._sleep(self._p.poll_interval)
            waited += self._p.poll_interval
            info = (await self._call(f"status of change {info.get('Id')}", "get_change",
                                     Id=info.get("Id"))).get("ChangeInfo", {})

    # -- weights (weighted record sets: SetIdentifier = site, Weight 0-255) ------------------------
    async def _weighted(self) -> tuple[DnsState, dict[str, dict[str, float]]]:
        """A read of every record, each of which must be weighted; each record's weight per site."""
        state = await self.read()
        per_record: dict[str, dict[str, float]] = {}
        for record in state.records:
            sets = [json.loads(ref) for ref in record.refs]
            if not any("SetIdentifier" in s for s in sets):
                raise DnsRefused(f"{record.name.rstrip('.')} is not a weighted record set: it has no weights to move")
            per_record[record.name] = dict.fromkeys(self._configs[record.name].targets, 0.0)
            per_record[record.name].update({str(s["SetIdentifier"]): float(s.get("Weight", 0)) for s in sets})
        return state, per_record

    async def read_weights(self) -> Weights:
        """Each site's share of the weighted record sets (SetIdentifier = site) of every record; ``ref`` holds
        the sets exactly as read."""
        state, per_record = await self._weighted()
        return weights_of(agreed(per_record), state.epoch.number,
                          json.dumps({r.name: list(r.refs) for r in state.records}))

    async def set_weights(self, expected: Weights, shares: Mapping[str, int]) -> Weights:
        """One batch: DELETE every weighted set exactly as read with ``expected``, CREATE it with the new weight
        (TTL and other fields kept), and the epoch record deleted and re-created unchanged, so a foreign edit of
        any weight or a rival's epoch since that read fails the whole batch."""
        check_shares(shares, set(self._config.records[0].targets))
        state, per_record = await self._weighted()
        where = f"weighted sets of {', '.join(r.name.rstrip('.') for r in state.records)}"
        unmoved(where, expected, per_record, state.epoch.number)
        read: dict[str, list[str]] = json.loads(expected.ref) if expected.ref else {}
        changes: list[dict[str, Any]] = []
        creates: list[dict[str, Any]] = []
        for record in state.records:
            sets = [json.loads(ref) for ref in read.get(record.name, record.refs)]
            changes += [{"Action": "DELETE", "ResourceRecordSet": s} for s in sets]
            ttl = min(int(s.get("TTL", 0)) for s in sets)
            creates += [{"Action": "CREATE", "ResourceRecordSet": s}
                        for s in self._successors(record.name, sets, shares, ttl)]
        changes += creates
        if state.epoch.ref is not None:
            epoch_set = json.loads(state.epoch.ref)
            changes += [{"Action": "DELETE", "ResourceRecordSet": epoch_set},
                        {"Action": "CREATE", "ResourceRecordSet": epoch_set}]
        try:
            answer = await self._call(f"weights of {where}", "change_resource_record_sets",
                                      HostedZoneId=self._zone_id, ChangeBatch={"Changes": changes})
        except ConditionFailed:
            raise await refused(where, expected, self.read_weights) from None
        await self._wait_insync(answer.get("ChangeInfo", {}))
        return await self.read_weights()

    async def _prove_access(self) -> str:
        zone = (await self._call("read of the hosted zone", "get_hosted_zone", Id=self._zone_id)).get("HostedZone", {})
        return f"credentials read hosted zone {self._zone_id} ({zone.get('Name')})"

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)


def _unescape(name: str) -> str:
    """Route 53 lists names with octal escapes (``\\052`` for ``*``); ours never need them."""
    return name.replace("\\052", "*")
