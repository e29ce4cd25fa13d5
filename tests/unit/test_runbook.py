"""Runbook runner: journaled steps, retries, best effort, halting, standing down, resuming."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from engine.core.clock import ManualClock
from engine.core.operations import Operation, OpState, Outcome, StepFailed, StepState
from engine.core.steps import StepSpec
from engine.runtime.journal import Journal
from engine.runtime.runner import RunbookRunner

SPECS = [StepSpec("fence", attempts=2, best_effort=True), StepSpec("promote", attempts=3),
         StepSpec("shift_dns", attempts=3), StepSpec("verify_dns", attempts=1)]


def new_op() -> Operation:
    return Operation("op-1", "api", "failover", "gcp", "azure", 3, 4, "auto", created_at=1000.0)


class MemoryStore:
    def __init__(self) -> None:
        self.saved: list[dict[str, Any]] = []

    async def save_operation(self, op: Operation) -> None:
        self.saved.append(op.to_dict())

    async def save_step(self, op: Operation, name: str, record: dict[str, Any]) -> None:
        self.saved.append({"step": name, **record})


class World:
    """A fake world the steps act on, recording every action."""

    def __init__(self) -> None:
        self.actions: list[str] = []
        self.fail: dict[str, list[BaseException]] = {}
        self.dns_epoch = 3

    async def step(self, name: str) -> Outcome:
        self.actions.append(name)
        queue = self.fail.get(name)
        if queue:
            raise queue.pop(0)
        if name == "shift_dns":
            if self.dns_epoch == 4:
                return Outcome("already at epoch 4", {"changed": False})
            self.dns_epoch = 4
            return Outcome("shifted to azure at epoch 4", {"changed": True})
        return Outcome(f"{name} ok")

    def fns(self) -> dict[str, Any]:
        return {s.name: (lambda op, n=s.name: self.step(n)) for s in SPECS}


async def no_sleep(_s: float) -> None:
    return None


def runner(world: World, store: Any, events: list[str] | None = None) -> RunbookRunner:
    async def on_event(_op: Operation, kind: str, message: str) -> None:
        if events is not None:
            events.append(f"{kind}: {message}")

    return RunbookRunner(store, SPECS, world.fns(), clock=ManualClock(), on_event=on_event, sleep=no_sleep)


async def test_runs_every_step_in_order() -> None:
    """A clean run does each step once, in order, and ends done."""
    world, store = World(), MemoryStore()
    op = await runner(world, store).run(new_op())
    assert op.state is OpState.DONE
    assert world.actions == ["fence", "promote", "shift_dns", "verify_dns"]
    assert [op.steps[s.name]["state"] for s in SPECS] == [StepState.DONE] * 4
    assert op.message == "failover of api to azure done"


async def test_retries_then_succeeds() -> None:
    """A step that fails twice and then succeeds is retried with its attempts recorded."""
    world, store = World(), MemoryStore()
    world.fail["promote"] = [StepFailed("connection refused"), StepFailed("connection refused")]
    op = await runner(world, store).run(new_op())
    assert op.state is OpState.DONE
    assert op.steps["promote"]["attempts"] == 3


async def test_best_effort_step_is_skipped() -> None:
    """A best-effort step that keeps failing is recorded as skipped and the runbook goes on."""
    world, store = World(), MemoryStore()
    world.fail["fence"] = [StepFailed("old primary unreachable")] * 2
    events: list[str] = []
    op = await runner(world, store, events).run(new_op())
    assert op.state is OpState.DONE
    assert op.steps["fence"]["state"] == StepState.SKIPPED
    assert "runbook: failover of api: fence skipped (best effort): old primary unreachable" in events


async def test_step_failing_for_good_halts_with_a_sentence() -> None:
    """A step that fails for good halts the operation and raises an alert naming step and reason."""
    world, store = World(), MemoryStore()
    world.fail["verify_dns"] = [StepFailed("ns2 still answers gcp after 120s")]
    events: list[str] = []
    op = await runner(world, store, events).run(new_op())
    assert op.state is OpState.HALTED
    assert op.message == "failover of api stuck at verify_dns: ns2 still answers gcp after 120s"
    assert events[-1] == "alert: failover of api stuck at verify_dns: ns2 still answers gcp after 120s"


async def test_non_retryable_failure_stops_retrying() -> None:
    """A failure marked not retryable is tried once only."""
    world, store = World(), MemoryStore()
    world.fail["promote"] = [StepFailed("bad password", retry=False)]
    op = await runner(world, store).run(new_op())
    assert op.state is OpState.HALTED
    assert world.actions.count("promote") == 1


async def test_step_timeout_is_a_failure() -> None:
    """A step slower than its timeout counts as a failed attempt."""
    world, store = World(), MemoryStore()

    async def slow(_op: Operation) -> Outcome:
        await asyncio.sleep(10)
        return Outcome("never")

    fns = world.fns()
    fns["verify_dns"] = slow
    specs = [*SPECS[:3], StepSpec("verify_dns", timeout=0.05, attempts=1)]
    op = await RunbookRunner(store, specs, fns, sleep=no_sleep).run(new_op())
    assert op.state is OpState.HALTED
    assert op.message == "failover of api stuck at verify_dns: timed out after 0.05s"


async def test_stand_down_ends_early() -> None:
    """A step that finds another executor won stands the operation down."""
    world, store = World(), MemoryStore()

    async def lost(_op: Operation) -> Outcome:
        return Outcome("epoch 4 already taken by engine-gcp", stand_down=True)

    fns = world.fns()
    fns["shift_dns"] = lost
    op = await RunbookRunner(store, SPECS, fns, sleep=no_sleep).run(new_op())
    assert op.state is OpState.STOOD_DOWN
    assert "verify_dns" not in op.steps
    assert op.message == "failover of api stood down at shift_dns: epoch 4 already taken by engine-gcp"


async def test_crash_mid_step_resumes_from_the_journal(tmp_path: Path) -> None:
    """Interrupted during verify (after the DNS write), a new runner resumes from the journal: no second write."""
    journal = Journal.open(tmp_path / "j.db")
    world = World()
    gate = asyncio.Event()

    async def verify_hangs(_op: Operation) -> Outcome:
        world.actions.append("verify_dns")
        gate.set()
        await asyncio.sleep(3600)
        return Outcome("never")

    fns = world.fns()
    fns["verify_dns"] = verify_hangs
    first = RunbookRunner(journal, SPECS, fns, sleep=no_sleep)
    task = asyncio.create_task(first.run(new_op()))
    await gate.wait()
    task.cancel()  # the process dies here: the journal shows verify_dns started
    with pytest.raises(asyncio.CancelledError):
        await task
    await journal.close()

    journal = Journal.open(tmp_path / "j.db")
    stored = journal.operation("op-1")
    assert stored is not None and stored["steps"]["verify_dns"]["state"] == "started"
    assert stored["steps"]["shift_dns"]["state"] == "done"
    resumed = await RunbookRunner(journal, SPECS, world.fns(), sleep=no_sleep).run(Operation.from_dict(stored))
    assert resumed.state is OpState.DONE
    assert world.actions == ["fence", "promote", "shift_dns", "verify_dns", "verify_dns"]
    assert resumed.steps["verify_dns"]["attempts"] == 2
    assert journal.operation("op-1")["state"] == "done"  # type: ignore[index]
    await journal.close()


async def test_resume_reruns_an_interrupted_shift_idempotently() -> None:
    """If the crash came inside shift_dns after the write, re-running it finds the epoch and changes nothing."""
    world, store = World(), MemoryStore()
    op = new_op()
    op.steps["fence"] = {"state": "done", "attempts": 1}
    op.steps["promote"] = {"state": "done", "attempts": 1}
    op.steps["shift_dns"] = {"state": "started", "attempts": 1}
    world.dns_epoch = 4  # the write had landed before the crash
    done = await runner(world, store).run(op)
    assert done.state is OpState.DONE
    assert done.steps["shift_dns"]["data"] == {"changed": False}
    assert world.actions == ["shift_dns", "verify_dns"]


def test_missing_step_function_is_refused() -> None:
    """A runner cannot be built with a step that has no function."""
    with pytest.raises(ValueError, match="no step function"):
        RunbookRunner(MemoryStore(), SPECS, {"fence": World().fns()["fence"]})  # type: ignore[arg-type]


async def test_resume_reruns_the_precheck_and_can_stand_down_before_the_databases() -> None:
    """A resumed run re-reads the world first: when someone else moved the service, nothing is touched."""
    world, store = World(), MemoryStore()
    op = new_op()
    op.steps["precheck"] = {"state": "done", "attempts": 1}
    op.steps["fence"] = {"state": "started", "attempts": 1}
    calls: list[str] = []

    async def precheck(_op: Operation) -> Outcome:
        calls.append("precheck")
        return Outcome("DNS is at epoch 3 by another operation", stand_down=True)

    fns = world.fns()
    fns["precheck"] = precheck
    specs = [StepSpec("precheck"), *SPECS]
    done = await RunbookRunner(store, specs, fns, rerun_on_resume=frozenset({"precheck"}), sleep=no_sleep).run(op)
    assert done.state is OpState.STOOD_DOWN
    assert calls == ["precheck"] and world.actions == []  # neither fence nor promote ran again
    assert done.steps["precheck"]["attempts"] == 2


async def test_a_fresh_run_does_not_rerun_its_precheck() -> None:
    """Only a resumed run repeats the precheck; a run in one go does each step once."""
    world, store = World(), MemoryStore()
    fns = world.fns()
    count = 0

    async def precheck(_op: Operation) -> Outcome:
        nonlocal count
        count += 1
        return Outcome("ok")

    fns["precheck"] = precheck
    specs = [StepSpec("precheck"), *SPECS]
    await RunbookRunner(store, specs, fns, rerun_on_resume=frozenset({"precheck"}), sleep=no_sleep).run(new_op())
    assert count == 1
