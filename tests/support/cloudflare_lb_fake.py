"""A local aiohttp server speaking Cloudflare's v4 Load Balancing API, for the official SDK to talk to.

Routes (under ``/client/v4``): ``GET /zones`` (``name`` filter), ``GET /zones/{zone}/load_balancers``,
``GET|PATCH /zones/{zone}/load_balancers/{id}`` (PATCH overwrites the supplied properties and sets a
new ``modified_on``), ``GET /accounts/{account}/load_balancers/pools/{id}`` and ``.../{id}/health``
(``healthy`` per pool, scriptable). Answers use the v4 envelope of :mod:`tests.support.cloudflare_fake`.
Requests need ``Authorization: Bearer <token>``. ``before_write`` hooks run before a PATCH is applied
(a test's concurrent change), ``before_get`` hooks before one is read by id. Every request is logged in ``seen``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.support.cloudflare_fake import PREFIX, envelope, page


class CloudflareLbFake:
    """In-memory zones, load balancers and pools behind Cloudflare's v4 API shape."""

    def __init__(self, token: str = "cf-lb-token", account: str = "a" * 32) -> None:
        self.token = token
        self.account = account
        self.zones: dict[str, str] = {}
        self.balancers: dict[str, dict[str, Any]] = {}
        self.pools: dict[str, dict[str, Any]] = {}
        self.healthy: dict[str, bool] = {}
        self.before_write: list[Callable[[], None]] = []
        self.before_get: list[Callable[[], None]] = []  # run before a load balancer is read by id
        self.seen: list[tuple[str, str, Any]] = []
        self._ids = itertools.count(1)
        self._clock = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def _id(self) -> str:
        return f"{next(self._ids):032x}"

    def _stamp(self) -> str:
        return f"2026-01-01T00:{next(self._clock) % 60:02d}:{next(self._clock) % 60:02d}.{next(self._ids):06d}Z"

    def add_zone(self, name: str) -> str:
        zone_id = self._id()
        self.zones[zone_id] = name
        return zone_id

    def add_pool(self, name: str, addresses: list[str], *, enabled: bool = True) -> str:
        pool_id = self._id()
        self.pools[pool_id] = {"id": pool_id, "name": name, "enabled": enabled, "minimum_origins": 1,
                               "origins": [{"name": f"{name}-{i}", "address": a, "enabled": True, "weight": 1}
                                           for i, a in enumerate(addresses)],
                               "created_on": "2026-01-01T00:00:00Z", "modified_on": "2026-01-01T00:00:00Z"}
        self.healthy[pool_id] = True
        return pool_id

    def add_balancer(self, zone_id: str, hostname: str, pools: list[str], description: str = "") -> str:
        lb_id = self._id()
        self.balancers[lb_id] = {"id": lb_id, "zone_id": zone_id, "name": hostname, "default_pools": pools,
                                 "fallback_pool": pools[-1], "description": description, "enabled": True,
                                 "proxied": False, "ttl": 30, "steering_policy": "off",
                                 "created_on": "2026-01-01T00:00:00Z", "modified_on": self._stamp()}
        return lb_id

    def edit(self, lb_id: str, **changes: Any) -> None:
        """A dashboard edit."""
        self.balancers[lb_id].update(changes, modified_on=self._stamp())

    async def start(self) -> str:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get(f"{PREFIX}/zones", self._zones)
        app.router.add_get(f"{PREFIX}/zones/{{zid}}/load_balancers", self._list)
        app.router.add_get(f"{PREFIX}/zones/{{zid}}/load_balancers/{{lid}}", self._get)
        app.router.add_patch(f"{PREFIX}/zones/{{zid}}/load_balancers/{{lid}}", self._patch)
        app.router.add_get(f"{PREFIX}/accounts/{{aid}}/load_balancers/pools/{{pid}}", self._pool)
        app.router.add_get(f"{PREFIX}/accounts/{{aid}}/load_balancers/pools/{{pid}}/health", self._health)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}{PREFIX}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.seen.append((request.method, request.path, body))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return envelope(None, status=403, success=False,
                            errors=[{"code": 10000, "message": "Authentication error"}])
        if "aid" in request.match_info and request.match_info["aid"] != self.account:
            return envelope(None, status=403, success=False, errors=[{"code": 10000, "message": "no such account"}])
        response: web.StreamResponse = await handler(request)
        return response

    async def _zones(self, request: web.Request) -> web.Response:
        name = request.query.get("name")
        items = [{"id": z, "name": n, "status": "active"} for z, n in self.zones.items() if name in (None, n)]
        return page(items, request.query, 20)

    async def _list(self, request: web.Request) -> web.Response:
        zone = request.match_info["zid"]
        return envelope([b for b in self.balancers.values() if b["zone_id"] == zone])

    async def _get(self, request: web.Request) -> web.Response:
        for hook in list(self.before_get):
            hook()
        balancer = self.balancers.get(request.match_info["lid"])
        if balancer is None:
            return envelope(None, status=404, success=False, errors=[{"code": 1002, "message": "not found"}])
        return envelope(balancer)

    async def _patch(self, request: web.Request) -> web.Response:
        lb_id = request.match_info["lid"]
        if lb_id not in self.balancers:
            return envelope(None, status=404, success=False, errors=[{"code": 1002, "message": "not found"}])
        for hook in list(self.before_write):
            hook()
        body = await request.json()
        unknown = [p for p in body.get("default_pools", []) if p not in self.pools]
        if unknown:
            return envelope(None, status=400, success=False, errors=[{"code": 1002, "message": f"no pool {unknown}"}])
        self.balancers[lb_id].update(body, modified_on=self._stamp())
        return envelope(self.balancers[lb_id])

    async def _pool(self, request: web.Request) -> web.Response:
        pool = self.pools.get(request.match_info["pid"])
        if pool is None:
            return envelope(None, status=404, success=False, errors=[{"code": 1002, "message": "not found"}])
        return envelope(pool)

    async def _health(self, request: web.Request) -> web.Response:
        pool_id = request.match_info["pid"]
        if pool_id not in self.pools:
            return envelope(None, status=404, success=False, errors=[{"code": 1002, "message": "not found"}])
        healthy = self.healthy[pool_id]
        origins = [{"ip": {"healthy": healthy, "rtt": "12ms", "failure_reason": "" if healthy else "HTTP timeout",
                           "response_code": 200 if healthy else 0}} for _o in self.pools[pool_id]["origins"]]
        return envelope({"pool_id": pool_id, "pop_health": {"healthy": healthy, "origins": origins}})
