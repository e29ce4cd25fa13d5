"""Google Cloud DNS through google-cloud-dns (extra ``[cloud-dns]``), imported lazily.

A shift is ONE change (``changes.create``): its *deletions* are the record sets exactly as read
(name, type, TTL, rrdatas, routing policy) and its *additions* the planned ones, the epoch TXT
record among them. Cloud DNS applies a change only if every deletion matches the live record set
exactly, else it answers ``412 conditionNotMet`` and changes nothing; an addition of a record set
that exists already answers ``409 alreadyExists`` (a rival created the first epoch record). That is
the compare-and-set. The change is then polled (``changes.get``) until its status is ``done``.

google-cloud-dns 0.37's public classes drop ``routingPolicy`` and cannot filter a list by name,
so the provider speaks the v1 JSON API through the client's own authenticated connection
(``client._connection.api_request``: the SDK's credentials, endpoint and user agent). The calls are
blocking (``requests``) and run in a worker thread, each under ``timeout``; 429/5xx and lost
connections are retried ``attempts`` times.
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
from engine.config.dns_providers import CloudDnsConfig
from probes.cloud_credentials import gcp_credentials

SCOPE = "https://www.googleapis.com/auth/ndev.clouddns.readwrite"
_BACKOFF = 0.5


def _strip_quotes(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def build_client(p: CloudDnsConfig) -> Any:
    """The SDK client for ``p``, credentials from the config (may read files: call off-loop)."""
    from google.auth.credentials import with_scopes_if_required
    from google.cloud import dns  # type: ignore[attr-defined]

    credentials = with_scopes_if_required(gcp_credentials(p.credentials), [SCOPE])  # type: ignore[no-untyped-call]
    options = {"api_endpoint": p.api_endpoint} if p.api_endpoint else None
    return dns.Client(project=p.project, credentials=credentials, client_options=options)


class CloudDnsProvider(CasProvider):
    """Reads and shifts a service's records in one Cloud DNS managed zone."""

    kind = "Cloud DNS"

    def __init__(self, config: DnsConfig, service: str, *, client: Any = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if not isinstance(config.provider, CloudDnsConfig):
            raise TypeError("CloudDnsProvider needs a cloud_dns provider config")
        super().__init__(config, service)
        self._p: CloudDnsConfig = config.provider
        self._client = client
        self._sleep = sleep
        self._path = f"/projects/{self._p.project}/managedZones/{self._p.managed_zone}"

    def __repr__(self) -> str:
        return f"CloudDnsProvider(project={self._p.project!r}, managed_zone={self._p.managed_zone!r})"

    async def _api(self, what: str, method: str, path: str, *, query: dict[str, str] | None = None,
                   data: dict[str, Any] | None = None) -> dict[str, Any]:
        """One JSON call through the SDK's connection, its errors mapped onto the DnsError tree."""
        from google.api_core import exceptions as gexc
        from requests import exceptions as rexc

        if self._client is None:
            try:
                self._client = await asyncio.to_thread(build_client, self._p)
            except Exception as exc:  # CredentialError and google.auth errors: name the kind only
                raise DnsAuthError(f"no Cloud DNS credentials ({self._p.credentials.type}): {exc}") from None
        last = ""
        for attempt in range(self._p.attempts):
            try:
                result = await asyncio.to_thread(
                    self._client._connection.api_request, method=method, path=self._path + path,
                    query_params=query, data=data, timeout=self._p.timeout)
                return result if isinstance(result, dict) else {}
            except (gexc.PreconditionFailed, gexc.Conflict) as exc:
                raise ConditionFailed(str(exc.message)) from None
            except (gexc.Unauthorized, gexc.Forbidden) as exc:
                raise DnsAuthError(f"Cloud DNS refused the credentials ({self._p.credentials.type}) for managed "
                                   f"zone {self._p.managed_zone} ({exc.code}) during {what}") from None
            except gexc.NotFound:
                raise DnsConfigError(f"unknown managed zone: project {self._p.project} has no "
                                     f"{self._p.managed_zone} (during {what})") from None
            except (gexc.TooManyRequests, gexc.ServerError) as exc:
                last = f"status {exc.code}"
            except gexc.GoogleAPICallError as exc:
                raise DnsRefused(f"Cloud DNS refused the {what} ({exc.code} {exc.message})") from None
            except (rexc.Timeout, TimeoutError):
                last = f"timeout after {self._p.timeout:g}s"
            except rexc.ConnectionError:
                last = "cannot connect"
            if attempt + 1 < self._p.attempts:
                await self._sleep(_BACKOFF * 2 ** attempt)
        raise DnsUnavailable(f"{what}: Cloud DNS gave no answer after {self._p.attempts} "
                             f"tr{'y' if self._p.attempts == 1 else 'ies'} ({last})")

    async def _rrsets(self, name: str, rtype: str | None = None) -> list[dict[str, Any]]:
        query = {"name": name, "maxResults": "100"}
        if rtype:
            query["type"] = rtype
        found: list[dict[str, Any]] = []
        for _ in range(10):
            page = await self._api(f"read {name.rstrip('.')}", "GET", "/rrsets", query=query)
            found += [r for r in page.get("rrsets", []) if r.get("name", "").lower() == name]
            token = page.get("nextPageToken")
            if not token:
                return found
            query = {**query, "pageToken": token}
        raise DnsConfigError(f"read {name.rstrip('.')}: more than 10 pages of record sets")

    def _record(self, fqdn: str, config: RecordConfig, found: list[dict[str, Any]]) -> RecordState:
        mine = next((r for r in found if r.get("type") == config.type), None)
        if mine is None:
            cname = next((r for r in found if r.get("type") == "CNAME"), None)
            if cname is not None and config.type != "CNAME":
                raise DnsConfigError(f"{fqdn.rstrip('.')} is a CNAME (to {cname.get('rrdatas')}), "
                                     f"expected {config.type}")
            raise DnsConfigError(f"record missing: no {config.type} record at {fqdn.rstrip('.')} "
                                 f"in zone {self.zone}")
        if "routingPolicy" in mine:
            raise DnsConfigError(f"{fqdn.rstrip('.')} has a routing policy: move it with weights, not a shift")
        values = tuple(sorted(canonical_value(config.type, v) for v in mine.get("rrdatas", [])))
        return RecordState(fqdn, config.type, int(mine.get("ttl", 0)), values, site_of(values, config.targets),
                           refs=(json.dumps(_exact(mine)),))

    async def read(self, records: Sequence[RecordConfig] | None = None) -> DnsState:
        """Every record (one filtered list each) and the epoch TXT record, read concurrently."""
        chosen = list(records or self._config.records)
        names = [self._config.fqdn(r.name) for r in chosen]
        results = await asyncio.gather(*(self._rrsets(n) for n in names), self._rrsets(self.epoch_name, "TXT"),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        lists = [r for r in results if isinstance(r, list)]
        states = tuple(self._record(n, c, f) for n, c, f in zip(names, chosen, lists, strict=False))
        txt = lists[-1]
        if len(txt) == 1 and len(txt[0].get("rrdatas", [])) > 1:
            raise DnsConfigError(f"epoch record {self.epoch_name.rstrip('.')} has "
                                 f"{len(txt[0]['rrdatas'])} TXT values, expected one")
        if not txt:
            return DnsState(self.zone, states, parse_epoch(None, self.epoch_name), self.epoch_name)
        text = "".join(_strip_quotes(part) for part in txt[0].get("rrdatas", [""])[:1])
        epoch = parse_epoch(text, self.epoch_name)
        epoch = replace(epoch, ref=json.dumps(_exact(txt[0])))
        return DnsState(self.zone, states, epoch, self.epoch_name)

    def _change(self, expected: DnsState, planned: DnsState) -> dict[str, Any]:
        deletions = [json.loads(r.refs[0]) for r in expected.records]
        additions = [{"name": r.name, "type": r.rtype, "ttl": r.ttl, "rrdatas": list(r.values)}
                     for r in planned.records]
        if expected.epoch.ref is not None:
            deletions.append(json.loads(expected.epoch.ref))
        if planned.epoch != expected.epoch:
            additions.append({"name": planned.epoch_name, "type": "TXT",
                              "ttl": min(r.ttl for r in planned.records),
                              "rrdatas": [f'"{planned.epoch.text}"']})
        elif expected.epoch.ref is not None:
            additions.append(json.loads(expected.epoch.ref))  # a TTL change keeps the epoch record
        return {"kind": "dns#change", "deletions": deletions, "additions": additions}

    async def _write(self, expected: DnsState, planned: DnsState) -> None:
        if any(not r.refs for r in expected.records) or (expected.epoch.text is not None and not expected.epoch.ref):
            expected = await self._fresh(expected)  # a state built by hand: take the exact data from a read
        body = self._change(expected, planned)
        change = await self._api(f"change of zone {self.zone}", "POST", "/changes", data=body)
        await self._wait_done(change)

    async def _wait_done(self, change: dict[str, Any]) -> None:
        """Poll the change until Cloud DNS reports it ``done`` (bounded by ``change_timeout``)."""
        waited = 0.0
        while change.get("status") != "done":
            if waited >= self._p.change_timeout:
                raise ChangePending(f"change {change.get('id')} of zone {self.zone} still "
                                     f"{change.get('status')} after {self._p.change_timeout:g}s")
            await self._sleep(self._p.poll_interval)
            waited += self._p.poll_interval
            change = await self._api(f"status of change {change.get('id')}", "GET", f"/changes/{change.get('id')}")

    # -- weights (weighted round robin: routingPolicy.wrr.items, one item per site) ---------------
    async def _wrr(self) -> tuple[dict[str, Any], dict[str, float], DnsState]:
        config = self._config.records[0]
        name = self._config.fqdn(config.name)
        found, txt = await asyncio.gather(self._rrsets(name, config.type), self._rrsets(self.epoch_name, "TXT"))
        wrr = found[0].get("routingPolicy", {}).get("wrr") if found else None
        if not wrr:
            raise DnsRefused(f"{name.rstrip('.')} has no weighted round robin policy: it has no weights to move")
        raw: dict[str, float] = {}
        for item in wrr.get("items", []):
            values = sorted(canonical_value(config.type, v) for v in item.get("rrdatas", []))
            site = site_of(values, config.targets)
            if site not in config.targets:
                raise DnsConfigError(f"{name.rstrip('.')}: a weighted item answers {values}, no site's values")
            raw[site] = float(item.get("weight", 0))
        text = "".join(_strip_quotes(p) for p in txt[0].get("rrdatas", [""])[:1]) if txt else None
        epoch = replace(parse_epoch(text, self.epoch_name), ref=json.dumps(_exact(txt[0])) if txt else None)
        return _exact(found[0]), raw, DnsState(self.zone, (), epoch, self.epoch_name)

    async def read_weights(self) -> Weights:
        """Each site's weighted round robin item as a share of the traffic."""
        rrset, raw, state = await self._wrr()
        return weights_of(raw, state.epoch.number, json.dumps(rrset))

    async def set_weights(self, expected: Weights, shares: Mapping[str, int]) -> Weights:
        """One change: the weighted record set deleted exactly as read and added with the new weights, the epoch
        record deleted and re-added unchanged (so a rival's epoch fails the change)."""
        config = self._config.records[0]
        check_shares(shares, set(config.targets))
        rrset, raw, state = await self._wrr()
        if weights_of(raw, state.epoch.number) != expected:
            raise weights_conflict(f"weighted record set {config.name}", expected,
                                   weights_of(raw, state.epoch.number))
        old = json.loads(expected.ref) if expected.ref else rrset
        new = {**{k: v for k, v in old.items() if k != "routingPolicy"}, "routingPolicy": {"wrr": {"items": [
            {"weight": float(shares[site]), "rrdatas": list(config.targets[site])} for site in sorted(shares)]}}}
        change: dict[str, Any] = {"kind": "dns#change", "deletions": [old], "additions": [new]}
        if state.epoch.ref is not None:
            change["deletions"].append(json.loads(state.epoch.ref))
            change["additions"].append(json.loads(state.epoch.ref))
        try:
            done = await self._api(f"weights of {config.name}", "POST", "/changes", data=change)
        except ConditionFailed:
            raise weights_conflict(f"weighted record set {config.name}", expected, await self.read_weights()) from None
        await self._wait_done(done)
        return await self.read_weights()

    async def _prove_access(self) -> str:
        zone = await self._api("read of the managed zone", "GET", "")
        return f"credentials read managed zone {zone.get('name', self._p.managed_zone)} ({zone.get('dnsName')})"

    async def aclose(self) -> None:
        client, self._client = self._client, None
        http = getattr(client, "_http_internal", None)
        if http is not None:
            await asyncio.to_thread(http.close)


def _exact(rrset: dict[str, Any]) -> dict[str, Any]:
    """The fields a deletion must repeat exactly."""
    return {k: rrset[k] for k in ("name", "type", "ttl", "rrdatas", "routingPolicy") if k in rrset}
