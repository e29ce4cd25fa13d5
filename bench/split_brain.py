"""Split brain under random partitions: two engines, a witness, a PostgreSQL pair and BIND in namespaces.

Each schedule starts a fresh :class:`tests.support.netns_cluster.NetnsCluster` (real engine
processes, real ``named``, a real logically replicated pair, partitions made with nftables between
network namespaces), starts a writer on each database and pollers, plays a random schedule of 1-3
partition events, heals, lets the engines settle, measures, and stops everything. The world is
therefore reset between schedules; the time per schedule is reported.

Partition events (seeded with ``--seed``; each lasts 1-8 s, then everything heals; 0-3 s between
events): one or two of these at once: isolate gcp, isolate azure, isolate the witness, cut gcp-azure
(both ways), or one way only between two of gcp, azure, witness (``Topology.cut(..., both_ways=False)``).
The root namespace (the writers, the pollers, this process) is never cut: ``isolate`` keeps the clients.

Writers: one per database (gcp is the primary, azure the read-only standby), inserting a row every
~10 ms from the root namespace on its own connection, reconnecting after any error, recording each
acknowledged insert with the wall-clock time it was sent and acknowledged (the engines' clock too:
every process runs on this host).

Per schedule:

failovers        operations in state ``done`` in the engines' journals.
write_overlap_ms how long both databases accepted writes. The standby refuses writes until it is
                 promoted, and a fenced primary never unfences itself, so each database accepts
                 writes during one interval: gcp from the start until it is fenced, azure from its
                 promotion on. Overlap = max(0, ack time of gcp's last accepted insert - send time of
                 azure's first accepted insert), 0 when azure accepted nothing. Acknowledgement
                 follows the commit and sending precedes it, so this over-estimates a real overlap
                 (by at most one round trip) and never hides one. Granularity: the writers' ~10 ms.
dns_changes      per epoch number, the number of writes of it: the distinct epoch TXT values seen
                 while polling BIND every 50 ms (each carries the writing operation's id, so two
                 writers of one epoch show as two values if both are seen), and the ``shift_dns``
                 steps with ``changed: true`` per ``epoch_to`` in every engine's journal; the larger
                 of the two counts. Epoch 1 is the zone's initial value (one write).
epochs_monotonic the epoch numbers seen at BIND, and each engine's epoch in ``/v1/status`` (polled
                 every 250 ms), never decrease.
lost_beyond_estimate
                 For each failover gcp -> azure: ``missing`` = inserts acknowledged by gcp whose row is
                 not on azure after the schedule (the subscription is disabled at promotion, so they
                 never arrive). The engine's estimate is its consistency step: the new primary holds
                 the old one's writes up to W0 (the loss verdict's ``covered_until``, engine/core/
                 loss.py); writes in [W0, W1] may be lost, W1 - W0 being its ``bound_s``, or
                 ``bound_if_outlived_s`` when the old database outlived its engine's silence (a
                 partition: it took writes until it fenced itself), whichever is larger; writes up to
                 one heartbeat interval after W1 are not counted. A missing insert is *within the
                 estimate* when it may have committed in [W0, W1 + heartbeat interval] (sent <= W1 +
                 interval and acknowledged >= W0); every other missing insert is *beyond* it
                 (committed after the window, or before W0: lost out of commit order). With no window
                 (consistency ``unknown``), every missing insert is beyond the estimate.
                 Reported per schedule too: ``beyond_lease``, the
                 missing inserts sent after (gcp's engine last heard by azure's + ``lease.length``),
                 which the lease says cannot exist.

Settings: tick 0.2 s, probes every 300 ms (200 ms timeout), failure threshold 3, heartbeat 300 ms, a 1 s
fencing timeout and the engine's default lease for that (6 s: the majority waits for 6.5 s of certified
silence), so that a 1-8 s partition can outlast it and the standby is promoted while the old primary is
still cut off. ``--lease``, ``--fence-timeout``, ``--min-duration`` and ``--max-duration`` change them.

With ``--coordination etcd`` the voters run etcd mode on a three-member etcd with one member in each of
gcp, azure and witness (a partition cuts the members like everything else): the epoch is claimed in etcd,
the write lease is an etcd lease (``lease_ttl`` 6 s, renewed every 500 ms, 1 s deadline: the holder starts
fencing 6 - 1 - 1 = 4 s after its last successful renewal; the members run with ``--pre-vote``), and azure
promotes an unfenced old primary only once etcd dropped its lease. ``--lease`` does not apply there.

    python bench/split_brain.py --schedules 20 --seed 1
    python bench/split_brain.py --schedules 20 --seed 1 --coordination etcd

The last line is JSON with the keys: bench, coordination, schedules, failovers, write_overlap_ms_max,
dns_changes_per_epoch_max, epochs_monotonic, lost_beyond_estimate (summed over schedules).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import random
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import final_line  # noqa: E402

Cut = tuple[str, ...]  # ("isolate", site) or ("cut", a, b, "both"|"one")
PRIMITIVES: tuple[Cut, ...] = (
    ("isolate", "gcp"), ("isolate", "azure"), ("isolate", "witness"), ("cut", "gcp", "azure", "both"),
    *(("cut", a, b, "one") for a in ("gcp", "azure", "witness") for b in ("gcp", "azure", "witness") if a != b),
)
EPOCH = re.compile(r"epoch=(\d+)")
TICK = 0.2


@dataclass
class Event:
    cuts: list[Cut]
    duration: float
    gap_before: float

    def describe(self) -> str:
        names = [f"isolate {c[1]}" if c[0] == "isolate" else
                 f"cut {c[1]}{'<->' if c[3] == 'both' else '->'}{c[2]}" for c in self.cuts]
        return f"{' + '.join(names)} {self.duration:.1f}s"


def make_schedule(rng: random.Random, shortest: float = 1.0, longest: float = 8.0) -> list[Event]:
    events = []
    for index in range(rng.randint(1, 3)):
        count = 2 if rng.random() < 0.3 else 1
        cuts = rng.sample(PRIMITIVES, count)
        duration = round(rng.uniform(shortest, longest), 1)
        events.append(Event(cuts, duration, 0.0 if index == 0 else round(rng.uniform(0, 3), 1)))
    return events


def apply(cluster: Any, cuts: list[Cut]) -> None:
    for cut in cuts:
        if cut[0] == "isolate":
            cluster.isolate(cut[1])
        else:
            cluster.cut(cut[1], cut[2], both_ways=cut[3] == "both")


@dataclass
class Watch:
    """What the pollers saw: the epoch TXT values at BIND in order, each engine's epochs in order."""

    txt: list[tuple[float, str]] = field(default_factory=list)
    engine_epochs: dict[str, list[int]] = field(default_factory=dict)

    async def poll_dns(self, cluster: Any, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                value = await asyncio.to_thread(cluster.dns_epoch)
                if not self.txt or self.txt[-1][1] != value:
                    self.txt.append((time.time(), value))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)

    async def poll_engines(self, cluster: Any, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for vid in ("engine-gcp", "engine-azure"):
                with contextlib.suppress(Exception):
                    epoch = int((await cluster.service(vid))["epoch"])
                    seen = self.engine_epochs.setdefault(vid, [])
                    if not seen or seen[-1] != epoch:
                        seen.append(epoch)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)

    def txt_epochs(self) -> list[int]:
        return [int(m.group(1)) for _, value in self.txt if (m := EPOCH.search(value))]


def dns_changes(watch: Watch, ops: list[dict[str, Any]]) -> dict[int, int]:
    """Writes per epoch number: distinct TXT values seen, or journal changes, whichever is more."""
    seen: dict[int, set[str]] = {}
    for _, value in watch.txt:
        if (m := EPOCH.search(value)) is not None:
            seen.setdefault(int(m.group(1)), set()).add(value)
    journal: dict[int, int] = {}
    for op in ops:
        step = op.get("steps", {}).get("shift_dns") or {}
        if (step.get("data") or {}).get("changed") is True:
            journal[op["epoch_to"]] = journal.get(op["epoch_to"], 0) + 1
    return {epoch: max(len(seen.get(epoch, ())), journal.get(epoch, 0)) for epoch in set(seen) | set(journal)}


def gap_ms(old: list[Any], new: list[Any]) -> float | None:
    """The margin: from the old primary's last acknowledged insert to the new one's first (None: no new one)."""
    if not old or not new:
        return None
    return round(float(new[0].sent - old[-1].acked) * 1000, 1)


def monotonic(values: list[int]) -> bool:
    return all(b >= a for a, b in itertools.pairwise(values))


def losses(cluster: Any, op: dict[str, Any], gcp_writes: list[Any], heartbeat: float,
           lease_minimum: float, last_heard: float | None) -> dict[str, Any]:
    """Missing inserts of the old primary and how many the consistency step's window explains."""
    on_new = {int(str(row[0])) for row in cluster.on("azure", "SELECT seq FROM writes WHERE origin = 'gcp'")}
    missing = [w for w in gcp_writes if w.seq not in on_new]
    data = ((op.get("steps") or {}).get("consistency") or {}).get("data") or {}
    covered = data.get("covered_until")
    if not isinstance(covered, int | float):
        within = 0
        window = None
    else:
        # the loss verdict (engine/core/loss.py): azure has every write acknowledged up to W0 = covered_until;
        # gcp may have acknowledged writes for bound_s after it, or bound_if_outlived_s when its database
        # outlived its engine's silence (a partition: until the old site fenced itself, the lease)
        w0 = float(covered)
        span = max(float(data.get("bound_s") or 0.0), float(data.get("bound_if_outlived_s") or 0.0))
        w1 = w0 + span
        within = sum(1 for w in missing if w.sent <= w1 + heartbeat and w.acked >= w0)
        window = (round(span, 3), data.get("status"))
    beyond_lease = (sum(1 for w in missing if w.sent > last_heard + lease_minimum)
                    if last_heard is not None else None)
    return {"missing": len(missing), "within": within, "beyond": len(missing) - within, "window": window,
            "beyond_lease": beyond_lease,
            "missing_span_s": (round(missing[0].sent - (last_heard or 0), 2) if missing and last_heard else None,
                               round(missing[-1].acked - (last_heard or 0), 2) if missing and last_heard else None)}


async def settle(cluster: Any, timeout: float = 90.0) -> None:
    """Until no engine runs an operation and both engines hold DNS's epoch (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            running = [op for vid in ("engine-gcp", "engine-azure") for op in await cluster.operations(vid)
                       if op["state"] == "running"]
            epochs = {int((await cluster.service(vid))["epoch"]) for vid in ("engine-gcp", "engine-azure")}
            dns = EPOCH.search(await asyncio.to_thread(cluster.dns_epoch))
            if not running and dns is not None and epochs == {int(dns.group(1))}:
                return
        except Exception:  # an engine busy or briefly unreachable: ask again
            pass
        await asyncio.sleep(0.25)


# NetnsCluster's etcd_settings (lease_ttl 6 s) plus etcd's election timeout (1 s): a cut-off holder's keepalive may
# still be answered by an old leader until it steps down, which is why a new leader extends every lease by it
ETCD_LEASE_TTL = 6.0 + 1.0


async def run_schedule(index: int, events: list[Event], template: Path, *, lease_s: float | None = None,
                       fence_timeout: float = 1.0, coordination: str = "peer") -> dict[str, Any]:
    from tests.support.netns_cluster import NetnsCluster, Writer, overlap_ms

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix=f"split-brain-{index}-"))
    cluster = NetnsCluster(workdir, tick=TICK, interval=0.3, timeout=0.2, threshold=3,
                           lease=lease_s, fence_timeout=fence_timeout, pg_template=template,
                           coordination=coordination)
    await cluster.start()
    setup_s = time.monotonic() - started
    watch, stop = Watch(), asyncio.Event()
    pollers = [asyncio.create_task(watch.poll_dns(cluster, stop)),
               asyncio.create_task(watch.poll_engines(cluster, stop))]
    writers = {site: Writer(site, cluster.dsn(site)).start() for site in ("gcp", "azure")}
    try:
        lease = cluster.parsed_config("engine-azure").lease("shop")
        await asyncio.sleep(1.0)
        timeline = []
        for event in events:
            await asyncio.sleep(event.gap_before)
            timeline.append((time.time(), event))
            apply(cluster, event.cuts)
            await asyncio.sleep(event.duration)
            cluster.heal()
        await settle(cluster)
        await asyncio.sleep(2.0)
        for w in writers.values():
            w.stop()
        stop.set()
        await asyncio.gather(*pollers)
        ops = [op for vid in ("engine-gcp", "engine-azure") for op in await cluster.operations(vid)]
        done = [op for op in ops if op["state"] == "done"]
        fences = {vid: len(await cluster.events(vid, "fence")) for vid in ("engine-gcp", "engine-azure")}
        changes = dns_changes(watch, ops)
        epochs_ok = monotonic(watch.txt_epochs()) and all(monotonic(v) for v in watch.engine_epochs.values())
        loss: dict[str, Any] = {"missing": 0, "within": 0, "beyond": 0, "window": None, "beyond_lease": 0}
        for op in done:
            if (op["source"], op["target"]) != ("gcp", "azure"):
                continue
            heard = _last_heard(op, timeline)
            bound = ETCD_LEASE_TTL if coordination == "etcd" else lease.length if lease is not None else 0.0
            loss = losses(cluster, op, writers["gcp"].writes, cluster.heartbeat, bound, heard)
        result = {
            "index": index, "events": " ; ".join(e.describe() for e in events),
            "failovers": len(done), "overlap_ms": round(overlap_ms(writers["gcp"].writes, writers["azure"].writes), 1),
            "gap_ms": gap_ms(writers["gcp"].writes, writers["azure"].writes),
            "dns_changes_max": max(changes.values(), default=0), "dns_changes": dict(sorted(changes.items())),
            "epochs_monotonic": epochs_ok, "txt": [v for _, v in watch.txt], "fences": fences,
            "gcp_accepted": len(writers["gcp"].writes), "azure_accepted": len(writers["azure"].writes),
            "loss": loss, "ops": [describe_op(op, timeline) for op in ops],
            "setup_s": round(setup_s, 1),
        }
    finally:
        stop.set()
        for w in writers.values():
            w.stop()
        for task in pollers:
            task.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)
        await cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    result["took_s"] = round(time.monotonic() - started, 1)
    return result


def describe_op(op: dict[str, Any], timeline: list[tuple[float, Event]]) -> str:
    """One operation in a line: what it did, when (from the first partition event), its fence step and
    its consistency verdict."""
    steps = op.get("steps") or {}
    fence, consistency = steps.get("fence") or {}, steps.get("consistency") or {}
    t0 = timeline[0][0] if timeline else op["created_at"]
    finished = op.get("finished_at")
    return (f"{op['kind']} {op['source']}->{op['target']} {op['state']} (started +{op['created_at'] - t0:.1f}s, "
            f"finished {'+' + format(finished - t0, '.1f') + 's' if finished else '-'}; fence {fence.get('state')} "
            f"after {fence.get('attempts')} attempt(s), {fence.get('duration_s')}s: "
            f"{str(fence.get('summary'))[:110]}; consistency: {str(consistency.get('summary'))[:110]})")


def _last_heard(op: dict[str, Any], timeline: list[tuple[float, Event]]) -> float | None:
    """When gcp's engine was last heard by the executor: the fence step's notes say "last heard N s ago"
    when it waited out the lease (step start - N); else the start of the last event that cut gcp off."""
    fence = (op.get("steps") or {}).get("fence") or {}
    notes = (fence.get("data") or {}).get("engines") or []
    finished = fence.get("finished_at")
    for note in notes:
        m = re.search(r"engine-gcp last heard ([0-9.]+)s ago", note)
        if m is not None and finished is not None:
            return float(finished) - float(m.group(1))
    cut_off = [at for at, event in timeline if any("gcp" in cut for cut in event.cuts)]
    return cut_off[-1] if cut_off else None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schedules", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-duration", type=float, default=1.0, help="shortest partition event (s)")
    parser.add_argument("--max-duration", type=float, default=8.0, help="longest partition event (s)")
    parser.add_argument("--lease", type=float, default=None,
                        help="policy.lease (s); default: the engine's default for the tick and fencing timeout")
    parser.add_argument("--coordination", choices=("peer", "etcd"), default="peer",
                        help="peer: signed verdicts and the computed lease; etcd: a member in each namespace")
    parser.add_argument("--fence-timeout", type=float, default=1.0, help="database.fencing.timeout (s)")
    args = parser.parse_args()
    from tests.support.postgres import PgCluster, require_postgres

    require_postgres()
    rng = random.Random(args.seed)
    schedules = [make_schedule(rng, args.min_duration, args.max_duration) for _ in range(args.schedules)]
    from engine.config.lease import Lease, default_length

    lease = Lease(args.lease or default_length(TICK, args.fence_timeout), args.fence_timeout, TICK)
    print(f"split_brain ({args.coordination}): {args.schedules} schedules, seed {args.seed}, tick {TICK}s, "
          "fencing timeout "
          f"{args.fence_timeout}s: {lease.explain()}", flush=True)
    base = Path(tempfile.mkdtemp(prefix="split-brain-template-"))
    shutil.chown(base, "postgres", "postgres")
    template = PgCluster(base, "template")
    await asyncio.to_thread(template.init)
    results = []
    bench_started = time.monotonic()
    try:
        for index, events in enumerate(schedules, 1):
            r = await run_schedule(index, events, template.datadir, lease_s=args.lease,
                                   fence_timeout=args.fence_timeout, coordination=args.coordination)
            results.append(r)
            loss = r["loss"]
            print(f"schedule {index}/{args.schedules}: {r['events']} | failovers {r['failovers']}, "
                  f"overlap {r['overlap_ms']:g} ms (gap {r['gap_ms']} ms), dns changes/epoch {r['dns_changes']}, "
                  f"epochs {'monotonic' if r['epochs_monotonic'] else 'NOT MONOTONIC'}, self-fences {r['fences']}, "
                  f"accepted gcp {r['gcp_accepted']} azure {r['azure_accepted']}, lost: missing {loss['missing']} "
                  f"within {loss['within']} beyond {loss['beyond']} (window {loss['window']}, beyond the lease "
                  f"{loss['beyond_lease']}) | ops {r['ops']} | took {r['took_s']}s (setup {r['setup_s']}s)",
                  flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    total = time.monotonic() - bench_started
    print(f"{len(results)} schedules in {total:.0f}s ({total / max(1, len(results)):.1f}s per schedule)")
    final_line({
        "bench": "split_brain",
        "coordination": args.coordination,
        "schedules": len(results),
        "failovers": sum(r["failovers"] for r in results),
        "write_overlap_ms_max": max((r["overlap_ms"] for r in results), default=0.0),
        "dns_changes_per_epoch_max": max((r["dns_changes_max"] for r in results), default=0),
        "epochs_monotonic": all(r["epochs_monotonic"] for r in results),
        "lost_beyond_estimate": sum(r["loss"]["beyond"] for r in results),
    })


if __name__ == "__main__":
    asyncio.run(main())
