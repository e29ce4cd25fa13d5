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


async def load(url: str, clients: int, seconds: float) -> None:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        stop_at = time.monotonic() + seconds

        async def client() -> None:
            nonlocal errors
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                try:
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                        await resp.read()
                        if resp.status != 200:
                            errors += 1
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                latencies.append(time.perf_counter() - started)

        t0 = time.monotonic()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.monotonic() - t0
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
    if args.child == "bare":
        asyncio.run(bare(args.port))
        return

    ports = [free_port() for _ in range(PORTS_PER_SERVER)]
    server = spawn("--child", "server", "--ports", ",".join(map(str, ports)))
    workdir = Path(tempfile.mkdtemp(prefix="api-load-"))
    procs = [server]
    try:
        wait_line(server, "ready")
        text = engine_config(args.signals, args.interval, ports, workdir)
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
        print(f"api_load: {args.signals} signals probing every {args.interval:g}s; {args.clients} clients "
              f"for {args.seconds:g}s on /v1/status", flush=True)
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
