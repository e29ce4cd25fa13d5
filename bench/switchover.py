"""Switchover under write load, measured through a writer that follows DNS: the write gap it sees, nothing lost.

The PostgreSQL pair (logical replication), BIND and two engines plus a witness (processes, loopback:
``tests/support/cluster.py``). Three writers run all along:

- the *DNS writer* (:class:`tests.support.writers.DnsWriter`, as in ``bench/rto.py``) commits
  continuously through the service name: on every (re)connect it resolves ``app.example.test`` at the
  authoritative server and connects to the database of that site; after an error it drops the
  connection, waits ``retry_pause`` and opens a new one (what a pooled client does with a broken
  connection: discard it, check out a fresh one, retry the statement); every acknowledged row is
  remembered with the site it was committed on and the wall time of its acknowledgement;
- two *probe writers*, one per database, try an insert every few milliseconds straight at their
  database and record when one is accepted (the no-overlap check).

The engine switches over back and forth ``--runs N`` times. Measured through the DNS writer, never
the engine's clock:

- ``write_gap``: from the last row the old primary acknowledged to the first the new one
  acknowledged, as the writer saw them;
- ``lost_acknowledged``: acknowledged rows missing on the final primary after the last switchover;
- ``write_overlap_ms``: per switchover, how long the old primary still accepted a probe writer's
  write after the new one accepted its first (must be 0);
- ``steps_p50_s``: where the gap goes, the median per part: from the last old write to the start of the
  fence, each step on the critical path (fence, drain, promote, shift_dns; from the operation record),
  and from the DNS change to the writer's first new write (``writer``: its re-resolve and reconnect).

The records' TTL lowering is configured away (it happens before the fence, outside the gap).

``--writer pool`` replaces the DNS writer by :class:`tests.support.writers.PoolWriter`: it keeps its
connection after an error unless the connection broke, as psycopg_pool and HikariCP do by default, so a
read-only refusal from the fenced old primary does not make it reconnect (see docs/switchover.md). A
writer with no write on the new primary ``STUCK_AFTER_S`` after a switchover counts in
``writer_stuck_runs`` (and the percentiles are then null).

    python bench/switchover.py --runs 10     # target (issue 19): write gap p99 <= 0.5 s, 0 lost, 0 overlap
    python bench/switchover.py --runs 10 --writer pool

The last line is JSON with the keys: bench, writer, runs, acknowledged, write_gap_p50_s, write_gap_p99_s,
writer_stuck_runs, lost_acknowledged, write_overlap_ms, steps_p50_s, operation_p50_s, reference, ratio
(p99 / target).
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
TARGET_GAP_P99_S = 0.5
REFERENCE = "issue 19: the DNS writer's write gap p99 <= 0.5 s, 0 acknowledged writes lost"
CRITICAL = ("fence", "drain", "promote", "shift_dns")
STUCK_AFTER_S = 10.0  # a writer with no write on the new primary this long after the switchover counts as stuck


class Writers:
    def __init__(self, cluster: Any, db: Any, kind: str) -> None:
        from tests.support.writers import DnsWriter, PoolWriter

        self.cluster, self.db = cluster, db
        self.dns_writer = (PoolWriter if kind == "pool" else DnsWriter)(cluster, db, first=10_000_000, pause=0.002,
                                                                      retry_pause=0.005)
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
        if self._stop.is_set():
            return
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self.dns_writer.stop()


def write_gap(acked: list[tuple[int, str, float]], source: str, target: str, since: float,
              ) -> tuple[float, float] | None:
    """(last acknowledged by ``source``, first acknowledged by ``target``) around the switchover after ``since``."""
    first_new = min((t for _, site, t in acked if site == target and t >= since), default=None)
    if first_new is None:
        return None
    last_old = max((t for _, site, t in acked if site == source and t < first_new), default=None)
    return None if last_old is None else (last_old, first_new)


def breakdown(op: dict[str, Any], last_old: float, first_new: float) -> dict[str, float]:
    """Where the gap went: before the fence, each critical step, and the writer after the DNS change."""
    steps = op["steps"]
    parts = {"before_fence": steps["fence"]["started_at"] - last_old}
    for name in CRITICAL:
        rec = steps.get(name) or {}
        if rec.get("started_at") is not None and rec.get("finished_at") is not None:
            parts[name] = rec["finished_at"] - rec["started_at"]
    parts["between_steps"] = (steps["shift_dns"]["finished_at"] - steps["fence"]["started_at"]
                              - sum(parts.get(n, 0.0) for n in CRITICAL))
    parts["writer"] = first_new - steps["shift_dns"]["finished_at"]
    return parts


def sub_steps(op: dict[str, Any]) -> str:
    """The database actions' own sub-step timings (fence, promote), for the per-run line."""
    out = []
    for name in ("fence", "drain", "promote"):
        data = (op["steps"].get(name) or {}).get("data") or {}
        inner = ", ".join(f"{s['name']} {s['seconds'] * 1000:.0f}" for s in data.get("steps", []))
        out.append(f"{name}[{inner}]")
    return " ".join(out)


async def post(cluster: Any, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as s, s.post(
            cluster.voters["engine-gcp"].url + path, json=body, headers={"Authorization": f"Bearer {OPERATOR}"},
            timeout=aiohttp.ClientTimeout(total=60)) as r:
        return r.status, await r.json()


async def main_async(runs: int, writer: str) -> None:
    from tests.scenarios.test_database_failover import database_yaml
    from tests.support.cluster import Cluster
    from tests.support.postgres import PgPair

    pair = PgPair().start()
    cluster: Any = None
    writers: Writers | None = None
    stuck = 0
    gaps: list[float] = []
    overlaps: list[float] = []
    totals: list[float] = []
    parts: dict[str, list[float]] = {}
    try:  # everything started is stopped, also when the cluster fails to start (no stray engines)
        db = pair.replicate()
        db.on_primary("INSERT INTO accounts(owner, balance) SELECT 'o' || g, g FROM generate_series(1, 50) g")
        db.wait_caught_up()
        db.on_standby(f'ALTER DATABASE "{db.dbname}" SET default_transaction_read_only = on')  # standby: no writes
        workdir = Path(tempfile.mkdtemp(prefix="bench-switchover-"))
        cluster = Cluster(workdir, extra_service=lambda _vid: database_yaml(db),
                          api_tokens=[("bench", "operator", OPERATOR), ("look", "viewer", OPERATOR + "-viewer")])
        writers = Writers(cluster, db, writer)
        await cluster.start()
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
            asked = time.time()
            status, body = await post(cluster, "/v1/services/shop/switchover", {"reason": f"bench {run}",
                                                                                 "target": target})
            assert status == 202, body
            await cluster.wait_for("engine-gcp", lambda s, t=target: s["services"]["shop"]["active"] == t
                                   and s["services"]["shop"]["operation"] is None, timeout=120, what="switchover")
            await asyncio.sleep(0.5)
            op = next(o for o in await cluster.operations("engine-gcp") if o["id"] == body["operation"])
            assert op["state"] == "done", json.dumps(op["steps"], indent=1)[:3000]
            source = op["source"]
            totals.append(op["finished_at"] - op["created_at"])
            fence_at = op["steps"]["fence"]["started_at"]
            new_first = min((t for t in writers.accepted[target] if t >= fence_at), default=float("inf"))
            old_last = max((t for t in writers.accepted[source] if t <= time.time()), default=0.0)
            overlaps.append(max(0.0, old_last - new_first) * 1000)
            seen = write_gap(writers.acked, source, target, asked)
            deadline = time.monotonic() + STUCK_AFTER_S
            while seen is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                seen = write_gap(writers.acked, source, target, asked)
            if seen is None:
                stuck += 1
                print(f"run {run + 1}/{runs}: {source} -> {target}: the {writer} writer got no write acknowledged "
                      f"on {target} within {STUCK_AFTER_S:g}s after the switchover", flush=True)
                target = source
                continue
            last_old, first_new = seen
            gaps.append(first_new - last_old)
            for name, seconds in breakdown(op, last_old, first_new).items():
                parts.setdefault(name, []).append(seconds)
            where = ", ".join(f"{k} {v[-1] * 1000:.0f}" for k, v in parts.items())
            print(f"run {run + 1}/{runs}: {source} -> {target}: write gap {gaps[-1]:.3f}s (ms: {where}; "
                  f"{sub_steps(op)}), operation {totals[-1]:.2f}s, overlap {overlaps[-1]:.1f} ms", flush=True)
            target = source
        await writers.stop()
        final = "gcp" if target == "azure" else "azure"
        rows = (db.on_primary if final == "gcp" else db.on_standby)(
            "SELECT amount FROM orders WHERE amount >= 10000000")
        present = {int(float(str(r[0]))) for r in rows}
        acked = {n for n, _, _ in writers.acked}
        p99 = percentile(gaps, 99) if not stuck else None
        final_line({"bench": "switchover", "writer": writer, "runs": runs, "acknowledged": len(acked),
                    "write_gap_p50_s": round(percentile(gaps, 50), 3) if gaps else None,
                    "write_gap_p99_s": None if p99 is None else round(p99, 3), "writer_stuck_runs": stuck,
                    "lost_acknowledged": len(acked - present),
                    "write_overlap_ms": round(max(overlaps, default=0.0), 2),
                    "steps_p50_s": {k: round(percentile(v, 50), 3) for k, v in parts.items()},
                    "operation_p50_s": round(percentile(totals, 50), 3),
                    "reference": REFERENCE, "ratio": None if p99 is None else round(p99 / TARGET_GAP_P99_S, 3)})
    finally:
        if writers is not None:
            await writers.stop()
        if cluster is not None:
            await cluster.stop()
        pair.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--writer", choices=("dns", "pool"), default="dns",
                        help="dns: drops its connection after any error; pool: only when it broke (default pools)")
    args = parser.parse_args()
    asyncio.run(main_async(args.runs, args.writer))


if __name__ == "__main__":
    main()
