"""A sample site: a tiny aiohttp service whose health can be broken on purpose.

Used by the demo, the tests and the benchmarks as a probe target. Modes: ``ok`` (200 with a JSON
body), ``fail`` (503), ``hang`` (never answers), ``reset`` (drops the connection), ``garbage``
(not HTTP), ``big`` (a 10 MB body), ``slow`` (answers after ``delay`` seconds). It listens on
loopback only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web

MODES = ("ok", "fail", "hang", "reset", "garbage", "big", "slow")


@dataclass
class SampleSite:
    name: str = "site"
    mode: str = "ok"
    delay: float = 0.5
    hits: int = 0
    host: str = "127.0.0.1"
    port: int = 0
    _runner: web.AppRunner | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.mode = mode

    async def _health(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        mode = self.mode
        if mode == "fail":
            return web.json_response({"status": "failing", "site": self.name}, status=503)
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "slow":
            await asyncio.sleep(self.delay)
        if mode in ("reset", "garbage"):
            transport = request.transport
            if transport is not None:
                if mode == "garbage":
                    transport.write(b"\x00\xffNOT HTTP AT ALL\r\n\r\n")
                transport.abort()
            raise web.HTTPException()  # never delivered: the connection is gone
        if mode == "big":
            response = web.StreamResponse(headers={"Content-Type": "text/plain"})
            await response.prepare(request)
            chunk = b"x" * 65536
            for _ in range(160):  # 10 MiB
                await response.write(chunk)
            await response.write_eof()
            return response
        return web.json_response({"status": "ok", "site": self.name})

    async def start(self) -> SampleSite:
        app = web.Application()
        app.router.add_route("*", "/health", self._health)
        app.router.add_route("*", "/", self._health)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, )
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
