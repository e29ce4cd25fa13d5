"""API load: 200 concurrent clients on GET /v1/status while the engine probes 1,000 signals.

Processes, all on loopback: the probe targets (aiohttp), the engine (the real daemon with 1,000 HTTP
signals, as in ``bench/probe_scale.py``), and a load generator (aiohttp, keep-alive, a closed loop
of ``--clients`` concurrent requests for ``--seconds``). The same load then runs against a bare
aiohttp "hello" handler in its own process: the limit of the stack itself. Probe lateness p99 is
the scheduler's own measure over the load window, so "probing stays on schedule" is checked too.

    python bench/api_load.py                 # 200 clients for 20 s (target: p99 <= 20 ms)
    python bench/api_load.py --seconds 5     # shorter

The last line is JSON with the keys: bench, rps, p50_ms, p99_ms, bare_rps, bare_p99_ms, errors,
probe_lateness_p99_ms.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import final_line, free_port, percentile  # noqa: E402
from bench.probe_scale import PORTS_PER_SERVER, engine_config, spawn, wait_line  # noqa: E402

TOKEN = "bench-viewer-token-0123456789"  # a viewer token: the dashboard's view, authenticated as deployed


class _Client(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection in a closed loop: send, read the whole response, repeat.

    A load generator of its own (asyncio protocol, no parsing beyond the status line and
    Content-Length) rather than aiohttp's client: on two cores the generator shares the CPU with the
    server it measures, and aiohttp's client spent more of it than the server did."""

    def __init__(self, request: bytes, stop_at: float, latencies: list[float], done: asyncio.Future[None]) -> None:
        self.request, self.stop_at, self.latencies, self.done = request, stop_at, latencies, done
        self.buffer = bytearray()
        self.need: int | None = None
        self.errors = 0
        self.transport: asyncio.Transport | None = None
        self.started = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.started = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need is None:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = bytes(self.buffer[:head_end]).lower()
            if not head.startswith((b"http/1.1 200", b"http/1.0 200")):
                self.errors += 1
            match = re.search(rb"\r\ncontent-length: *(\d+)", head)
            self.need = head_end + 4 + (int(match.group(1)) if match else 0)
        if len(self.buffer) < self.need:
            return
        del self.buffer[:self.need]
        self.need = None
        now = time.perf_counter()
        self.latencies.append(now - self.started)
        if time.monotonic() < self.stop_at:
            self._send()
        else:
            assert self.transport is not None
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if time.monotonic() < self.stop_at:
            self.errors += 1
        if not self.done.done():
            self.done.set_result(None)


async def load(url: str, clients: int, seconds: float) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    request = (f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
               f"Authorization: Bearer {TOKEN}\r\n\r\n").encode()
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    stop_at = time.monotonic() + seconds
    t0 = time.monotonic()
    protocols = []
    for _ in range(clients):
        done: asyncio.Future[None] = loop.create_future()
        _transport, protocol = await loop.create_connection(
            lambda done=done: _Client(request, stop_at, latencies, done), parts.hostname, parts.port)
        protocols.append(protocol)
    # a connection that never answers again must not hang the bench: it counts as an error
    _, stuck = await asyncio.wait([p.done for p in protocols], timeout=seconds + 30)
    for protocol in protocols:
        if not protocol.done.done():
            protocol.errors += 1
            assert protocol.transport is not None
            protocol.transport.abort()
    del stuck
    elapsed = time.monotonic() - t0
    errors = sum(p.errors for p in protocols)
    print(json.dumps({"requests": len(latencies), "errors": errors, "rps": len(latencies) / elapsed,
                      "p50": percentile(latencies, 50), "p99": percentile(latencies, 99)}), flush=True)


async def bare(port: int) -> None:
    from aiohttp import web

    async def hello(_request: web.Request) -> web.Response:
        return web.json_response({"hello": "world"})

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None, handle_signals=True, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


def child_spawn(*args: str):  # type: ignore[no-untyped-def]
    import os
    import subprocess

    return subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def run_load(url: str, clients: int, seconds: float) -> dict[str, float]:
    proc = child_spawn("--child", "load", "--url", url, "--clients", str(clients), "--seconds", str(seconds))
    result = json.loads(wait_line(proc, "{", timeout=seconds + 60))
    proc.wait(30)
    return result  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--signals", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=10.0, help="probe interval of the signals")
    parser.add_argument("--child", choices=["load", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "load":
        asyncio.run(load(args.url, args.clients, args.seconds))
        return
    if args.child == "bare":  # on the same loop as the engine: the reference is the stack, not the loop
        from engine.runtime.eventloop import run

        run(bare(args.port))
        return

    ports = [free_port() for _ in range(PORTS_PER_SERVER)]
    server = spawn("--child", "server", "--ports", ",".join(map(str, ports)))
    workdir = Path(tempfile.mkdtemp(prefix="api-load-"))
    procs = [server]
    try:
        wait_line(server, "ready")
        digest = hashlib.sha256(TOKEN.encode()).hexdigest()
        text = engine_config(args.signals, args.interval, ports, workdir) + (
            f"api: {{tokens: [{{name: dashboard, role: viewer, sha256: {digest}}}]}}\n")
        listen = re.search(r'listen: "127\.0\.0\.1:(\d+)"', text)
        assert listen is not None
        config = workdir / "engine.yaml"
        config.write_text(text)
        warmup = min(args.interval * 1.5, 15.0)
        engine = spawn("--child", "engine", "--config", str(config), "--warmup", str(warmup),
                       "--window", str(args.seconds + 1.0))
        procs.append(engine)
        wait_line(engine, "started")
        wait_line(engine, "window", timeout=warmup + 60)
        from engine.runtime.eventloop import chosen

        print(f"api_load: event loop {chosen()}; {args.signals} signals probing every {args.interval:g}s; "
              f"{args.clients} clients for {args.seconds:g}s on /v1/status", flush=True)
        status = run_load(f"http://127.0.0.1:{listen.group(1)}/v1/status", args.clients, args.seconds)
        engine_result = json.loads(wait_line(engine, "{", timeout=60))
        engine.wait(30)
        print(f"engine: {status['rps']:.0f} req/s, p50 {status['p50'] * 1000:.1f} ms, p99 "
              f"{status['p99'] * 1000:.1f} ms, {status['errors']:g} errors; probe lateness p99 "
              f"{engine_result['lateness'][1] * 1000:.1f} ms, {engine_result['skipped']} skipped", flush=True)
        bare_port = free_port()
        bare_proc = child_spawn("--child", "bare", "--port", str(bare_port))
        procs.append(bare_proc)
        wait_line(bare_proc, "ready")
        bare_result = run_load(f"http://127.0.0.1:{bare_port}/", args.clients, args.seconds)
        print(f"bare aiohttp: {bare_result['rps']:.0f} req/s, p99 {bare_result['p99'] * 1000:.1f} ms", flush=True)
        final_line({
            "bench": "api_load",
            "rps": round(status["rps"], 1),
            "p50_ms": round(status["p50"] * 1000, 2),
            "p99_ms": round(status["p99"] * 1000, 2),
            "bare_rps": round(bare_result["rps"], 1),
            "bare_p99_ms": round(bare_result["p99"] * 1000, 2),
            "errors": int(status["errors"]),
            "probe_lateness_p99_ms": round(engine_result["lateness"][1] * 1000, 2),
        })
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)


if __name__ == "__main__":
    main()
