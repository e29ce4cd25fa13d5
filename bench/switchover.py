"""Switchover under write load: nothing acknowledged is lost, the two databases never both accept writes.

The PostgreSQL pair (logical replication), BIND and two engines plus a witness (processes, loopback:
``tests/support/cluster.py``). Three writers run all along:

- the *DNS writer* commits continuously through the service name: on every (re)connect it resolves
  ``app.example.test`` at the authoritative server and connects to the database of that site;
  every acknowledged row is remembered;
- two *probe writers*, one per database, try an insert every few milliseconds straight at their
  database and record when one is accepted.

The engine switches over back and forth ``--runs N`` times (default 20). Afterwards: every
acknowledged row of the DNS writer must be on the final primary (``lost_acknowledged``); the
probe writers' accepted writes must never interleave across a switchover (``write_overlap_ms``:
for each switchover, how long the old primary still accepted writes after the new one accepted its
first); ``unavailable`` is from the start of the fence step to the first write the DNS writer got
accepted on the new primary. The records' TTL lowering is configured away here (it happens before
the fence, so it is not part of the unavailability; the record TTL of the test zone is 30 s).

    python bench/switchover.py             # 20 switchovers (target: lost 0, overlap 0, unavailable p99 <= 2 s)
    python bench/switchover.py --runs 4

The last line is JSON with the keys: bench, runs, acknowledged, lost_acknowledged, write_overlap_ms,
unavailable_p50_s, unavailable_p99_s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import final_line, percentile  # noqa: E402

OPERATOR = "bench-operator-token-0123456789"


class Writers:
    def __init__(self, cluster: Any, db: Any) -> None:
        from tests.support.writers import DnsWriter

        self.cluster, self.db = cluster, db
        self.dns_writer = DnsWriter(cluster, db, first=10_000_000, pause=0.002, retry_pause=0.005)
        self.accepted: dict[str, list[float]] = {"gcp": [], "azure": []}  # probe writers: wall times
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def dsn(self, site: str) -> str:
        return str(self.db.primary_dsn if site == "gcp" else self.db.standby_dsn)

    async def _probe_writer(self, site: str) -> None:
        import psycopg

        conn: Any = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = await psycopg.AsyncConnection.connect(self.dsn(site), autocommit=True, connect_timeout=2)
                await conn.execute("INSERT INTO orders(account, amount) VALUES (2, -1)")
                self.accepted[site].append(time.time())
            except psycopg.Error:
                if conn is not None:
                    await conn.close()
                conn = None
            await asyncio.sleep(0.004)
        if conn is not None:
            await conn.close()

    @property
    def acked(self) -> list[tuple[int, str, float]]:
        """The DNS writer's acknowledged rows: (amount, site, wall time)."""
        return self.dns_writer.acked

    def start(self) -> None:
        self.dns_writer.start()
        self._tasks = [asyncio.create_task(self._probe_writer(s)) for s in ("gcp", "azure")]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self.dns_writer.stop()


async def post(cluster: Any, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as s, s.post(
            cluster.voters["engine-gcp"].url + path, json=body, headers={"Authorization": f"Bearer {OPERATOR}"},
            timeout=aiohttp.ClientTimeout(total=60)) as r:
        return r.status, await r.json()


async def main_async(runs: int) -> None:
    from tests.scenarios.test_database_failover import database_yaml
    from tests.support.cluster import Cluster
    from tests.support.postgres import PgPair

    pair = PgPair().start()
    db = pair.replicate()
    db.on_primary("INSERT INTO accounts(owner, balance) SELECT 'o' || g, g FROM generate_series(1, 50) g")
    db.wait_caught_up()
    db.on_standby(f'ALTER DATABASE "{db.dbname}" SET default_transaction_read_only = on')  # a standby takes no writes
    workdir = Path(tempfile.mkdtemp(prefix="bench-switchover-"))
    cluster = Cluster(workdir, extra_service=lambda _vid: database_yaml(db),
                      api_tokens=[("bench", "operator", OPERATOR), ("look", "viewer", OPERATOR + "-viewer")])
    await cluster.start()
    writers = Writers(cluster, db)
    unavailable: list[float] = []
    overlaps: list[float] = []
    try:
        for vid in cluster.voters:
            await cluster.wait_for(vid, lambda s: all(x["health"] == "up"
                                                      for x in s["services"]["shop"]["sites"].values()), timeout=30)
        writers.start()
        target = "azure"
        for run in range(runs):
            await cluster.wait_for("engine-gcp", lambda s: (s["services"]["shop"]["replication"] or {}).get("state")
                                   == "up" and s["services"]["shop"]["lag_s"] is not None
                                   and s["services"]["shop"]["lag_s"] < 5, timeout=60, what="replication up")
            await asyncio.sleep(0.5)
            status, body = await post(cluster, "/v1/services/shop/switchover", {"reason": f"bench {run}",
                                                                                 "target": target})
            assert status == 202, body
            await cluster.wait_for("engine-gcp", lambda s, t=target: s["services"]["shop"]["active"] == t
                                   and s["services"]["shop"]["operation"] is None, timeout=120, what="switchover")
            await asyncio.sleep(0.5)
            op = next(o for o in await cluster.operations("engine-gcp") if o["id"] == body["operation"])
            assert op["state"] == "done", json.dumps(op["steps"], indent=1)[:3000]
            fence_at = op["steps"]["fence"]["started_at"]
            first_new = min((t for _, site, t in writers.acked if site == target and t >= fence_at), default=None)
            assert first_new is not None, "no write accepted on the new primary"
            unavailable.append(first_new - fence_at)
            source = op["source"]
            new_first = min((t for t in writers.accepted[target] if t >= fence_at), default=float("inf"))
            old_last = max((t for t in writers.accepted[source] if t <= time.time()), default=0.0)
            overlaps.append(max(0.0, old_last - new_first) * 1000)
            print(f"run {run + 1}/{runs}: {source} -> {target} in {op['finished_at'] - op['created_at']:.2f}s, "
                  f"unavailable {unavailable[-1]:.3f}s, overlap {overlaps[-1]:.1f} ms", flush=True)
            target = source
        await writers.stop()
        final = "gcp" if target == "azure" else "azure"
        rows = (db.on_primary if final == "gcp" else db.on_standby)(
            "SELECT amount FROM orders WHERE amount >= 10000000")
        present = {int(float(str(r[0]))) for r in rows}
        acked = {n for n, _, _ in writers.acked}
        lost = len(acked - present)
        final_line({"bench": "switchover", "runs": runs, "acknowledged": len(acked), "lost_acknowledged": lost,
                    "write_overlap_ms": round(max(overlaps, default=0.0), 2),
                    "unavailable_p50_s": round(percentile(unavailable, 50), 3),
                    "unavailable_p99_s": round(percentile(unavailable, 99), 3)})
    finally:
        if not writers._stop.is_set():
            await writers.stop()
        await cluster.stop()
        pair.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main_async(args.runs))


if __name__ == "__main__":
    main()
