"""Google Cloud DNS through google-cloud-dns (extra ``[cloud-dns]``), imported lazily.

A shift is ONE change (``changes.create``): its *deletions* are the record sets exactly as read
(name, type, TTL, rrdatas, routing policy) and its *additions* the planned ones, the epoch TXT
record among them. Cloud DNS applies a change only if every deletion matches the live record set
exactly, else it answers ``412 conditionNotMet`` and changes nothing; an addition of a record set
that exists already answers ``409 alreadyExists`` (a rival created the first epoch record). That is
the compare-and-set. The change is then polled (``changes.get``) until its status is ``done``.

A record may carry a weighted round robin policy (``routingPolicy.wrr.items``, one item per site matched
by its ``rrdatas``): :meth:`read` gives it as the values of the items with a weight (what Cloud DNS
answers), a shift re-adds the policy with all weight on the target, a retime keeps the weights, and
:meth:`set_weights` moves every record's weights in one change beside the unchanged epoch record
(docs/providers.md, "Weighted failback"). Other routing policies (geo, primary-backup) are refused.

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
from actions.dns.weights import Weights, agreed, check_shares, refused, unmoved, weights_of
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


class CloudDnsProvider(CasProvider[CloudDnsConfig]):
    """Reads and shifts a service's records in one Cloud DNS managed zone."""

    kind = "Cloud DNS"

    def __init__(self, config: DnsConfig, service: str, *, client: Any = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        super().__init__(config, service, CloudDnsConfig, client=client)
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
        policy = mine.get("routingPolicy")
        if policy is not None:
            values = tuple(sorted({v for site in _wrr_sites(fqdn, config, policy, answering=True)
                                   for v in config.targets[site]}))
        else:
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
        additions = []
        for old, new in zip(deletions, planned.records, strict=True):
            if "routingPolicy" not in old:
                additions.append({"name": new.name, "type": new.rtype, "ttl": new.ttl, "rrdatas": list(new.values)})
                continue
            config = self._configs[new.name]  # weighted: stays weighted, the weights kept or all on the target
            kept = new.values == _answering_values(old, config)
            weights = (_wrr_weights(new.name, config, old["routingPolicy"]) if kept
                       else {site: 100.0 if site == new.site else 0.0 for site in config.targets})
            additions.append(_wrr_successor(old, config, weights, new.ttl))
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
    async def _wrr(self) -> tuple[DnsState, dict[str, dict[str, float]]]:
        """A read of every record, each of which must be weighted round robin; each record's weight per site."""
        state = await self.read()
        per_record: dict[str, dict[str, float]] = {}
        for record in state.records:
            rrset = json.loads(record.refs[0])
            if "wrr" not in rrset.get("routingPolicy", {}):
                raise DnsRefused(f"{record.name.rstrip('.')} has no weighted round robin policy: it has no weights "
                                 f"to move")
            per_record[record.name] = _wrr_weights(record.name, self._configs[record.name], rrset["routingPolicy"])
        return state, per_record

    async def read_weights(self) -> Weights:
        """Each site's weighted round robin item (of every record) as a share of the traffic; ``ref`` holds the
        record sets exactly as read."""
        state, per_record = await self._wrr()
        return weights_of(agreed(per_record), state.epoch.number,
                          json.dumps({r.name: r.refs[0] for r in state.records}))

    async def set_weights(self, expected: Weights, shares: Mapping[str, int]) -> Weights:
        """One change: every weighted record set deleted exactly as read with ``expected`` and added with the new
        weights (TTL kept), the epoch record deleted and re-added unchanged; a foreign edit of a weight or a
        rival's epoch since that read makes Cloud DNS refuse the whole change (412)."""
        check_shares(shares, set(self._config.records[0].targets))
        state, per_record = await self._wrr()
        where = f"weighted record set {', '.join(r.name.rstrip('.') for r in state.records)}"
        unmoved(where, expected, per_record, state.epoch.number)
        read: dict[str, str] = json.loads(expected.ref) if expected.ref else {}
        change: dict[str, Any] = {"kind": "dns#change", "deletions": [], "additions": []}
        for record in state.records:
            old = json.loads(read.get(record.name, record.refs[0]))
            change["deletions"].append(old)
            change["additions"].append(_wrr_successor(old, self._configs[record.name],
                                                      {site: float(v) for site, v in shares.items()}, old["ttl"]))
        if state.epoch.ref is not None:
            change["deletions"].append(json.loads(state.epoch.ref))
            change["additions"].append(json.loads(state.epoch.ref))
        try:
            done = await self._api(f"weights of {where}", "POST", "/changes", data=change)
        except ConditionFailed:
            raise await refused(where, expected, self.read_weights) from None
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


def _wrr_sites(fqdn: str, config: RecordConfig, policy: dict[str, Any], *, answering: bool = False) -> list[str]:
    """The site of each weighted round robin item (matched by its values), in order; with ``answering`` only
    the items Cloud DNS answers (weight above 0; all of them when every weight is 0)."""
    wrr = policy.get("wrr")
    if not isinstance(wrr, dict) or not wrr.get("items"):
        kinds = sorted(k for k in policy if k != "kind")
        raise DnsConfigError(f"{fqdn.rstrip('.')} has a {'/'.join(kinds) or 'routing'} policy: the engine moves "
                             f"plain or weighted round robin record sets only")
    sites: list[str] = []
    for item in wrr["items"]:
        values = sorted(canonical_value(config.type, v) for v in item.get("rrdatas", []))
        site = site_of(values, config.targets)
        if site not in config.targets or site in sites:
            raise DnsConfigError(f"{fqdn.rstrip('.')}: a weighted item answers {values}, not one site's values "
                                 f"once")
        sites.append(site)
    if answering and any(float(i.get("weight", 0)) > 0 for i in wrr["items"]):
        return [s for s, i in zip(sites, wrr["items"], strict=True) if float(i.get("weight", 0)) > 0]
    return sites


def _wrr_weights(fqdn: str, config: RecordConfig, policy: dict[str, Any]) -> dict[str, float]:
    """Each configured site's item weight (0 for a site without an item)."""
    weights = dict.fromkeys(config.targets, 0.0)
    for site, item in zip(_wrr_sites(fqdn, config, policy), policy["wrr"]["items"], strict=True):
        weights[site] = float(item.get("weight", 0))
    return weights


def _answering_values(rrset: dict[str, Any], config: RecordConfig) -> tuple[str, ...]:
    """The values a weighted record set answers (as :meth:`CloudDnsProvider._record` reads them)."""
    sites = _wrr_sites(rrset["name"], config, rrset["routingPolicy"], answering=True)
    return tuple(sorted({v for site in sites for v in config.targets[site]}))


def _wrr_successor(old: dict[str, Any], config: RecordConfig, weights: Mapping[str, float],
                   ttl: int) -> dict[str, Any]:
    """The weighted round robin record set replacing ``old``: one item per site that has an item or a weight,
    each keeping its other fields (health-checked targets; not the DNSSEC signatures Cloud DNS makes)."""
    policy = old["routingPolicy"]
    by_site = dict(zip(_wrr_sites(old["name"], config, policy), policy["wrr"]["items"], strict=True))
    sites = sorted(set(by_site) | {site for site, weight in weights.items() if weight > 0})
    items = [{**{k: v for k, v in by_site.get(site, {}).items() if k != "signatureRrdatas"},
              "weight": float(weights.get(site, 0.0)), "rrdatas": list(config.targets[site])} for site in sites]
    wrr = {**{k: v for k, v in policy["wrr"].items() if k != "items"}, "items": items}
    return {"name": old["name"], "type": old["type"], "ttl": int(ttl), "routingPolicy": {**policy, "wrr": wrr}}
