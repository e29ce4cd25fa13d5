"""The scheduler on real time with short intervals: cadence without drift, no overlap, clean stop."""

from __future__ import annotations

import asyncio
import time

from engine.core.model import Observation, SignalKey
from engine.runtime.probe_scheduler import Scheduler


class CountingProbe:
    """A probe that records when it started and can be slow."""

    def __init__(self, duration: float = 0.0) -> None:
        self.duration = duration
        self.starts: list[float] = []
        self.running = 0
        self.max_running = 0
        self.closed = False

    async def observe(self) -> Observation:
        self.starts.append(time.monotonic())
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await asyncio.sleep(self.duration)
        finally:
            self.running -= 1
        return Observation.success("ok", at=time.time())

    async def aclose(self) -> None:
        self.closed = True


async def run_for(scheduler: Scheduler, seconds: float) -> None:
    task = asyncio.create_task(scheduler.run())
    await asyncio.sleep(seconds)
    scheduler.stop()
    await asyncio.wait_for(task, 2)


async def test_cadence_does_not_drift() -> None:
    """Checks start on the nominal grid start + phase + k * interval, within a few ms."""
    seen: list[Observation] = []
    scheduler = Scheduler(lambda _k, o: seen.append(o), seed=1)
    probe = CountingProbe()
    key = SignalKey("svc", "a", "p")
    start = time.monotonic()
    scheduler.add(key, probe, 0.05, jitter=0.0, start=start)
    await run_for(scheduler, 1.0)
    phase = scheduler._entries[key].cadence.phase
    offsets = [(s - start - phase) / 0.05 for s in probe.starts]
    assert len(probe.starts) >= 15
    # every start sits close to an integer slot: no accumulated drift
    assert max(abs(o - round(o)) for o in offsets) * 0.05 < 0.02
    assert probe.closed
    assert len(probe.starts) - 1 <= len(seen) <= len(probe.starts)


async def test_slow_probe_never_overlaps() -> None:
    """A probe slower than its interval runs one at a time and its missed slots are counted."""
    skipped: list[SignalKey] = []
    scheduler = Scheduler(lambda _k, _o: None, on_skip=skipped.append, seed=2)
    probe = CountingProbe(duration=0.12)
    key = SignalKey("svc", "a", "slow")
    scheduler.add(key, probe, 0.05, jitter=0.0)
    await run_for(scheduler, 0.8)
    assert probe.max_running == 1
    assert scheduler.stats(key)["skipped"] >= 5
    assert skipped


async def test_lateness_is_measured() -> None:
    """Each launched check reports its lateness, small when the loop is idle."""
    lateness: list[float] = []
    scheduler = Scheduler(lambda _k, _o: None, on_lateness=lambda _k, s: lateness.append(s), seed=3)
    for i in range(20):
        scheduler.add(SignalKey("svc", "a", f"p{i}"), CountingProbe(), 0.1)
    await run_for(scheduler, 0.6)
    assert len(lateness) >= 60
    assert sorted(lateness)[int(len(lateness) * 0.99) - 1] < 0.05


async def test_failing_handler_does_not_stop_the_signal() -> None:
    """An exception in the observation handler is logged and the signal keeps being checked."""
    calls = 0
    fourth = asyncio.Event()

    def handler(_k: SignalKey, _o: Observation) -> None:
        nonlocal calls
        calls += 1
        if calls >= 4:
            fourth.set()
        raise RuntimeError("handler bug")

    scheduler = Scheduler(handler, seed=4)
    scheduler.add(SignalKey("svc", "a", "p"), CountingProbe(), 0.05)
    task = asyncio.create_task(scheduler.run())
    try:  # the behaviour, not the pace: a slow machine only makes it take longer
        await asyncio.wait_for(fourth.wait(), 5.0)
    finally:
        scheduler.stop()
        await asyncio.wait_for(task, 2)
    assert calls >= 4
