"""Amazon Route 53 through boto3 (extra ``[route53]``), imported lazily.

A shift is ONE ``ChangeResourceRecordSets`` batch: a ``DELETE`` of every record set exactly as read
(name, type, TTL, values) and a ``CREATE`` of its planned successor, the epoch TXT record among them.
Route 53 applies a batch all or nothing, and a DELETE whose values do not match the live record set
fails the whole batch (``InvalidChangeBatch``); a CREATE of a set that exists fails it too. That is
the compare-and-set; ``UPSERT`` is never used because it would overwrite blindly. The batch's change
is then polled with ``GetChange`` until ``INSYNC`` (every Route 53 authoritative server has it).

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
from actions.dns.weights import Weights, check_shares, weights_conflict, weights_of
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


class Route53Provider(CasProvider):
    """Reads and shifts a service's records in one Route 53 hosted zone."""

    kind = "Route 53"

    def __init__(self, config: DnsConfig, service: str, *, client: Any = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if not isinstance(config.provider, Route53Config):
            raise TypeError("Route53Provider needs a route53 provider config")
        super().__init__(config, service)
        self._p: Route53Config = config.provider
        self._client = client
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
        if len(mine) > 1 or "SetIdentifier" in mine[0] or "AliasTarget" in mine[0]:
            raise DnsConfigError(f"{fqdn.rstrip('.')} is a weighted, failover or alias record set: move it with "
                                 f"weights, not a shift")
        rrset = mine[0]
        values = tuple(sorted(canonical_value(config.type, r["Value"]) for r in rrset.get("ResourceRecords", [])))
        return RecordState(fqdn, config.type, int(rrset.get("TTL", 0)), values, site_of(values, config.targets),
                           refs=(json.dumps(rrset),))

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
        changes = [{"Action": "DELETE", "ResourceRecordSet": json.loads(r.refs[0])} for r in expected.records]
        changes += [{"Action": "CREATE", "ResourceRecordSet": {
            "Name": r.name, "Type": r.rtype, "TTL": r.ttl, "ResourceRecords": [{"Value": v} for v in r.values]}}
            for r in planned.records]
        if expected.epoch.ref is not None:
            old = json.loads(expected.epoch.ref)
            changes.append({"Action": "DELETE", "ResourceRecordSet": old})
            if planned.epoch == expected.epoch:
                changes.append({"Action": "CREATE", "ResourceRecordSet": old})  # a TTL change keeps it
        if planned.epoch != expected.epoch:
            changes.append({"Action": "CREATE", "ResourceRecordSet": {
                "Name": planned.epoch_name, "Type": "TXT", "TTL": min(r.ttl for r in planned.records),
                "ResourceRecords": [{"Value": f'"{planned.epoch.text}"'}]}})
        return changes

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
    async def _weighted(self) -> tuple[list[dict[str, Any]], DnsState]:
        config = self._config.records[0]
        name = self._config.fqdn(config.name)
        sets, txt = await asyncio.gather(self._sets(name, config.type), self._sets(self.epoch_name, "TXT"))
        if not sets or any("SetIdentifier" not in s for s in sets):
            raise DnsRefused(f"{name.rstrip('.')} is not a weighted record set: it has no weights to move")
        unknown = sorted({s["SetIdentifier"] for s in sets} - set(config.targets))
        if unknown:
            raise DnsConfigError(f"{name.rstrip('.')} has weighted sets {unknown} that are not sites")
        text = _strip_quotes(txt[0]["ResourceRecords"][0]["Value"]) if txt else None
        epoch = replace(parse_epoch(text, self.epoch_name), ref=json.dumps(txt[0]) if txt else None)
        return sets, DnsState(self.zone, (), epoch, self.epoch_name)

    async def read_weights(self) -> Weights:
        """Each site's weighted record set (SetIdentifier = site) as a share of the traffic."""
        sets, state = await self._weighted()
        return weights_of({s["SetIdentifier"]: float(s.get("Weight", 0)) for s in sets}, state.epoch.number,
                          json.dumps(sets))

    async def set_weights(self, expected: Weights, shares: Mapping[str, int]) -> Weights:
        """One batch: DELETE the weighted sets exactly as read, CREATE them with the new weights, and the epoch
        record deleted and re-created unchanged (so a rival's epoch fails the batch)."""
        config = self._config.records[0]
        check_shares(shares, set(config.targets))
        sets, state = await self._weighted()
        current = weights_of({s["SetIdentifier"]: float(s.get("Weight", 0)) for s in sets}, state.epoch.number)
        if current != expected:
            raise weights_conflict(f"weighted sets of {config.name}", expected, current)
        old = json.loads(expected.ref) if expected.ref else sets
        changes = [{"Action": "DELETE", "ResourceRecordSet": s} for s in old]
        name = self._config.fqdn(config.name)
        changes += [{"Action": "CREATE", "ResourceRecordSet": {
            "Name": name, "Type": config.type, "TTL": int(config.ttl), "SetIdentifier": site, "Weight": share,
            "ResourceRecords": [{"Value": v} for v in config.targets[site]]}} for site, share in sorted(shares.items())]
        if state.epoch.ref is not None:
            epoch_set = json.loads(state.epoch.ref)
            changes += [{"Action": "DELETE", "ResourceRecordSet": epoch_set},
                        {"Action": "CREATE", "ResourceRecordSet": epoch_set}]
        try:
            answer = await self._call(f"weights of {name.rstrip('.')}", "change_resource_record_sets",
                                      HostedZoneId=self._zone_id, ChangeBatch={"Changes": changes})
        except ConditionFailed:
            raise weights_conflict(f"weighted sets of {config.name}", expected, await self.read_weights()) from None
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
