"""RPO zero on demand: acknowledged writes lost by a whole-site kill, synchronous (``on``) vs asynchronous.

Each run (:mod:`bench.site_kill`): a fresh replicated database whose subscriber reaches the publisher
through a proxy adding ``--delay`` seconds each way (default 20 ms: the cross-cloud case), an
acknowledging writer (one session, each insert its own commit, as fast as commits return) for
``--steady`` seconds, then the whole publisher site killed at once (cluster, replication link, the
agent standing for its engine). ``on`` runs have the engine's synchronous watch
(:class:`engine.runtime.sync_watch.SyncWatch`) naming the standby and confirming it every 200 ms.
The reported bound is the engine's verdict (:func:`actions.consistency.check_loss`) from what an
engine could observe, driven by this bench without engine processes (``bound_from``).

``degrade_s``: under ``on`` with the writer running, the *standby* cluster is killed; commits wait
until the watch degrades to asynchronous (``--degrade-after``, ticks every 200 ms); the figure is the
time from the kill to the first commit acknowledged after it (writes flowing again), median of the runs.

    python bench/sync_loss.py --runs 5

Last line, JSON: bench, runs (per mode), lost_acknowledged_sync (must be 0), reported_bound_sync_s (0),
verdicts_sync, lost_acknowledged_async, reported_bound_async_s_max, commit_p50_ms_sync,
commit_p50_ms_async, throughput_ratio_sync_to_async (acknowledged commits per second, sync over async:
the reference is the asynchronous run on the same link), degrade_s, degrade_after_s, delay_ms, bound_from.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import final_line, percentile
from bench.site_kill import POLL, Run, cluster_pids, freeze_and_kill, quiet_cancellations
from tests.support.postgres import PgPair, start_pair

BOUND_FROM = ("engine.core.loss.judge via actions.consistency.check_loss, fed with what an engine could observe "
              "(its own heartbeats, its synchronous watch's confirmations, the standby after the kill, the old "
              f"site's agent polled every {POLL:g} s); driven by this bench, not by engine processes")


@dataclass
class Result:
    mode: str
    acked: int
    lost: int
    per_s: float
    p50_ms: float
    kind: str
    bound_s: float | None


async def kill_run(pair: PgPair, mode: str, args: argparse.Namespace) -> Result:
    run = await Run(pair, args.delay, mode=mode, degrade_after=args.degrade_after).start()
    writer = run.writer().start()
    try:
        await asyncio.sleep(args.steady)
        latencies = writer.latencies()
        rows = writer.acked_rows()
        per_s = len(rows) / max(1e-9, rows[-1][2] - rows[0][1]) if rows else 0.0
        await run.kill_site()
        await writer.stop()
        verdict = await run.verdict(run.watch.evidence() if run.watch else None)
        lost = run.lost(writer)
    finally:
        await run.close()
    result = Result(mode, len(writer.acked), len(lost), round(per_s, 1), round(percentile(latencies, 50) * 1000, 2),
                    verdict.kind, verdict.bound_s)
    print(f"run: {result} | {verdict.sentence[:160]}", file=sys.stderr, flush=True)
    return result


async def degrade_run(pair: PgPair, args: argparse.Namespace) -> float:
    run = await Run(pair, args.delay, mode="on", degrade_after=args.degrade_after).start()
    writer = run.writer().start()
    try:
        await asyncio.sleep(1.0)
        standby = pair.subscriber
        pids = cluster_pids(standby)
        killed = time.time()
        freeze_and_kill(pids)
        deadline = time.monotonic() + args.degrade_after + 30
        while not any(at > killed and sent > killed for _, sent, at in writer.acked_rows()[-50:]):
            if time.monotonic() > deadline:
                raise RuntimeError("writes did not flow again after the standby was killed")
            await asyncio.sleep(0.01)
        flowing = min(at for _, sent, at in writer.acked_rows() if at > killed and sent > killed)
        await writer.stop()
        await asyncio.to_thread(standby.start)
    finally:
        await run.close()
    took = flowing - killed
    print(f"degrade: writes flowing again {took:.2f} s after the standby was killed ({run.events[-2:]})",
          file=sys.stderr, flush=True)
    return took


async def main(args: argparse.Namespace) -> None:
    quiet_cancellations()
    results: list[Result] = []
    degrades: list[float] = []
    with start_pair() as pair:
        for _ in range(args.runs):
            for mode in ("on", "off"):
                results.append(await kill_run(pair, mode, args))
        for _ in range(min(args.runs, 3)):
            degrades.append(await degrade_run(pair, args))
    sync = [r for r in results if r.mode == "on"]
    async_ = [r for r in results if r.mode == "off"]
    bounds_sync = [math.inf if r.bound_s is None else r.bound_s for r in sync]
    bounds_async = [r.bound_s for r in async_ if r.bound_s is not None]
    final_line({
        "bench": "sync_loss", "runs": args.runs,
        "lost_acknowledged_sync": sum(r.lost for r in sync),
        "reported_bound_sync_s": max(bounds_sync) if all(math.isfinite(b) for b in bounds_sync) else None,
        "verdicts_sync": sorted({r.kind for r in sync}),
        "lost_acknowledged_async": sum(r.lost for r in async_),
        "reported_bound_async_s_max": max(bounds_async, default=None),
        "commit_p50_ms_sync": percentile([r.p50_ms for r in sync], 50),
        "commit_p50_ms_async": percentile([r.p50_ms for r in async_], 50),
        "throughput_ratio_sync_to_async": round(sum(r.per_s for r in sync) / max(1e-9, sum(r.per_s for r in async_)),
                                                3),
        "degrade_s": round(percentile(degrades, 50), 2), "degrade_s_max": round(max(degrades), 2),
        "degrade_after_s": args.degrade_after, "delay_ms": round(args.delay * 1000), "bound_from": BOUND_FROM,
    })


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("--steady", type=float, default=3.0)
    parser.add_argument("--degrade-after", type=float, default=2.0)
    asyncio.run(main(parser.parse_args()))
