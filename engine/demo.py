"""The built-in demo: two sample sites on loopback, one engine watching them, a broken primary.

``failover-engine run`` with no config runs it. It prints the status URL, waits until both sites
are up, breaks the primary (503s), narrates what the engine sees and decides, restores it, and
keeps running until Ctrl-C (or for ``seconds``). Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import tempfile
import time
from pathlib import Path

from engine.config.loader import parse_config
from engine.daemon import Engine
from engine.sample_site import SampleSite

DEMO_CONFIG = """
instance: {{id: demo-gcp, site: gcp, role: engine, listen: "127.0.0.1:{port}", tick: 0.5s}}
journal: {{path: "{journal}"}}
logging: {{level: warning}}
services:
  shop:
    active: gcp
    policy: {{failure_threshold: 3, success_threshold: 2, rpo: 30s, cooldown: 10m}}
    sites:
      gcp:
        probes:
          - {{type: http, name: health, url: "{gcp}/health", interval: 1s, timeout: 800ms,
              json: {{path: status, equals: ok}}}}
      azure:
        probes:
          - {{type: http, name: health, url: "{azure}/health", interval: 1s, timeout: 800ms,
              json: {{path: status, equals: ok}}}}
"""


def _port(preferred: int = 8080) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


async def _wait_for(engine: Engine, predicate: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        svc = engine.status()["services"]["shop"]
        if predicate == "both_up" and all(s["health"] == "up" for s in svc["sites"].values()):
            return True
        if predicate == "gcp_down" and svc["sites"]["gcp"]["health"] == "down":
            return True
        await asyncio.sleep(0.1)
    return False


async def _demo(seconds: float | None) -> None:
    from engine import logs

    workdir = Path(tempfile.mkdtemp(prefix="failover-demo-"))
    gcp, azure = await SampleSite("gcp").start(), await SampleSite("azure").start()
    config = parse_config(DEMO_CONFIG.format(port=_port(), journal=workdir / "journal.db",
                                             gcp=gcp.url, azure=azure.url))
    logs.configure("warning", "console")
    engine = Engine(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await engine.start()
    printed = 0

    async def narrate() -> None:
        nonlocal printed
        while True:
            assert engine.journal is not None
            for event in reversed(engine.journal.events(limit=50)):
                if event.id > printed:
                    printed = event.id
                    _say(f"{event.kind:8} {event.message}")
            await asyncio.sleep(0.2)

    narrator = asyncio.create_task(narrate())
    started = time.monotonic()

    async def script() -> None:
        _say(f"sample sites: gcp {gcp.url}  azure {azure.url}")
        _say(f"engine API: {engine.api_url}/v1/status   status page: {engine.api_url}/   "
             f"metrics: {engine.api_url}/metrics")
        if await _wait_for(engine, "both_up", 15):
            _say(">>> breaking the primary: gcp now answers 503")
            gcp.set_mode("fail")
            broke = time.monotonic()
            if await _wait_for(engine, "gcp_down", 15):
                _say(f">>> gcp declared down {time.monotonic() - broke:.1f}s after the break "
                     "(3 consecutive failures at 1 s)")
            await asyncio.sleep(1.5)
            _say(">>> restoring gcp (the engine never fails back by itself)")
            gcp.set_mode("ok")
        if seconds is None:
            _say("running; Ctrl-C to stop")
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(max(0.0, seconds - (time.monotonic() - started)))

    runner = asyncio.create_task(script())
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (narrator, runner, stopper):
            task.cancel()
        await asyncio.gather(narrator, runner, stopper, return_exceptions=True)
        await engine.stop()
        await gcp.stop()
        await azure.stop()
        _say(f"stopped; the journal is at {workdir / 'journal.db'}")


def run_demo(seconds: float | None = None) -> int:
    asyncio.run(_demo(seconds))
    return 0
