"""Probe scale: N HTTP targets probed at interval I by the real engine, against the raw aiohttp limit.

Three processes, all on loopback: a target server (aiohttp, several ports, one path per target),
the engine (``engine.runtime.daemon.Engine`` with a generated config: one service, N HTTP probes, a new
connection per probe as real health checkers do), and, afterwards, a bare aiohttp client loop
(new connection per request) measured against the same server: the raw limit.

The engine is measured over a steady window after one interval of warm-up: probes/s completed,
CPU % of one core (from /proc), lateness p50/p99 (start minus due, from the scheduler), RSS.
``ratio`` compares CPU efficiency: (engine probes/s per core) / (raw requests/s per core).

    python bench/probe_scale.py             # 10,000 targets at 10 s (target: <= 40 % CPU, p99 <= 100 ms)
    python bench/probe_scale.py --quick     # 2,000 targets at 2 s, under 40 s

The last line printed is JSON with the keys: bench, targets, interval_s, probes_per_s, cpu_pct,
lateness_p50_ms, lateness_p99_ms, rss_mb, raw_limit_probes_per_s, ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import cpu_seconds, final_line, free_port, percentile, rss_mb  # noqa: E402

PORTS_PER_SERVER = 8


# -- target server (child process) --------------------------------------------------------------
async def serve(ports: list[int]) -> None:
    from aiohttp import web

    async def health(_request: web.Request) -> web.Response:
        return web.Response(text='{"status":"ok"}', content_type="application/json")

    app = web.Application()
    app.router.add_get("/t/{n}", health)
    runner = web.AppRunner(app, access_log=None, handle_signals=True, shutdown_timeout=0.5)
    await runner.setup()
    for port in ports:
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


# -- engine (child process) ---------------------------------------------------------------------
def engine_config(targets: int, interval: float, ports: list[int], workdir: Path) -> str:
    timeout = min(5.0, interval / 2)
    lines = [
        f'instance: {{id: bench, site: a, listen: "127.0.0.1:{free_port()}", tick: 1s}}',
        f'journal: {{path: "{workdir / "journal.db"}"}}',
        "logging: {level: warning, format: json}",
        "services:",
        "  bench:",
        "    active: a",
        "    sites:",
    ]
    half = targets // 2
    for site, lo, hi in (("a", 0, half), ("b", half, targets)):
        lines.append(f"      {site}:")
        lines.append("        probes:")
        for n in range(lo, hi):
            port = ports[n % len(ports)]
            lines.append(f'          - {{type: http, name: t{n}, url: "http://127.0.0.1:{port}/t/{n}", '
                         f"interval: {interval}, timeout: {timeout}}}")
    return "\n".join(lines) + "\n"


async def run_engine(config_path: str, warmup: float, window: float) -> None:
    from engine.config.loader import load_config
    from engine.runtime import logs
    from engine.runtime.daemon import Engine

    config = load_config(config_path)
    logs.configure("warning", "json")
    engine = Engine(config)
    lateness: list[float] = []
    engine.scheduler._on_lateness = lambda _k, s: (lateness.append(s), engine._on_lateness(_k, s))[-1]
    await engine.start()
    print("started", flush=True)
    await asyncio.sleep(warmup)
    checks0 = sum(e.checks for e in engine.scheduler._entries.values())
    lateness.clear()
    print("window", flush=True)
    await asyncio.sleep(window)
    checks1 = sum(e.checks for e in engine.scheduler._entries.values())
    samples = list(lateness)
    ok = sum(1 for s in engine.signals.values() if s.last is not None and s.last.ok)
    print(json.dumps({"checks": checks1 - checks0, "lateness": [percentile(samples, 50), percentile(samples, 99)],
                      "samples": len(samples), "ok_signals": ok,
                      "skipped": sum(e.skipped for e in engine.scheduler._entries.values())}), flush=True)
    await engine.stop()


# -- raw client (child process) -----------------------------------------------------------------
async def raw_client(ports: list[int], seconds: float, concurrency: int) -> None:
    import aiohttp

    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    done = 0
    async with aiohttp.ClientSession(connector=connector) as session:
        stop_at = time.monotonic() + seconds

        async def worker(i: int) -> None:
            nonlocal done
            n = i
            while time.monotonic() < stop_at:
                url = f"http://127.0.0.1:{ports[n % len(ports)]}/t/{n}"
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                    await resp.read()
                done += 1
                n += concurrency

        started = time.monotonic()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = time.monotonic() - started
    print(json.dumps({"requests": done, "seconds": elapsed}), flush=True)


# -- orchestration ------------------------------------------------------------------------------
def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def wait_line(proc: subprocess.Popen[str], expected: str, timeout: float = 120) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"child exited before '{expected}'")
        if line.startswith(expected):
            return line
    raise TimeoutError(expected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int)
    parser.add_argument("--interval", type=float)
    parser.add_argument("--window", type=float, help="measured seconds after warm-up")
    parser.add_argument("--quick", action="store_true", help="2,000 targets at 2 s; under 40 s")
    parser.add_argument("--child", choices=["server", "engine", "raw"], help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child == "server":
        asyncio.run(serve([int(p) for p in args.ports.split(",")]))
        return
    if args.child == "engine":  # on the loop the daemon picks (uvloop when installed), as deployed
        from engine.runtime.eventloop import run

        run(run_engine(args.config, args.warmup, args.window))
        return
    if args.child == "raw":
        asyncio.run(raw_client([int(p) for p in args.ports.split(",")], args.window, 64))
        return

    targets = args.targets or (2000 if args.quick else 10_000)
    interval = args.interval or (2.0 if args.quick else 10.0)
    window = args.window or 3 * interval
    warmup = interval * 3  # every signal has had its phase and two successes: measure steady state
    ports = [free_port() for _ in range(PORTS_PER_SERVER)]
    server = spawn("--child", "server", "--ports", ",".join(map(str, ports)))
    workdir = Path(tempfile.mkdtemp(prefix="probe-scale-"))
    try:
        wait_line(server, "ready")
        config = workdir / "bench.yaml"
        config.write_text(engine_config(targets, interval, ports, workdir))
        print(f"probe_scale: {targets} targets at {interval:g}s, warm-up {warmup:g}s, window {window:g}s",
              flush=True)
        engine = spawn("--child", "engine", "--config", str(config), "--warmup", str(warmup),
                       "--window", str(window))
        wait_line(engine, "started")
        wait_line(engine, "window")
        cpu0, t0 = cpu_seconds(engine.pid), time.monotonic()
        rss_peak = 0.0
        while time.monotonic() - t0 < window - 0.2:
            time.sleep(0.5)
            rss_peak = max(rss_peak, rss_mb(engine.pid))
        cpu1, t1 = cpu_seconds(engine.pid), time.monotonic()
        result = json.loads(wait_line(engine, "{"))
        engine.wait(30)
        cpu_pct = 100 * (cpu1 - cpu0) / (t1 - t0)
        probes_per_s = result["checks"] / window
        print(f"engine: {probes_per_s:.0f} probes/s, CPU {cpu_pct:.1f} % of one core, "
              f"lateness p50 {result['lateness'][0] * 1000:.1f} ms p99 {result['lateness'][1] * 1000:.1f} ms, "
              f"RSS {rss_peak:.0f} MB, {result['ok_signals']}/{targets} signals ok, "
              f"{result['skipped']} slots skipped", flush=True)

        raw_seconds = 5.0 if args.quick else 10.0
        raw = spawn("--child", "raw", "--ports", ",".join(map(str, ports)), "--window", str(raw_seconds))
        c0, r0 = cpu_seconds(raw.pid), time.monotonic()
        raw_result = json.loads(wait_line(raw, "{"))
        c1, r1 = cpu_seconds(raw.pid), time.monotonic()
        raw.wait(30)
        raw_rps = raw_result["requests"] / raw_result["seconds"]
        raw_cpu = max(1e-6, (c1 - c0) / (r1 - r0))
        raw_per_core = raw_rps / raw_cpu
        print(f"raw aiohttp client (new connection per request, 64 concurrent): {raw_rps:.0f} req/s at "
              f"{raw_cpu * 100:.0f} % CPU = {raw_per_core:.0f} req/s per core", flush=True)
        engine_per_core = probes_per_s / max(1e-6, cpu_pct / 100)
        final_line({
            "bench": "probe_scale",
            "targets": targets,
            "interval_s": interval,
            "probes_per_s": round(probes_per_s, 1),
            "cpu_pct": round(cpu_pct, 1),
            "lateness_p50_ms": round(result["lateness"][0] * 1000, 2),
            "lateness_p99_ms": round(result["lateness"][1] * 1000, 2),
            "rss_mb": round(rss_peak, 1),
            "raw_limit_probes_per_s": round(raw_per_core, 1),
            "ratio": round(engine_per_core / raw_per_core, 3),
        })
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
