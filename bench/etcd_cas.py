"""Benchmark: the etcd backend's epoch compare-and-set and lease keepalive, next to a plain put.

Starts a fresh three-member etcd cluster on loopback (tests/support/etcd.py), then runs N rounds
through the engine's own client and backend. Each round makes one epoch move (read the epoch, then
the compare-and-set transaction on its mod_revision: what a failover's DNS step waits on), one lease
keepalive of a held write lease, and, as the reference, one plain put of another key (one raft
write through the same gateway). Rounds interleave so all three see the same machine. Prints one
JSON line: ``bench, rounds, cas_p50_ms, cas_p99_ms, keepalive_p50_ms, keepalive_p99_ms,
put_p50_ms, put_p99_ms, ratio_p50, ratio_p99`` (ratio = CAS round trip / plain put).

Run: ``python bench/etcd_cas.py [--rounds 300]``. Needs /usr/bin/etcd (scripts/bootstrap installs it).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import final_line, percentile
from engine.core.coordination import Epoch, EpochMove, Holder, LeaseGrant, LeaseRenewed
from engine.runtime.coordination.etcd import EtcdCoordination
from engine.runtime.coordination.etcd_client import EtcdClient
from tests.support.etcd import start_cluster


async def run(endpoints: list[str], rounds: int) -> dict[str, object]:
    backend = EtcdCoordination(EtcdClient(endpoints), "/bench")
    holder = Holder("azure", "azure-1")
    cas, keepalive, put = [], [], []
    try:
        grant = await backend.acquire_lease("shop", holder, 30)
        assert isinstance(grant, LeaseGrant), grant
        for index in range(rounds + 10):
            started = time.perf_counter()
            epoch = await backend.read_epoch("shop")
            assert isinstance(epoch, Epoch), epoch
            move = await backend.move_epoch("shop", epoch, "azure", holder, f"b{index}", lease=grant)
            cas_ms = (time.perf_counter() - started) * 1000
            assert isinstance(move, EpochMove) and move.won, move

            started = time.perf_counter()
            renewed = await backend.renew_lease(grant)
            keepalive_ms = (time.perf_counter() - started) * 1000
            assert isinstance(renewed, LeaseRenewed), renewed

            started = time.perf_counter()
            written = await backend.client.put(b"/bench/plain", str(index).encode())
            put_ms = (time.perf_counter() - started) * 1000
            assert isinstance(written, int), written
            if index >= 10:  # the first rounds warm the connections up
                cas.append(cas_ms)
                keepalive.append(keepalive_ms)
                put.append(put_ms)
    finally:
        await backend.close()
    p = {name: (round(percentile(v, 50), 2), round(percentile(v, 99), 2))
         for name, v in (("cas", cas), ("keepalive", keepalive), ("put", put))}
    return {"bench": "etcd_cas", "members": len(endpoints), "rounds": rounds,
            "cas_p50_ms": p["cas"][0], "cas_p99_ms": p["cas"][1],
            "keepalive_p50_ms": p["keepalive"][0], "keepalive_p99_ms": p["keepalive"][1],
            "put_p50_ms": p["put"][0], "put_p99_ms": p["put"][1],
            "ratio_p50": round(p["cas"][0] / p["put"][0], 2), "ratio_p99": round(p["cas"][1] / p["put"][1], 2),
            "reference": "plain put of one key through the same gateway"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    cluster = start_cluster(3)
    try:
        final_line(asyncio.run(run(cluster.endpoints, args.rounds)))
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
