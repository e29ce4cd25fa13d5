"""Concurrent move requests: one operation per service at a time, one runbook per epoch, nothing lost.

The PostgreSQL pair (logical replication), BIND and two engines plus a witness (processes, loopback:
``tests/support/cluster.py``). A writer follows DNS and counts acknowledged commits all along. ``--clients N``
clients (each with its own operator token, so the API's per-token rate limit does not hide the race) hammer
every move endpoint of *both* engines at random for ``--seconds``: failover (with ``fence_first``, the primary is
healthy), switchover and failback, with no target (the only other site). Then every operation of both engines is
read back:

- ``operations``: runbooks started (202 answers), the only figure that should not be 0;
- ``duplicate_epochs``: epochs that more than one operation took past its precheck (the epoch CAS and the
  one claim per service must keep this 0: the loser of a race across engines stands down at precheck, with
  no side effect);
- ``noop_moves``: operations that "moved" a service to the site it was already on (source == target, or a
  done operation whose precheck found DNS already there);
- ``lost_acknowledged``: acknowledged rows of the writer missing on the final primary;
- ``refused``: answers by code (409 naming the winning operation, 412 preconditions, 429 rate limit).

    python bench/concurrent_moves.py                      # 8 clients, 40 s
    python bench/concurrent_moves.py --clients 4 --seconds 15

The last line is JSON with the keys above plus ``requests`` and ``answers``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import final_line  # noqa: E402

ENDPOINTS = ("failover", "switchover", "failback")


def body_for(endpoint: str, client: int, n: int) -> dict[str, Any]:
    reason = f"race {client}.{n}"
    return {"reason": reason, "fence_first": True} if endpoint == "failover" else {"reason": reason}


async def hammer(cluster: Any, *, clients: int, seconds: float, seed: int = 1) -> dict[str, Any]:
    """Every client posts a random move to a random engine until ``seconds`` have passed; returns what happened."""
    import aiohttp

    rng = random.Random(seed)
    answers: Counter[str] = Counter()
    started: list[str] = []
    deadline = time.monotonic() + seconds
    engines = [vid for vid in cluster.voters if vid.startswith("engine-")]

    async def client(i: int) -> None:
        token = f"race-operator-{i:02d}-0123456789abcdef"
        n = 0
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                n += 1
                vid, endpoint = rng.choice(engines), rng.choice(ENDPOINTS)
                try:
                    async with session.post(cluster.voters[vid].url + f"/v1/services/shop/{endpoint}",
                                            json=body_for(endpoint, i, n),
                                            headers={"Authorization": f"Bearer {token}"},
                                            timeout=aiohttp.ClientTimeout(total=10)) as r:
                        data = await r.json(content_type=None)
                        answers[f"{r.status} {data.get('error', '') if isinstance(data, dict) else ''}".strip()] += 1
                        if r.status == 202 and isinstance(data, dict) and data.get("operation"):
                            started.append(str(data["operation"]))
                except (aiohttp.ClientError, TimeoutError) as exc:
                    answers[f"client error {type(exc).__name__}"] += 1
                await asyncio.sleep(rng.uniform(0.0, 0.05))

    await asyncio.gather(*(client(i) for i in range(clients)))
    return {"answers": dict(answers), "started": started, "requests": sum(answers.values())}


async def settle(cluster: Any, timeout: float = 180.0) -> list[dict[str, Any]]:
    """Wait until no operation runs on any engine; every operation of both engines."""
    engines = [vid for vid in cluster.voters if vid.startswith("engine-")]
    end = time.monotonic() + timeout
    while True:
        ops = [op for vid in engines for op in await cluster.operations(vid)]
        if not any(op["state"] == "running" for op in ops) or time.monotonic() > end:
            return ops
        await asyncio.sleep(0.5)


def judge(ops: list[dict[str, Any]]) -> dict[str, int]:
    """duplicate_epochs and noop_moves over every operation of every engine."""
    past_precheck: dict[int, set[str]] = {}
    noop = 0
    for op in {o["id"]: o for o in ops}.values():
        steps = op.get("steps") or {}
        ran = [name for name, rec in steps.items() if name != "precheck" and rec.get("state") in ("done", "failed")]
        if ran:
            past_precheck.setdefault(int(op["epoch_to"]), set()).add(op["id"])
        already = "by this operation: resuming" not in str((steps.get("precheck") or {}).get("summary", "")) and \
            "already at" in str((steps.get("precheck") or {}).get("summary", ""))
        if op["source"] == op["target"] or (op["state"] == "done" and already):
            noop += 1
    return {"duplicate_epochs": sum(1 for ids in past_precheck.values() if len(ids) > 1), "noop_moves": noop}


async def main_async(clients: int, seconds: float) -> dict[str, Any]:
    from tests.scenarios.test_database_failover import database_yaml
    from tests.support.cluster import Cluster
    from tests.support.postgres import PgPair
    from tests.support.writers import DnsWriter

    pair = PgPair().start()
    db = pair.replicate()
    db.on_primary("INSERT INTO accounts(owner, balance) SELECT 'o' || g, g FROM generate_series(1, 50) g")
    db.wait_caught_up()
    db.on_standby(f'ALTER DATABASE "{db.dbname}" SET default_transaction_read_only = on')
    workdir = Path(tempfile.mkdtemp(prefix="bench-concurrent-"))
    tokens = [(f"racer{i}", "operator", f"race-operator-{i:02d}-0123456789abcdef") for i in range(clients)]
    tokens.append(("watcher", "viewer", "race-viewer-0123456789abcdef"))
    cluster = Cluster(workdir, extra_service=lambda _vid: database_yaml(db), api_tokens=tokens)
    await cluster.start()
    writer = DnsWriter(cluster, db, first=30_000_000, pause=0.004, retry_pause=0.01)
    try:
        await cluster.wait_sites_up(timeout=30)
        writer.start()
        run = await hammer(cluster, clients=clients, seconds=seconds)
        ops = await settle(cluster)
        await asyncio.sleep(1.0)
        await writer.stop()
        final = cluster.dns_site()
        rows = (db.on_primary if final == "gcp" else db.on_standby)(
            "SELECT amount FROM orders WHERE amount >= 30000000")
        present = {int(float(str(r[0]))) for r in rows}
        acked = {n for n, _, _ in writer.acked}
        return {"bench": "concurrent_moves", "clients": clients, "seconds": seconds,
                "requests": run["requests"], "operations": len(set(run["started"])), **judge(ops),
                "lost_acknowledged": len(acked - present), "acknowledged": len(acked),
                "halted": sum(1 for o in {o["id"]: o for o in ops}.values() if o["state"] == "halted"),
                "answers": run["answers"]}
    finally:
        if not writer._stop.is_set():
            await writer.stop()
        await cluster.stop()
        pair.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=40.0)
    args = parser.parse_args()
    final_line(asyncio.run(main_async(args.clients, args.seconds)))


if __name__ == "__main__":
    main()
