"""A local aiohttp server speaking Google Cloud DNS's v1 JSON API, for google-cloud-dns to talk to.

Routes (under ``/dns/v1/projects/{project}/managedZones/{zone}``): ``GET`` (the zone),
``GET /rrsets`` (``name``/``type`` filters, ``maxResults``/``pageToken`` paging), ``POST /changes``
and ``GET /changes/{id}``. A change is checked as Cloud DNS documents it: every deletion must match
the live record set exactly (name, type, TTL, rrdatas, routing policy) or the answer is
``412 conditionNotMet``; an addition of a record set that exists (and is not deleted in the same
change) is ``409 alreadyExists``; a failed change alters nothing. An accepted change is applied at
once and reported ``pending`` for the next ``pending_polls`` reads of its status, then ``done``.

Routing policies as the API documents them: a record set holds ``rrdatas`` OR a ``routingPolicy``, never
both (``400 invalid``); a weighted round robin policy is ``{"wrr": {"items": [{"weight": <non-negative
number>, "rrdatas": [...]}]}}``, answered with the ``kind`` of each part and every weight as a float
(:func:`wrr`); a deletion matches a policy whatever ``kind`` fields it repeats.

``before_change`` hooks run before a change is judged (a test makes a concurrent foreign change
there); ``faults`` answer the next matching requests with a status. Every request is logged.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass
class Fault:
    status: int
    method: str | None = None
    path_contains: str | None = None
    times: int = 1


def _error(status: int, reason: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": status, "message": message,
                                        "errors": [{"domain": "global", "reason": reason, "message": message}]}},
                             status=status)


def _key(rrset: dict[str, Any]) -> tuple[str, str]:
    return rrset["name"], rrset["type"]


KINDS = {"routingPolicy": "dns#rRSetRoutingPolicy", "wrr": "dns#rRSetRoutingPolicyWrrPolicy",
         "items": "dns#rRSetRoutingPolicyWrrPolicyWrrPolicyItem"}


def wrr(weights: dict[str, tuple[float, list[str]]]) -> dict[str, Any]:
    """A weighted round robin routing policy in the API's shape: one item per (weight, rrdatas)."""
    return _kinds("routingPolicy", {"wrr": {"items": [{"weight": float(weight), "rrdatas": list(rrdatas)}
                                                      for weight, rrdatas in weights.values()]}})


def _kinds(key: str, value: Any) -> Any:
    """``value`` as the API answers it: a ``kind`` on each routing policy part, weights as floats."""
    if isinstance(value, list):
        return [_kinds(key, v) for v in value]
    if not isinstance(value, dict):
        return float(value) if key == "weight" else value
    out = {k: _kinds(k, v) for k, v in value.items()}
    if key in KINDS:
        out["kind"] = KINDS[key]
    return out


def _plain(value: Any) -> Any:
    """``value`` without ``kind`` fields and with numbers as floats: what a deletion is compared on."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k != "kind"}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _invalid(rrset: dict[str, Any]) -> str | None:
    """Why Cloud DNS would refuse ``rrset`` as an addition, or None."""
    policy = rrset.get("routingPolicy")
    if (policy is None) == (not rrset.get("rrdatas")):
        return "A valid ResourceRecordSet contains only rrdata or a routingPolicy"
    if policy is None:
        return None
    items = (policy.get("wrr") or {}).get("items")
    if not items and "wrr" in policy:
        return "a weighted round robin policy needs items"
    for item in items or []:
        weight = item.get("weight")
        if not isinstance(weight, int | float) or weight < 0 or not item.get("rrdatas"):
            return f"invalid weighted item {item}: a non-negative weight and rrdatas"
    return None


def _same(live: dict[str, Any], deletion: dict[str, Any]) -> bool:
    return (int(live.get("ttl", 0)) == int(deletion.get("ttl", 0))
            and sorted(live.get("rrdatas", [])) == sorted(deletion.get("rrdatas", []))
            and _plain(live.get("routingPolicy")) == _plain(deletion.get("routingPolicy")))


class CloudDnsFake:
    """In-memory managed zones behind the Cloud DNS v1 API shape."""

    def __init__(self, project: str = "shop-project") -> None:
        self.project = project
        self.zones: dict[str, str] = {}  # managed zone name -> dnsName
        self.rrsets: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self.changes: dict[str, dict[str, Any]] = {}
        self.polls: dict[str, int] = {}
        self.pending_polls = 2
        self.before_change: list[Callable[[], None]] = []
        self.faults: list[Fault] = []
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.auth: list[str] = []
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def add_zone(self, name: str, dns_name: str) -> None:
        self.zones[name] = dns_name
        self.rrsets[name] = {}

    def put(self, zone: str, name: str, rtype: str, rrdatas: list[str], ttl: int = 60,
            routing_policy: dict[str, Any] | None = None) -> None:
        """Set a record set directly (a hand edit in the console)."""
        rrset: dict[str, Any] = {"kind": "dns#resourceRecordSet", "name": name, "type": rtype, "ttl": ttl}
        if routing_policy is not None:
            rrset["routingPolicy"] = _kinds("routingPolicy", routing_policy)
        else:
            rrset["rrdatas"] = rrdatas
        self.rrsets[zone][(name, rtype)] = rrset

    def get(self, zone: str, name: str, rtype: str) -> dict[str, Any] | None:
        return self.rrsets[zone].get((name, rtype))

    def snapshot(self, zone: str) -> list[tuple[str, str, int, tuple[str, ...]]]:
        return sorted((r["name"], r["type"], r["ttl"], tuple(r.get("rrdatas", []))) for r in self.rrsets[zone].values())

    def requests(self, method: str, path_contains: str = "") -> list[tuple[str, str, dict[str, str]]]:
        return [s for s in self.seen if s[0] == method and path_contains in s[1]]

    async def start(self) -> str:
        app = web.Application(middlewares=[self._middleware])
        base = "/dns/v1/projects/{project}/managedZones/{zone}"
        app.router.add_get(base, self._zone)
        app.router.add_get(base + "/rrsets", self._list)
        app.router.add_post(base + "/changes", self._create)
        app.router.add_get(base + "/changes/{cid}", self._change)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.seen.append((request.method, request.path, dict(request.query)))
        self.auth.append(request.headers.get("Authorization", ""))
        if request.match_info.get("project") != self.project:
            return _error(403, "forbidden", "The caller does not have permission")
        if request.match_info.get("zone") not in self.zones:
            return _error(404, "notFound", f"The 'parameters.managedZone' resource named "
                                           f"'{request.match_info.get('zone')}' does not exist.")
        for fault in self.faults:
            if (fault.method in (None, request.method)) and (fault.path_contains or "") in request.path:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return _error(fault.status, "injected", f"injected {fault.status}")
        response: web.StreamResponse = await handler(request)
        return response

    async def _zone(self, request: web.Request) -> web.Response:
        name = request.match_info["zone"]
        return web.json_response({"kind": "dns#managedZone", "name": name, "dnsName": self.zones[name],
                                  "id": "1234", "nameServers": ["ns-cloud-a1.googledomains.com."]})

    async def _list(self, request: web.Request) -> web.Response:
        zone = request.match_info["zone"]
        name, rtype = request.query.get("name"), request.query.get("type")
        items = [r for r in sorted(self.rrsets[zone].values(), key=_key)
                 if (name is None or r["name"] == name) and (rtype is None or r["type"] == rtype)]
        size = int(request.query.get("maxResults", 100))
        start = int(request.query.get("pageToken", 0))
        body: dict[str, Any] = {"kind": "dns#resourceRecordSetsListResponse", "rrsets": items[start:start + size]}
        if start + size < len(items):
            body["nextPageToken"] = str(start + size)
        return web.json_response(body)

    async def _create(self, request: web.Request) -> web.Response:
        zone = request.match_info["zone"]
        body = await request.json()
        for hook in list(self.before_change):
            hook()
        live = copy.deepcopy(self.rrsets[zone])
        for index, deletion in enumerate(body.get("deletions") or []):
            current = live.get(_key(deletion))
            if current is None or not _same(current, deletion):
                return _error(412, "conditionNotMet", f"Precondition not met for 'entity.change.deletions[{index}]'")
            del live[_key(deletion)]
        for index, addition in enumerate(body.get("additions") or []):
            invalid = _invalid(addition)
            if invalid is not None:
                return _error(400, "invalid", f"Invalid value for 'entity.change.additions[{index}]': {invalid}")
            if _key(addition) in live:
                return _error(409, "alreadyExists", f"The resource 'entity.change.additions[{index}]' named "
                                                    f"'{addition['name']} ({addition['type']})' already exists")
            live[_key(addition)] = {"kind": "dns#resourceRecordSet", **addition, "ttl": int(addition["ttl"])}
            if "routingPolicy" in addition:
                live[_key(addition)]["routingPolicy"] = _kinds("routingPolicy", addition["routingPolicy"])
        self.rrsets[zone] = live
        change_id = str(next(self._ids))
        self.changes[change_id] = {"kind": "dns#change", "id": change_id, "status": "pending",
                                   "startTime": "2026-01-01T00:00:00.000Z", **body}
        self.polls[change_id] = 0
        return web.json_response(self.changes[change_id])

    async def _change(self, request: web.Request) -> web.Response:
        change_id = request.match_info["cid"]
        if change_id not in self.changes:
            return _error(404, "notFound", f"The 'parameters.changeId' resource named '{change_id}' does not exist.")
        self.polls[change_id] += 1
        if self.polls[change_id] >= self.pending_polls:
            self.changes[change_id]["status"] = "done"
        return web.json_response(self.changes[change_id])
