"""A local aiohttp server speaking Cloudflare's v4 JSON envelope, for the official SDK to talk to.

It keeps zones and DNS records in memory and serves the calls the DNS provider makes:
``GET /zones`` (``name`` filter), ``GET /zones/{id}/dns_records`` (``type``, ``name``/``name.exact``
filters) and ``POST /zones/{id}/dns_records/batch`` (deletes, patches, puts, posts applied in that
order as one transaction: an unknown record id fails the whole batch with error 81044 and
changes nothing, which is what the provider's compare-and-swap relies on). Lists honour
``page``/``per_page`` and return an empty page past the end (the SDK stops paging only then).

Faults are queued with :meth:`CloudflareFake.fail`: a status (429 with ``Retry-After``, 5xx,
401/403, 400), ``success: false`` with HTTP 200, or a hang; each applies to the next matching
requests, and ``then`` runs once the fault has fired (e.g. to queue the next fault). ``hooks`` run
before every request is handled (a test can change the zone in the middle of a read). Every
request is logged (method, path, query, auth headers) for assertions.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

PREFIX = "/client/v4"
AUTH_HEADERS = ("Authorization", "X-Auth-Key", "X-Auth-Email", "X-Auth-User-Service-Key")


@dataclass
class Fault:
    """What the next ``times`` requests matching ``method``/``path_contains`` get instead of an answer."""

    status: int = 200
    times: int = 1
    method: str | None = None
    path_contains: str | None = None
    retry_after: float | None = None
    success_false: bool = False
    hang: bool = False
    apply_first: bool = False  # do the real work, then answer with the fault (a lost reply)
    then: Callable[[], None] | None = None  # runs after the fault has fired


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)


def envelope(result: Any, *, status: int = 200, success: bool = True,
             errors: list[dict[str, Any]] | None = None, result_info: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"success": success, "errors": errors or [], "messages": [], "result": result}
    if result_info is not None:
        body["result_info"] = result_info
    return web.json_response(body, status=status, headers=headers)


def page(items: list[dict[str, Any]], query: Any, default_per_page: int) -> web.Response:
    number = int(query.get("page", 1))
    per_page = int(query.get("per_page", default_per_page))
    chunk = items[(number - 1) * per_page: number * per_page]
    total_pages = max(1, -(-len(items) // per_page))
    return envelope(chunk, result_info={"page": number, "per_page": per_page, "count": len(chunk),
                                        "total_count": len(items), "total_pages": total_pages})


class CloudflareFake:
    """In-memory zones and records behind Cloudflare's v4 API shape."""

    def __init__(self, token: str = "test-token") -> None:
        self.token = token
        self.forbidden_tokens: set[str] = set()
        self.zones: dict[str, str] = {}
        self.records: dict[str, dict[str, dict[str, Any]]] = {}
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self.hooks: list[Callable[[web.Request], None]] = []
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._release = asyncio.Event()
        self.base_url = ""

    # -- state -------------------------------------------------------------------------------
    def _new_id(self) -> str:
        return f"{next(self._ids):032x}"

    def add_zone(self, name: str) -> str:
        zone_id = self._new_id()
        self.zones[zone_id] = name
        self.records[zone_id] = {}
        return zone_id

    def zone_id(self, name: str) -> str:
        return next(zid for zid, zname in self.zones.items() if zname == name)

    def add_record(self, zone: str, name: str, rtype: str, content: str, ttl: int = 60, *,
                   proxied: bool = False, comment: str | None = None) -> str:
        zone_id = self.zone_id(zone)
        record = self._record(zone_id, {"name": name, "type": rtype, "content": content, "ttl": ttl,
                                        "proxied": proxied, "comment": comment})
        self.records[zone_id][record["id"]] = record
        return str(record["id"])

    def _record(self, zone_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        return {"id": self._new_id(), "zone_id": zone_id, "zone_name": self.zones[zone_id],
                "name": fields["name"], "type": fields["type"], "content": fields.get("content", ""),
                "ttl": fields.get("ttl", 1), "proxied": fields.get("proxied", False),
                "proxiable": fields["type"] in ("A", "AAAA", "CNAME"), "comment": fields.get("comment"),
                "settings": {}, "meta": {}, "tags": fields.get("tags", []),
                "created_on": "2026-01-01T00:00:00Z", "modified_on": "2026-01-01T00:00:00Z"}

    def remove_record(self, zone: str, record_id: str) -> None:
        del self.records[self.zone_id(zone)][record_id]

    def record_id(self, zone: str, name: str, rtype: str) -> str:
        return next(i for i, r in self.records[self.zone_id(zone)].items() if r["name"] == name and r["type"] == rtype)

    def values(self, zone: str, name: str, rtype: str | None = None) -> list[tuple[str, str]]:
        """(type, content) of every record at ``name``: what tests compare before and after."""
        return sorted((r["type"], r["content"]) for r in self.records[self.zone_id(zone)].values()
                      if r["name"] == name and (rtype is None or r["type"] == rtype))

    def snapshot(self, zone: str) -> list[tuple[str, str, str, float]]:
        return sorted((r["name"], r["type"], r["content"], r["ttl"])
                      for r in self.records[self.zone_id(zone)].values())

    def fail(self, status: int = 200, **kwargs: Any) -> None:
        self.faults.append(Fault(status=status, **kwargs))

    def requests(self, method: str, path_contains: str = "") -> list[Seen]:
        return [s for s in self.seen if s.method == method and path_contains in s.path]

    # -- server ------------------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get(f"{PREFIX}/zones", self._zones)
        app.router.add_get(f"{PREFIX}/user/tokens/verify", self._verify_token)
        app.router.add_get(f"{PREFIX}/zones/{{zid}}/dns_records", self._list)
        app.router.add_post(f"{PREFIX}/zones/{{zid}}/dns_records/batch", self._batch)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}{PREFIX}"
        return self.base_url

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def _take_fault(self, request: web.Request) -> Fault | None:
        for fault in self.faults:
            if fault.method and fault.method != request.method:
                continue
            if fault.path_contains and fault.path_contains not in request.path:
                continue
            fault.times -= 1
            if fault.times <= 0:
                self.faults.remove(fault)
            return fault
        return None

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.seen.append(Seen(request.method, request.path, dict(request.query),
                              {k: request.headers[k] for k in AUTH_HEADERS if k in request.headers}))
        auth = request.headers.get("Authorization", "")
        if auth != f"Bearer {self.token}" and auth.removeprefix("Bearer ") not in self.forbidden_tokens:
            return envelope(None, status=401, success=False,
                            errors=[{"code": 10000, "message": "Authentication error"}])
        if auth.removeprefix("Bearer ") in self.forbidden_tokens:
            return envelope(None, status=403, success=False,
                            errors=[{"code": 10000, "message": "Authentication error"}])
        for hook in list(self.hooks):
            hook(request)
        fault = self._take_fault(request)
        if fault is None:
            response: web.StreamResponse = await handler(request)
            return response
        if fault.hang:
            await self._release.wait()
        if fault.apply_first:
            await handler(request)
        if fault.then is not None:
            fault.then()
        if fault.success_false:
            return envelope(None, success=False, errors=[{"code": 1000, "message": "injected failure"}])
        headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
        return envelope(None, status=fault.status, success=False, headers=headers,
                        errors=[{"code": 1000 + fault.status, "message": f"injected {fault.status}"}])

    async def _verify_token(self, _request: web.Request) -> web.Response:
        return envelope({"id": "0" * 32, "status": "active"})

    async def _zones(self, request: web.Request) -> web.Response:
        name = request.query.get("name")
        items = [{"id": zid, "name": zname, "status": "active", "paused": False, "type": "full",
                  "name_servers": ["ns1.example.net", "ns2.example.net"]}
                 for zid, zname in self.zones.items() if name is None or zname == name]
        return page(items, request.query, 20)

    async def _list(self, request: web.Request) -> web.Response:
        zid = request.match_info["zid"]
        if zid not in self.records:
            return envelope(None, status=404, success=False, errors=[{"code": 7003, "message": "no zone"}])
        name = request.query.get("name.exact", request.query.get("name"))
        rtype = request.query.get("type")
        items = [r for r in self.records[zid].values()
                 if (name is None or r["name"] == name) and (rtype is None or r["type"] == rtype)]
        return page(sorted(items, key=lambda r: r["id"]), request.query, 100)

    async def _batch(self, request: web.Request) -> web.Response:
        zid = request.match_info["zid"]
        if zid not in self.records:
            return envelope(None, status=404, success=False, errors=[{"code": 7003, "message": "no zone"}])
        body = await request.json()
        records = copy.deepcopy(self.records[zid])
        done: dict[str, list[dict[str, Any]]] = {"deletes": [], "patches": [], "puts": [], "posts": []}
        for kind in ("deletes", "patches", "puts"):
            for item in body.get(kind) or []:
                if item.get("id") not in records:
                    return envelope(None, status=400, success=False,
                                    errors=[{"code": 81044, "message": "Record does not exist."}])
                if kind == "deletes":
                    done[kind].append(records.pop(item["id"]))
                    continue
                record = records[item["id"]]
                if kind == "puts":
                    record.update({"comment": None, "proxied": False, "tags": []})
                record.update({k: v for k, v in item.items() if k != "id"})
                done[kind].append(record)
        for item in body.get("posts") or []:
            record = self._record(zid, item)
            records[record["id"]] = record
            done["posts"].append(record)
        self.records[zid] = records
        return envelope(done)
