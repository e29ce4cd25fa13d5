"""Is the data-loss verdict an upper bound? Asynchronous replication over a 100-300 ms link, whole-site kills.

Each run (:mod:`bench.site_kill`): a fresh replicated database, the subscriber reaching the publisher
through a proxy delaying every chunk by a delay drawn from ``--delay-min``..``--delay-max`` (each
way), an acknowledging writer inserting as fast as it can, this bench's heartbeats on the primary every
``--heartbeat`` seconds, and after ``--warmup`` seconds the whole publisher site killed at once. The
verdict is then computed by the engine's own code (:func:`actions.consistency.check_loss` ->
:func:`engine.core.loss.judge`) from what an engine could observe (its heartbeats, the standby, the
silence of the old site's agent), without engine processes: ``bound_from`` says so.

Truth: every acknowledged row missing on the standby is lost. A run is *above the bound* when a lost
row was acknowledged after the primary's end used by the bound (``covered + bound``) or before the
point the standby was said to hold everything (``covered``), or when the verdict said zero while rows
were lost. For comparison, ``legacy_ok_runs`` counts the runs in which the old lower-bound window
(:func:`actions.consistency.check_consistency`, still called by the runbook until the lead wires the
verdict) reported "ok" with RPO 30 s.

    python bench/loss_bound.py --runs 10

Last line, JSON: bench, runs, actual_lost_max (rows), actual_lost_max_s, bound_max_s, bound_p50_s,
runs_actual_above_bound (must be 0), runs_unknown, bound_over_actual_p50 (bound / actual loss window,
the reference being the measured window), legacy_ok_runs, delay_ms, heartbeat_s, bound_from.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actions.consistency import check_consistency
from bench.common import final_line, percentile
from bench.site_kill import POLL, Run, quiet_cancellations
from tests.support.postgres import PgPair, start_pair

BOUND_FROM = ("engine.core.loss.judge via actions.consistency.check_loss, fed with what an engine could observe "
              "(its own heartbeats on the primary, the standby after the kill, the old site's agent polled every "
              f"{POLL:g} s for its silence); driven by this bench, not by engine processes")


@dataclass
class Result:
    delay_ms: int
    acked: int
    lost: int
    actual_s: float
    kind: str
    bound_s: float | None
    above: bool
    legacy: str


async def one(pair: PgPair, args: argparse.Namespace, rng: random.Random) -> Result:
    delay = rng.uniform(args.delay_min, args.delay_max)
    run = await Run(pair, delay, heartbeat=args.heartbeat).start()
    writer = run.writer().start()
    try:
        await asyncio.sleep(args.warmup + rng.uniform(0, 1))
        await run.kill_site()
        await writer.stop()
        verdict = await run.verdict(None)
        legacy = await check_consistency(run.config, "azure", run.last_point, 30.0)
        lost = run.lost(writer)
    finally:
        await run.close()
    covered = verdict.covered_until
    actual_s = max(at for _, _, at in lost) - min(sent for _, sent, _ in lost) if lost else 0.0
    above = bool(lost) and verdict.ok
    if lost and verdict.kind == "bounded" and covered is not None and verdict.bound_s is not None:
        end = covered + verdict.bound_s
        above = any(at > end + 1e-3 or at < covered for _, _, at in lost)
    result = Result(round(delay * 1000), len(writer.acked), len(lost), round(actual_s, 3), verdict.kind,
                    verdict.bound_s, above, legacy.status)
    print(f"run: {result} | {verdict.status}", file=sys.stderr, flush=True)
    return result


async def main(args: argparse.Namespace) -> None:
    quiet_cancellations()
    rng = random.Random(args.seed)
    results = []
    with start_pair() as pair:
        for _ in range(args.runs):
            results.append(await one(pair, args, rng))
    bounds = [r.bound_s for r in results if r.bound_s is not None]
    ratios = [r.bound_s / r.actual_s for r in results if r.bound_s is not None and r.actual_s > 0]
    final_line({
        "bench": "loss_bound", "runs": len(results),
        "actual_lost_max": max(r.lost for r in results), "actual_lost_max_s": max(r.actual_s for r in results),
        "bound_max_s": max(bounds, default=math.nan), "bound_p50_s": percentile(bounds, 50),
        "runs_actual_above_bound": sum(r.above for r in results),
        "runs_unknown": sum(r.kind == "unknown" for r in results),
        "bound_over_actual_p50": round(percentile(ratios, 50), 2) if ratios else None,
        "legacy_ok_runs": sum(r.legacy == "ok" for r in results),
        "delay_ms": [round(args.delay_min * 1000), round(args.delay_max * 1000)], "heartbeat_s": args.heartbeat,
        "bound_from": BOUND_FROM,
    })


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--delay-min", type=float, default=0.1)
    parser.add_argument("--delay-max", type=float, default=0.3)
    parser.add_argument("--heartbeat", type=float, default=0.5)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    asyncio.run(main(parser.parse_args()))
