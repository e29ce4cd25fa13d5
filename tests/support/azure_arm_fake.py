"""A local Azure Resource Manager server for Azure DNS record sets and Traffic Manager profiles.

Speaks the REST shapes azure-mgmt-dns (api-version 2018-05-01) and azure-mgmt-trafficmanager send:

- ``GET|PUT|DELETE .../providers/Microsoft.Network/dnsZones/{zone}/{type}/{name}``: record sets with
  ``etag`` and ``properties`` (``TTL``, ``ARecords``, ``AAAARecords``, ``CNAMERecord``, ``TXTRecords``,
  ``metadata``);
- ``GET|PUT|PATCH .../providers/Microsoft.Network/trafficmanagerprofiles/{profile}``: profiles with
  ``tags`` and ``properties.endpoints[]`` (``priority``, ``weight``, ``endpointStatus``,
  ``endpointMonitorStatus``, ``target``).

Every write honours ``If-Match`` (412 ``PreconditionFailed`` when the resource's ETag differs, or it is
missing) and ``If-None-Match: *`` (412 when it exists); every answer carries the ``ETag`` header and a
new ETag per write. Requests need ``Authorization: Bearer <token>`` (401 otherwise). ``before_write``
hooks run before a write is judged (a test's concurrent foreign change); ``faults`` answer the next
matching requests with a status. Every request is logged in ``seen`` (method, path, headers).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

ZONE = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/dnsZones/{zone}"
DNS = ZONE + "/{rtype}/{name}"
TM = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/trafficmanagerprofiles/{profile}"
FIELDS = {"A": "ARecords", "AAAA": "AAAARecords", "CNAME": "CNAMERecord", "TXT": "TXTRecords"}


@dataclass
class Fault:
    status: int
    method: str | None = None
    times: int = 1


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class AzureArmFake:
    """In-memory DNS record sets and Traffic Manager profiles (see the module docstring)."""

    def __init__(self, token: str = "fake-token", subscription: str = "sub-1", group: str = "rg-shop") -> None:
        self.token = token
        self.subscription = subscription
        self.group = group
        self.records: dict[tuple[str, str, str], dict[str, Any]] = {}  # (zone, type, name) -> resource
        self.profiles: dict[str, dict[str, Any]] = {}
        self.before_write: list[Callable[[], None]] = []
        self.faults: list[Fault] = []
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self._etags = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def _etag(self) -> str:
        return f"{next(self._etags):08x}-0000-4000-8000-000000000000"

    # -- state (the portal) --------------------------------------------------------------------
    def put_record(self, zone: str, name: str, rtype: str, values: list[str], ttl: int = 60) -> None:
        field = FIELDS[rtype]
        data: Any
        if rtype == "A":
            data = [{"ipv4Address": v} for v in values]
        elif rtype == "AAAA":
            data = [{"ipv6Address": v} for v in values]
        elif rtype == "CNAME":
            data = {"cname": values[0]}
        else:
            data = [{"value": [v]} for v in values]
        self.records[(zone, rtype, name)] = self._dns_resource(zone, rtype, name, {"TTL": ttl, field: data})

    def values(self, zone: str, name: str, rtype: str) -> list[str]:
        record = self.records.get((zone, rtype, name))
        if record is None:
            return []
        data = record["properties"].get(FIELDS[rtype])
        if rtype == "CNAME":
            return [data["cname"]]
        key = {"A": "ipv4Address", "AAAA": "ipv6Address"}.get(rtype)
        return sorted(d[key] if key else "".join(d["value"]) for d in data)

    def _dns_resource(self, zone: str, rtype: str, name: str, properties: dict[str, Any]) -> dict[str, Any]:
        path = DNS.format(sub=self.subscription, rg=self.group, zone=zone, rtype=rtype, name=name)
        fqdn = f"{zone}." if name == "@" else f"{name}.{zone}."
        return {"id": path, "name": name, "type": f"Microsoft.Network/dnszones/{rtype}", "etag": self._etag(),
                "properties": {**properties, "fqdn": fqdn, "provisioningState": "Succeeded"}}

    def put_profile(self, name: str, endpoints: list[dict[str, Any]], *, routing: str = "Priority",
                    tags: dict[str, str] | None = None, relative_name: str | None = None) -> None:
        path = TM.format(sub=self.subscription, rg=self.group, profile=name)
        self.profiles[name] = {
            "id": path, "name": name, "type": "Microsoft.Network/trafficManagerProfiles", "location": "global",
            "tags": tags or {}, "etag": self._etag(),
            "properties": {"profileStatus": "Enabled", "trafficRoutingMethod": routing,
                           "dnsConfig": {"relativeName": relative_name or name, "ttl": 60,
                                         "fqdn": f"{relative_name or name}.trafficmanager.net"},
                           "monitorConfig": {"profileMonitorStatus": "Online", "protocol": "HTTPS", "port": 443,
                                             "path": "/health"},
                           "endpoints": [{"id": f"{path}/externalEndpoints/{e['name']}", "name": e["name"],
                                          "type": "Microsoft.Network/trafficManagerProfiles/externalEndpoints",
                                          "properties": {"endpointStatus": "Enabled",
                                                         "endpointMonitorStatus": "Online", "weight": 1,
                                                         **{k: v for k, v in e.items() if k != "name"}}}
                                         for e in endpoints]}}

    def endpoint(self, profile: str, name: str) -> dict[str, Any]:
        return next(e["properties"] for e in self.profiles[profile]["properties"]["endpoints"] if e["name"] == name)

    def touch_profile(self, profile: str, **endpoint_changes: dict[str, Any]) -> None:
        """A portal edit: change endpoint properties, new ETag."""
        for name, changes in endpoint_changes.items():
            self.endpoint(profile, name.replace("_", "-")).update(changes)
        self.profiles[profile]["etag"] = self._etag()

    # -- server --------------------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get(ZONE, self._zone)
        app.router.add_route("*", DNS, self._dns)
        app.router.add_route("*", TM, self._tm)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.seen.append((request.method, request.path, dict(request.headers)))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "AuthenticationFailed", "Authentication failed.")
        if "api-version" not in request.query:
            return _error(400, "MissingApiVersionParameter", "The api-version query parameter is required.")
        if request.match_info.get("sub") != self.subscription or request.match_info.get("rg") != self.group:
            return _error(404, "ResourceGroupNotFound", f"Resource group '{request.match_info.get('rg')}' "
                                                        f"could not be found.")
        for fault in self.faults:
            if fault.method in (None, request.method):
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return _error(fault.status, "Injected", f"injected {fault.status}")
        if request.method in ("PUT", "PATCH", "DELETE"):
            for hook in list(self.before_write):
                hook()
        response: web.StreamResponse = await handler(request)
        return response

    @staticmethod
    def _precondition(request: web.Request, current: dict[str, Any] | None) -> web.Response | None:
        match = request.headers.get("If-Match")
        if match is not None and (current is None or (match != "*" and match != current["etag"])):
            return _error(412, "PreconditionFailed", "The condition specified using HTTP conditional header(s) "
                                                     "is not met.")
        if request.headers.get("If-None-Match") == "*" and current is not None:
            return _error(412, "PreconditionFailed", "The resource already exists.")
        return None

    @staticmethod
    def _answer(resource: dict[str, Any], status: int = 200) -> web.Response:
        return web.json_response(resource, status=status, headers={"ETag": resource["etag"]})

    async def _zone(self, request: web.Request) -> web.Response:
        zone = request.match_info["zone"]
        if not any(key[0] == zone for key in self.records):
            return _error(404, "ResourceNotFound", f"The Resource 'Microsoft.Network/dnszones/{zone}' was not found.")
        return web.json_response({"id": request.path, "name": zone, "type": "Microsoft.Network/dnszones",
                                  "location": "global", "etag": "zone-etag",
                                  "properties": {"nameServers": ["ns1-01.azure-dns.com."]}})

    async def _dns(self, request: web.Request) -> web.Response:
        info = request.match_info
        key = (info["zone"], info["rtype"], info["name"])
        current = self.records.get(key)
        if request.method == "GET":
            if current is None:
                return _error(404, "NotFound", f"The resource record '{info['name']}' does not exist in "
                                               f"resource group '{info['rg']}'.")
            return self._answer(current)
        refused = self._precondition(request, current)
        if refused is not None:
            return refused
        if request.method == "DELETE":
            self.records.pop(key, None)
            return web.Response(status=200 if current else 204)
        body = await request.json()
        properties = {k: v for k, v in (body.get("properties") or {}).items() if k not in ("fqdn", "provisioningState")}
        self.records[key] = self._dns_resource(*key, properties)
        return self._answer(self.records[key], 200 if current else 201)

    async def _tm(self, request: web.Request) -> web.Response:
        name = request.match_info["profile"]
        current = self.profiles.get(name)
        if request.method == "GET":
            if current is None:
                return _error(404, "ResourceNotFound", f"The Resource '{name}' was not found.")
            return self._answer(current)
        refused = self._precondition(request, current)
        if refused is not None:
            return refused
        if current is None:
            return _error(404, "ResourceNotFound", f"The Resource '{name}' was not found.")
        body = await request.json()
        updated = copy.deepcopy(current)
        if "tags" in body:
            updated["tags"] = body["tags"]
        endpoints = (body.get("properties") or {}).get("endpoints")
        if endpoints is not None:
            known = {e["name"]: e for e in updated["properties"]["endpoints"]}
            for endpoint in endpoints:
                if endpoint.get("name") not in known:
                    return _error(400, "BadRequest", f"endpoint {endpoint.get('name')} is not in the profile")
                props = {k: v for k, v in (endpoint.get("properties") or {}).items()
                         if k != "endpointMonitorStatus"}  # read-only: the monitor sets it
                known[endpoint["name"]]["properties"].update(props)
                if props.get("endpointStatus") == "Disabled":
                    known[endpoint["name"]]["properties"]["endpointMonitorStatus"] = "Disabled"
                elif props.get("endpointStatus") == "Enabled" and \
                        known[endpoint["name"]]["properties"]["endpointMonitorStatus"] == "Disabled":
                    known[endpoint["name"]]["properties"]["endpointMonitorStatus"] = "CheckingEndpoint"
        updated["etag"] = self._etag()
        self.profiles[name] = updated
        return self._answer(updated)
